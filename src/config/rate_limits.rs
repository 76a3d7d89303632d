//! `[rate_limits]` and `[[rate_limits.keys]]`: how much each API key may ask of the gateway
//! (requests, tokens, runs at once), so that one caller cannot starve the others.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// `[rate_limits]`: limits per API key (0 = none), with overrides for some keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Requests per minute on `/v1/…`, per key.
    pub requests_per_minute: u32,
    /// Tokens (in + out) per minute, per key, counted after each run.
    pub tokens_per_minute: u64,
    /// Runs at once, per key (a run waiting for tool results counts).
    pub concurrent_runs: u32,
    /// Other limits for some keys (`[[rate_limits.keys]]`).
    pub keys: Vec<KeyLimitsConfig>,
}

/// `[[rate_limits.keys]]`: one key's own limits (unset fields take the defaults).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimitsConfig {
    /// The key's id as the gateway names it: `k` and the first 16 hex digits of the key's
    /// SHA-256 (`printf %s "$KEY" | sha256sum | cut -c1-16`).
    pub key_id: String,
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Runs at once.
    pub concurrent_runs: Option<u32>,
}

impl RateLimitsConfig {
    /// Checks that every override names a key id, not a key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, o) in self.keys.iter().enumerate() {
            let id = o.key_id.as_bytes();
            let well_formed = id.len() == 17
                && id[0] == b'k'
                && id[1..]
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
            if !well_formed {
                // Not echoed: the likely mistake is the API key itself pasted here.
                return Err(invalid(
                    &format!("rate_limits.keys[{i}].key_id"),
                    "must be a key id (`k` and the first 16 hex digits of the key's SHA-256), not the key",
                ));
            }
        }
        Ok(())
    }
}
