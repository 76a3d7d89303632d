//! `[metrics]`: whether Prometheus `/metrics` is served, and on which listener (a scraper may
//! need it without an API key, on an address clients do not reach).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::units;

/// `[metrics]`: Prometheus `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Serve it on this address instead, without a key (e.g. `0.0.0.0:9090` for a scraper
    /// inside the cluster); unset: on the API's listener, behind the API keys.
    #[serde(default, with = "units::optional_address")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: None,
        }
    }
}
