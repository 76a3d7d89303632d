//! `[limits]`: how large and how slow a client's request may be before the gateway stops
//! reading it, so that one client cannot hold memory or a connection indefinitely.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

/// `[limits]`: request limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body, bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Time a client may take to send its request body; slower → 408 (`body_timeout_secs`).
    #[serde(rename = "body_timeout_secs", with = "units::secs")]
    pub body_timeout: Duration,
    /// Time a client may take to send its request headers; slower: connection closed
    /// (`header_timeout_secs`).
    #[serde(rename = "header_timeout_secs", with = "units::secs")]
    pub header_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 10 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
        }
    }
}
