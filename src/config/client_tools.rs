//! `[client_tools]`: OpenAI function calling. The client's tools are served to OpenCode over the
//! gateway's own MCP endpoint; these settings bound how many such runs exist and where OpenCode
//! calls back.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, units, ConfigError};

/// `[client_tools]`: OpenAI function calling through the gateway's MCP endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientToolsConfig {
    /// Most runs using client tools at once (each holds one MCP server slot in OpenCode, from
    /// the request until its last tool round is answered; more → 429).
    pub max_runs: usize,
    /// How long the gateway waits for a client's tool results before abandoning the run
    /// (`result_timeout_secs`).
    #[serde(rename = "result_timeout_secs", with = "units::secs")]
    pub result_timeout: Duration,
    /// Where the MCP endpoint OpenCode calls back listens (loopback unless OpenCode runs
    /// elsewhere); port 0 picks a free one.
    #[serde(with = "units::address")]
    pub listen: SocketAddr,
    /// The endpoint's base URL as OpenCode reaches it; unset = `http://<listen address>`.
    pub advertise_url: Option<String>,
}

impl Default for ClientToolsConfig {
    fn default() -> Self {
        ClientToolsConfig {
            max_runs: 32,
            result_timeout: Duration::from_secs(300),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_url: None,
        }
    }
}

impl ClientToolsConfig {
    /// Checks the run bound and the advertised URL (durations are checked with every section's).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.max_runs) {
            return Err(invalid(
                "client_tools.max_runs",
                "must be between 1 and 100",
            ));
        }
        if let Some(url) = &self.advertise_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| invalid("client_tools.advertise_url", format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "client_tools.advertise_url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        Ok(())
    }
}
