//! The server itself rather than one session: its health, the provider/model catalog, its
//! agents, the MCP servers registered at run time, and disposing of a directory's instance.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{Api, Health, OpenCodeClient, Providers, UpstreamError};

/// Whether a health call's failure means the server speaks the other API (an HTML page
/// instead of JSON, a 404 or 405), not that it is down.
fn answered_another_api(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Decode(_)
            | UpstreamError::NotFound(_)
            | UpstreamError::Status {
                status: 404 | 405,
                ..
            }
    )
}

/// Whether OpenCode connected to an MCP server it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpConnection {
    /// Connected: its tools are offered.
    Connected,
    /// Not connected, and OpenCode's reason.
    Failed(String),
}

impl OpenCodeClient {
    /// Whether the server is healthy, and which API and version it speaks, with its own short
    /// timeout (retried within it): `GET /global/health` answering JSON is 1.x, `GET /api/info`
    /// answering JSON is 2.x (the API seen last is asked first). An HTML page — what 2.x
    /// answers on 1.x paths — is never health. Records what it found for every clone.
    pub async fn health(&self, timeout: Duration) -> Result<Health, UpstreamError> {
        let call = async {
            let first = self.api.get().unwrap_or_default();
            let other = match first {
                Api::V1 => Api::V2,
                Api::V2 => Api::V1,
            };
            match self.probe(first, timeout).await {
                Err(e) if answered_another_api(&e) => match self.probe(other, timeout).await {
                    Err(e2) if answered_another_api(&e2) => Err(UpstreamError::Decode(
                        "health: neither /global/health (OpenCode 1.x) nor /api/info (2.x) \
                         answered with JSON (an HTML page is not health)"
                            .into(),
                    )),
                    other => other,
                },
                result => result,
            }
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| {
            UpstreamError::Timeout(format!("health check took longer than {timeout:?}"))
        })?
    }

    /// One API's health call; records the API when it answers.
    async fn probe(&self, api: Api, timeout: Duration) -> Result<Health, UpstreamError> {
        let mut health = match api {
            Api::V1 => {
                self.retrying("health", || {
                    self.json::<Health>(
                        "health",
                        self.request(Method::GET, "global/health"),
                        timeout,
                    )
                })
                .await?
            }
            Api::V2 => self.v2_info(timeout).await?,
        };
        health.api = api;
        self.api.set(api, health.version.as_deref());
        Ok(health)
    }

    /// Whether the server answers in a JSON schema itself (1.x's structured output; 2.x has
    /// none, and the gateway asks for the answer as a tool call instead).
    pub async fn has_structured_output(&self) -> bool {
        !self.is_v2().await
    }

    /// `GET /config/providers`.
    pub async fn providers(&self) -> Result<Providers, UpstreamError> {
        if self.is_v2().await {
            return self.v2_providers().await;
        }
        self.retrying("list providers", || {
            self.json(
                "list providers",
                self.request(Method::GET, "config/providers"),
                self.timeout,
            )
        })
        .await
    }

    /// `POST /mcp {name, config}`: adds (or replaces) an MCP server; answers the status map
    /// (`{"<name>": {"status": "connected"}}`).
    /// Registers (or replaces) the remote MCP server `name` at `url`, called with `secret` as
    /// its bearer token and waited on for at most `call_timeout` per call; returns whether
    /// OpenCode connected to it (and why not).
    pub async fn register_mcp(
        &self,
        name: &str,
        url: &str,
        secret: &str,
        call_timeout: Duration,
    ) -> Result<McpConnection, UpstreamError> {
        if self.is_v2().await {
            return self.v2_register_mcp(name, url, secret, call_timeout).await;
        }
        let config = serde_json::json!({
            "type": "remote",
            "url": url,
            "headers": { "Authorization": format!("Bearer {secret}") },
            "oauth": false,
            "enabled": true,
            "timeout": call_timeout.as_millis().min(i32::MAX as u128) as u64,
        });
        let status = self.add_mcp(name, &config).await?;
        Ok(
            match status
                .pointer(&format!("/{name}/status"))
                .and_then(Value::as_str)
            {
                Some("connected") => McpConnection::Connected,
                other => McpConnection::Failed(
                    status
                        .pointer(&format!("/{name}/error"))
                        .and_then(Value::as_str)
                        .or(other)
                        .unwrap_or("unknown status")
                        .to_string(),
                ),
            },
        )
    }

    /// `POST /mcp {name, config}`: adds a remote MCP server at run time (OpenCode's admin
    /// surface passes its own config through).
    pub async fn add_mcp(&self, name: &str, config: &Value) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_add_mcp(name, config).await;
        }
        let body = serde_json::json!({ "name": name, "config": config });
        // Replacing a server is idempotent: safe to resend.
        self.retrying("add MCP server", || {
            self.json(
                "add MCP server",
                self.request(Method::POST, "mcp").json(&body),
                self.timeout,
            )
        })
        .await
    }

    /// `POST /instance/dispose`: ends OpenCode's instance of this client's directory (its
    /// in-memory state: saved permission approvals, run-time MCP servers…); the next call
    /// there starts a fresh one.
    pub async fn dispose_instance(&self) -> Result<(), UpstreamError> {
        if self.is_v2().await {
            return Err(self.v2_gone("Resetting an OpenCode instance"));
        }
        let _: Value = self
            .json(
                "dispose instance",
                self.request(Method::POST, "instance/dispose"),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// `GET /agent`: the agents OpenCode knows (`[{name, description, mode, …}]`).
    pub async fn agents(&self) -> Result<Vec<Value>, UpstreamError> {
        if self.is_v2().await {
            return self.v2_agents().await;
        }
        self.retrying("list agents", || {
            self.json(
                "list agents",
                self.request(Method::GET, "agent"),
                self.timeout,
            )
        })
        .await
    }
}
