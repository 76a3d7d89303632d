//! Configuration: defaults < TOML file < environment < command-line flags.
//!
//! Each `[section]` is its own struct with `deny_unknown_fields`, so a misspelt key is an error
//! naming it rather than a silently ignored setting. Durations and addresses are typed here
//! (`Duration`, `SocketAddr`) while the file keeps its plain numbers (`deadline_secs = 300`):
//! code never converts units at the point of use. Every key is documented with its default in
//! `config.example.toml` (a test keeps the two equal). [`Config::load`] (in `load.rs`) layers
//! the sources and [`Config::validate`] (in `validate.rs`) checks the result; a bad value is a
//! [`ConfigError`] naming the key.
//!
//! One file per section (`sessions.rs` holds `[sessions]`, its default and its own checks); this
//! file keeps the top-level [`Config`] listing them, the command line ([`Cli`]) and
//! [`ConfigError`]. The configuration is the bottom layer: nothing here uses the modules built
//! on it.

mod admin;
mod admission;
mod auth;
mod balancing;
mod client_tools;
mod limits;
mod load;
mod metrics;
mod models;
mod opencode;
mod permissions;
mod prompt;
mod rate_limits;
mod responses;
mod sessions;
mod store;
mod units;
mod upstreams;
mod validate;

pub use admin::AdminConfig;
pub use admission::AdmissionConfig;
pub use auth::{parse_digest, AuthConfig, KeyConfig, KeyRole};
pub use balancing::BalancingConfig;
pub use client_tools::ClientToolsConfig;
pub use limits::LimitsConfig;
pub use metrics::MetricsConfig;
pub use models::ModelsConfig;
pub use opencode::OpenCodeConfig;
pub use permissions::{PermissionPolicy, PermissionsConfig};
pub use prompt::PromptConfig;
pub use rate_limits::{KeyLimitsConfig, RateLimitsConfig};
pub use responses::ResponsesConfig;
pub use sessions::SessionsConfig;
pub use store::{StoreConfig, StoreKind};
pub use upstreams::UpstreamConfig;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Command-line flags. Each one overrides the environment and the config file.
#[derive(Debug, Default, Parser)]
#[command(
    name = "portatek-gateway",
    version,
    about = "OpenAI-compatible gateway in front of an OpenCode server"
)]
pub struct Cli {
    /// TOML configuration file (also `PORTATEK_CONFIG`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. `0.0.0.0:8080` (also `PORTATEK_LISTEN`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Base URL of the OpenCode server, e.g. `http://127.0.0.1:4096` (also `OPENCODE_BASE_URL`).
    #[arg(long, value_name = "URL")]
    pub opencode_url: Option<String>,
    /// Validate the configuration, print it (secrets masked) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Ask a running gateway's `/livez` (on the configured listen address) and exit 0 when it
    /// answers, 1 otherwise: a container `HEALTHCHECK` without curl.
    #[arg(long)]
    pub healthcheck: bool,
    /// Print the gateway's OpenAPI 3.1 description (as served at `/openapi.json`) and exit:
    /// for client generators and API viewers without a running gateway.
    #[arg(long)]
    pub openapi: bool,
}

impl Config {
    /// Whether OpenCode runs on this host (embedded, or at a loopback address), so that its
    /// project directories are this host's: the gateway then checks paths before asking.
    pub fn opencode_on_this_host(&self) -> bool {
        if !self.upstreams.is_empty() {
            return self.upstreams.iter().all(|u| is_loopback_url(&u.url));
        }
        let Some(base) = &self.opencode.base_url else {
            return true;
        };
        is_loopback_url(base)
    }

    /// The name of upstream `i` (its own, or `upstream-<i+1>`).
    pub fn upstream_name(&self, i: usize) -> String {
        upstreams::name_of(&self.upstreams, i)
    }
}

/// Whether `base` is an http(s) URL of this host.
fn is_loopback_url(base: &str) -> bool {
    let Some(host) = reqwest::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A configuration problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema (the message names the key).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A key has an unacceptable value.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The key (TOML path or environment variable name).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The error for a bad value of `key`: every section's checks build theirs with it.
fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Socket address to listen on (`listen`, env `PORTATEK_LISTEN`, flag `--listen`).
    #[serde(with = "units::address")]
    pub listen: SocketAddr,
    /// Time to let in-flight requests finish after SIGTERM/SIGINT (`shutdown_grace_secs`).
    #[serde(rename = "shutdown_grace_secs", with = "units::secs")]
    pub shutdown_grace: Duration,
    /// Log line format on stderr: `text` or `json` (env `PORTATEK_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Upstream OpenCode server.
    pub opencode: OpenCodeConfig,
    /// Client authentication.
    pub auth: AuthConfig,
    /// Model catalog.
    pub models: ModelsConfig,
    /// How prompts are run upstream.
    pub prompt: PromptConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Conversation → session pool.
    pub sessions: SessionsConfig,
    /// Client-defined tools (OpenAI function calling), served to OpenCode over MCP.
    pub client_tools: ClientToolsConfig,
    /// The Responses API's stored responses.
    pub responses: ResponsesConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Per-key rate limits.
    pub rate_limits: RateLimitsConfig,
    /// How permission requests of OpenCode's agent are answered.
    pub permissions: PermissionsConfig,
    /// Safety switches of the admin routes.
    pub admin: AdminConfig,
    /// Several OpenCode servers (`[[upstreams]]`); empty: the one `[opencode]` names.
    pub upstreams: Vec<UpstreamConfig>,
    /// How new conversations are spread over the upstreams and failing ones drained.
    pub balancing: BalancingConfig,
    /// Where state shared by gateway replicas lives.
    pub store: StoreConfig,
    /// How many runs each upstream takes at once; what waits or is refused beyond.
    pub admission: AdmissionConfig,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl Config {
    /// The configuration as `--check-config` prints it: TOML, secrets masked.
    pub fn masked_toml(&self) -> String {
        let mut shown = self.clone();
        let mask = |s: &mut String| *s = "********".into();
        if let Some(p) = shown.opencode.password.as_mut() {
            mask(p);
        }
        shown.auth.api_keys.iter_mut().for_each(mask);
        shown
            .auth
            .keys
            .iter_mut()
            .filter_map(|k| k.key.as_mut())
            .for_each(mask);
        shown
            .upstreams
            .iter_mut()
            .filter_map(|u| u.password.as_mut())
            .for_each(mask);
        // A Redis URL may carry a password (`redis://:secret@host`).
        if let Some(url) = shown.store.url.as_mut() {
            if let Ok(mut parsed) = reqwest::Url::parse(url) {
                if parsed.password().is_some() && parsed.set_password(Some("********")).is_ok() {
                    *url = parsed.to_string();
                }
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
            opencode: OpenCodeConfig::default(),
            auth: AuthConfig::default(),
            models: ModelsConfig::default(),
            prompt: PromptConfig::default(),
            limits: LimitsConfig::default(),
            sessions: SessionsConfig::default(),
            client_tools: ClientToolsConfig::default(),
            responses: ResponsesConfig::default(),
            metrics: MetricsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            permissions: PermissionsConfig::default(),
            admin: AdminConfig::default(),
            upstreams: Vec::new(),
            balancing: BalancingConfig::default(),
            store: StoreConfig::default(),
            admission: AdmissionConfig::default(),
        }
    }
}
