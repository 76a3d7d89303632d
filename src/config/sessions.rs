//! `[sessions]`: the pool mapping conversations to OpenCode sessions, its bounds, and the sweep
//! that deletes sessions left behind by gateways that died.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, units, ConfigError};

/// `[sessions]`: the conversation → OpenCode session pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Idle time after which a pooled session is evicted and deleted upstream (`ttl_secs`).
    #[serde(rename = "ttl_secs", with = "units::secs")]
    pub ttl: Duration,
    /// Most conversations remembered at once; the least useful are evicted beyond it.
    pub max_capacity: u64,
    /// Delete pooled sessions upstream when the gateway shuts down.
    pub delete_on_shutdown: bool,
    /// Most explicit sessions (`POST /v1/sessions`) one API key may hold at once.
    pub max_explicit_per_key: usize,
    /// How often every upstream is swept for pooled sessions no live gateway holds
    /// (`sweep_interval_secs`; 0 = never). See `crate::sessions` (the sweep).
    #[serde(rename = "sweep_interval_secs", with = "units::secs")]
    pub sweep_interval: Duration,
    /// Where this gateway keeps its instance id across restarts (env `PORTATEK_STATE_DIR`);
    /// unset: `$XDG_STATE_HOME/portatek-gateway`, else `~/.local/state/portatek-gateway`.
    pub state_dir: Option<PathBuf>,
    /// The name stamped on pooled sessions so that a sweep touches only its own deployment's;
    /// unset: derived from the shared store (its Redis address and key prefix), or `local`
    /// without one.
    pub deployment: Option<String>,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ttl: Duration::from_secs(900),
            max_capacity: 1_000,
            delete_on_shutdown: true,
            max_explicit_per_key: 100,
            sweep_interval: Duration::from_secs(60),
            state_dir: None,
            deployment: None,
        }
    }
}

impl SessionsConfig {
    /// Checks the deployment name (durations and counts are checked with every section's).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(name) = &self.deployment {
            let fits =
                !name.trim().is_empty() && name.len() <= 128 && !name.chars().any(char::is_control);
            if !fits {
                return Err(invalid(
                    "sessions.deployment",
                    "must be 1 to 128 characters, none of them control characters",
                ));
            }
        }
        Ok(())
    }
}
