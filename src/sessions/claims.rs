//! One request at a time on a named session: the busy flag and the history's end of sessions that the
//! client, not the pool, decides to continue (explicit sessions, Responses API chains).
//!
//! OpenCode folds a second prompt sent to a busy session into the running one, so a second
//! request on a busy session is refused (409) rather than sent. The history end is the newest message
//! id known to predate the next request, so late events of the previous one are not taken for
//! it.
//!
//! With a shared store (Redis) both are shared by the replicas: the busy flag becomes a claim
//! with an expiry (`SET NX PX`), renewed while the run lives and deleted at its end, so two
//! replicas never prompt one session at once and a dead replica's claim lapses by itself; the
//! history end is written there too. The local flag is still taken first (two requests in this
//! process never both ask Redis). With the store unreachable, the local flag alone decides:
//! a request is never refused because Redis is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::lease::{Lease, Owner, Seed};
use super::upstream::SessionUpstream;
use crate::error::ApiError;
use crate::store::Claim;
use crate::sync::lock;

#[derive(Debug, Default)]
struct Local {
    busy: bool,
    history_end: Option<String>,
    /// Stops the renewal of this run's shared claim.
    renewal: Option<CancellationToken>,
}

/// A claim being taken: frees the local flag again unless disarmed.
struct Pending<'a> {
    claims: &'a Claims,
    id: &'a str,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(state) = lock(&self.claims.local).get_mut(self.id) {
            state.busy = false;
            if let Some(renewal) = state.renewal.take() {
                renewal.cancel();
                // Claimed in Redis just before the request went away: give it back.
                let (store, id) = (self.claims.upstream.store().clone(), self.id.to_string());
                self.claims.upstream.spawn_cleanup(async move {
                    let _ = store.release_run(&id).await;
                });
            }
        }
    }
}

/// How long the shared store keeps a session's history end after its last run.
const FLOOR_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Busy flags and history ends by session id; cheap to clone.
#[derive(Clone)]
pub struct Claims {
    upstream: SessionUpstream,
    local: Arc<Mutex<HashMap<String, Local>>>,
}

impl Claims {
    /// Claims on sessions of `upstream`.
    pub fn new(upstream: SessionUpstream) -> Claims {
        Claims {
            upstream,
            local: Arc::default(),
        }
    }

    /// Claims session `id` for one request (409 while another runs on it, here or on another
    /// replica).
    pub async fn claim(&self, id: &str) -> Result<Lease, ApiError> {
        let busy = || {
            ApiError::Conflict(format!(
                "Session {id} is already running a request; OpenCode runs one prompt per session at a time."
            ))
        };
        let history_end = {
            let mut local = lock(&self.local);
            let state = local.entry(id.to_string()).or_default();
            if state.busy {
                return Err(busy());
            }
            state.busy = true;
            state.history_end.clone()
        };
        // Until the lease exists, a cancelled request (its future dropped while Redis answers)
        // must not leave the session marked busy here.
        let mut pending = Pending {
            claims: self,
            id,
            armed: true,
        };
        let store = self.upstream.store();
        let mut history_end = history_end;
        if store.is_shared() {
            match store.claim_run(id).await {
                Ok(claim @ (Claim::Taken | Claim::TakenFromLapsed)) => {
                    if claim == Claim::TakenFromLapsed {
                        // Its last holder died mid-run: that run may still be going upstream,
                        // and OpenCode would fold this prompt into it.
                        tracing::info!(session = %id, "claim of a replica that died mid-run lapsed; aborting its run");
                        if let Err(e) = self.upstream.abort(id).await {
                            tracing::warn!(session = %id, error = %e, "abort failed");
                        }
                    }
                    let token = self.renew(id);
                    if let Some(state) = lock(&self.local).get_mut(id) {
                        state.renewal = Some(token);
                    }
                    if let Ok(Some(shared)) = store.history_end(id).await {
                        if history_end.as_deref().is_none_or(|f| shared.as_str() > f) {
                            history_end = Some(shared);
                        }
                    }
                }
                // Another replica runs on it (`pending`'s drop frees the local flag).
                Ok(Claim::Held) => return Err(busy()),
                // Unreachable: the local flag decides (warned about by the store).
                Err(_) => {}
            }
        }
        pending.armed = false;
        Ok(Lease::new(
            id.to_string(),
            Seed::NewTurnOnly,
            history_end,
            Owner::Claimed(Box::new(self.clone())),
        ))
    }

    /// Renews the shared claim on `id` every third of its lifetime until cancelled.
    fn renew(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        let (stop, store, id) = (token.clone(), self.upstream.store().clone(), id.to_string());
        let every = (store.lease_ttl() / 3).max(std::time::Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Ok(false) = store.renew_run(&id).await {
                    tracing::warn!(session = %id, "lost the shared claim on a running session");
                }
            }
        });
        token
    }

    /// Ends this process's shared claim on `id` (and its renewal) and shares its history end.
    fn release_shared(
        &self,
        id: &str,
        renewal: Option<CancellationToken>,
        history_end: Option<String>,
    ) {
        let Some(renewal) = renewal else { return };
        renewal.cancel();
        let (store, id) = (self.upstream.store().clone(), id.to_string());
        self.upstream.spawn_cleanup(async move {
            if let Some(history_end) = history_end {
                let _ = store.set_history_end(&id, &history_end, FLOOR_TTL).await;
            }
            let _ = store.release_run(&id).await;
        });
    }

    /// Sets the history's end of a session not yet claimed (a fork whose copies predate its next run).
    pub fn set_history_end(&self, id: &str, history_end: Option<String>) {
        lock(&self.local)
            .entry(id.to_string())
            .or_default()
            .history_end = history_end.clone();
        let store = self.upstream.store();
        if let (true, Some(history_end)) = (store.is_shared(), history_end) {
            let (store, id) = (store.clone(), id.to_string());
            self.upstream.spawn_cleanup(async move {
                let _ = store.set_history_end(&id, &history_end, FLOOR_TTL).await;
            });
        }
    }

    /// Forgets a session (deleted upstream).
    pub fn forget(&self, id: &str) {
        if let Some(state) = lock(&self.local).remove(id) {
            if let Some(renewal) = state.renewal {
                renewal.cancel();
            }
        }
        let store = self.upstream.store();
        if store.is_shared() {
            let (store, id) = (store.clone(), id.to_string());
            self.upstream.spawn_cleanup(async move {
                let _ = store.forget_session(&id).await;
            });
        }
    }

    /// Number of sessions with local state.
    pub fn count(&self) -> usize {
        lock(&self.local).len()
    }

    /// A request on the session ended: it is free, and `last_seen` is the next one's history end.
    pub(super) fn free(&self, session_id: &str, last_seen: Option<String>) {
        let ended = lock(&self.local).get_mut(session_id).map(|state| {
            state.busy = false;
            if last_seen.is_some() {
                state.history_end = last_seen;
            }
            (state.renewal.take(), state.history_end.clone())
        });
        if let Some((renewal, history_end)) = ended {
            self.release_shared(session_id, renewal, history_end);
        }
    }

    /// The failure path of a lease. The run may still be going upstream (a prompt that timed
    /// out, a request cut short): stop it before the session takes the next request, which
    /// OpenCode would otherwise fold into this run.
    pub(super) fn discard(&self, session_id: String, last_seen: Option<String>) {
        let this = self.clone();
        self.upstream.spawn_cleanup(async move {
            if let Err(e) = this.upstream.abort(&session_id).await {
                tracing::warn!(session = %session_id, error = %e, "abort failed");
            }
            this.free(&session_id, last_seen);
        });
    }
}
