//! The server itself rather than one session: its health, the provider/model catalog, its
//! agents, the MCP servers registered at run time, and disposing of a directory's instance.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{Health, OpenCodeClient, Providers, UpstreamError};

/// Whether OpenCode connected to an MCP server it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpConnection {
    /// Connected: its tools are offered.
    Connected,
    /// Not connected, and OpenCode's reason.
    Failed(String),
}

impl OpenCodeClient {
    /// `GET /global/health` with its own short timeout (retried within that budget).
    pub async fn health(&self, timeout: Duration) -> Result<Health, UpstreamError> {
        let call = async {
            self.retrying("health", || {
                self.json(
                    "health",
                    self.request(Method::GET, "global/health"),
                    timeout,
                )
            })
            .await
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| {
            UpstreamError::Timeout(format!("health check took longer than {timeout:?}"))
        })?
    }

    /// `GET /config/providers`.
    pub async fn providers(&self) -> Result<Providers, UpstreamError> {
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
