//! 2.x's server calls beside the runs: the model catalog and agents (read once the location's
//! config has loaded) and the MCP servers registered at run time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::super::types::{Capabilities, InputCapabilities, Provider, ProviderModel};
use super::super::{McpConnection, OpenCodeClient, Providers, UpstreamError};

/// Longest wait for a location's lists to hold what its config defines (see
/// [`OpenCodeClient::v2_loaded`]).
const LOAD_WAIT: Duration = Duration::from_secs(5);

/// How long a 2.x MCP registration settles before its tools are used (see
/// [`OpenCodeClient::v2_register_mcp`]).
const MCP_SETTLE: Duration = Duration::from_millis(300);

impl OpenCodeClient {
    /// The names of the `section` (`agents`, `providers`) the location's config files
    /// define (`GET /api/config`).
    async fn v2_configured(&self, section: &str) -> Result<BTreeSet<String>, UpstreamError> {
        let docs: Value = self
            .retrying("get config", || {
                self.json(
                    "get config",
                    self.request(Method::GET, "api/config"),
                    self.timeout,
                )
            })
            .await?;
        Ok(docs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.pointer(&format!("/info/{section}"))?.as_object())
            .flat_map(|m| m.keys().cloned())
            .collect())
    }

    /// A location-scoped list, once it holds what the config defines: 2.x loads a directory
    /// on its first use and answers meanwhile with what it has (no agents, then only its
    /// built-in ones), so the list is read again (every 100 ms, [`LOAD_WAIT`] at most) until
    /// every `wanted` name is in it.
    async fn v2_loaded(
        &self,
        what: &str,
        path: &str,
        wanted: &BTreeSet<String>,
        name_of: fn(&Value) -> Option<&str>,
    ) -> Result<Vec<Value>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + LOAD_WAIT;
        loop {
            let list: Vec<Value> = self.v2_read(what, path, &[]).await?;
            let names: BTreeSet<&str> = list.iter().filter_map(name_of).collect();
            let complete = wanted.iter().all(|w| names.contains(w.as_str()));
            if (complete && !list.is_empty()) || tokio::time::Instant::now() >= deadline {
                return Ok(list);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The model catalog (`GET /api/model`) in 1.18's providers form.
    pub(crate) async fn v2_providers(&self) -> Result<Providers, UpstreamError> {
        let wanted = self.v2_configured("providers").await?;
        let models = self
            .v2_loaded("list models", "api/model", &wanted, |m| {
                m["providerID"].as_str()
            })
            .await?;
        let mut providers: BTreeMap<String, Provider> = BTreeMap::new();
        for m in models {
            let (Some(provider), Some(id)) = (
                m["providerID"].as_str(),
                m["modelID"].as_str().or_else(|| m["id"].as_str()),
            ) else {
                continue;
            };
            if m["enabled"] == Value::Bool(false) {
                continue;
            }
            let inputs = m.pointer("/capabilities/input").and_then(Value::as_array);
            let variants = m["variants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| Some((v["id"].as_str()?.to_string(), v["settings"].clone())))
                .collect();
            let model = ProviderModel {
                id: id.to_string(),
                capabilities: Some(Capabilities {
                    reasoning: false,
                    input: Some(InputCapabilities {
                        image: inputs.is_some_and(|i| i.iter().any(|x| x == "image")),
                    }),
                }),
                release_date: m
                    .pointer("/time/released")
                    .and_then(Value::as_str)
                    .map(String::from),
                variants,
            };
            providers
                .entry(provider.to_string())
                .or_insert_with(|| Provider {
                    id: provider.to_string(),
                    models: BTreeMap::new(),
                })
                .models
                .insert(id.to_string(), model);
        }
        Ok(Providers {
            providers: providers.into_values().collect(),
        })
    }

    /// `GET /api/agent`, each agent's id under 1.18's `name` key.
    pub(crate) async fn v2_agents(&self) -> Result<Vec<Value>, UpstreamError> {
        let wanted = self.v2_configured("agents").await?;
        let mut agents = self
            .v2_loaded("list agents", "api/agent", &wanted, |a| a["id"].as_str())
            .await?;
        for a in &mut agents {
            // 2.x selects agents by `id`; its `name` is for display.
            if a.get("id").is_some_and(Value::is_string) {
                a["name"] = a["id"].clone();
            }
            if let Some(system) = a.get("system").cloned() {
                a["prompt"] = system;
            }
        }
        Ok(agents)
    }

    /// `PUT /api/experimental/mcp/:name {config}` (code mode off, so its tools are offered
    /// by name), then its status from `GET /api/mcp`.
    pub(crate) async fn v2_register_mcp(
        &self,
        name: &str,
        url: &str,
        secret: &str,
        call_timeout: Duration,
    ) -> Result<McpConnection, UpstreamError> {
        let millis = call_timeout.as_millis().min(i32::MAX as u128) as u64;
        // A new header value per registration: 2.x reconnects (and lists the tools again)
        // only when the config changed, and the caller registers because the tools did.
        let registration = uuid::Uuid::new_v4().simple().to_string();
        let config = json!({
            "type": "remote",
            "url": url,
            "headers": {
                "Authorization": format!("Bearer {secret}"),
                "X-Portatek-Registration": registration,
            },
            "oauth": false,
            "codemode": false,
            "timeout": { "execution": millis },
        });
        let status = self.v2_add_mcp(name, &config).await?;
        // 2.1.2 answers the PUT once connected and its tools listed, but offers them to the
        // model a moment later (its catalog updates asynchronously; a prompt 10 ms after the
        // PUT was offered none, 50 ms after, all — and no event or route tells when). So a
        // registration, which happens only when a slot's tool set changed, settles first.
        tokio::time::sleep(MCP_SETTLE).await;
        Ok(match status["status"].as_str() {
            Some("connected") => McpConnection::Connected,
            other => McpConnection::Failed(
                status["error"]
                    .as_str()
                    .or(other)
                    .unwrap_or("unknown status")
                    .to_string(),
            ),
        })
    }

    /// Adds (or replaces) a remote MCP server; answers its status
    /// (`{"status": "connected"|"failed", "error"?}`).
    pub(crate) async fn v2_add_mcp(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<Value, UpstreamError> {
        let mut config = config.clone();
        if config.get("codemode").is_none() {
            config["codemode"] = json!(false);
        }
        if let Some(ms) = config.get("timeout").and_then(Value::as_u64) {
            config["timeout"] = json!({ "execution": ms });
        }
        if let Some(obj) = config.as_object_mut() {
            obj.remove("enabled");
        }
        let body = json!({ "config": config });
        self.retrying("add MCP server", || {
            self.v2_write(
                "add MCP server",
                self.request(Method::PUT, &format!("api/experimental/mcp/{name}"))
                    .json(&body),
            )
        })
        .await?;
        let servers: Vec<Value> = self.v2_read("MCP status", "api/mcp", &[]).await?;
        Ok(servers
            .into_iter()
            .find(|s| s["name"] == name)
            .map(|s| s["status"].clone())
            .unwrap_or_else(|| json!({ "status": "unknown" })))
    }
}
