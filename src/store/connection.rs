//! The one Redis connection behind a shared store, and why calls fail fast: every call is
//! bounded by the timeout, a failure drops the connection and marks the store down (one
//! warning), no call touches the network for a second after, and a connection that died since
//! its last use is replaced once. Apart from the keys (the other modules), which only say what
//! to ask.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{StoreError, StoreSettings};

/// How long a down store is left alone before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The Redis side of a shared [`Store`](super::Store): the client, this process's holder token,
/// the one multiplexed connection and whether Redis answers, and the prepared scripts.
pub(super) struct Redis {
    pub(super) client: redis::Client,
    pub(super) settings: StoreSettings,
    pub(super) holder: String,
    pub(super) conn: Mutex<Conn>,
    pub(super) up: AtomicBool,
    pub(super) compare_and_delete: redis::Script,
    pub(super) compare_and_expire: redis::Script,
    pub(super) add_and_expire: redis::Script,
    pub(super) claim: redis::Script,
    pub(super) release: redis::Script,
}

#[derive(Default)]
/// The live connection, if any, and the quiet period after a failure.
pub(super) struct Conn {
    live: Option<MultiplexedConnection>,
    /// No attempt before this instant (after a failure).
    quiet_until: Option<Instant>,
}

impl Redis {
    /// The full key of `id` in namespace `kind` (`conv:`, `run:`…), under the prefix.
    pub(super) fn key(&self, kind: &str, id: &str) -> String {
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

    /// Runs one command (see [`attempt`](Self::attempt)).
    pub(super) async fn call<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.attempt(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs one script (see [`attempt`](Self::attempt)).
    pub(super) async fn script<T: redis::FromRedisValue>(
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
