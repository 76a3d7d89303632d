//! Where responses live: in the OpenCode sessions that produced them.
//!
//! A stored response's record (the `response` object, its input items, the user message it
//! answered) is kept in its session's metadata, beside the owner:
//! `{"portatek": {"create", "owner", "responses": [records…], "latest": "resp_…"}}`. Response ids
//! carry their session (`resp_<session>_<nonce>`), so any gateway process — a restarted one, a
//! replica — finds a response from its id alone, and checks the key against the owner. Nothing
//! is held in the gateway's memory but a cache. Sessions of responses expire like pooled ones
//! (idle for `responses.ttl_secs`, and at most `responses.max_sessions`), by a sweep over
//! OpenCode's own session list, so the bound survives restarts too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, ClientId};
use crate::error::ApiError;
use crate::openai::ResponseObject;
use crate::opencode::Session;
use crate::sessions::{is_session_id, Claims, Lease, SessionUpstream};
use crate::sync::lock;

/// Most records kept in one session; the oldest are forgotten beyond it (their ids answer 404).
const MAX_RECORDS_PER_SESSION: usize = 200;
/// Input item content longer than this is stored shortened (its images, mostly).
const MAX_STORED_STRING: usize = 16 * 1024;

/// A stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The response as answered.
    pub response: ResponseObject,
    /// Its input items.
    pub input: Vec<Value>,
    /// The user message its run answered (`None` for a response that continued a run with tool
    /// results): a branch from an earlier response forks just before it.
    pub start: Option<String>,
}

/// A response found in its session.
pub struct Found {
    /// The session.
    pub session: Session,
    /// Every record of the session.
    pub records: Vec<Record>,
    /// Which one was asked for.
    pub index: usize,
    /// The session's latest response.
    pub latest: Option<String>,
}

impl Found {
    /// The response asked for.
    pub fn record(&self) -> &Record {
        &self.records[self.index]
    }
}

/// A response running now.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its session.
    pub session_id: String,
    /// Its key.
    pub owner: ClientId,
    /// The response as it started.
    pub snapshot: ResponseObject,
    /// The client cancelled it.
    pub cancelled: bool,
}

/// Responses in OpenCode sessions; cheap to clone.
#[derive(Clone)]
pub struct SavedResponses {
    upstream: SessionUpstream,
    claims: Claims,
    title: String,
    ttl: Duration,
    max_sessions: usize,
    /// Responses running now, by id (for `GET` and `cancel` while they run).
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// How long the shared store keeps a running response (a replica that dies mid-run
    /// leaves it no longer than this).
    running_ttl: Duration,
}

/// A running response as the shared store keeps it, for the other replicas' `GET`.
#[derive(Serialize, Deserialize)]
struct SharedRunning {
    owner: String,
    session_id: String,
    snapshot: ResponseObject,
}

/// A response id for a new response in `session_id`.
pub fn new_id(session_id: &str) -> String {
    let rest = session_id.strip_prefix("ses_").unwrap_or(session_id);
    format!(
        "resp_{rest}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// A response id not tied to a session (`store: false`).
pub fn unstored_id() -> String {
    format!("resp_{}", uuid::Uuid::new_v4().simple())
}

/// The session a response id names, if it is well formed.
pub fn session_of(id: &str) -> Option<String> {
    let rest = id.strip_prefix("resp_")?;
    let (session, nonce) = rest.rsplit_once('_')?;
    if nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let session = format!("ses_{session}");
    is_session_id(&session).then_some(session)
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("No response found with id '{id}'."),
        code: "response_not_found",
    }
}

fn ours(session: &Session) -> Map<String, Value> {
    session
        .metadata
        .as_ref()
        .and_then(|m| m.get("portatek"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn owner_tag(client: &ClientId) -> String {
    client.0.to_string()
}

/// Input items as stored: long strings (base64 images) shortened.
fn shortened(items: &[Value]) -> Vec<Value> {
    fn walk(v: &Value) -> Value {
        match v {
            Value::String(s) if s.len() > MAX_STORED_STRING => Value::String(format!(
                "{}…[{} bytes not stored]",
                &s[..s.floor_char_boundary(256)],
                s.len()
            )),
            Value::Array(a) => Value::Array(a.iter().map(walk).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), walk(v))).collect())
            }
            other => other.clone(),
        }
    }
    items.iter().map(walk).collect()
}

impl SavedResponses {
    /// A store over `upstream`'s sessions, titled `title`; a response runs for at most
    /// `running_ttl`.
    pub fn new(
        upstream: SessionUpstream,
        title: String,
        ttl: Duration,
        max_sessions: usize,
        running_ttl: Duration,
    ) -> Self {
        SavedResponses {
            claims: Claims::new(upstream.clone()),
            upstream,
            title,
            ttl,
            max_sessions,
            running: Arc::default(),
            running_ttl,
        }
    }

    /// A new session for a new conversation of `client`, claimed for its first response.
    pub async fn open(&self, client: &ClientId, dir: Option<&str>) -> Result<Lease, ApiError> {
        let mut ours = Map::new();
        ours.insert("owner".into(), Value::String(owner_tag(client)));
        ours.insert("responses".into(), json!([]));
        let session = self.upstream.create_with(&self.title, ours, dir).await?;
        let mut lease = self.claims.claim(&session.id).await?;
        lease.seed = crate::sessions::Seed::WholeHistory;
        Ok(lease)
    }

    /// `caller`'s response `id` (an admin's: any), with its session (404 when missing or
    /// another key's).
    pub async fn find(&self, caller: &Caller, id: &str) -> Result<Found, ApiError> {
        let session_id = session_of(id).ok_or_else(|| not_found(id))?;
        let session = match self.upstream.get(&session_id).await {
            Ok(s) if s.id == session_id => s,
            Ok(_) | Err(crate::opencode::UpstreamError::NotFound(_)) => return Err(not_found(id)),
            Err(e) => return Err(e.into()),
        };
        let meta = ours(&session);
        let owner = meta.get("owner").and_then(Value::as_str);
        if !caller.is_admin() && owner != Some(owner_tag(&caller.id).as_str()) {
            return Err(not_found(id));
        }
        let records: Vec<Record> = meta
            .get("responses")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        let index = records
            .iter()
            .position(|r| r.response.id == id)
            .ok_or_else(|| not_found(id))?;
        let latest = meta.get("latest").and_then(Value::as_str).map(String::from);
        Ok(Found {
            session,
            records,
            index,
            latest,
        })
    }

    /// Claims the session to continue `client`'s response `previous`: its own session when it
    /// is the latest there, else a fork holding the conversation up to it (both branches live).
    pub async fn continue_from(&self, caller: &Caller, previous: &str) -> Result<Lease, ApiError> {
        let found = self.find(caller, previous).await?;
        // A branch belongs to whoever owns the conversation (an admin may branch anyone's).
        let owner = ours(&found.session)
            .get("owner")
            .and_then(Value::as_str)
            .map_or_else(|| owner_tag(&caller.id), String::from);
        if found.latest.as_deref() == Some(previous) {
            return self.claims.claim(&found.session.id).await;
        }
        // The first later run's user message is where the branch leaves the conversation.
        let fork_point = found.records[found.index + 1..]
            .iter()
            .find_map(|r| r.start.clone())
            .ok_or_else(|| {
                ApiError::invalid(
                    "This response's tool calls were answered in a later response: continue from that one.",
                    Some("previous_response_id".into()),
                )
            })?;
        let fork = self
            .upstream
            .fork(&found.session.id, Some(&fork_point))
            .await?;
        let mut meta = Map::new();
        meta.insert("owner".into(), Value::String(owner));
        meta.insert("responses".into(), json!([]));
        meta.insert("latest".into(), Value::String(previous.to_string()));
        if let Err(e) = self
            .upstream
            .set_metadata(&fork.id, &json!({ "portatek": meta }))
            .await
        {
            self.upstream.delete_later(fork.id, "unusable branch");
            return Err(e.into());
        }
        let history_end = self
            .upstream
            .newest_message_id(&fork.id)
            .await
            .unwrap_or(None);
        self.claims.set_history_end(&fork.id, history_end);
        self.claims.claim(&fork.id).await
    }

    /// Records a finished response in its session (it becomes the latest there).
    pub async fn save(&self, session_id: &str, record: Record) -> Result<(), ApiError> {
        let session = self.upstream.get(session_id).await?;
        let mut meta = ours(&session);
        let mut records: Vec<Value> = meta
            .get("responses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let id = record.response.id.clone();
        let mut record = record;
        record.input = shortened(&record.input);
        records.push(serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?);
        if records.len() > MAX_RECORDS_PER_SESSION {
            records.drain(..records.len() - MAX_RECORDS_PER_SESSION);
        }
        meta.insert("responses".into(), Value::Array(records));
        meta.insert("latest".into(), Value::String(id));
        Ok(self
            .upstream
            .set_metadata(session_id, &json!({ "portatek": meta }))
            .await?)
    }

    /// Deletes `client`'s response `id`; the session goes with its last response.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        let found = self.find(caller, id).await?;
        let session_id = found.session.id.clone();
        // Not while a response runs there (its record would be written over this change).
        let lease = self.claims.claim(&session_id).await?;
        let mut records = found.records;
        records.remove(found.index);
        if records.is_empty() {
            self.upstream.delete(&session_id).await?;
            self.claims.forget(&session_id);
        } else {
            let mut meta = ours(&found.session);
            let values: Vec<Value> = records
                .iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect();
            meta.insert("responses".into(), Value::Array(values));
            if found.latest.as_deref() == Some(id) {
                meta.remove("latest");
            }
            self.upstream
                .set_metadata(&session_id, &json!({ "portatek": meta }))
                .await?;
        }
        lease.free();
        Ok(())
    }

    /// Marks a response running (until [`finished`](Self::finished)), here and, with a shared
    /// store, for every replica (until [`unshare`](Self::unshare)).
    pub async fn started(&self, running: Running) {
        let store = self.upstream.store();
        if store.is_shared() {
            let shared = SharedRunning {
                owner: running.owner.0.to_string(),
                session_id: running.session_id.clone(),
                snapshot: running.snapshot.clone(),
            };
            if let Ok(json) = serde_json::to_string(&shared) {
                let id = &running.snapshot.id;
                if let Err(e) = store
                    .set_running_response(id, &json, self.running_ttl)
                    .await
                {
                    tracing::debug!(response = %id, error = %e, "running response not shared");
                }
            }
        }
        lock(&self.running).insert(running.snapshot.id.clone(), running);
    }

    /// `id` no longer runs anywhere (after it was stored, so a `GET` finds one or the other).
    pub async fn unshare(&self, id: &str) {
        let store = self.upstream.store();
        if store.is_shared() {
            if let Err(e) = store.forget_running_response(id).await {
                tracing::debug!(response = %id, error = %e, "running response not unshared");
            }
        }
    }

    /// `caller`'s response `id` (an admin's: any) as it started, if it runs now here or, with a
    /// shared store, on another replica.
    pub async fn running_anywhere(&self, caller: &Caller, id: &str) -> Option<ResponseObject> {
        if let Some(r) = self.running(caller, id) {
            return Some(r.snapshot);
        }
        let store = self.upstream.store();
        if !store.is_shared() {
            return None;
        }
        let json = store.running_response(id).await.ok().flatten()?;
        let shared: SharedRunning = serde_json::from_str(&json).ok()?;
        (caller.is_admin() || *shared.owner == *caller.id.0).then_some(shared.snapshot)
    }

    /// `id` is no longer running; returns whether it was cancelled.
    pub fn finished(&self, id: &str) -> bool {
        lock(&self.running).remove(id).is_some_and(|r| r.cancelled)
    }

    /// Marks `id` cancelled (its run is being aborted).
    pub fn mark_cancelled(&self, id: &str) {
        if let Some(r) = lock(&self.running).get_mut(id) {
            r.cancelled = true;
        }
    }

    /// `caller`'s response `id` (an admin's: any), if it runs now.
    pub fn running(&self, caller: &Caller, id: &str) -> Option<Running> {
        lock(&self.running)
            .get(id)
            .filter(|r| caller.is_admin() || r.owner == caller.id)
            .cloned()
    }

    /// Stops `session_id`'s run (a client cancelling a response).
    pub async fn abort(&self, session_id: &str) -> Result<(), ApiError> {
        Ok(self.upstream.abort(session_id).await?)
    }

    /// Deletes sessions of responses idle longer than the TTL, and the oldest beyond the cap,
    /// every `every` until `shutdown`.
    pub fn spawn_sweeper(&self, every: Duration, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = this.sweep().await {
                    tracing::debug!(error = %e, "sweep of response sessions failed");
                }
            }
        });
    }

    /// One sweep (see [`spawn_sweeper`](Self::spawn_sweeper)).
    pub async fn sweep(&self) -> Result<usize, ApiError> {
        let listed = self
            .upstream
            .search(&self.title, self.max_sessions * 2 + 100)
            .await?;
        let mut mine: Vec<(u64, String)> = listed
            .into_iter()
            .filter(|s| ours(s).contains_key("responses"))
            .map(|s| (s.updated_ms(), s.id))
            .collect();
        mine.sort();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let cutoff = now_ms.saturating_sub(self.ttl.as_millis() as u64);
        let over = mine.len().saturating_sub(self.max_sessions);
        let mut deleted = 0;
        for (i, (updated, id)) in mine.into_iter().enumerate() {
            let busy = lock(&self.running).values().any(|r| r.session_id == id);
            if (i < over || updated < cutoff) && !busy {
                self.upstream.delete_later(id.clone(), "responses expired");
                self.claims.forget(&id);
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "expired response sessions");
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_carry_their_session() {
        let id = new_id("ses_de1b5e886ffepPpVYB0d7o3k6l");
        assert!(id.starts_with("resp_de1b5e886ffepPpVYB0d7o3k6l_"));
        assert_eq!(
            session_of(&id).as_deref(),
            Some("ses_de1b5e886ffepPpVYB0d7o3k6l")
        );
        assert_eq!(session_of(&unstored_id()), None);
        for bad in [
            "",
            "resp_",
            "resp_x_y",
            "resp_../ses_abcdefghijkl_0123456789abcdef",
            "msg_1",
        ] {
            assert_eq!(session_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn long_inputs_are_stored_shortened() {
        let big = "A".repeat(MAX_STORED_STRING + 1);
        let stored = shortened(&[json!({"content": [{"image_url": big}], "text": "keep"})]);
        let url = stored[0]["content"][0]["image_url"].as_str().unwrap();
        assert!(url.len() < 400 && url.contains("bytes not stored"), "{url}");
        assert_eq!(stored[0]["text"], "keep");
    }
}
