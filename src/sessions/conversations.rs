//! The conversation pool: maps OpenAI conversations onto OpenCode sessions.
//!
//! After a reply, the session is remembered under a [`Fingerprint`] of the conversation so far
//! (caller, model, system prompt, every turn including the reply). A request whose history minus
//! its last user message matches a fingerprint takes that session out of the pool (exclusive
//! claim) and sends only the new message. A second request with the same history while the first
//! holds the session gets a fork of it. Idle entries expire by TTL (moka `time_to_idle`) or
//! capacity; the eviction listener deletes the session upstream off the request path.
//!
//! With a shared store (Redis), every remembered entry is also written there, and a claim
//! takes it from there (`GETDEL`: exactly one replica gets it), so a conversation continues on
//! whichever replica its next turn reaches. The local entry then only drives expiry: when it
//! expires, the replica deletes the store's entry *if it is still the one it wrote* and only
//! then the session upstream — so a session that moved on with another replica is never
//! deleted behind its back, and one that did not is deleted exactly once. With the store
//! unreachable, only entries made while it was unreachable are used (a shared one may be in use
//! elsewhere); the rest start over in a new session seeded with the history.
//!
//! Every pooled session carries its gateway's stamp (see [`super::identity`]); a replica that
//! takes a conversation over from another one stamps the session anew before using it, so the
//! stamp always names the gateway that holds it. What the pool holds — remembered entries and
//! sessions leased to running requests — it reports to the sweep
//! ([`ConversationPool::holds_session`]), which never deletes those. The pool's own ways of
//! losing a session end with the sweep: an entry that expires while Redis is unreachable (its
//! compare-and-delete cannot run), a fork OpenCode completes only after the gateway's call timed
//! out (a fork's metadata, and so its stamp, are its source's). A fork or create whose request
//! was cancelled meanwhile is deleted on arrival ([`SessionUpstream`]), and a request cancelled
//! between the shared store's take and the local claim puts the entry back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::fingerprint::Fingerprint;
use super::lease::{Lease, Owner, Seed};
use super::upstream::SessionUpstream;
use crate::config::SessionsConfig;
use crate::error::ApiError;
use crate::store::SharedConversation;
use crate::sync::lock;

/// How long a concurrent request waits for the fork point before seeding a new session instead.
const FORK_POINT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Remembered {
    session_id: String,
    /// The newest message id of the remembered state (see [`Lease::history end`]).
    history_end: Option<String>,
    /// The entry as written to the shared store (`None`: this process only).
    shared: Option<SharedConversation>,
}

/// How much longer the shared store keeps an entry than the local pool: the replica that wrote
/// it deletes it (and the session) when its own entry expires, so the store's copy must not
/// vanish first.
const SHARED_MARGIN: Duration = Duration::from_secs(60);

/// A remembered session currently in use, and where a fork of its remembered state must stop:
/// OpenCode's fork copies the messages *before* a given message id, so the fork point is the
/// claiming run's own user message, published once that run has learned its id.
#[derive(Debug, Clone)]
struct Claimed {
    session_id: String,
    fork_point: watch::Receiver<Option<String>>,
}

struct Inner {
    upstream: SessionUpstream,
    title: String,
    /// How long the shared store keeps an entry.
    shared_ttl: Duration,
    cache: Cache<Fingerprint, Remembered>,
    claimed: Mutex<HashMap<Fingerprint, Claimed>>,
    /// Serializes "take from the cache, mark claimed" so that a concurrent identical request
    /// always finds one or the other.
    claim_lock: tokio::sync::Mutex<()>,
    /// Sessions leased out now, with their number of leases (see
    /// [`ConversationPool::holds_session`]).
    in_use: Mutex<HashMap<String, usize>>,
}

/// An entry taken from the shared store and not yet claimed here: put back if the request is
/// cancelled in between, so that its writer still deletes the session at expiry.
struct Untaken {
    store: crate::store::Store,
    fingerprint: Fingerprint,
    entry: Option<SharedConversation>,
    ttl: Duration,
}

impl Drop for Untaken {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, fp, ttl) = (self.store.clone(), self.fingerprint, self.ttl);
        runtime.spawn(async move {
            let _ = store.put_conversation(fp.bytes(), &entry, ttl).await;
        });
    }
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct ConversationPool {
    inner: Arc<Inner>,
}

/// What a claim found for the request's history.
enum Found {
    /// An idle remembered session, now claimed by this request.
    Idle(Remembered, watch::Sender<Option<String>>),
    /// The same history is running right now.
    Busy(Claimed),
    /// Nothing.
    Nothing,
}

impl ConversationPool {
    /// Builds the pool; must be called inside a Tokio runtime.
    pub fn new(upstream: SessionUpstream, title: String, config: &SessionsConfig) -> Self {
        let evict = upstream.clone();
        let cache = Cache::builder()
            .max_capacity(config.max_capacity)
            .time_to_idle(config.ttl)
            .eviction_listener(move |key: Arc<Fingerprint>, value: Remembered, cause| {
                let why = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Size => "capacity",
                    // Two branches answered alike: the newer session takes the entry.
                    RemovalCause::Replaced => "replaced",
                    // Explicit removal is a claim: the session is in use.
                    RemovalCause::Explicit => return,
                };
                let Some(entry) = value.shared else {
                    crate::metrics::eviction(why);
                    evict.delete_later(value.session_id, why);
                    return;
                };
                // Shared: delete only what no other replica took since.
                let evict = evict.clone();
                tokio::spawn(async move {
                    match evict.store().remove_conversation_if(key.bytes(), &entry).await {
                        Ok(true) => {
                            crate::metrics::eviction(why);
                            evict.delete_later(value.session_id, why);
                        }
                        Ok(false) => {
                            tracing::debug!(session = %value.session_id, why, "remembered conversation ended here; it moved on with another replica, which deletes its session");
                        }
                        Err(e) => {
                            // Its stamp is this gateway's and nothing here holds it any more:
                            // the sweep deletes it once it is idle past the TTL, unless another
                            // replica took it over (and stamped it) meanwhile.
                            tracing::warn!(session = %value.session_id, error = %e, "shared store unreachable at expiry; session left to the sweep");
                        }
                    }
                });
            })
            .build();
        ConversationPool {
            inner: Arc::new(Inner {
                upstream,
                title,
                shared_ttl: config.ttl + SHARED_MARGIN,
                cache,
                claimed: Mutex::new(HashMap::new()),
                claim_lock: tokio::sync::Mutex::new(()),
                in_use: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether this pool holds `session_id`: remembered, or leased to a request now. The sweep
    /// never deletes such a session.
    pub fn holds_session(&self, session_id: &str) -> bool {
        lock(&self.inner.in_use).contains_key(session_id)
            || lock(&self.inner.claimed)
                .values()
                .any(|c| c.session_id == session_id)
            || self
                .inner
                .cache
                .iter()
                .any(|(_, r)| r.session_id == session_id)
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

    /// Whether this pool remembers (or is running) the conversation whose history is `prior`.
    pub fn holds(&self, prior: &Fingerprint) -> bool {
        self.inner.cache.contains_key(prior) || lock(&self.inner.claimed).contains_key(prior)
    }

    /// Number of remembered (idle) conversations.
    pub fn remembered(&self) -> u64 {
        self.inner.cache.entry_count()
    }

    /// Claims a session for a conversation whose history before the new message is `prior`:
    /// the remembered one, a fork of a busy one, or a new one (in directory `dir`) to seed.
    pub async fn acquire(&self, prior: Fingerprint, dir: Option<&str>) -> Result<Lease, ApiError> {
        match self.claim(prior).await {
            Found::Idle(remembered, fork_point) => {
                let takeover = remembered
                    .shared
                    .as_ref()
                    .is_some_and(|e| e.holder.as_deref() != Some(self.instance()));
                let lease = self.reuse(prior, remembered, fork_point);
                if takeover {
                    // Written by another replica: stamp it as this one's before using it, so
                    // that no sweep takes it for an orphan of its old holder.
                    self.restamp(&lease.session_id).await;
                }
                return Ok(lease);
            }
            Found::Busy(claim) => {
                // The same history is in use right now (regenerate, retry, parallel branch):
                // fork the session as it was before the running request's message.
                if let Some(lease) = self.fork_claimed(claim).await {
                    return Ok(lease);
                }
            }
            Found::Nothing => {}
        }
        let session = self
            .inner
            .upstream
            .create_pooled(&self.inner.title, dir)
            .await?;
        Ok(self.lease(session.id, Seed::WholeHistory, None, None))
    }

    /// This gateway's instance id.
    fn instance(&self) -> &str {
        self.inner.upstream.identity().instance()
    }

    /// Stamps a session taken over from another gateway as this one's (a failure is logged:
    /// the session still serves, its stamp just stays the old holder's).
    async fn restamp(&self, session_id: &str) {
        if let Err(e) = self.inner.upstream.restamp(session_id).await {
            tracing::warn!(session = %session_id, error = %e, "could not stamp a session taken over from another replica");
        }
    }

    /// Takes `prior` out of the cache and marks it claimed, or finds it claimed already.
    async fn claim(&self, prior: Fingerprint) -> Found {
        // The shared store's take is atomic by itself, and is done before the lock: a Redis
        // round trip under the pool-wide lock would serialize every claim behind it. (A
        // concurrent identical request can then miss both the entry and the claim, and seeds a
        // new session instead of forking: the same answer, one replay.)
        let store = self.inner.upstream.store();
        let shared = match store.is_shared() {
            true => Some(store.take_conversation(prior.bytes()).await),
            false => None,
        };
        // Taken from the store but not yet claimed: a cancellation before the claim below puts
        // it back (else nobody would ever delete its session: its writer's compare-and-delete
        // finds nothing).
        let mut untaken = Untaken {
            store: store.clone(),
            fingerprint: prior,
            entry: shared
                .as_ref()
                .and_then(|r| r.as_ref().ok())
                .cloned()
                .flatten(),
            ttl: self.inner.shared_ttl,
        };
        let _guard = self.inner.claim_lock.lock().await;
        let local = self.inner.cache.remove(&prior).await;
        // Nothing below waits: the entry is claimed (or put back) before this call returns.
        untaken.entry = None;
        let taken = match shared {
            None => local,
            Some(Ok(Some(entry))) if entry.upstream == self.inner.upstream.name() => {
                Some(Remembered {
                    session_id: entry.session.clone(),
                    history_end: entry.history_end.clone(),
                    shared: Some(entry),
                })
            }
            Some(Ok(Some(entry))) => {
                // Another upstream's (the router placed this turn elsewhere): put it back, so
                // that the replica that wrote it still deletes its session at expiry.
                let (store, ttl) = (store.clone(), self.inner.shared_ttl);
                tokio::spawn(async move {
                    let _ = store.put_conversation(prior.bytes(), &entry, ttl).await;
                });
                None
            }
            // Another replica took it (the local copy is stale), or it expired; or the store is
            // unreachable and a shared entry may be in use elsewhere: only local ones serve.
            Some(Ok(None) | Err(_)) => local.filter(|r| r.shared.is_none()),
        };
        match taken {
            Some(r) => {
                let (tx, rx) = watch::channel(None);
                let claim = Claimed {
                    session_id: r.session_id.clone(),
                    fork_point: rx,
                };
                lock(&self.inner.claimed).insert(prior, claim);
                Found::Idle(r, tx)
            }
            None => match lock(&self.inner.claimed).get(&prior).cloned() {
                Some(claim) => Found::Busy(claim),
                None => Found::Nothing,
            },
        }
    }

    /// Leases a remembered session. Whether it still exists upstream is not asked first (that
    /// lookup cost OpenCode as much CPU as a small request on every continued turn): the run's
    /// prompt finds out, and a session gone upstream answers it 404, upon which the run drops
    /// the lease and starts over in a new session (see `run::begin`).
    fn reuse(
        &self,
        prior: Fingerprint,
        r: Remembered,
        fork_point: watch::Sender<Option<String>>,
    ) -> Lease {
        // From here on, a cancelled request's lease drop deletes the session and releases the
        // claim instead of leaking both.
        self.lease(r.session_id, Seed::NewTurnOnly, Some(prior), r.history_end)
            .with_fork_point(fork_point)
    }

    async fn fork_claimed(&self, mut claim: Claimed) -> Option<Lease> {
        let point =
            tokio::time::timeout(FORK_POINT_WAIT, claim.fork_point.wait_for(Option::is_some))
                .await
                .ok()?
                .ok()?
                .clone()?;
        let upstream = &self.inner.upstream;
        let fork = match upstream.fork(&claim.session_id, Some(&point)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %e, "fork failed; starting a new session");
                return None;
            }
        };
        // Leased at once: cancelled from here on, the lease's drop deletes the fork.
        let stamped = super::identity::stamp_of(fork.metadata.as_ref())
            .is_some_and(|(instance, _)| instance == self.instance());
        let mut lease = self.lease(fork.id, Seed::NewTurnOnly, None, None);
        if !stamped {
            // A copy of a session whose stamp is not (yet) this gateway's.
            self.restamp(&lease.session_id).await;
        }
        // The fork's copies get fresh ids (and events that may still be in flight).
        match upstream.newest_message_id(&lease.session_id).await {
            Ok(history_end) => {
                lease.history_end = history_end;
                Some(lease)
            }
            Err(e) => {
                tracing::info!(error = %e, "cannot read the fork; starting a new session");
                None // the lease's drop deletes it
            }
        }
    }

    fn lease(
        &self,
        session_id: String,
        seed: Seed,
        claimed: Option<Fingerprint>,
        history_end: Option<String>,
    ) -> Lease {
        *lock(&self.inner.in_use)
            .entry(session_id.clone())
            .or_default() += 1;
        let owner = Owner::Conversations {
            pool: self.clone(),
            claimed,
        };
        Lease::new(session_id, seed, history_end, owner)
    }

    /// A lease of `session_id` ended (the session is remembered again, or discarded).
    pub(super) fn let_go(&self, session_id: &str) {
        let mut in_use = lock(&self.inner.in_use);
        if let Some(n) = in_use.get_mut(session_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_use.remove(session_id);
            }
        }
    }

    /// Remembers an answered session for the conversation's next turn.
    pub(super) async fn remember(
        &self,
        fingerprint: Fingerprint,
        session_id: &str,
        history_end: Option<String>,
    ) {
        let store = self.inner.upstream.store();
        let shared = match store.is_shared() {
            true => {
                let entry = SharedConversation {
                    upstream: self.inner.upstream.name().to_string(),
                    session: session_id.to_string(),
                    history_end: history_end.clone(),
                    holder: Some(self.instance().to_string()),
                };
                let put =
                    store.put_conversation(fingerprint.bytes(), &entry, self.inner.shared_ttl);
                put.await.ok().map(|()| entry)
            }
            false => None,
        };
        let remembered = Remembered {
            session_id: session_id.to_string(),
            history_end,
            shared,
        };
        self.inner.cache.insert(fingerprint, remembered).await;
    }

    /// Ends a claim (the session is remembered again, or discarded).
    pub(super) fn unclaim(&self, claimed: Option<Fingerprint>) {
        if let Some(fp) = claimed {
            lock(&self.inner.claimed).remove(&fp);
        }
    }

    /// The failure path of a lease: the session is deleted upstream.
    pub(super) fn discard(&self, claimed: Option<Fingerprint>, session_id: String) {
        self.unclaim(claimed);
        self.let_go(&session_id);
        self.inner.upstream.delete_later(session_id, "run failed");
    }

    /// Forgets every remembered conversation, deleting their sessions upstream (in the
    /// background: wait with [`SessionUpstream::drain_cleanup`]). Conversations in the shared
    /// store are left to the other replicas (a rolling update must not end them all).
    pub fn delete_all(&self) {
        let ids: Vec<String> = self
            .inner
            .cache
            .iter()
            .filter(|(_, r)| r.shared.is_none())
            .map(|(_, r)| r.session_id)
            .collect();
        self.inner.cache.invalidate_all();
        tracing::info!(count = ids.len(), "deleting pooled sessions");
        for id in ids {
            self.inner.upstream.delete_later(id, "shutdown");
        }
    }
}
