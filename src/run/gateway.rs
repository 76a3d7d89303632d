//! The gateway's shared handles, as the core sees them: configuration, every upstream
//! ([`Backend`]), rate limits, the runs parked for tool results, and shutdown.
//!
//! This is what the core takes instead of the HTTP layer's state: a run is started with a
//! [`Gateway`] and the one [`Backend`] its session lives on, and talks to that upstream through
//! that handle only. The HTTP layer (`app`) builds it at start and adds what only HTTP needs
//! (the key table its middleware checks).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client_tools::{ParkKey, Parked};
use crate::config::Config;
use crate::error::ApiError;
use crate::ratelimit::RateLimits;
use crate::sessions::{Fingerprint, Identity};
use crate::upstreams::{Backend, BreakerState, Upstreams};

use super::Run;

/// Runs that ended a response with tool calls, waiting for the request that brings the
/// results (see [`Run::park`]).
pub type ParkedRuns = Parked<ParkKey, Run>;

/// Everything the core shares between requests; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// Every upstream, and where sessions live.
    pub upstreams: Upstreams,
    /// Per-key rate limits (a run holds a share of its key's concurrent runs).
    pub rate_limits: RateLimits,
    /// Runs waiting for tool results, on whichever upstream they run.
    pub parked: ParkedRuns,
    /// Cancelled when the shutdown grace period is over: runs still going fail and abort.
    pub hard_stop: CancellationToken,
    /// Completions in progress (shutdown waits for them to wind down).
    pub live_runs: TaskTracker,
    /// Who this gateway is, as its pooled sessions record it.
    pub identity: Arc<Identity>,
}

impl Gateway {
    /// Upstream `i` (the first for an index out of range).
    pub fn backend(&self, i: usize) -> Arc<Backend> {
        self.upstreams.get(i).clone()
    }

    /// The upstream for requests not tied to a session (the model list, OpenCode's own
    /// routes): the first available one.
    pub fn default_backend(&self) -> Arc<Backend> {
        self.backend(self.upstreams.default_upstream())
    }

    /// The upstream holding `session` (with none, the primary one: the caller's request then
    /// meets OpenCode's 404 there). An upstream known to hold it but drained is a 503: its
    /// session cannot be served elsewhere.
    pub async fn backend_of_session(&self, session: &str) -> Result<Arc<Backend>, ApiError> {
        if self.upstreams.is_single() {
            return Ok(self.backend(0));
        }
        match self.upstreams.session_home(session).await {
            Some(i) if self.upstreams.get(i).breaker.state() == BreakerState::Closed => {
                Ok(self.backend(i))
            }
            Some(i) => Err(ApiError::Unavailable(format!(
                "Session {session} lives on upstream `{}`, which is failing its health checks.",
                self.upstreams.get(i).name
            ))),
            None => Ok(self.default_backend()),
        }
    }

    /// The upstream remembering the conversation whose history is `prior`, when that one is
    /// available; else the upstream a new conversation goes to.
    pub async fn backend_of_conversation(&self, prior: &Fingerprint) -> Arc<Backend> {
        if self.upstreams.is_single() {
            return self.backend(0);
        }
        match self.upstreams.conversation_home(prior).await {
            Some(i) if self.upstreams.get(i).available() => self.backend(i),
            _ => self.backend(self.upstreams.pick()),
        }
    }

    /// The upstream a new conversation or session goes to.
    pub fn backend_for_new(&self) -> Arc<Backend> {
        self.backend(self.upstreams.pick())
    }

    /// At a clean shutdown: tells the other replicas (through Redis) that this gateway is
    /// gone, so that they sweep the pooled sessions it leaves them once those are idle past
    /// the TTL.
    pub async fn farewell(&self) {
        let store = self.upstreams.store();
        if store.is_shared() {
            let _ = store.forget_instance(self.identity.instance()).await;
        }
    }
}
