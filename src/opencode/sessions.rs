//! Sessions on the OpenCode server: create, find (by title, across project directories and
//! pages), read, update metadata, fork, delete, and read their message history. Separate from
//! the runs on them ([`super::runs`]) and from the transport ([`super::transport`]).

use reqwest::Method;
use serde_json::Value;

use super::{OpenCodeClient, Session, UpstreamError};

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

impl OpenCodeClient {
    /// `POST /session` with a title (a title spares OpenCode a title-generation model call) and
    /// metadata, which carries the gateway's creation marker (`{"portatek":{"create":…}}`) by
    /// which a session created by a call that timed out can be found later.
    pub async fn create_session_with(
        &self,
        title: &str,
        metadata: &Value,
    ) -> Result<Session, UpstreamError> {
        if self.is_v2().await {
            return self.v2_create_session(title, metadata).await;
        }
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
        if self.is_v2().await {
            return self
                .v2_list_sessions(search, limit, since_ms, None)
                .await
                .map(|p| p.sessions);
        }
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
        if self.is_v2().await {
            return self.v2_list_sessions(search, limit, since, before).await;
        }
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
        if self.is_v2().await {
            return self.v2_set_metadata(id, metadata).await;
        }
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
        if self.is_v2().await {
            return self.v2_session(id).await;
        }
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
        if self.is_v2().await {
            return self.v2_delete_session(id).await;
        }
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
        if self.is_v2().await {
            return self.v2_fork(id, message_id).await;
        }
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
        if self.is_v2().await {
            return self.v2_messages(id).await;
        }
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
        if self.is_v2().await {
            return self.v2_newest_message_id(id).await;
        }
        let messages = self.messages(id).await?;
        Ok(messages
            .iter()
            .filter_map(|m| m.pointer("/info/id").and_then(Value::as_str))
            .max()
            .map(String::from))
    }
}
