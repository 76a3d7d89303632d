//! Sessions the gateway meant to delete but could not yet: it keeps trying, so that "expired and
//! evicted sessions are deleted upstream" stays true across OpenCode outages.
//!
//! Two kinds of leftovers:
//! - **Failed deletes.** OpenCode was down or frozen when a session was to go. The id is kept
//!   and the delete retried every [`RETRY_EVERY`], and at once when the event stream reconnects
//!   (OpenCode is back).
//! - **Creates that timed out.** OpenCode may still create the session once it resumes, and
//!   nobody would know its id. Every create carries a one-off marker in the session's metadata;
//!   after an ambiguous failure (timeout, connection lost mid-call) the gateway *hunts*: it lists
//!   sessions with that title updated since the call and deletes the one bearing the marker.
//!   Markers are unique per call, so this is safe with several gateways sharing one OpenCode.
//!
//! Both lists are bounded ([`MAX_PENDING`]) and entries give up after [`GIVE_UP_AFTER`]: an
//! OpenCode gone for good must not make the gateway hold memory without bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::opencode::{OpenCodeClient, UpstreamError};
use crate::sync::lock;

/// How often pending work is retried while OpenCode stays unreachable.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);
/// Most pending deletes and hunts kept; the oldest are dropped (and logged) beyond it.
pub const MAX_PENDING: usize = 10_000;
/// How long an entry is retried before the gateway gives up on it.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// How many sessions one hunt lists (those updated since the lost create).
const HUNT_PAGE: usize = 1_000;
/// How long a hunt goes on once OpenCode answers again: a create it had queued while frozen
/// is done within moments of resuming.
const HUNT_WHILE_REACHABLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Delete {
    session_id: String,
    since: Instant,
}

#[derive(Debug)]
struct Hunt {
    title: String,
    marker: String,
    /// Epoch milliseconds a little before the lost create was sent.
    after_ms: u64,
    since: Instant,
    /// When OpenCode first answered a listing without the session.
    first_miss: Option<Instant>,
}

#[derive(Default)]
struct Pending {
    deletes: VecDeque<Delete>,
    hunts: VecDeque<Hunt>,
}

struct Inner {
    client: OpenCodeClient,
    pending: Mutex<Pending>,
    wake: Notify,
}

/// Retries deletes and hunts down sessions of lost creates; cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn push_bounded<T: std::fmt::Debug>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= MAX_PENDING {
        if let Some(dropped) = queue.pop_front() {
            tracing::warn!(
                ?dropped,
                "too much pending session clean-up; giving up on the oldest"
            );
        }
    }
    queue.push_back(item);
}

/// What became of one upstream attempt.
enum Attempt {
    Done,
    /// OpenCode is still unreachable: stop this round.
    Unreachable,
}

impl Reaper {
    /// A reaper for sessions of `client`'s server.
    pub fn new(client: OpenCodeClient) -> Reaper {
        Reaper {
            inner: Arc::new(Inner {
                client,
                pending: Mutex::new(Pending::default()),
                wake: Notify::new(),
            }),
        }
    }

    /// Number of pending deletes and hunts.
    pub fn pending(&self) -> usize {
        let p = lock(&self.inner.pending);
        p.deletes.len() + p.hunts.len()
    }

    /// Remembers a session whose delete failed, to retry it.
    pub fn retry_delete(&self, session_id: String) {
        let mut p = lock(&self.inner.pending);
        if p.deletes.iter().any(|d| d.session_id == session_id) {
            return;
        }
        let entry = Delete {
            session_id,
            since: Instant::now(),
        };
        push_bounded(&mut p.deletes, entry);
    }

    /// The time to pass to [`Reaper::hunt`] for a create about to be sent.
    pub fn create_started() -> u64 {
        // A margin for clock differences between the gateway and OpenCode.
        now_ms().saturating_sub(60_000)
    }

    /// Remembers a create that may have happened upstream without the gateway learning the id.
    pub fn hunt(&self, title: &str, marker: &str, after_ms: u64) {
        let entry = Hunt {
            title: title.to_string(),
            marker: marker.to_string(),
            after_ms,
            since: Instant::now(),
            first_miss: None,
        };
        push_bounded(&mut lock(&self.inner.pending).hunts, entry);
        self.inner.wake.notify_one();
    }

    /// Retries pending work every [`RETRY_EVERY`] and whenever `connected` turns true, until
    /// `shutdown`.
    pub fn spawn(&self, mut connected: watch::Receiver<bool>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                    _ = this.inner.wake.notified() => {}
                    changed = connected.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if !*connected.borrow() {
                            continue;
                        }
                    }
                }
                this.round().await;
            }
        });
    }

    /// One pass over the pending work, stopping at the first sign that OpenCode is unreachable.
    pub async fn round(&self) {
        loop {
            while let Some(delete) = self.next_delete() {
                if let Attempt::Unreachable = self.delete(&delete.session_id).await {
                    lock(&self.inner.pending).deletes.push_front(delete);
                    return;
                }
            }
            let hunts: Vec<Hunt> = lock(&self.inner.pending).hunts.drain(..).collect();
            if hunts.is_empty() || !self.run_hunts(hunts).await {
                return;
            }
            // Sessions of lost creates turned up: delete them in this round.
        }
    }

    fn next_delete(&self) -> Option<Delete> {
        let mut p = lock(&self.inner.pending);
        while let Some(d) = p.deletes.pop_front() {
            if d.since.elapsed() < GIVE_UP_AFTER {
                return Some(d);
            }
            tracing::warn!(session = %d.session_id, "giving up deleting an OpenCode session");
        }
        None
    }

    async fn delete(&self, session_id: &str) -> Attempt {
        match self.inner.client.delete_session(session_id).await {
            Ok(()) | Err(UpstreamError::NotFound(_)) => {
                tracing::info!(session = %session_id, "deleted an OpenCode session after an outage");
                Attempt::Done
            }
            Err(e) => {
                tracing::debug!(session = %session_id, error = %e, "delete still failing");
                Attempt::Unreachable
            }
        }
    }

    /// Looks for the sessions of lost creates, one listing per title; returns whether any
    /// turned up (their deletes are queued). Hunts not yet satisfied are kept: OpenCode may
    /// create a session only once it resumes.
    async fn run_hunts(&self, hunts: Vec<Hunt>) -> bool {
        let mut titles: Vec<(&str, u64)> = Vec::new();
        for h in &hunts {
            match titles.iter_mut().find(|(t, _)| *t == h.title) {
                Some((_, after)) => *after = (*after).min(h.after_ms),
                None => titles.push((&h.title, h.after_ms)),
            }
        }
        let mut markers: Vec<(String, String)> = Vec::new();
        for (title, after_ms) in titles {
            let listed = self
                .inner
                .client
                .search_sessions(title, HUNT_PAGE, Some(after_ms))
                .await;
            match listed {
                Ok(sessions) => markers.extend(sessions.into_iter().filter_map(|s| {
                    let marker = s.creation_marker()?.to_string();
                    Some((marker, s.id))
                })),
                Err(e) => {
                    tracing::debug!(error = %e, "hunt for lost creates still failing");
                    lock(&self.inner.pending).hunts.extend(hunts);
                    return false;
                }
            }
        }
        let mut found = false;
        for mut hunt in hunts {
            if let Some((_, id)) = markers.iter().find(|(m, _)| *m == hunt.marker) {
                tracing::info!(session = %id, "found the session of a create that timed out; deleting it");
                self.retry_delete(id.clone());
                found = true;
                continue;
            }
            let first_miss = *hunt.first_miss.get_or_insert_with(Instant::now);
            if first_miss.elapsed() < HUNT_WHILE_REACHABLE && hunt.since.elapsed() < GIVE_UP_AFTER {
                lock(&self.inner.pending).hunts.push_back(hunt);
            } else {
                tracing::debug!(marker = %hunt.marker, "no session of a lost create turned up");
            }
        }
        found
    }
}
