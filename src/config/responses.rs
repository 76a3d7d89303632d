//! `[responses]`: how long the Responses API's stored responses (`store: true`) are kept, and how
//! many, since each holds an OpenCode session upstream.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

/// `[responses]`: stored responses (`/v1/responses` with `store: true`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponsesConfig {
    /// Idle time after which a conversation of stored responses is deleted upstream, and its
    /// responses answer 404 (`ttl_secs`).
    #[serde(rename = "ttl_secs", with = "units::secs")]
    pub ttl: Duration,
    /// Most conversations of stored responses kept; the least recently used are deleted beyond.
    pub max_sessions: usize,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            ttl: Duration::from_secs(86_400),
            max_sessions: 10_000,
        }
    }
}
