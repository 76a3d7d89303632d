//! One request at a time on a named session: the busy flag and the floor of sessions that the
//! client, not the pool, decides to continue (explicit sessions, Responses API chains).
//!
//! OpenCode folds a second prompt sent to a busy session into the running one, so a second
//! request on a busy session is refused (409) rather than sent. The floor is the newest message
//! id known to predate the next request, so late events of the previous one are not taken for
//! it. Both are local to this gateway process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lease::{Lease, Owner, Seed};
use super::upstream::SessionUpstream;
use crate::error::ApiError;
use crate::sync::lock;

#[derive(Debug, Default)]
struct Local {
    busy: bool,
    floor: Option<String>,
}

/// Busy flags and floors by session id; cheap to clone.
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

    /// Claims session `id` for one request (409 while another runs on it).
    pub fn claim(&self, id: &str) -> Result<Lease, ApiError> {
        let mut local = lock(&self.local);
        let state = local.entry(id.to_string()).or_default();
        if state.busy {
            return Err(ApiError::Conflict(format!(
                "Session {id} is already running a request; OpenCode runs one prompt per session at a time."
            )));
        }
        state.busy = true;
        let floor = state.floor.clone();
        Ok(Lease::new(
            id.to_string(),
            Seed::LastOnly,
            floor,
            Owner::Claimed(self.clone()),
        ))
    }

    /// Sets the floor of a session not yet claimed (a fork whose copies predate its next run).
    pub fn set_floor(&self, id: &str, floor: Option<String>) {
        lock(&self.local).entry(id.to_string()).or_default().floor = floor;
    }

    /// Forgets a session (deleted upstream).
    pub fn forget(&self, id: &str) {
        lock(&self.local).remove(id);
    }

    /// Number of sessions with local state.
    pub fn count(&self) -> usize {
        lock(&self.local).len()
    }

    /// A request on the session ended: it is free, and `last_seen` is the next one's floor.
    pub(super) fn free(&self, session_id: &str, last_seen: Option<String>) {
        if let Some(state) = lock(&self.local).get_mut(session_id) {
            state.busy = false;
            if last_seen.is_some() {
                state.floor = last_seen;
            }
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
