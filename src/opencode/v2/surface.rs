//! The rest of OpenCode's API the gateway serves (see [`super::super::surface`]), on 2.x:
//! each call mapped to its 2.x route and answered in 1.18's shape where the routes read it;
//! what 2.x dropped is [`UpstreamError::Unsupported`] (a 501 naming the version).

use reqwest::Method;
use serde_json::{json, Value};

use super::super::{OpenCodeClient, UpstreamError};

impl OpenCodeClient {
    /// A 2.x read, its envelope (`{data}` or `{location, data}`) removed when it has one.
    pub(crate) async fn v2_get(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, UpstreamError> {
        let v: Value = self
            .retrying(what, || {
                self.json(
                    what,
                    self.request(Method::GET, path).query(query),
                    self.timeout,
                )
            })
            .await?;
        Ok(match v {
            Value::Object(mut o) if o.contains_key("data") => o.remove("data").unwrap_or_default(),
            other => other,
        })
    }

    /// A 2.x write (204 expected), answered as `{}` (1.18 answered `true` or an object).
    async fn v2_do(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, UpstreamError> {
        let mut rb = self.request(method, path);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        self.v2_write(what, rb).await?;
        Ok(json!(true))
    }

    /// Dispatches one surface call on a 2.x server (`None`: the call is not one of these).
    pub(crate) async fn v2_surface(&self, call: SurfaceCall<'_>) -> Result<Value, UpstreamError> {
        use SurfaceCall as C;
        match call {
            C::Providers => {
                let all = self.v2_get("list providers", "api/provider", &[]).await?;
                let connected: Vec<Value> = all
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["activation"] == "enabled")
                    .map(|p| p["id"].clone())
                    .collect();
                Ok(json!({ "all": all, "connected": connected, "default": {} }))
            }
            C::ProviderKey { id, auth } => {
                let key = auth.get("key").cloned().unwrap_or(Value::Null);
                self.v2_do(
                    "set provider auth",
                    Method::POST,
                    &format!("api/integration/{id}/connect/key"),
                    Some(json!({ "key": key })),
                )
                .await
            }
            C::Commands => self.v2_get("list commands", "api/command", &[]).await,
            C::RunCommand { session, body } => {
                let name = body
                    .get("command")
                    .or_else(|| body.get("name"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let text = body
                    .get("arguments")
                    .or_else(|| body.get("text"))
                    .cloned()
                    .unwrap_or(json!(""));
                self.v2_do(
                    "run command",
                    Method::POST,
                    &format!("api/session/{session}/command"),
                    Some(json!({ "name": name, "text": text })),
                )
                .await
            }
            C::RunShell { session, body } => {
                let command = body.get("command").cloned().unwrap_or(Value::Null);
                self.v2_do(
                    "run shell",
                    Method::POST,
                    &format!("api/session/{session}/shell"),
                    Some(json!({ "command": command })),
                )
                .await
            }
            C::FindFiles { query, limit } => {
                let q = [
                    ("query", query.to_string()),
                    ("type", "file".to_string()),
                    ("limit", limit.to_string()),
                ];
                self.v2_get("search files", "api/fs/find", &q).await
            }
            C::ListDirectory { path } => {
                self.v2_get(
                    "list directory",
                    "api/fs/list",
                    &[("path", path.to_string())],
                )
                .await
            }
            C::FileContent { path } => {
                let what = "read file";
                let rb = self.request(
                    Method::GET,
                    &format!("api/fs/read/{}", path.trim_start_matches('/')),
                );
                let fut = async {
                    let resp = self.send(what, rb).await?;
                    resp.text()
                        .await
                        .map_err(|e| UpstreamError::Decode(format!("{what}: {e}")))
                };
                let content = tokio::time::timeout(self.timeout, fut)
                    .await
                    .map_err(|_| UpstreamError::Timeout(what.into()))??;
                Ok(json!({ "type": "text", "content": content }))
            }
            C::FileStatus => self.v2_get("file status", "api/vcs/status", &[]).await,
            C::Vcs => self.v2_get("VCS info", "api/vcs", &[]).await,
            C::Project => self.v2_get("project", "api/location", &[]).await,
            C::Paths => Ok(self.v2_get("paths", "api/info", &[]).await?["paths"].clone()),
            C::McpStatus => {
                let list = self.v2_get("MCP status", "api/mcp", &[]).await?;
                let map: serde_json::Map<String, Value> = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["status"].clone())))
                    .collect();
                Ok(Value::Object(map))
            }
            C::McpSwitch { name, connect } => {
                let verb = if connect { "connect" } else { "disconnect" };
                self.v2_do(
                    "switch MCP server",
                    Method::POST,
                    &format!("api/experimental/mcp/{name}/{verb}"),
                    None,
                )
                .await
            }
            C::Children { id } => self.v2_children(id).await,
            C::Diff { id } => {
                self.v2_get("session diff", &format!("api/session/{id}/diff"), &[])
                    .await
            }
            C::Message { id, message } => {
                let m = self
                    .v2_get(
                        "get message",
                        &format!("api/session/{id}/message/{message}"),
                        &[],
                    )
                    .await?;
                super::messages::as_v1(id, &m)
                    .ok_or_else(|| UpstreamError::NotFound(format!("message {message}")))
            }
            C::Summarize { id } => {
                let rb = self
                    .request(Method::POST, &format!("api/session/{id}/compact"))
                    .json(&json!({}));
                let _: Value = self.json("summarize session", rb, self.timeout).await?;
                Ok(json!(true))
            }
            C::Revert { id, message } => {
                let rb = self
                    .request(Method::POST, &format!("api/session/{id}/revert/stage"))
                    .json(&json!({ "messageID": message }));
                let _: Value = self.json("revert session", rb, self.timeout).await?;
                Ok(json!(true))
            }
            C::Unrevert { id } => {
                self.v2_do(
                    "unrevert session",
                    Method::DELETE,
                    &format!("api/session/{id}/revert"),
                    None,
                )
                .await
            }
            C::Config => self.v2_get("get config", "api/config", &[]).await,
            C::Gone(what) => Err(self.v2_gone(what)),
        }
    }
}

/// One call of the surface, as [`OpenCodeClient::v2_surface`] takes it.
pub(crate) enum SurfaceCall<'a> {
    Providers,
    ProviderKey {
        id: &'a str,
        auth: &'a Value,
    },
    Commands,
    RunCommand {
        session: &'a str,
        body: &'a Value,
    },
    RunShell {
        session: &'a str,
        body: &'a Value,
    },
    FindFiles {
        query: &'a str,
        limit: usize,
    },
    ListDirectory {
        path: &'a str,
    },
    FileContent {
        path: &'a str,
    },
    FileStatus,
    Vcs,
    Project,
    Paths,
    McpStatus,
    McpSwitch {
        name: &'a str,
        connect: bool,
    },
    Children {
        id: &'a str,
    },
    Diff {
        id: &'a str,
    },
    Message {
        id: &'a str,
        message: &'a str,
    },
    Summarize {
        id: &'a str,
    },
    Revert {
        id: &'a str,
        message: &'a str,
    },
    Unrevert {
        id: &'a str,
    },
    Config,
    /// A call 2.x has no route for (named as the error says it).
    Gone(&'static str),
}
