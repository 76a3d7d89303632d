//! Several OpenCode servers behind one gateway: each a [`Backend`] with everything that talks
//! to it (client, event hub, sessions, client tools, permissions, stored responses), and the
//! rules that send each request to one of them.
//!
//! - A **new conversation** goes to an available upstream with the fewest runs in flight per
//!   unit of weight ([`Upstreams::pick`]).
//! - **Everything later** goes where its session is: a conversation to the upstream whose pool
//!   (or the shared store) remembers its history ([`Upstreams::conversation_home`]); an explicit
//!   session or a stored response to the upstream holding that session
//!   ([`Upstreams::session_home`]: a local cache, then the shared store, then asking every
//!   available upstream, since OpenCode's session ids are unique across servers).
//! - An upstream whose [`breaker`] is open, or whose event stream is down, gets nothing new; a
//!   conversation it held starts over on another one at its next turn, seeded with the history
//!   the client resends anyway — the same path as a session that vanished.
//!
//! With one upstream (the default) every rule answers "that one" without a lookup, so a
//! single-upstream gateway pays nothing for any of this.
//!
//! `tower::balance` (power-of-two-choices over `Load`-reporting services) was considered: it
//! balances each request independently, while here only a conversation's first turn is placed
//! and every later one must follow its session; the placement that remains is a minimum over
//! at most a handful of upstreams, so it is written out in [`Upstreams::pick`].

pub mod admission;
mod backend;
pub mod breaker;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use backend::{Backend, InFlight};
pub use breaker::BreakerState;

use crate::sessions::Fingerprint;
use crate::store::Store;

/// Every upstream, the shared store, and where sessions live; cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    list: Arc<[Arc<Backend>]>,
    store: Store,
    /// Session id → upstream index, for sessions found once.
    homes: moka::sync::Cache<String, usize>,
    /// Rotates ties between equally loaded upstreams.
    turn: Arc<AtomicUsize>,
}

impl Upstreams {
    /// The set (at least one backend).
    pub fn new(list: Vec<Arc<Backend>>, store: Store) -> Upstreams {
        Upstreams {
            list: list.into(),
            store,
            homes: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            turn: Arc::default(),
        }
    }

    /// Every backend, in configuration order.
    pub fn all(&self) -> &[Arc<Backend>] {
        &self.list
    }

    /// Backend `i` (the first for an index out of range).
    pub fn get(&self, i: usize) -> &Arc<Backend> {
        &self.list[i.min(self.list.len() - 1)]
    }

    /// The shared store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether there is only one upstream (every routing question has one answer).
    pub fn is_single(&self) -> bool {
        self.list.len() == 1
    }

    /// The backend named `name`.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|b| b.name == name)
    }

    /// Counts a run on upstream `i` until the guard drops.
    pub fn run_started(&self, i: usize) -> InFlight {
        InFlight::new(self.get(i).clone())
    }

    /// Where a new conversation goes: the available upstream with the fewest runs per weight
    /// (ties take turns); with none available, the [`primary`](Self::primary) one.
    pub fn pick(&self) -> usize {
        if self.is_single() {
            return 0;
        }
        self.least_loaded(None)
            .unwrap_or_else(|| self.default_upstream())
    }

    /// Another available upstream than `not` (the least loaded), if there is one.
    pub fn pick_other(&self, not: usize) -> Option<usize> {
        self.least_loaded(Some(not))
    }

    /// The available upstream (but `except`) with the fewest runs in flight per unit of weight;
    /// the scan starts one further each call, so equally loaded upstreams take turns.
    fn least_loaded(&self, except: Option<usize>) -> Option<usize> {
        let n = self.list.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| &self.list[(start + k) % n])
            .filter(|b| Some(b.index) != except && b.available())
            // Runs per weight, in thousandths (min_by_key keeps the first of equals).
            .min_by_key(|b| b.in_flight() * 1_000 / b.weight.max(1) as usize)
            .map(|b| b.index)
    }

    /// Where requests not tied to a session go (the model list, OpenCode's own routes): the
    /// first available upstream, else the first with its event stream up, else the first.
    pub fn default_upstream(&self) -> usize {
        if self.is_single() {
            return 0;
        }
        self.list
            .iter()
            .position(|b| b.available())
            .or_else(|| self.list.iter().position(|b| b.hub.is_connected()))
            .unwrap_or(0)
    }

    /// Records that `session` lives on upstream `i` (here, and in the shared store).
    pub fn set_home(&self, session: &str, i: usize) {
        if self.is_single() {
            return;
        }
        self.homes.insert(session.to_string(), i);
        if self.store.is_shared() {
            let (store, session, name) = (
                self.store.clone(),
                session.to_string(),
                self.get(i).name.clone(),
            );
            tokio::spawn(async move {
                let _ = store.set_session_home(&session, &name, HOME_TTL).await;
            });
        }
    }

    /// Forgets where `session` lives (deleted).
    pub fn forget_home(&self, session: &str) {
        if self.is_single() {
            return;
        }
        self.homes.invalidate(session);
        if self.store.is_shared() {
            let (store, session) = (self.store.clone(), session.to_string());
            tokio::spawn(async move {
                let _ = store.forget_session(&session).await;
            });
        }
    }

    /// The upstream holding `session`: known here, known to the shared store, or found by
    /// asking every available upstream. `None`: nobody has it (the caller's 404).
    pub async fn session_home(&self, session: &str) -> Option<usize> {
        if self.is_single() {
            return Some(0);
        }
        // A client-chosen text: only a well-formed id is looked up (anywhere).
        if !crate::sessions::is_session_id(session) {
            return None;
        }
        if let Some(i) = self.homes.get(session) {
            return Some(i);
        }
        if let Ok(Some(name)) = self.store.session_home(session).await {
            if let Some(i) = self.by_name(&name) {
                self.homes.insert(session.to_string(), i);
                return Some(i);
            }
        }
        let asks = self.list.iter().filter(|b| b.hub.is_connected()).map(|b| {
            let b = b.clone();
            async move { b.client.session(session).await.ok().map(|_| b.index) }
        });
        let found = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .next();
        if let Some(i) = found {
            self.set_home(session, i);
        }
        found
    }

    /// The upstream that remembers the conversation whose history is `prior`, if any: a local
    /// pool first, then the shared store.
    pub async fn conversation_home(&self, prior: &Fingerprint) -> Option<usize> {
        if self.is_single() {
            return Some(0);
        }
        if let Some(b) = self
            .list
            .iter()
            .find(|b| b.sessions.conversations.holds(prior))
        {
            return Some(b.index);
        }
        match self.store.peek_conversation(prior.bytes()).await {
            Ok(Some(entry)) => self.by_name(&entry.upstream),
            _ => None,
        }
    }

    /// Probes every upstream every `interval` (an open breaker waits out its period), until
    /// `shutdown`.
    pub fn spawn_health(&self, interval: Duration, timeout: Duration, shutdown: CancellationToken) {
        for backend in self.list.iter() {
            let b = backend.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    if !b.breaker.should_probe() {
                        continue;
                    }
                    let ok = matches!(b.client.health(timeout).await, Ok(h) if h.healthy);
                    if let Some(state) = b.breaker.record(ok) {
                        if state == BreakerState::Closed {
                            tracing::info!(upstream = %b.name, "upstream healthy again; serving");
                        } else {
                            tracing::warn!(upstream = %b.name, state = state.label(), "upstream failing health checks; drained");
                        }
                    }
                }
            });
        }
    }
}

/// How long the shared store remembers where a session lives after its last use.
const HOME_TTL: Duration = Duration::from_secs(7 * 86_400);
