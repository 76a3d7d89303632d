//! The sweep: pooled sessions whose gateway died are deleted.
//!
//! A gateway deletes its pooled sessions when they expire, when they are evicted and when it
//! shuts down. Killed outright (SIGKILL, the OOM killer) it deletes nothing, and a restarted
//! gateway remembers nothing: without the sweep those sessions stay in OpenCode for ever.
//!
//! Every pooled session carries its creator's stamp ([`super::identity`]): instance id,
//! deployment name, upstream; a replica taking a conversation over stamps it anew. At start
//! (once the upstream's event stream is up, or after one interval at most) and every
//! `sessions.sweep_interval_secs`, each upstream's sessions idle longer than the pool's TTL are
//! listed (OpenCode's `GET /experimental/session`: every project directory, by title, only
//! sessions updated before the idle cutoff — and, between the *deep* listings at start and every
//! `DEEP_EVERY`, only those that crossed the cutoff since the last sweep: see
//! `Sweeper::window`), and a session is deleted when all of these hold:
//! - it carries the stamp of this gateway's deployment, made through this upstream (sessions
//!   without a stamp — made by other software, or by gateways that predate the stamp — are
//!   never touched);
//! - it is no explicit session (owner tag) and no stored-response session (they have owners and
//!   lifetimes of their own);
//! - it was last updated more than `sessions.ttl_secs` + [`GRACE`] ago, on OpenCode's clock;
//! - nothing in this gateway holds it (remembered or leased to a running request), checked
//!   again just before the delete;
//! - its instance is this gateway (a session of its previous life, or one it lost: an entry
//!   that expired while Redis was unreachable, a fork that arrived after its caller left), or,
//!   with Redis, an instance without a heartbeat there (a dead replica). Without Redis the
//!   liveness of other gateways is unknown: their sessions are never touched, nor are any while
//!   Redis does not answer. With Redis the session is read once more before its delete, so that
//!   a replica that has just taken it over (and stamped it) keeps it.
//!
//! A live gateway deletes its idle sessions itself at the TTL, so whatever is older belongs to
//! nobody alive: a session outlives its gateway by at most the TTL, [`GRACE`] and one sweep
//! interval (with Redis, plus the heartbeat's lapse, `store.lease_ttl_secs`). What a window
//! could not decide on — a session held here or by a live replica (it may be orphaned later),
//! liveness unknown while Redis does not answer, a session that could not be read again — keeps
//! the window open below it. Deletes that fail go to the reaper, which retries them. What a sweep deleted is counted in
//! `portatek_sessions_swept_total{upstream}`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::conversations::ConversationPool;
use super::identity::stamp_of;
use super::upstream::SessionUpstream;
use crate::opencode::{Session, UpstreamError};
use crate::sync::lock;

/// Added to the TTL before a session counts as idle past it: OpenCode's `Date` header has
/// whole seconds, and a run's last update comes a moment before its pool entry.
pub const GRACE: Duration = Duration::from_secs(2);
/// Sessions asked for per listing page.
const PAGE: usize = 500;
/// Most pages one sweep lists (the rest wait for the next sweep).
const MAX_PAGES: usize = 100;
/// How often a sweep lists every idle session, not only those that became idle since the last
/// sweep (see [`Sweeper::window`]).
const DEEP_EVERY: Duration = Duration::from_secs(600);
/// How far back of the last fully decided cutoff the next window starts.
const OVERLAP: Duration = Duration::from_secs(60);

/// Sweeps one upstream; cheap to clone.
#[derive(Clone)]
pub struct Sweeper {
    upstream: SessionUpstream,
    pool: ConversationPool,
    /// The pool's sessions' title (the listing's search).
    title: String,
    /// The pool's TTL.
    ttl: Duration,
    /// What the next listing covers.
    window: Arc<Mutex<Window>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `session` has an owner of its own: an explicit session (owner tag in its title) or a
/// stored-response session (owner in its metadata).
fn owned_elsewhere(session: &Session) -> bool {
    let tagged = session
        .title
        .as_deref()
        .is_some_and(|t| t.contains("[owner:"));
    let ours = session.metadata.as_ref().and_then(|m| m.get("portatek"));
    let recorded = ours.is_some_and(|o| o.get("owner").is_some() || o.get("responses").is_some());
    tagged || recorded
}

/// Whether `session` was stamped through upstream `name` (or before stamps named upstreams).
fn made_through(session: &Session, name: &str) -> bool {
    let upstream = session
        .metadata
        .as_ref()
        .and_then(|m| m.pointer("/portatek/upstream"))
        .and_then(|u| u.as_str());
    upstream.is_none_or(|u| u == name)
}

/// A session the sweep may delete, and whose stamp it carried.
struct Candidate {
    id: String,
    instance: String,
    /// Its `time.updated` when listed.
    updated: u64,
}

/// What one listing found.
struct Listing {
    candidates: Vec<Candidate>,
    /// The idle cutoff it used (OpenCode's clock, epoch ms).
    cutoff: u64,
    /// Whether it listed everything in its window (no page limit hit).
    complete: bool,
}

/// Which sessions the next sweep lists (see [`Sweeper::window`]).
#[derive(Debug, Default)]
struct Window {
    /// Every session updated before this (OpenCode's clock) has been decided on.
    decided_before: Option<u64>,
    /// When the last listing without a lower bound completed.
    deep_at: Option<Instant>,
}

impl Sweeper {
    /// A sweeper of `pool`'s sessions (titled `title`, idle lifetime `ttl`) on `upstream`.
    pub fn new(
        upstream: SessionUpstream,
        pool: ConversationPool,
        title: String,
        ttl: Duration,
    ) -> Sweeper {
        Sweeper {
            upstream,
            pool,
            title,
            ttl,
            window: Arc::default(),
        }
    }

    /// Sweeps once `connected` (the upstream's event stream) is up or `every` has passed, then
    /// every `every`, until `shutdown`. `every` zero: never.
    pub fn spawn(
        &self,
        every: Duration,
        mut connected: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        if every.is_zero() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = connected.wait_for(|up| *up) => {}
                _ = tokio::time::sleep(every) => {}
            }
            loop {
                // Exported from the first sweep on, even at 0 (the metrics recorder is
                // installed once the router is built, after this task is spawned).
                this.counter().increment(0);
                match this.sweep().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(upstream = %this.upstream.name(), deleted = n, "swept pooled sessions no live gateway holds")
                    }
                    Err(e) => {
                        tracing::debug!(upstream = %this.upstream.name(), error = %e, "session sweep failed; trying again later")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    fn counter(&self) -> metrics::Counter {
        metrics::counter!("portatek_sessions_swept_total", "upstream" => self.upstream.name().to_string())
    }

    /// What the next listing covers. Sessions become idle past the cutoff as time goes by, and
    /// each needs deciding on once: a sweep lists only those updated since the last one it
    /// fully decided on (less [`OVERLAP`]), not every idle session each time — explicit and
    /// stored-response sessions share the title, and may be many, with large metadata. A
    /// listing without a lower bound (*deep*) runs at start and every [`DEEP_EVERY`], for what
    /// the windows missed (a session whose instance was alive, or a listing cut short).
    /// Returns whether the listing is deep, and its lower bound.
    fn window(&self) -> (bool, Option<u64>) {
        let window = lock(&self.window);
        let deep = window.deep_at.is_none_or(|at| at.elapsed() >= DEEP_EVERY);
        let since = window
            .decided_before
            .filter(|_| !deep)
            .map(|b| b.saturating_sub(OVERLAP.as_millis() as u64));
        (deep, since)
    }

    /// One sweep of this upstream (see the module docs); the number of sessions it deleted.
    pub async fn sweep(&self) -> Result<usize, UpstreamError> {
        let (deep, since) = self.window();
        let listing = self.list(since).await?;
        // Sessions left undecided (liveness unknown) keep the window open below them.
        let mut decided_before = listing.cutoff;
        let ours = self.upstream.identity().instance().to_string();
        let others: HashSet<&str> = listing
            .candidates
            .iter()
            .map(|c| c.instance.as_str())
            .filter(|i| *i != ours)
            .collect();
        let alive = self.alive(others.into_iter().collect()).await;
        let shared = self.upstream.store().is_shared();
        let mut deleted = 0;
        for candidate in &listing.candidates {
            // A session still held (by this pool, by a live replica) may be orphaned later, when
            // its holder dies before using it again: the window stays open below it.
            let mut undecided = || decided_before = decided_before.min(candidate.updated);
            let orphaned = match (candidate.instance == ours, &alive) {
                (true, _) => true,
                // Without Redis, other gateways' liveness is never known: theirs to delete.
                (false, _) if !shared => false,
                (false, Some(alive)) if alive.get(&candidate.instance) == Some(&false) => true,
                (false, _) => {
                    undecided();
                    false
                }
            };
            if !orphaned {
                continue;
            }
            if self.pool.holds_session(&candidate.id) {
                undecided();
                continue;
            }
            if shared {
                match self.still_orphaned(candidate, listing.cutoff).await {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        undecided();
                        continue;
                    }
                }
            }
            if self.upstream.delete_swept(&candidate.id).await {
                tracing::info!(session = %candidate.id, instance = %candidate.instance, "deleted an orphaned pooled session");
                self.counter().increment(1);
                deleted += 1;
            }
        }
        if listing.complete {
            let mut window = lock(&self.window);
            window.decided_before = Some(decided_before);
            if deep {
                window.deep_at = Some(Instant::now());
            }
        }
        Ok(deleted)
    }

    /// The idle-cutoff on OpenCode's clock (`server_now_ms`), in epoch ms.
    fn cutoff(&self, server_now_ms: u64) -> u64 {
        server_now_ms.saturating_sub((self.ttl + GRACE).as_millis() as u64)
    }

    /// Lists the sessions updated since `since` and idle past the cutoff, and keeps those of
    /// this deployment and upstream that no one else owns.
    async fn list(&self, since: Option<u64>) -> Result<Listing, UpstreamError> {
        let identity = self.upstream.identity();
        let client = self.upstream.client();
        // Only pages older than the cutoff (by this host's clock; the server's decides below).
        let mut before = Some(self.cutoff(now_ms()) + 1);
        let mut cutoff = None;
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut complete = false;
        for _ in 0..MAX_PAGES {
            let page = client
                .list_sessions_page(&self.title, PAGE, since, before)
                .await?;
            let cut = *cutoff
                .get_or_insert_with(|| self.cutoff(page.server_now_ms.unwrap_or_else(now_ms)));
            for s in &page.sessions {
                let Some((instance, deployment)) = stamp_of(s.metadata.as_ref()) else {
                    continue;
                };
                let idle = s.updated_ms() > 0 && s.updated_ms() < cut;
                let here = made_through(s, self.upstream.name());
                if deployment == identity.deployment() && idle && here && !owned_elsewhere(s) {
                    candidates.push(Candidate {
                        id: s.id.clone(),
                        instance: instance.to_string(),
                        updated: s.updated_ms(),
                    });
                }
            }
            match page.next {
                Some(next) if !page.sessions.is_empty() && Some(next) != before => {
                    before = Some(next)
                }
                _ => {
                    complete = true;
                    break;
                }
            }
        }
        let mut seen = HashSet::new();
        candidates.retain(|c| seen.insert(c.id.clone()));
        Ok(Listing {
            candidates,
            cutoff: cutoff.unwrap_or_else(|| self.cutoff(now_ms())),
            complete,
        })
    }

    /// Whether each of `instances` (other gateways) is alive, as far as Redis says; `None`
    /// when that is unknown (no Redis, or it does not answer: then nothing of theirs goes).
    async fn alive(&self, instances: Vec<&str>) -> Option<HashMap<String, bool>> {
        let store = self.upstream.store();
        if !store.is_shared() {
            return None;
        }
        let flags = store.alive(&instances).await.ok()?;
        Some(
            instances
                .iter()
                .zip(flags)
                .map(|(i, up)| (i.to_string(), up))
                .collect(),
        )
    }

    /// With Redis: reads the session again just before deleting it. A replica may have taken
    /// it over since the listing (and stamped it as its own, which also updates it). `None`
    /// when it cannot be read now.
    async fn still_orphaned(&self, candidate: &Candidate, cutoff: u64) -> Option<bool> {
        let session = match self.upstream.get(&candidate.id).await {
            Ok(s) => s,
            Err(UpstreamError::NotFound(_)) => return Some(false),
            Err(_) => return None,
        };
        let stamp = stamp_of(session.metadata.as_ref());
        let same = stamp.is_some_and(|(instance, _)| instance == candidate.instance);
        Some(same && session.updated_ms() < cutoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pooled(id: &str, title: &str, portatek: Value, updated: u64) -> Session {
        serde_json::from_value(json!({
            "id": id, "title": title, "metadata": {"portatek": portatek},
            "time": {"created": updated, "updated": updated}
        }))
        .unwrap()
    }

    #[test]
    fn sessions_with_owners_are_never_candidates() {
        let stamp = json!({"instance": "i", "deployment": "d"});
        assert!(!owned_elsewhere(&pooled(
            "ses_1",
            "PorTaTek Gateway",
            stamp.clone(),
            1
        )));
        assert!(!owned_elsewhere(&pooled(
            "ses_1",
            "PorTaTek Gateway (fork #1)",
            stamp,
            1
        )));
        let explicit = pooled(
            "ses_2",
            "PorTaTek Gateway [owner:k1]",
            json!({"create": "m"}),
            1,
        );
        assert!(owned_elsewhere(&explicit));
        let response = pooled(
            "ses_3",
            "PorTaTek Gateway",
            json!({"owner": "k1", "responses": []}),
            1,
        );
        assert!(owned_elsewhere(&response));
    }

    #[test]
    fn each_upstream_sweeps_what_was_made_through_it() {
        let through = |upstream: Value| {
            let stamp = json!({"instance": "i", "deployment": "d", "upstream": upstream});
            pooled("ses_1", "PorTaTek Gateway", stamp, 1)
        };
        assert!(made_through(&through(json!("a")), "a"));
        assert!(!made_through(&through(json!("b")), "a"));
        assert!(
            made_through(&through(Value::Null), "a"),
            "no upstream named"
        );
    }
}
