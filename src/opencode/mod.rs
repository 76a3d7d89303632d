//! The protocol seam: everything the gateway asks of an OpenCode server (`opencode serve`),
//! and the only module that knows its wire — paths, JSON fields, event types.
//!
//! The core asks through [`OpenCodeClient`] (sessions, prompts, interrupts, permission and
//! question replies, MCP registration, the catalog, agents, health) and reads a run's events as
//! the gateway's own [`events::RunEvent`]s, decoded per run by [`RunDecoder`] from the session's
//! events that the [`hub`] demultiplexes. OpenCode 1.18 is the implementation spoken today.
//!
//! Every call has a timeout; calls safe to repeat are retried with bounded backoff (health,
//! model list, session lookup/delete on any transient failure; session create and fork only
//! when the request surely created nothing), prompts never are.

mod decode;
mod error;
pub mod events;
pub mod history;
pub mod hub;
mod sse;
mod surface;
mod types;

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::OpenCodeConfig;

pub use decode::RunDecoder;
pub use error::{error_message, public_message, upstream_message, UpstreamError};
pub use types::{
    is_sync_frame, Capabilities, Event, Frame, Health, InputCapabilities, ModelRef, PartInput,
    Prompt, Provider, ProviderModel, Providers, Session, ToolSwitches,
};

/// Whether OpenCode connected to an MCP server it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpConnection {
    /// Connected: its tools are offered.
    Connected,
    /// Not connected, and OpenCode's reason.
    Failed(String),
}

/// One page of [`OpenCodeClient::list_sessions_page`].
#[derive(Debug, Default)]
pub struct SessionPage {
    /// The sessions, most recently updated first.
    pub sessions: Vec<Session>,
    /// Where the next page starts (`None`: this was the last one).
    pub next: Option<u64>,
    /// The server's clock when it answered (epoch ms), when it said.
    pub server_now_ms: Option<u64>,
}

/// A cheap-to-clone client for one OpenCode server.
#[derive(Clone)]
pub struct OpenCodeClient {
    http: reqwest::Client,
    base: Url,
    username: String,
    password: Option<String>,
    directory: Option<String>,
    timeout: Duration,
    retry_attempts: u32,
}

impl OpenCodeClient {
    /// Builds a client (TCP_NODELAY on, connect timeout from config).
    pub fn new(config: &OpenCodeConfig) -> Result<Self, UpstreamError> {
        let base_url = config
            .base_url
            .as_deref()
            .ok_or_else(|| UpstreamError::Unreachable("no OpenCode URL configured".into()))?;
        let mut base = Url::parse(base_url)
            .map_err(|e| UpstreamError::Unreachable(format!("bad base URL: {e}")))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| UpstreamError::Unreachable(format!("cannot build HTTP client: {e}")))?;
        Ok(OpenCodeClient {
            http,
            base,
            username: config.username.clone(),
            password: config.password.clone(),
            directory: config.directory.clone(),
            timeout: config.request_timeout,
            retry_attempts: config.retry_attempts.max(1),
        })
    }

    /// The same client for project directory `dir` (sent as `x-opencode-directory`; `None`
    /// keeps the configured one).
    pub fn in_directory(&self, dir: Option<&str>) -> OpenCodeClient {
        let mut scoped = self.clone();
        if let Some(dir) = dir {
            scoped.directory = Some(dir.to_string());
        }
        scoped
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone());
        let mut rb = self.http.request(method, url);
        if let Some(password) = &self.password {
            rb = rb.basic_auth(&self.username, Some(password));
        }
        if let Some(dir) = &self.directory {
            rb = rb.header("x-opencode-directory", dir);
        }
        rb
    }

    async fn send(
        &self,
        what: &str,
        rb: RequestBuilder,
    ) -> Result<reqwest::Response, UpstreamError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| UpstreamError::from_reqwest(what, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = upstream_message(&body).unwrap_or_else(|| {
            // Not OpenCode's JSON error (a proxy page, a stack trace): log it, don't forward it.
            if !body.is_empty() {
                tracing::debug!(what, %status, body = %body.chars().take(2000).collect::<String>(), "non-JSON upstream error body");
            }
            status.canonical_reason().unwrap_or("error").to_string()
        });
        Err(match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound(message),
            _ => UpstreamError::Status {
                status: status.as_u16(),
                message: format!("{what}: {message}"),
            },
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        rb: RequestBuilder,
        timeout: Duration,
    ) -> Result<T, UpstreamError> {
        let fut = async {
            let resp = self.send(what, rb).await?;
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| UpstreamError::from_reqwest(what, e))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| UpstreamError::Decode(format!("{what}: {e}")))
        };
        let result = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| UpstreamError::Timeout(format!("{what} took longer than {timeout:?}")))
            .and_then(|r| r);
        if let Err(e) = &result {
            crate::metrics::upstream_error(e.kind());
        }
        result
    }

    /// Runs an idempotent call up to `retry_attempts` times with exponential backoff.
    async fn retrying<T, F, Fut>(&self, what: &str, f: F) -> Result<T, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.retrying_if(what, UpstreamError::is_transient, f).await
    }

    /// Like [`retrying`](Self::retrying) for calls that create something (session create,
    /// fork): never resent after a timeout or a broken exchange, which may have created it.
    async fn retrying_creation<T, F, Fut>(&self, what: &str, f: F) -> Result<T, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.retrying_if(what, UpstreamError::is_safe_to_resend, f)
            .await
    }

    async fn retrying_if<T, F, Fut>(
        &self,
        what: &str,
        retry: fn(&UpstreamError) -> bool,
        f: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if retry(&e) && attempt < self.retry_attempts => {
                    tracing::debug!(what, attempt, error = %e, "retrying upstream call");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 3).min(Duration::from_secs(2));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// A decoder of one run's events (see [`RunDecoder`]): its messages are those newer than
    /// `history end`, on a session created for it (`fresh`) or reused.
    pub fn run_decoder(&self, history_end: Option<String>, fresh: bool) -> RunDecoder {
        RunDecoder::new(history_end, fresh)
    }

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

    /// `POST /session` with a title (a title spares OpenCode a title-generation model call) and
    /// metadata, which carries the gateway's creation marker (`{"portatek":{"create":…}}`) by
    /// which a session created by a call that timed out can be found later.
    pub async fn create_session_with(
        &self,
        title: &str,
        metadata: &Value,
    ) -> Result<Session, UpstreamError> {
        let body = serde_json::json!({ "title": title, "metadata": metadata });
        self.retrying_creation("create session", || {
            self.json(
                "create session",
                self.request(Method::POST, "session").json(&body),
                self.timeout,
            )
        })
        .await
    }

    /// `GET /session?search=…&limit=…[&start=…]`: up to `limit` sessions whose title contains
    /// `search` (case-insensitively), updated at or after `since_ms` when given (OpenCode lists
    /// only its 100 newest sessions unless told otherwise).
    pub async fn search_sessions(
        &self,
        search: &str,
        limit: usize,
        since_ms: Option<u64>,
    ) -> Result<Vec<Session>, UpstreamError> {
        let mut query = vec![("search", search.to_string()), ("limit", limit.to_string())];
        if let Some(ms) = since_ms {
            query.push(("start", ms.to_string()));
        }
        self.retrying("list sessions", || {
            self.json(
                "list sessions",
                self.request(Method::GET, "session").query(&query),
                self.timeout,
            )
        })
        .await
    }

    /// One page of the sessions of *every* project directory whose title contains `search`,
    /// most recently updated first, `limit` at most, each updated at or after `since` and
    /// before `before` (epoch ms) when given: `GET /experimental/session` (its `x-next-cursor`
    /// header is the next page's `before`). On a server without that route, `GET /session`
    /// (this client's project only, one page). The page also carries the server's clock (its
    /// `Date` header), so that idle times are measured on the clock that wrote `time.updated`.
    pub async fn list_sessions_page(
        &self,
        search: &str,
        limit: usize,
        since: Option<u64>,
        before: Option<u64>,
    ) -> Result<SessionPage, UpstreamError> {
        let mut query = vec![("search", search.to_string()), ("limit", limit.to_string())];
        if let Some(ms) = since {
            query.push(("start", ms.to_string()));
        }
        if let Some(ms) = before {
            query.push(("cursor", ms.to_string()));
        }
        let what = "list sessions";
        let page = self
            .retrying(what, || async {
                let rb = self
                    .request(Method::GET, "experimental/session")
                    .query(&query);
                let fut = async {
                    let resp = self.send(what, rb).await?;
                    let header = |name: &str| {
                        resp.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let next = header("x-next-cursor").and_then(|v| v.trim().parse::<u64>().ok());
                    let server_now_ms = header("date")
                        .and_then(|d| httpdate::parse_http_date(&d).ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64);
                    let bytes = resp
                        .bytes()
                        .await
                        .map_err(|e| UpstreamError::from_reqwest(what, e))?;
                    let sessions: Vec<Session> = serde_json::from_slice(&bytes)
                        .map_err(|e| UpstreamError::Decode(format!("{what}: {e}")))?;
                    Ok(SessionPage {
                        sessions,
                        next,
                        server_now_ms,
                    })
                };
                let result = tokio::time::timeout(self.timeout, fut)
                    .await
                    .map_err(|_| {
                        UpstreamError::Timeout(format!(
                            "{what} took longer than {:?}",
                            self.timeout
                        ))
                    })
                    .and_then(|r| r);
                // A 404 is an older server without the route (asked again below), not a fault.
                if let Some(e) = result
                    .as_ref()
                    .err()
                    .filter(|e| !matches!(e, UpstreamError::NotFound(_)))
                {
                    crate::metrics::upstream_error(e.kind());
                }
                result
            })
            .await;
        match page {
            Err(UpstreamError::NotFound(_)) => {
                let mut sessions = self.search_sessions(search, limit, since).await?;
                sessions.retain(|s| before.is_none_or(|b| s.updated_ms() < b));
                Ok(SessionPage {
                    sessions,
                    next: None,
                    server_now_ms: None,
                })
            }
            other => other,
        }
    }

    /// `PATCH /session/:id {metadata}`: replaces the session's metadata.
    pub async fn set_session_metadata(
        &self,
        id: &str,
        metadata: &Value,
    ) -> Result<(), UpstreamError> {
        let body = serde_json::json!({ "metadata": metadata });
        self.retrying("update session", || async {
            let _: Value = self
                .json(
                    "update session",
                    self.request(Method::PATCH, &format!("session/{id}"))
                        .json(&body),
                    self.timeout,
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// `GET /session/:id`.
    pub async fn session(&self, id: &str) -> Result<Session, UpstreamError> {
        self.retrying("get session", || {
            self.json(
                "get session",
                self.request(Method::GET, &format!("session/{id}")),
                self.timeout,
            )
        })
        .await
    }

    /// `DELETE /session/:id`.
    pub async fn delete_session(&self, id: &str) -> Result<(), UpstreamError> {
        self.retrying("delete session", || async {
            let _: Value = self
                .json(
                    "delete session",
                    self.request(Method::DELETE, &format!("session/{id}")),
                    self.timeout,
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// `POST /session/:id/fork`, optionally up to (excluding) a message.
    pub async fn fork(&self, id: &str, message_id: Option<&str>) -> Result<Session, UpstreamError> {
        let body = match message_id {
            Some(m) => serde_json::json!({ "messageID": m }),
            None => serde_json::json!({}),
        };
        self.retrying_creation("fork session", || {
            self.json(
                "fork session",
                self.request(Method::POST, &format!("session/{id}/fork"))
                    .json(&body),
                self.timeout,
            )
        })
        .await
    }

    /// `GET /session/:id/message`: the history as `[{info, parts}]`.
    pub async fn messages(&self, id: &str) -> Result<Vec<Value>, UpstreamError> {
        self.retrying("list messages", || {
            self.json(
                "list messages",
                self.request(Method::GET, &format!("session/{id}/message")),
                self.timeout,
            )
        })
        .await
    }

    /// The id of a session's newest message (None for an empty session).
    pub async fn newest_message_id(&self, id: &str) -> Result<Option<String>, UpstreamError> {
        let messages = self.messages(id).await?;
        Ok(messages
            .iter()
            .filter_map(|m| m.pointer("/info/id").and_then(Value::as_str))
            .max()
            .map(String::from))
    }

    /// Starts a run of `prompt` on session `id` (1.18: `POST /session/:id/prompt_async`; never
    /// retried).
    pub async fn prompt_async(&self, id: &str, prompt: &Prompt) -> Result<(), UpstreamError> {
        let body = types::PromptBody::from(prompt);
        let rb = self
            .request(Method::POST, &format!("session/{id}/prompt_async"))
            .json(&body);
        let sent = tokio::time::timeout(self.timeout, self.send("send prompt", rb))
            .await
            .map_err(|_| UpstreamError::Timeout("send prompt".into()))
            .and_then(|r| r);
        if let Err(e) = &sent {
            crate::metrics::upstream_error(e.kind());
        }
        sent.map(|_| ())
    }

    /// `POST /session/:id/abort`.
    pub async fn abort(&self, id: &str) -> Result<(), UpstreamError> {
        let _: Value = self
            .json(
                "abort session",
                self.request(Method::POST, &format!("session/{id}/abort")),
                self.timeout,
            )
            .await?;
        Ok(())
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

    /// `POST /permission/:id/reply {reply, message?}`: answers a pending permission request
    /// (`once`, `always` or `reject`).
    pub async fn reply_permission(
        &self,
        id: &str,
        reply: &str,
        message: Option<&str>,
    ) -> Result<(), UpstreamError> {
        let mut body = serde_json::json!({ "reply": reply });
        if let Some(m) = message {
            body["message"] = Value::String(m.to_string());
        }
        let _: Value = self
            .json(
                "reply to permission",
                self.request(Method::POST, &format!("permission/{id}/reply"))
                    .json(&body),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// `GET /session/status`: how many sessions of this client's directory are busy (or
    /// retrying) now.
    pub async fn busy_sessions(&self) -> Result<usize, UpstreamError> {
        let status: serde_json::Map<String, Value> = self
            .json(
                "session status",
                self.request(Method::GET, "session/status"),
                self.timeout,
            )
            .await?;
        Ok(status
            .values()
            .filter(|s| s["type"].as_str().is_some_and(|t| t != "idle"))
            .count())
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

    /// `POST /question/:id/reply {answers}`: answers a question of the agent.
    pub async fn reply_question(&self, id: &str, answers: &Value) -> Result<(), UpstreamError> {
        let body = serde_json::json!({ "answers": answers });
        let _: Value = self
            .json(
                "answer question",
                self.request(Method::POST, &format!("question/{id}/reply"))
                    .json(&body),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// `POST /question/:id/reject`: declines a question of the agent.
    pub async fn reject_question(&self, id: &str) -> Result<(), UpstreamError> {
        let _: Value = self
            .json(
                "reject question",
                self.request(Method::POST, &format!("question/{id}/reject")),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// Opens OpenCode's event stream and yields its events until the connection ends: `GET
    /// /global/event` (every project directory; its frames are unwrapped), or `GET /event` (the
    /// server's own directory) on a server without it.
    ///
    /// Only the connect and the response headers are bounded (by `headers_within`); the body is a
    /// long-lived stream whose liveness the caller watches (OpenCode sends a heartbeat every 10 s).
    pub async fn events(
        &self,
        headers_within: Duration,
    ) -> Result<impl Stream<Item = Result<Event, UpstreamError>> + Send + 'static, UpstreamError>
    {
        let subscribe = |path: &str| {
            let rb = self
                .request(Method::GET, path)
                .header("accept", "text/event-stream");
            tokio::time::timeout(headers_within, self.send("subscribe to events", rb))
        };
        let resp = match subscribe("global/event").await {
            Ok(Err(UpstreamError::NotFound(_))) => subscribe("event").await,
            other => other,
        }
        .map_err(|_| UpstreamError::Timeout("subscribe to events".into()))??;
        Ok(
            sse::data_of_events(resp.bytes_stream()).filter_map(|item| async move {
                match item {
                    Ok(data) if data.trim().is_empty() || is_sync_frame(&data) => None,
                    Ok(data) => Some(
                        serde_json::from_str::<Frame>(&data)
                            .map_err(|e| UpstreamError::Decode(format!("event: {e}")))
                            .and_then(|frame| {
                                frame.into_event().ok_or_else(|| {
                                    UpstreamError::Decode(
                                        "event: neither `type` nor `payload`".into(),
                                    )
                                })
                            }),
                    ),
                    Err(e) => Some(Err(e)),
                }
            }),
        )
    }
}
