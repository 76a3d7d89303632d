//! State shared by gateway replicas: in this process only (`[store] kind = "memory"`, the
//! default), or in Redis (`kind = "redis"`), so that replicas behind a load balancer behave as
//! one gateway.
//!
//! What lives in Redis, every key under `store.key_prefix`:
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `conv:<sha256>` | `{"upstream","session","floor"}`: the session holding a conversation | `sessions.ttl_secs` + 60 s; taken (`GETDEL`) by the replica continuing it |
//! | `session:<id>` | the upstream holding an explicit or Responses session | 7 days after last set |
//! | `run:<id>` | the replica running a prompt on the session | `store.lease_ttl_secs`, renewed every third of it while the run lives |
//! | `running:<id>` | the same, removed only by a release: still there at the next claim, the last holder died mid-run (its run is aborted first) | 1 day |
//! | `history end:<id>` | the newest message id before the session's next run | 7 days |
//! | `rate:req:<key>:<minute>`, `rate:tok:<key>:<minute>` | requests and tokens of a key in a minute | 2 minutes |
//! | `instance:<id>` | a live gateway instance's deployment (its heartbeat: the sweep spares the pooled sessions of live instances) | `store.lease_ttl_secs`, renewed every third of it; deleted at a clean shutdown |
//!
//! Redis is a helper, never a dependency of a request: every call is bounded by
//! `store.timeout_ms`; a failed or slow call marks the store down (one warning), callers then
//! use their local state, and for a second no call touches the network; the next call after
//! that tries again and, when it answers, sharing resumes (one info line). The gauge
//! `portatek_store_up` says which.
//!
//! Why the `redis` crate: it is the maintained Rust client (async over Tokio, Lua scripts with
//! `EVALSHA` fallback, URL parsing with TLS and auth). Its `ConnectionManager` reconnects by
//! itself, but retries inside a call; here a call must fail fast instead, so the one
//! multiplexed connection is rebuilt by this module, at most once a second.

mod connection;
mod conversations;
mod counters;
mod heartbeats;
mod runs;
mod scripts;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use connection::{Conn, Redis};

pub use conversations::SharedConversation;
pub use runs::Claim;

/// How to reach Redis (from `[store]`).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `redis://…` URL.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Bound of each call.
    pub timeout: Duration,
    /// Lifetime of a run's claim after its last renewal.
    pub lease_ttl: Duration,
}

/// Why the shared store did not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is this process's memory: use local state.
    #[error("no shared store configured")]
    Local,
    /// Redis failed, timed out, or is known down for now.
    #[error("shared store unavailable: {0}")]
    Unavailable(String),
}

/// The shared store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    redis: Option<Arc<Redis>>,
}

/// A duration in whole milliseconds for `PX`/`PEXPIRE` (at least 1: Redis refuses 0).
fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

/// Lower-case hex of a fingerprint (the `conv:` keys).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// This process only: every call answers [`StoreError::Local`].
    pub fn memory() -> Store {
        Store { redis: None }
    }

    /// Redis at `settings.url`. Never fails and never waits: the connection is made on first
    /// use (a bad URL shows then, as the store being down, and in the log).
    pub fn redis(settings: StoreSettings) -> Store {
        let client = match redis::Client::open(settings.url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "store.url is not a usable Redis URL; sharing is off");
                return Store::memory();
            }
        };
        metrics::gauge!("portatek_store_up").set(1.0);
        Store {
            redis: Some(Arc::new(Redis {
                client,
                settings,
                holder: uuid::Uuid::new_v4().simple().to_string(),
                conn: Mutex::new(Conn::default()),
                // Optimistic until the first call says otherwise (no warning at start).
                up: AtomicBool::new(true),
                compare_and_delete: redis::Script::new(scripts::COMPARE_AND_DELETE),
                compare_and_expire: redis::Script::new(scripts::COMPARE_AND_EXPIRE),
                add_and_expire: redis::Script::new(scripts::ADD_AND_EXPIRE),
                claim: redis::Script::new(scripts::CLAIM),
                release: redis::Script::new(scripts::RELEASE),
            })),
        }
    }

    /// Whether replicas share state through Redis.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether Redis answered the last call.
    pub fn is_up(&self) -> bool {
        self.redis
            .as_ref()
            .is_some_and(|r| r.up.load(Ordering::Relaxed))
    }

    /// `memory` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self.redis {
            Some(_) => "redis",
            None => "memory",
        }
    }

    /// This process's token in run claims.
    pub fn holder(&self) -> &str {
        self.redis.as_ref().map_or("local", |r| r.holder.as_str())
    }

    /// How long a run claim outlives its last renewal.
    pub fn lease_ttl(&self) -> Duration {
        self.redis
            .as_ref()
            .map_or(Duration::from_secs(30), |r| r.settings.lease_ttl)
    }

    fn shared(&self) -> Result<&Arc<Redis>, StoreError> {
        self.redis.as_ref().ok_or(StoreError::Local)
    }
}

#[cfg(test)]
mod tests;
