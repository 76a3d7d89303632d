//! The session pool: maps OpenAI conversations onto OpenCode sessions.
//!
//! After a reply, the session is remembered under a fingerprint of the conversation so far
//! (caller, model, system prompt, every turn including the reply). A request whose history minus
//! its last user message matches a fingerprint takes that session out of the pool (exclusive
//! claim) and sends only the new message. A second request with the same history while the first
//! holds the session gets a fork of it. Idle entries expire by TTL (moka `time_to_idle`) or
//! capacity; the eviction listener deletes the session upstream off the request path.
//!
//! Pinned sessions (created through the session API, used with `x-session-id`) live beside the
//! cache and are never evicted; their owner is recorded upstream in their title, so they survive
//! a gateway restart.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ClientId;
use crate::config::SessionsConfig;
use crate::error::ApiError;
use crate::openai::{ContentPart, Message, Role};
use crate::opencode::{OpenCodeClient, Session, UpstreamError};

/// A SHA-256 fingerprint of a conversation prefix (collision-resistant: pooled sessions must
/// never be shared between different conversations, let alone different keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Feeds `Hash` implementations into SHA-256 (`finish` is never used).
struct Sha(Sha256);

impl Hasher for Sha {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

impl Fingerprint {
    /// Fingerprints `(caller, model, system, turns)`.
    pub fn of(client: &ClientId, model: &str, system: Option<&str>, turns: &[Message]) -> Self {
        let mut h = Sha(Sha256::new());
        client.hash(&mut h);
        model.hash(&mut h);
        system.hash(&mut h);
        turns.hash(&mut h);
        Fingerprint(h.0.finalize().into())
    }

    /// The fingerprint after appending the assistant's reply to `turns`.
    pub fn after_reply(
        client: &ClientId,
        model: &str,
        system: Option<&str>,
        turns: &[Message],
        reply: &str,
    ) -> Self {
        let mut all = turns.to_vec();
        all.push(Message {
            role: Role::Assistant,
            parts: vec![ContentPart::Text(reply.to_string())],
        });
        Self::of(client, model, system, &all)
    }
}

#[derive(Debug, Clone)]
struct Remembered {
    session_id: String,
    /// The newest message id of the remembered state (see [`Lease::floor`]).
    floor: Option<String>,
}

/// A remembered session currently in use, and where a fork of its remembered state must stop:
/// OpenCode's fork copies the messages *before* a given message id, so the fork point is the
/// claiming run's own user message, published once that run has learned its id.
#[derive(Debug, Clone)]
struct Claimed {
    session_id: String,
    fork_point: watch::Receiver<Option<String>>,
}

/// How long a concurrent request waits for the fork point before seeding a new session instead.
const FORK_POINT_WAIT: Duration = Duration::from_secs(5);

/// Local state of an explicit session (its ownership lives upstream, in its title).
#[derive(Debug, Default)]
struct Pinned {
    /// A request is running on it.
    busy: bool,
    /// The newest message id known to predate the next request (see [`Lease::floor`]).
    floor: Option<String>,
}

/// How the claimed session relates to the request's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// New session: send every prior turn along with the new message.
    Full,
    /// The session already holds the history: send only the last message.
    LastOnly,
}

#[derive(Debug)]
enum LeaseKind {
    /// From (or for) the conversation pool; `claimed` is the fingerprint it was claimed under.
    Pooled { claimed: Option<Fingerprint> },
    /// An explicit session.
    Pinned,
}

/// Exclusive use of one OpenCode session for one request. Hand it back with
/// [`SessionPool::release`]; a lease dropped without release is treated as a failure.
#[derive(Debug)]
pub struct Lease {
    /// The OpenCode session.
    pub session_id: String,
    /// What to send.
    pub seed: Seed,
    /// Messages with ids up to this one predate the request: their (late) events must not be
    /// taken for the run's own (OpenCode message ids ascend).
    pub floor: Option<String>,
    kind: LeaseKind,
    pool: Option<SessionPool>,
    fork_point: Option<watch::Sender<Option<String>>>,
    last_seen: Option<String>,
}

impl Lease {
    /// Records what the run has learned: its own user message id (where a concurrent request
    /// with the same history must fork this session: just before it) and the newest message id
    /// of the run (the next request's floor).
    pub fn observe(&mut self, user_message_id: Option<&str>, newest: Option<&str>) {
        if let (Some(tx), Some(id)) = (&self.fork_point, user_message_id) {
            tx.send_if_modified(|v| {
                let changed = v.as_deref() != Some(id);
                *v = Some(id.to_string());
                changed
            });
        }
        if let Some(id) = newest {
            if self.last_seen.as_deref().is_none_or(|seen| id > seen) {
                self.last_seen = Some(id.to_string());
            }
        }
    }
}

/// How a leased run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The run answered; remember the session under `fingerprint`.
    Answered {
        /// The conversation including the reply.
        fingerprint: Fingerprint,
    },
    /// The run failed or was abandoned: the session is discarded.
    Failed,
}

struct Inner {
    client: OpenCodeClient,
    cleanup: Cleanup,
    title: String,
    cache: Cache<Fingerprint, Remembered>,
    claimed: Mutex<HashMap<Fingerprint, Claimed>>,
    /// Serializes "take from the cache, mark claimed" so that a concurrent identical request
    /// always finds one or the other.
    claim_lock: tokio::sync::Mutex<()>,
    pinned: Mutex<HashMap<String, Pinned>>,
    max_explicit_per_key: usize,
    /// Makes "check the cap, then create" one step for explicit sessions.
    create_lock: tokio::sync::Mutex<()>,
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionPool")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Background clean-up upstream (deletes, aborts), tracked so shutdown can wait for it.
#[derive(Clone)]
struct Cleanup {
    client: OpenCodeClient,
    tasks: TaskTracker,
}

impl Cleanup {
    /// Deletes a session upstream off the request path, logging the outcome.
    fn delete_later(&self, session_id: String, why: &'static str) {
        let client = self.client.clone();
        self.tasks.spawn(async move {
            match client.delete_session(&session_id).await {
                Ok(()) | Err(UpstreamError::NotFound(_)) => {
                    tracing::debug!(session = %session_id, why, "deleted OpenCode session")
                }
                Err(e) => {
                    tracing::warn!(session = %session_id, why, error = %e, "could not delete OpenCode session")
                }
            }
        });
    }
}

impl SessionPool {
    /// Builds the pool; must be called inside a Tokio runtime.
    pub fn new(client: OpenCodeClient, title: String, config: &SessionsConfig) -> SessionPool {
        let cleanup = Cleanup {
            client: client.clone(),
            tasks: TaskTracker::new(),
        };
        let evict = cleanup.clone();
        let cache = Cache::builder()
            .max_capacity(config.max_capacity)
            .time_to_idle(Duration::from_secs(config.ttl_secs))
            .eviction_listener(move |_key, value: Remembered, cause| {
                let why = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Size => "capacity",
                    // Two branches answered alike: the newer session takes the entry.
                    RemovalCause::Replaced => "replaced",
                    // Explicit removal is a claim: the session is in use.
                    RemovalCause::Explicit => return,
                };
                evict.delete_later(value.session_id, why);
            })
            .build();
        SessionPool {
            inner: Arc::new(Inner {
                client,
                cleanup,
                title,
                cache,
                claimed: Mutex::new(HashMap::new()),
                claim_lock: tokio::sync::Mutex::new(()),
                pinned: Mutex::new(HashMap::new()),
                max_explicit_per_key: config.max_explicit_per_key,
                create_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Runs moka's pending maintenance (expiry, eviction) every second until `shutdown`.
    pub fn spawn_janitor(&self, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                this.inner.cache.run_pending_tasks().await;
            }
        });
    }

    /// Number of remembered (idle) conversations.
    pub fn remembered(&self) -> u64 {
        self.inner.cache.entry_count()
    }

    /// Claims a session for a conversation whose history before the new message is `prior`.
    pub async fn acquire(&self, prior: Fingerprint) -> Result<Lease, ApiError> {
        let guard = self.inner.claim_lock.lock().await;
        let remembered = self.inner.cache.remove(&prior).await;
        let mut fork_point = None;
        let busy = match &remembered {
            Some(r) => {
                let (tx, rx) = watch::channel(None);
                fork_point = Some(tx);
                let claim = Claimed {
                    session_id: r.session_id.clone(),
                    fork_point: rx,
                };
                lock(&self.inner.claimed).insert(prior, claim);
                None
            }
            None => lock(&self.inner.claimed).get(&prior).cloned(),
        };
        drop(guard);
        if let Some(r) = remembered {
            // Lease it at once: if this request is cancelled from here on, the lease's drop
            // deletes the session and releases the claim instead of leaking both.
            let mut lease = self.lease(r.session_id, Seed::LastOnly, Some(prior), r.floor);
            lease.fork_point = fork_point;
            match self.inner.client.session(&lease.session_id).await {
                Ok(_) => return Ok(lease),
                Err(e) => {
                    // Gone upstream (OpenCode restarted with fresh storage, or deleted) or not
                    // answering: discard it (the drop deletes it) and start over.
                    tracing::info!(session = %lease.session_id, error = %e, "remembered session unusable; starting a new one");
                    drop(lease);
                }
            }
        } else if let Some(claim) = busy {
            // The same history is in use right now (regenerate, retry, parallel branch):
            // fork the session as it was before the running request's message.
            if let Some(lease) = self.fork_claimed(claim).await {
                return Ok(lease);
            }
        }
        let session = self.inner.client.create_session(&self.inner.title).await?;
        Ok(self.lease(session.id, Seed::Full, None, None))
    }

    async fn fork_claimed(&self, mut claim: Claimed) -> Option<Lease> {
        let point =
            tokio::time::timeout(FORK_POINT_WAIT, claim.fork_point.wait_for(Option::is_some))
                .await
                .ok()?
                .ok()?
                .clone()?;
        let client = &self.inner.client;
        let fork = match client.fork(&claim.session_id, Some(&point)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %e, "fork failed; starting a new session");
                return None;
            }
        };
        // The fork's copies get fresh ids (and events that may still be in flight).
        match client.newest_message_id(&fork.id).await {
            Ok(floor) => Some(self.lease(fork.id, Seed::LastOnly, None, floor)),
            Err(e) => {
                tracing::info!(error = %e, "cannot read the fork; starting a new session");
                self.inner.cleanup.delete_later(fork.id, "unusable fork");
                None
            }
        }
    }

    fn lease(
        &self,
        session_id: String,
        seed: Seed,
        claimed: Option<Fingerprint>,
        floor: Option<String>,
    ) -> Lease {
        Lease {
            session_id,
            seed,
            floor,
            kind: LeaseKind::Pooled { claimed },
            pool: Some(self.clone()),
            fork_point: None,
            last_seen: None,
        }
    }

    fn free_pinned(&self, session_id: &str, last_seen: Option<String>) {
        if let Some(p) = lock(&self.inner.pinned).get_mut(session_id) {
            p.busy = false;
            if last_seen.is_some() {
                p.floor = last_seen;
            }
        }
    }

    /// Hands a lease back: an answered pooled session is remembered for the next turn, a failed
    /// one is deleted upstream, a pinned one becomes free again.
    pub async fn release(&self, mut lease: Lease, outcome: Outcome) {
        let Outcome::Answered { fingerprint } = outcome else {
            return drop(lease); // the drop discards it
        };
        match lease.kind {
            LeaseKind::Pinned => {
                lease.pool = None;
                self.free_pinned(&lease.session_id, lease.last_seen.take());
            }
            LeaseKind::Pooled { claimed } => {
                let remembered = Remembered {
                    session_id: lease.session_id.clone(),
                    floor: lease.last_seen.clone(),
                };
                // The lease stays armed until the entry is in: cancelled here, its drop
                // deletes the session instead of leaking it.
                self.inner.cache.insert(fingerprint, remembered).await;
                lease.pool = None;
                if let Some(fp) = claimed {
                    lock(&self.inner.claimed).remove(&fp);
                }
            }
        }
    }

    /// The failure path of [`release`](Self::release), run by a lease's drop.
    fn discard(&self, kind: LeaseKind, session_id: String, last_seen: Option<String>) {
        match kind {
            LeaseKind::Pinned => {
                // The run may still be going upstream (a prompt that timed out, a request cut
                // short): stop it before the session takes the next request, which OpenCode
                // would otherwise fold into this run.
                let pool = self.clone();
                self.inner.cleanup.tasks.spawn(async move {
                    if let Err(e) = pool.inner.client.abort(&session_id).await {
                        tracing::warn!(session = %session_id, error = %e, "abort failed");
                    }
                    pool.free_pinned(&session_id, last_seen);
                });
            }
            LeaseKind::Pooled { claimed } => {
                if let Some(fp) = claimed {
                    lock(&self.inner.claimed).remove(&fp);
                }
                self.inner.cleanup.delete_later(session_id, "run failed");
            }
        }
    }

    /// Runs clean-up work (an abort after a client left, say) that shutdown waits for.
    pub fn spawn_cleanup<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.cleanup.tasks.spawn(work);
    }

    /// On shutdown: waits for pending clean-up (aborts, deletes) and, with `delete_remembered`,
    /// deletes every remembered session upstream; all bounded by `within`.
    pub async fn shutdown(&self, delete_remembered: bool, within: Duration) {
        let work = async {
            if delete_remembered {
                let ids: Vec<String> = self.inner.cache.iter().map(|(_, r)| r.session_id).collect();
                self.inner.cache.invalidate_all();
                for id in &ids {
                    self.inner.cleanup.delete_later(id.clone(), "shutdown");
                }
                tracing::info!(count = ids.len(), "deleting pooled sessions");
            }
            self.inner.cleanup.tasks.close();
            self.inner.cleanup.tasks.wait().await;
        };
        if tokio::time::timeout(within, work).await.is_err() {
            tracing::warn!("shutdown clean-up did not finish in time");
        }
    }

    // ----- explicit (pinned) sessions -----
    //
    // Ownership lives upstream, in the session's title (`… [owner:<client id>]`, kept by
    // OpenCode's forks too), so explicit sessions survive a gateway restart and are shared by
    // gateway replicas; only the busy flag and the floor are local.

    fn owner_tag(owner: &ClientId) -> String {
        format!("[owner:{}]", owner.0)
    }

    /// A session title as shown to clients: without the owner tag.
    pub fn display_title(title: &str) -> String {
        let Some(start) = title.find(" [owner:") else {
            return title.to_string();
        };
        match title[start..].find(']') {
            Some(len) => format!("{}{}", &title[..start], &title[start + len + 1..]),
            None => title.to_string(),
        }
    }

    fn owns(owner: &ClientId, session: &Session) -> bool {
        session
            .title
            .as_deref()
            .is_some_and(|t| t.contains(&Self::owner_tag(owner)))
    }

    /// `owner`'s explicit session `id`; 404 when it does not exist or is another key's (never
    /// tell which).
    pub async fn owned(&self, owner: &ClientId, id: &str) -> Result<Session, ApiError> {
        // Only ids shaped like OpenCode's reach it (it answers 500 for others, and is lenient
        // with trailing slashes and queries that would alias one session under many names).
        if !is_session_id(id) {
            return Err(ApiError::session_not_found(id));
        }
        match self.inner.client.session(id).await {
            Ok(s) if Self::owns(owner, &s) && s.id == id => Ok(s),
            Ok(_) | Err(UpstreamError::NotFound(_)) => Err(ApiError::session_not_found(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// `owner`'s explicit sessions, oldest first.
    pub async fn list_owned(&self, owner: &ClientId) -> Result<Vec<Session>, ApiError> {
        // The cap bounds what one key holds; the margin covers creates racing the cap.
        let limit = self.inner.max_explicit_per_key * 2 + 16;
        let mut mine: Vec<Session> = self
            .inner
            .client
            .search_sessions(&Self::owner_tag(owner), limit)
            .await?
            .into_iter()
            .filter(|s| Self::owns(owner, s))
            .collect();
        mine.sort_by_key(|s| (s.created_secs(), s.id.clone()));
        Ok(mine)
    }

    /// 429 when `owner` already holds as many explicit sessions as allowed.
    async fn check_quota(&self, owner: &ClientId) -> Result<(), ApiError> {
        let held = self.list_owned(owner).await?.len();
        if held >= self.inner.max_explicit_per_key {
            return Err(ApiError::TooMany(format!(
                "This API key already holds {held} sessions, the limit; delete some first."
            )));
        }
        Ok(())
    }

    /// Creates an explicit session owned by `owner` (429 beyond the per-key limit).
    pub async fn create_pinned(&self, owner: &ClientId) -> Result<Session, ApiError> {
        let _one_at_a_time = self.inner.create_lock.lock().await;
        self.check_quota(owner).await?;
        let title = format!("{} {}", self.inner.title, Self::owner_tag(owner));
        Ok(self.inner.client.create_session(&title).await?)
    }

    /// Forks `owner`'s explicit session `id` into a new one with the same history, owned by
    /// the same key (OpenCode titles a fork after its source, owner tag included).
    pub async fn fork_pinned(&self, owner: &ClientId, id: &str) -> Result<Session, ApiError> {
        self.owned(owner, id).await?;
        let _one_at_a_time = self.inner.create_lock.lock().await;
        self.check_quota(owner).await?;
        let fork = self
            .inner
            .client
            .fork(id, None)
            .await
            .map_err(|e| match e {
                UpstreamError::NotFound(_) => ApiError::session_not_found(id),
                e => e.into(),
            })?;
        // The copies get fresh ids, and their events may still be in flight: remember the
        // newest so they are not taken for the next run's.
        let floor = self
            .inner
            .client
            .newest_message_id(&fork.id)
            .await
            .unwrap_or(None);
        lock(&self.inner.pinned)
            .entry(fork.id.clone())
            .or_default()
            .floor = floor;
        Ok(fork)
    }

    /// Forgets an explicit session's local state (after deleting it upstream).
    pub fn forget(&self, id: &str) {
        lock(&self.inner.pinned).remove(id);
    }

    /// Number of explicit sessions this gateway has local state for.
    pub fn pinned_count(&self) -> usize {
        lock(&self.inner.pinned).len()
    }

    /// Claims `owner`'s explicit session `id` for one request (409 while another runs on it).
    pub async fn acquire_pinned(&self, owner: &ClientId, id: &str) -> Result<Lease, ApiError> {
        self.owned(owner, id).await?;
        let mut pinned = lock(&self.inner.pinned);
        let p = pinned.entry(id.to_string()).or_default();
        if p.busy {
            return Err(ApiError::Conflict(format!(
                "Session {id} is already running a request; OpenCode runs one prompt per session at a time."
            )));
        }
        p.busy = true;
        Ok(Lease {
            session_id: id.to_string(),
            seed: Seed::LastOnly,
            floor: p.floor.clone(),
            kind: LeaseKind::Pinned,
            pool: Some(self.clone()),
            fork_point: None,
            last_seen: None,
        })
    }
}

/// Whether `id` looks like an OpenCode session id (`ses_` and 8 to 64 ASCII letters or digits).
pub fn is_session_id(id: &str) -> bool {
    id.strip_prefix("ses_").is_some_and(|rest| {
        (8..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let kind = std::mem::replace(&mut self.kind, LeaseKind::Pinned);
            let last_seen = self.last_seen.take();
            pool.discard(kind, std::mem::take(&mut self.session_id), last_seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, text: &str) -> Message {
        Message {
            role,
            parts: vec![ContentPart::Text(text.into())],
        }
    }

    #[test]
    fn session_ids_are_strict() {
        assert!(is_session_id("ses_de53ca663ffecb0lmdLoAGdUIz"));
        for bad in [
            "",
            "ses_",
            "nope",
            "ses_short",
            "ses_abcdefghij/",
            "ses_abcdefghij?x=1",
            "ses_abcdefgh%2F",
            "../ses_abcdefghij",
        ] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn owner_tags_are_hidden_from_titles() {
        assert_eq!(
            SessionPool::display_title("Chat [owner:k12] (fork #1)"),
            "Chat (fork #1)"
        );
        assert_eq!(SessionPool::display_title("Plain [x]"), "Plain [x]");
    }

    #[test]
    fn fingerprints_match_the_next_turns_prefix() {
        let c = ClientId("k".into());
        let turn1 = vec![msg(Role::User, "hi")];
        let after = Fingerprint::after_reply(&c, "m", Some("sys"), &turn1, "hello");
        let turn2 = [msg(Role::User, "hi"), msg(Role::Assistant, "hello")];
        assert_eq!(after, Fingerprint::of(&c, "m", Some("sys"), &turn2));
        assert_ne!(
            after,
            Fingerprint::of(&ClientId("other".into()), "m", Some("sys"), &turn2)
        );
        assert_ne!(after, Fingerprint::of(&c, "m2", Some("sys"), &turn2));
        assert_ne!(after, Fingerprint::of(&c, "m", None, &turn2));
        let edited = [msg(Role::User, "hi!"), msg(Role::Assistant, "hello")];
        assert_ne!(after, Fingerprint::of(&c, "m", Some("sys"), &edited));
    }
}
