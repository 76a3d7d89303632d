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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

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

/// A conversation's session as the shared store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedConversation {
    /// The upstream's name.
    pub upstream: String,
    /// The OpenCode session.
    pub session: String,
    /// The newest message id of the remembered state (stored as `floor`, the name replicas
    /// of earlier versions read).
    #[serde(rename = "floor")]
    pub history_end: Option<String>,
    /// The gateway instance that wrote the entry (and whose stamp the session carries); absent
    /// in entries of gateways that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// How long a down store is left alone before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Claims run `KEYS[1]` for holder `ARGV[1]` (`ARGV[2]` ms) when free, and marks the session
/// as running in `KEYS[2]` (`ARGV[3]` ms), a mark only a release removes: 0 = held by another,
/// 1 = claimed, 2 = claimed but the mark was still there (the last holder died mid-run).
const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local prev = redis.call('GET', KEYS[2])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
  if prev then return 2 end
  return 1
end
return 0
"#;

/// Releases run `KEYS[1]` and its mark `KEYS[2]` when they are holder `ARGV[1]`'s.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// How long the mark of a running session outlives an unreleased claim (a holder that died).
const RUNNING_MARK_TTL: Duration = Duration::from_secs(86_400);

/// What a run claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Another replica runs on the session.
    Held,
    /// Claimed; the last run ended normally.
    Taken,
    /// Claimed, but the last holder's claim lapsed without a release: it died mid-run, and its
    /// run may still be going upstream (abort it before prompting).
    TakenFromLapsed,
}

/// Deletes `KEYS[1]` when its value is `ARGV[1]`.
const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Extends `KEYS[1]` by `ARGV[2]` ms when its value is `ARGV[1]`.
const COMPARE_AND_EXPIRE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Adds `ARGV[1]` to `KEYS[1]`, sets its expiry to `ARGV[2]` ms when it has none; the total.
const ADD_AND_EXPIRE: &str = r#"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
"#;

struct Redis {
    client: redis::Client,
    settings: StoreSettings,
    holder: String,
    conn: Mutex<Conn>,
    up: AtomicBool,
    compare_and_delete: redis::Script,
    compare_and_expire: redis::Script,
    add_and_expire: redis::Script,
    claim: redis::Script,
    release: redis::Script,
}

#[derive(Default)]
struct Conn {
    live: Option<MultiplexedConnection>,
    /// No attempt before this instant (after a failure).
    quiet_until: Option<Instant>,
}

/// The shared store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    redis: Option<Arc<Redis>>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

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
                compare_and_delete: redis::Script::new(COMPARE_AND_DELETE),
                compare_and_expire: redis::Script::new(COMPARE_AND_EXPIRE),
                add_and_expire: redis::Script::new(ADD_AND_EXPIRE),
                claim: redis::Script::new(CLAIM),
                release: redis::Script::new(RELEASE),
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

    /// `conv:<fp>` taken (exclusive: `GETDEL`).
    pub async fn take_conversation(
        &self,
        fp: &[u8; 32],
    ) -> Result<Option<SharedConversation>, StoreError> {
        let r = self.shared()?;
        let raw: Option<String> = r
            .call(redis::cmd("GETDEL").arg(r.key("conv:", &hex(fp))))
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// `conv:<fp>` read.
    pub async fn peek_conversation(
        &self,
        fp: &[u8; 32],
    ) -> Result<Option<SharedConversation>, StoreError> {
        let r = self.shared()?;
        let raw: Option<String> = r
            .call(redis::cmd("GET").arg(r.key("conv:", &hex(fp))))
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// `conv:<fp>` written for `ttl`.
    pub async fn put_conversation(
        &self,
        fp: &[u8; 32],
        entry: &SharedConversation,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let value = serde_json::to_string(entry).unwrap_or_default();
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("conv:", &hex(fp)))
            .arg(value)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// Deletes `conv:<fp>` only when it is still `entry`; whether it did.
    pub async fn remove_conversation_if(
        &self,
        fp: &[u8; 32],
        entry: &SharedConversation,
    ) -> Result<bool, StoreError> {
        let r = self.shared()?;
        let value = serde_json::to_string(entry).unwrap_or_default();
        let mut inv = r.compare_and_delete.prepare_invoke();
        inv.key(r.key("conv:", &hex(fp))).arg(value);
        let n: i64 = r.script(&inv).await?;
        Ok(n == 1)
    }

    /// The upstream holding `session`.
    pub async fn session_home(&self, session: &str) -> Result<Option<String>, StoreError> {
        let r = self.shared()?;
        r.call(redis::cmd("GET").arg(r.key("session:", session)))
            .await
    }

    /// Records that `session` lives on `upstream`, for `ttl`.
    pub async fn set_session_home(
        &self,
        session: &str,
        upstream: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("session:", session))
            .arg(upstream)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// Forgets everything about `session` (deleted upstream).
    pub async fn forget_session(&self, session: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(r.key("session:", session))
            .arg(r.key("floor:", session))
            .arg(r.key("run:", session))
            .arg(r.key("running:", session));
        r.call::<()>(&cmd).await
    }

    /// Claims `session` for one run of this process (see [`Claim`]).
    pub async fn claim_run(&self, session: &str) -> Result<Claim, StoreError> {
        let r = self.shared()?;
        let mut inv = r.claim.prepare_invoke();
        inv.key(r.key("run:", session))
            .key(r.key("running:", session))
            .arg(&r.holder)
            .arg(ms(r.settings.lease_ttl))
            .arg(ms(RUNNING_MARK_TTL));
        let n: i64 = r.script(&inv).await?;
        Ok(match n {
            0 => Claim::Held,
            2 => Claim::TakenFromLapsed,
            _ => Claim::Taken,
        })
    }

    /// Extends this process's claim on `session`; `false` when it is not (or no longer) ours.
    pub async fn renew_run(&self, session: &str) -> Result<bool, StoreError> {
        let r = self.shared()?;
        let mut inv = r.compare_and_expire.prepare_invoke();
        inv.key(r.key("run:", session))
            .arg(&r.holder)
            .arg(ms(r.settings.lease_ttl));
        let n: i64 = r.script(&inv).await?;
        Ok(n == 1)
    }

    /// Ends this process's claim on `session` (another holder's stays).
    pub async fn release_run(&self, session: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut inv = r.release.prepare_invoke();
        inv.key(r.key("run:", session))
            .key(r.key("running:", session))
            .arg(&r.holder);
        r.script::<i64>(&inv).await.map(|_| ())
    }

    /// The newest message id before `session`'s next run.
    pub async fn history_end(&self, session: &str) -> Result<Option<String>, StoreError> {
        let r = self.shared()?;
        r.call(redis::cmd("GET").arg(r.key("floor:", session)))
            .await
    }

    /// Records `session`'s history end for `ttl`.
    pub async fn set_history_end(
        &self,
        session: &str,
        history_end: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("floor:", session))
            .arg(history_end)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// Records that gateway `instance` (of `deployment`) is alive, for `ttl`.
    pub async fn beat(
        &self,
        instance: &str,
        deployment: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("instance:", instance))
            .arg(deployment)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// Which of `instances` are alive (have a heartbeat), in order.
    pub async fn alive(&self, instances: &[&str]) -> Result<Vec<bool>, StoreError> {
        let r = self.shared()?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for id in instances {
            cmd.arg(r.key("instance:", id));
        }
        let found: Vec<Option<String>> = r.call(&cmd).await?;
        Ok(found.iter().map(Option::is_some).collect())
    }

    /// Removes gateway `instance`'s heartbeat (it is shutting down).
    pub async fn forget_instance(&self, instance: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        r.call::<()>(redis::cmd("DEL").arg(r.key("instance:", instance)))
            .await
    }

    /// Adds `amount` to counter `rate:<name>` (which expires `ttl` after its creation); the
    /// new total.
    pub async fn add_to_counter(
        &self,
        name: &str,
        amount: u64,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let r = self.shared()?;
        let mut inv = r.add_and_expire.prepare_invoke();
        inv.key(r.key("rate:", name)).arg(amount).arg(ms(ttl));
        let n: i64 = r.script(&inv).await?;
        Ok(n.max(0) as u64)
    }

    /// Records that response `id` runs now (`record`: its owner, session and snapshot, as
    /// JSON), for at most `ttl`, so every replica can answer `GET` for it.
    pub async fn set_running_response(
        &self,
        id: &str,
        record: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("response:", id))
            .arg(record)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// What [`set_running_response`](Self::set_running_response) recorded for `id`, while it
    /// runs.
    pub async fn running_response(&self, id: &str) -> Result<Option<String>, StoreError> {
        let r = self.shared()?;
        r.call(redis::cmd("GET").arg(r.key("response:", id))).await
    }

    /// Response `id` no longer runs.
    pub async fn forget_running_response(&self, id: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        r.call::<()>(redis::cmd("DEL").arg(r.key("response:", id)))
            .await
    }
}

impl Redis {
    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}{id}", self.settings.key_prefix)
    }

    /// The connection: the live one, or a new one unless a failure was less than a second ago.
    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = &conn.live {
            return Ok(c.clone());
        }
        if conn.quiet_until.is_some_and(|t| Instant::now() < t) {
            return Err(StoreError::Unavailable(
                "Redis is down; retrying shortly".into(),
            ));
        }
        let made = tokio::time::timeout(
            self.settings.timeout,
            self.client.get_multiplexed_async_connection(),
        )
        .await;
        match made {
            Ok(Ok(c)) => {
                conn.live = Some(c.clone());
                conn.quiet_until = None;
                Ok(c)
            }
            Ok(Err(e)) => {
                conn.quiet_until = Some(Instant::now() + RETRY_AFTER);
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                conn.quiet_until = Some(Instant::now() + RETRY_AFTER);
                Err(StoreError::Unavailable("connect timed out".into()))
            }
        }
    }

    /// Notes a call's outcome: the first failure drops the connection and warns; the first
    /// success after failures says so.
    async fn outcome<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let failure = match result {
            Ok(Ok(v)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis answers again; replicas share state again");
                    metrics::gauge!("portatek_store_up").set(1.0);
                }
                return Ok(v);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.timeout),
        };
        self.down(&failure).await;
        Err(StoreError::Unavailable(failure))
    }

    /// A call failed: the connection is dropped and the next attempt waits a second.
    async fn down(&self, why: &str) {
        {
            let mut conn = self.conn.lock().await;
            conn.live = None;
            conn.quiet_until = Some(Instant::now() + RETRY_AFTER);
        }
        self.mark_down(why);
    }

    /// Says (once) that Redis is unreachable.
    fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %why, "Redis unreachable; using this replica's own state until it answers");
            metrics::gauge!("portatek_store_up").set(0.0);
        }
    }

    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.attempt(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.attempt(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await
    }

    /// Runs `op` on the connection, bounded by the timeout; once more on a new connection when
    /// the first one turns out to have died since its last use.
    async fn attempt<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        for attempt in 0..2 {
            let conn = self.usable_connection().await?;
            let result = tokio::time::timeout(self.settings.timeout, op(conn)).await;
            if attempt == 0 && self.stale(&result).await {
                continue;
            }
            return self.outcome(result).await;
        }
        Err(StoreError::Unavailable("connection lost".into()))
    }

    async fn usable_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        self.connection().await.inspect_err(|e| {
            // `connection` already set the quiet period (and must not extend it).
            if let StoreError::Unavailable(why) = e {
                self.mark_down(why);
            }
        })
    }

    /// Whether `result` is the error of a connection that died since its last use (Redis
    /// restarted, say): then it is dropped, and the call tried once more on a new one.
    async fn stale<T>(
        &self,
        result: &Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> bool {
        let dropped = matches!(result, Ok(Err(e)) if e.is_connection_dropped() || e.is_io_error());
        if dropped {
            self.conn.lock().await.live = None;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        let entry = SharedConversation {
            upstream: "a".into(),
            session: "ses_1".into(),
            history_end: None,
            holder: None,
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(text, r#"{"upstream":"a","session":"ses_1","floor":null}"#);
        assert_eq!(
            serde_json::from_str::<SharedConversation>(&text).unwrap(),
            entry
        );
        let held = SharedConversation {
            holder: Some("i1".into()),
            ..entry
        };
        let text = serde_json::to_string(&held).unwrap();
        assert!(text.ends_with(r#","holder":"i1"}"#), "{text}");
        assert_eq!(
            serde_json::from_str::<SharedConversation>(&text).unwrap(),
            held
        );
        assert_eq!(ms(Duration::ZERO), 1, "never PX 0 (Redis refuses it)");
    }

    #[tokio::test]
    async fn memory_store_answers_local() {
        let s = Store::memory();
        assert!(!s.is_shared() && !s.is_up());
        assert!(matches!(s.claim_run("ses_x").await, Err(StoreError::Local)));
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast_and_quietly() {
        let s = Store::redis(StoreSettings {
            // Nothing listens on port 1.
            url: "redis://127.0.0.1:1/0".into(),
            key_prefix: "t:".into(),
            timeout: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(1),
        });
        let started = std::time::Instant::now();
        assert!(matches!(
            s.session_home("ses_x").await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(!s.is_up());
        // Within the quiet second: no network at all.
        assert!(s.history_end("ses_x").await.is_err());
        assert!(started.elapsed() < Duration::from_millis(900));
    }
}
