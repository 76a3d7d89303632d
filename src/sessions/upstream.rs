//! The one place that talks to OpenCode about sessions: create, fork, look up, list, delete,
//! abort, read history — and the background clean-up (deletes and aborts off the request path)
//! that shutdown waits for.
//!
//! It also owns the two mappings every session caller needs: an upstream 404 on a session the
//! client named is that client's `session_not_found`, and a delete of a session that is already
//! gone is a success.
//!
//! Creates and forks run *detached* from the request that asked for them: a request cancelled
//! while OpenCode is still creating (the client gone, the run's deadline) does not lose the new
//! session — when it arrives with nobody left to take it, it is deleted at once. (A create or
//! fork that OpenCode completes only after the gateway's own call timed out is found later: a
//! create by the reaper's hunt, a pooled fork by the sweep, since a fork carries its source's
//! metadata and so its stamp.)

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::identity::Identity;
use super::reaper::Reaper;
use crate::error::ApiError;
use crate::opencode::{OpenCodeClient, Session, UpstreamError};
use crate::store::Store;

/// Session calls to OpenCode, plus tracked clean-up work. Cheap to clone.
#[derive(Clone)]
pub struct SessionUpstream {
    client: OpenCodeClient,
    cleanup: TaskTracker,
    reaper: Reaper,
    /// The state shared with other replicas (memory-only by default).
    store: Store,
    /// This upstream's name, as the shared store records it.
    name: String,
    /// Who this gateway is (stamped into the pooled sessions it creates).
    identity: Arc<Identity>,
}

/// The answer of a detached create or fork, for the request awaiting it. Dropped unread (the
/// request went away), it deletes a session that arrived meanwhile.
struct Awaited {
    rx: oneshot::Receiver<Result<Session, UpstreamError>>,
    upstream: SessionUpstream,
}

impl Drop for Awaited {
    fn drop(&mut self) {
        // Closed first, so that a session arriving from now on is deleted by the task instead.
        self.rx.close();
        if let Ok(Ok(session)) = self.rx.try_recv() {
            self.upstream
                .delete_later(session.id, "requester gone before the session arrived");
        }
    }
}

/// An upstream 404 on the session the client named → `session_not_found` for that id.
pub fn not_found_as_session(id: &str) -> impl FnOnce(UpstreamError) -> ApiError + '_ {
    move |e| match e {
        UpstreamError::NotFound(_) => ApiError::session_not_found(id),
        e => e.into(),
    }
}

impl SessionUpstream {
    /// Wraps the client of upstream `name`, sharing state through `store`; pooled sessions are
    /// stamped with `identity`.
    pub fn new(
        client: OpenCodeClient,
        store: Store,
        name: String,
        identity: Arc<Identity>,
    ) -> SessionUpstream {
        SessionUpstream {
            reaper: Reaper::new(client.clone()),
            client,
            cleanup: TaskTracker::new(),
            store,
            name,
            identity,
        }
    }

    /// Who this gateway is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The client (for listings the sweep makes).
    pub(super) fn client(&self) -> &OpenCodeClient {
        &self.client
    }

    /// The state shared with other replicas.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What retries failed deletes and finds sessions of lost creates.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// `POST /session` with a title, in project directory `dir` (`None`: the configured one).
    /// When the call fails in a way that may still have created the session (timed out,
    /// connection lost mid-call), the reaper hunts it down later.
    pub async fn create(&self, title: &str, dir: Option<&str>) -> Result<Session, UpstreamError> {
        self.create_with(title, serde_json::Map::new(), dir).await
    }

    /// The stamp of a pooled session made here: this gateway's identity and this upstream's
    /// name (so that only this upstream's sweep considers it, even were two upstreams one
    /// OpenCode).
    pub fn stamp(&self) -> serde_json::Map<String, Value> {
        let mut stamp = self.identity.stamp();
        stamp.insert("upstream".into(), Value::String(self.name.clone()));
        stamp
    }

    /// Creates a pooled session: like [`create`](Self::create), with this gateway's
    /// [`stamp`](Self::stamp) for the sweep.
    pub async fn create_pooled(
        &self,
        title: &str,
        dir: Option<&str>,
    ) -> Result<Session, UpstreamError> {
        self.create_with(title, self.stamp(), dir).await
    }

    /// Like [`create`](Self::create), with more of the gateway's metadata (the `portatek`
    /// object of the session's metadata, beside the creation marker).
    pub async fn create_with(
        &self,
        title: &str,
        mut ours: serde_json::Map<String, Value>,
        dir: Option<&str>,
    ) -> Result<Session, UpstreamError> {
        let marker = uuid::Uuid::new_v4().simple().to_string();
        ours.insert("create".into(), Value::String(marker.clone()));
        let metadata = serde_json::json!({ "portatek": ours });
        let client = self.client.in_directory(dir);
        let (reaper, title) = (self.reaper.clone(), title.to_string());
        self.detached(async move {
            let started = Reaper::create_started();
            let created = client.create_session_with(&title, &metadata).await;
            if let Err(UpstreamError::Timeout(_) | UpstreamError::Unreachable(_)) = &created {
                reaper.hunt(&title, &marker, started);
            }
            created
        })
        .await
    }

    /// Copies a session, up to (excluding) `before` when given. The copy carries the source's
    /// metadata (its stamp too).
    pub async fn fork(&self, id: &str, before: Option<&str>) -> Result<Session, UpstreamError> {
        let (client, id, before) = (
            self.client.clone(),
            id.to_string(),
            before.map(str::to_string),
        );
        self.detached(async move { client.fork(&id, before.as_deref()).await })
            .await
    }

    /// Runs a call that makes a session apart from the request awaiting it (see the module
    /// docs): a session that arrives after the request went away is deleted.
    async fn detached<F>(&self, work: F) -> Result<Session, UpstreamError>
    where
        F: Future<Output = Result<Session, UpstreamError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        self.cleanup.spawn(async move {
            if let Err(Ok(session)) = tx.send(work.await) {
                this.delete_later(session.id, "requester gone before the session arrived");
            }
        });
        let mut awaited = Awaited {
            rx,
            upstream: self.clone(),
        };
        (&mut awaited.rx).await.unwrap_or_else(|_| {
            Err(UpstreamError::Unreachable(
                "the session call ended without an answer".into(),
            ))
        })
    }

    /// Stamps a pooled session with this gateway's identity (it took the session over from
    /// another replica): from now on the sweep counts it as this gateway's. Replaces the
    /// session's metadata (a pooled session's is the stamp and the creation marker alone).
    pub async fn restamp(&self, id: &str) -> Result<(), UpstreamError> {
        let metadata = serde_json::json!({ "portatek": self.stamp() });
        self.client.set_session_metadata(id, &metadata).await
    }

    /// Deletes a session the sweep found orphaned; whether this call deleted it (`false`: it
    /// was gone already, or could not be deleted now and is left to the reaper, which retries
    /// until it can).
    pub async fn delete_swept(&self, id: &str) -> bool {
        match self.client.delete_session(id).await {
            Ok(()) => true,
            Err(UpstreamError::NotFound(_)) => false,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "could not delete an orphaned OpenCode session; will retry");
                self.reaper.retry_delete(id.to_string());
                false
            }
        }
    }

    /// One session.
    pub async fn get(&self, id: &str) -> Result<Session, UpstreamError> {
        self.client.session(id).await
    }

    /// Up to `limit` sessions whose title contains `text`.
    pub async fn search(&self, text: &str, limit: usize) -> Result<Vec<Session>, UpstreamError> {
        self.client.search_sessions(text, limit, None).await
    }

    /// Replaces a session's metadata.
    pub async fn set_metadata(&self, id: &str, metadata: &Value) -> Result<(), UpstreamError> {
        self.client.set_session_metadata(id, metadata).await
    }

    /// A session's history as OpenCode's `[{info, parts}]`.
    pub async fn messages(&self, id: &str) -> Result<Vec<Value>, UpstreamError> {
        self.client.messages(id).await
    }

    /// The id of a session's newest message (None for an empty session).
    pub async fn newest_message_id(&self, id: &str) -> Result<Option<String>, UpstreamError> {
        self.client.newest_message_id(id).await
    }

    /// Stops whatever runs on the session (OpenCode answers `true` even when nothing runs).
    pub async fn abort(&self, id: &str) -> Result<(), UpstreamError> {
        self.client.abort(id).await
    }

    /// Deletes a session; one that is already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), UpstreamError> {
        match self.client.delete_session(id).await {
            Ok(()) | Err(UpstreamError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a session off the request path; one that cannot be deleted now (OpenCode down
    /// or frozen) is retried by the reaper until it can.
    pub fn delete_later(&self, session_id: String, why: &'static str) {
        let this = self.clone();
        self.cleanup.spawn(async move {
            match this.delete(&session_id).await {
                Ok(()) => tracing::debug!(session = %session_id, why, "deleted OpenCode session"),
                Err(e) => {
                    tracing::warn!(session = %session_id, why, error = %e, "could not delete OpenCode session; will retry");
                    this.reaper.retry_delete(session_id);
                }
            }
        });
    }

    /// Runs clean-up work (an abort after a client left, say) that shutdown waits for.
    pub fn spawn_cleanup<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.cleanup.spawn(work);
    }

    /// Waits for every clean-up task, accepting no new ones.
    pub async fn drain_cleanup(&self) {
        self.cleanup.close();
        self.cleanup.wait().await;
    }
}
