//! `[store]`: where the state gateway replicas share lives (leases on sessions, rate-limit
//! counters, …): this process's memory, or a Redis server every replica reaches.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, units, ConfigError};

/// Which store holds the state replicas share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// This process only.
    #[default]
    Memory,
    /// A Redis server shared by every replica.
    Redis,
}

/// `[store]`: state shared by gateway replicas (see [`crate::store`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` (default) or `redis`.
    pub kind: StoreKind,
    /// Redis URL (env `PORTATEK_REDIS_URL`), required with `kind = "redis"`.
    pub url: Option<String>,
    /// Prefix of every key the gateway writes.
    pub key_prefix: String,
    /// Bound of each Redis call (`timeout_ms`); slower counts as Redis down.
    #[serde(rename = "timeout_ms", with = "units::millis")]
    pub timeout: Duration,
    /// How long a run's claim on a session outlives its holder's last renewal (`lease_ttl_secs`).
    #[serde(rename = "lease_ttl_secs", with = "units::secs")]
    pub lease_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Memory,
            url: None,
            key_prefix: "portatek:".into(),
            timeout: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

impl StoreConfig {
    /// Checks that a Redis store has a Redis URL (durations are checked with every section's).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.kind, &self.url) {
            (StoreKind::Redis, None) => {
                return Err(invalid(
                    "store.url",
                    "required with `store.kind = \"redis\"` (or PORTATEK_REDIS_URL)",
                ))
            }
            (StoreKind::Redis, Some(u)) => {
                let parsed = reqwest::Url::parse(u)
                    .map_err(|e| invalid("store.url", format!("not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "redis" | "rediss") {
                    return Err(invalid("store.url", "must be a redis:// or rediss:// URL"));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
