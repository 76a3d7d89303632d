//! `[balancing]`: how new conversations are spread over the upstreams, and how a failing one is
//! found (health probes) and drained (its circuit breaker).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, units, ConfigError};

/// `[balancing]`: health checks and the circuit breaker of each upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalancingConfig {
    /// How often every upstream is probed (`health_interval_secs`).
    #[serde(rename = "health_interval_secs", with = "units::secs")]
    pub health_interval: Duration,
    /// Consecutive failed probes that open an upstream's breaker (drain it).
    pub failure_threshold: u32,
    /// How long a tripped upstream is drained before one half-open probe (`open_secs`).
    #[serde(rename = "open_secs", with = "units::secs")]
    pub open_for: Duration,
}

impl Default for BalancingConfig {
    fn default() -> Self {
        BalancingConfig {
            health_interval: Duration::from_secs(5),
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        }
    }
}

impl BalancingConfig {
    /// Checks the breaker's threshold (its durations are checked with every section's).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(invalid("balancing.failure_threshold", "must be at least 1"));
        }
        Ok(())
    }
}
