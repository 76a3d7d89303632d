//! `[opencode]`: the one upstream OpenCode server (or the embedded one the gateway starts), and
//! how every upstream call is timed and retried. `[[upstreams]]` entries take their unset
//! fields from here.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, units, ConfigError};

/// `[opencode]`: where the upstream is and how to talk to it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenCodeConfig {
    /// Base URL of a running OpenCode server (env `OPENCODE_BASE_URL`, flag `--opencode-url`).
    /// Unset: the gateway starts and supervises its own (see [`crate::embedded`]).
    pub base_url: Option<String>,
    /// The `opencode` binary for the embedded server (env `OPENCODE_BIN`); unset: `opencode` on
    /// `PATH`, else the pinned version installed with npm.
    pub binary: Option<PathBuf>,
    /// An `opencode.json` for the embedded server (providers, agents), passed as
    /// `OPENCODE_CONFIG`.
    pub config_file: Option<PathBuf>,
    /// Where the pinned OpenCode is installed when needed (default: the user's cache directory).
    pub cache_dir: Option<PathBuf>,
    /// The OpenCode version installed for the embedded server when no binary is found
    /// (default: the pinned 2.x, `OPENCODE_VERSION`; `"1.18.34"` pins the last 1.x).
    pub version: Option<String>,
    /// Basic-auth user name (env `OPENCODE_SERVER_USERNAME`).
    pub username: String,
    /// Basic-auth password; unset means no auth (env `OPENCODE_SERVER_PASSWORD`).
    pub password: Option<String>,
    /// Project directory: sent as `x-opencode-directory`, and the embedded server's working
    /// directory; unset uses the server's own.
    pub directory: Option<String>,
    /// TCP connect timeout (`connect_timeout_ms`).
    #[serde(rename = "connect_timeout_ms", with = "units::millis")]
    pub connect_timeout: Duration,
    /// Timeout of ordinary upstream calls: session create, model list, abort, … (`request_timeout_ms`).
    #[serde(rename = "request_timeout_ms", with = "units::millis")]
    pub request_timeout: Duration,
    /// Timeout of the readiness probe's upstream call (`health_timeout_ms`).
    #[serde(rename = "health_timeout_ms", with = "units::millis")]
    pub health_timeout: Duration,
    /// Attempts for idempotent upstream calls (session create, model list, health); prompts are never retried.
    pub retry_attempts: u32,
}

impl Default for OpenCodeConfig {
    fn default() -> Self {
        OpenCodeConfig {
            base_url: None,
            binary: None,
            config_file: None,
            cache_dir: None,
            version: None,
            username: "opencode".into(),
            password: None,
            directory: None,
            connect_timeout: Duration::from_millis(2_000),
            request_timeout: Duration::from_millis(15_000),
            health_timeout: Duration::from_millis(2_000),
            retry_attempts: 3,
        }
    }
}

impl OpenCodeConfig {
    /// Checks the base URL and the user name (durations and counts are checked with every
    /// section's, in [`super::Config::validate`]).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(base) = &self.base_url {
            let url = reqwest::Url::parse(base)
                .map_err(|e| invalid("opencode.base_url", format!("{base:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(invalid(
                    "opencode.base_url",
                    format!("{base:?} is not an http(s) URL"),
                ));
            }
        }
        if self.username.is_empty() {
            return Err(invalid("opencode.username", "must not be empty"));
        }
        Ok(())
    }
}
