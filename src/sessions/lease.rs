//! A [`Lease`]: one request's exclusive use of one OpenCode session.
//!
//! OpenCode runs one prompt per session at a time and folds a second one into the first, so a
//! session must never serve two requests at once. Whoever hands out a session hands out a lease;
//! the request gives it back with [`Lease::release`]. A lease dropped without release (a request
//! cancelled, a client gone) counts as a failure and is cleaned up by its owner, so no path can
//! leak a session or leave it claimed.

use tokio::sync::watch;

use super::claims::Claims;
use super::conversations::ConversationPool;
use super::fingerprint::Fingerprint;

/// How the leased session relates to the request's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// New session: send every prior turn along with the new message.
    WholeHistory,
    /// The session already holds the history: send only the last message.
    NewTurnOnly,
}

/// How a leased run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The run answered; a pooled session is remembered under `fingerprint`.
    Answered {
        /// The conversation including the reply.
        fingerprint: Fingerprint,
    },
    /// The run failed or was abandoned: a pooled session is discarded.
    Failed,
}

/// Who handed the lease out, and so who takes it back.
pub(super) enum Owner {
    /// The conversation pool; `claimed` is the fingerprint the session was claimed under.
    Conversations {
        pool: ConversationPool,
        claimed: Option<Fingerprint>,
    },
    /// A claim on a named session (explicit sessions, Responses chains).
    Claimed(Box<Claims>),
}

/// Exclusive use of one OpenCode session for one request.
pub struct Lease {
    /// The OpenCode session.
    pub session_id: String,
    /// What to send.
    pub seed: Seed,
    /// Messages with ids up to this one predate the request: their (late) events must not be
    /// taken for the run's own (OpenCode message ids ascend).
    pub history_end: Option<String>,
    /// `None` once released.
    owner: Option<Owner>,
    /// Where a concurrent request with the same history must fork (see [`Lease::observe`]).
    fork_point: Option<watch::Sender<Option<String>>>,
    /// The newest message id the run has seen: the next request's history end.
    last_seen: Option<String>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("session_id", &self.session_id)
            .field("seed", &self.seed)
            .field("history_end", &self.history_end)
            .finish_non_exhaustive()
    }
}

impl Lease {
    pub(super) fn new(
        session_id: String,
        seed: Seed,
        history_end: Option<String>,
        owner: Owner,
    ) -> Lease {
        Lease {
            session_id,
            seed,
            history_end,
            owner: Some(owner),
            fork_point: None,
            last_seen: None,
        }
    }

    /// Publishes the fork point to concurrent requests with the same history.
    pub(super) fn with_fork_point(mut self, tx: watch::Sender<Option<String>>) -> Lease {
        self.fork_point = Some(tx);
        self
    }

    /// Records what the run has learned: its own user message id (where a concurrent request
    /// with the same history must fork this session: just before it) and the newest message id
    /// of the run (the next request's history end).
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

    /// Hands the session back: an answered pooled session is remembered for the next turn, a
    /// failed one deleted upstream; a claimed one becomes free again.
    pub async fn release(mut self, outcome: Outcome) {
        let Outcome::Answered { fingerprint } = outcome else {
            return; // the drop discards it
        };
        match self.owner.as_ref() {
            Some(Owner::Conversations { pool, claimed }) => {
                let (pool, claimed) = (pool.clone(), *claimed);
                // The lease stays armed until the entry is in: cancelled here, its drop deletes
                // the session instead of leaking it.
                pool.remember(fingerprint, &self.session_id, self.last_seen.clone())
                    .await;
                self.owner = None;
                pool.unclaim(claimed);
                pool.let_go(&self.session_id);
            }
            Some(Owner::Claimed(claims)) => {
                claims.free(&self.session_id, self.last_seen.take());
                self.owner = None;
            }
            None => {}
        }
    }
}

impl Lease {
    /// Ends the lease with nothing to remember: a claimed session is free again (nothing ran
    /// on it); a pooled one is discarded, as after a failure.
    pub fn free(mut self) {
        match self.owner.take() {
            Some(Owner::Claimed(claims)) => claims.free(&self.session_id, self.last_seen.take()),
            // Dropped just below, which discards it.
            other => self.owner = other,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let session_id = std::mem::take(&mut self.session_id);
        match self.owner.take() {
            Some(Owner::Conversations { pool, claimed }) => pool.discard(claimed, session_id),
            Some(Owner::Claimed(claims)) => claims.discard(session_id, self.last_seen.take()),
            None => {}
        }
    }
}
