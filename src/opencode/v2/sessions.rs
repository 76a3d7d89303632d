//! 2.x sessions: create (with a client-chosen id, so a resend is safe), read, list by title
//! (cursor pages, filtered by update time here: 2.x has no `start`), update metadata, fork,
//! delete (204), and the stored messages (see [`super::messages`]).

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{OpenCodeClient, Session, SessionPage, UpstreamError};
use super::{new_id, Data};

/// Most pages one listing reads (2.x pages by opaque cursors, newest first).
const MAX_PAGES: usize = 20;

/// 2.x's `Session.Info`, the fields the gateway reads.
#[derive(Debug, Deserialize)]
pub(super) struct SessionInfo {
    id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default, rename = "parentID")]
    parent_id: Option<String>,
    #[serde(default)]
    location: Option<Value>,
    #[serde(default)]
    time: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

impl From<SessionInfo> for Session {
    fn from(s: SessionInfo) -> Session {
        Session {
            id: s.id,
            title: s.title,
            parent_id: s.parent_id,
            directory: s
                .location
                .as_ref()
                .and_then(|l| l.get("directory"))
                .and_then(Value::as_str)
                .map(String::from),
            time: s.time,
            metadata: s.metadata,
        }
    }
}

/// A page of `GET /api/session`.
#[derive(Debug, Deserialize)]
struct Page {
    data: Vec<SessionInfo>,
    #[serde(default)]
    cursor: Option<Value>,
}

impl OpenCodeClient {
    /// `POST /api/session {id, title, metadata, location?}`: the id is chosen here, so the
    /// create is idempotent and resent after any transient failure.
    pub(crate) async fn v2_create_session(
        &self,
        title: &str,
        metadata: &Value,
    ) -> Result<Session, UpstreamError> {
        let mut body = json!({ "id": new_id("ses", true), "title": title, "metadata": metadata });
        if let Some(dir) = &self.directory {
            body["location"] = json!({ "directory": dir });
        }
        let info: SessionInfo = self
            .retrying("create session", || async {
                let env: Data<SessionInfo> = self
                    .json(
                        "create session",
                        self.request(Method::POST, "api/session").json(&body),
                        self.timeout,
                    )
                    .await?;
                Ok(env.data)
            })
            .await?;
        Ok(info.into())
    }

    /// `GET /api/session/:id`.
    pub(crate) async fn v2_session(&self, id: &str) -> Result<Session, UpstreamError> {
        let info: SessionInfo = self
            .v2_read("get session", &format!("api/session/{id}"), &[])
            .await?;
        Ok(info.into())
    }

    /// Sessions whose title contains `search`, updated at or after `since` and before
    /// `before` (epoch ms), `limit` at most, newest first; `next` is the update time the next
    /// page starts before.
    pub(crate) async fn v2_list_sessions(
        &self,
        search: &str,
        limit: usize,
        since: Option<u64>,
        before: Option<u64>,
    ) -> Result<SessionPage, UpstreamError> {
        let mut found: Vec<Session> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut more = false;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("search", search.to_string()),
                ("limit", limit.clamp(1, 100).to_string()),
            ];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let page: Page = self
                .retrying("list sessions", || {
                    self.json(
                        "list sessions",
                        self.request(Method::GET, "api/session").query(&query),
                        self.timeout,
                    )
                })
                .await?;
            let count = page.data.len();
            found.extend(page.data.into_iter().map(Session::from).filter(|s| {
                since.is_none_or(|t| s.updated_ms() >= t)
                    && before.is_none_or(|b| s.updated_ms() < b)
            }));
            cursor = page
                .cursor
                .as_ref()
                .and_then(|c| c.get("next"))
                .and_then(Value::as_str)
                .map(String::from);
            more = cursor.is_some() && count > 0;
            if !more || found.len() >= limit {
                break;
            }
        }
        found.sort_by_key(|s| std::cmp::Reverse(s.updated_ms()));
        let next = match found.len() > limit || (more && found.len() == limit) {
            true => {
                found.truncate(limit);
                found.last().map(Session::updated_ms)
            }
            false => None,
        };
        Ok(SessionPage {
            sessions: found,
            next,
            server_now_ms: None,
        })
    }

    /// `PATCH /api/session/:id {metadata}` (204; replaces the metadata).
    pub(crate) async fn v2_set_metadata(
        &self,
        id: &str,
        metadata: &Value,
    ) -> Result<(), UpstreamError> {
        let body = json!({ "metadata": metadata });
        self.retrying("update session", || {
            self.v2_write(
                "update session",
                self.request(Method::PATCH, &format!("api/session/{id}"))
                    .json(&body),
            )
        })
        .await
    }

    /// `DELETE /api/session/:id` (204).
    pub(crate) async fn v2_delete_session(&self, id: &str) -> Result<(), UpstreamError> {
        self.settings.forget(id);
        self.retrying("delete session", || {
            self.v2_write(
                "delete session",
                self.request(Method::DELETE, &format!("api/session/{id}")),
            )
        })
        .await
    }

    /// `POST /api/session/:id/fork {before?}`.
    pub(crate) async fn v2_fork(
        &self,
        id: &str,
        before: Option<&str>,
    ) -> Result<Session, UpstreamError> {
        let body = match before {
            Some(m) => json!({ "before": m }),
            None => json!({}),
        };
        let info: SessionInfo = self
            .retrying_creation("fork session", || async {
                let env: Data<SessionInfo> = self
                    .json(
                        "fork session",
                        self.request(Method::POST, &format!("api/session/{id}/fork"))
                            .json(&body),
                        self.timeout,
                    )
                    .await?;
                Ok(env.data)
            })
            .await?;
        Ok(info.into())
    }

    /// Child sessions (`GET /api/session?parentID=`), in 1.18's list form.
    pub(crate) async fn v2_children(&self, id: &str) -> Result<Value, UpstreamError> {
        let page: Page = self
            .retrying("list child sessions", || {
                self.json(
                    "list child sessions",
                    self.request(Method::GET, "api/session")
                        .query(&[("parentID", id)]),
                    self.timeout,
                )
            })
            .await?;
        Ok(Value::Array(
            page.data
                .into_iter()
                .map(|s| serde_json::to_value(Session::from(s)).unwrap_or(Value::Null))
                .collect(),
        ))
    }
}
