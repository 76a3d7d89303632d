//! `[admission]`: how many runs each upstream takes at once, and what waits or is refused
//! beyond that (see [`crate::upstreams::admission`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

/// `[admission]`: admission control per upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Off: every request is forwarded at once, however many (the behaviour before).
    pub enabled: bool,
    /// Follow OpenCode's latency (on) or keep the limit at `initial_limit` (off).
    pub adaptive: bool,
    /// Runs in flight per upstream at start (and always, when not adaptive).
    pub initial_limit: usize,
    /// The adaptive limit never goes below this.
    pub min_limit: usize,
    /// The adaptive limit never goes above this.
    pub max_limit: usize,
    /// How much slower than usual OpenCode may accept prompts before the limit shrinks
    /// (2.0: twice its long-run average).
    pub tolerance: f64,
    /// Most requests waiting per upstream (never more than the current limit); beyond it a
    /// request is refused at once.
    pub queue: usize,
    /// Longest wait in the queue (`queue_timeout_ms`), while the upstream is healthy (an
    /// overloaded one refuses at once); then the request is refused.
    #[serde(rename = "queue_timeout_ms", with = "units::millis")]
    pub queue_timeout: Duration,
    /// `Retry-After` of a refusal (`retry_after_secs`).
    #[serde(rename = "retry_after_secs", with = "units::secs")]
    pub retry_after: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            adaptive: true,
            initial_limit: 64,
            min_limit: 4,
            max_limit: 4096,
            tolerance: 2.0,
            queue: 1024,
            queue_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl AdmissionConfig {
    /// What is wrong with these settings, if anything: (key, why).
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.min_limit == 0 || self.min_limit > self.max_limit {
            return Some((
                "admission.min_limit",
                "must be at least 1 and at most max_limit",
            ));
        }
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Some(("admission.tolerance", "must be a number of at least 1.0"));
        }
        None
    }
}
