//! Configuration: defaults < TOML file < environment < command-line flags.
//!
//! Each `[section]` is its own struct with `deny_unknown_fields`, so a misspelt key is an error
//! naming it rather than a silently ignored setting. Durations and addresses are typed here
//! (`Duration`, `SocketAddr`) while the file keeps its plain numbers (`deadline_secs = 300`):
//! code never converts units at the point of use. Every key is documented with its default in
//! `config.example.toml` (a test keeps the two equal). [`Config::load`] (in `load.rs`) layers
//! the sources and validates the result; a bad value is a [`ConfigError`] naming the key.

mod admission;
mod load;
mod units;

pub use admission::AdmissionConfig;

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

/// `[[upstreams]]`: one of several OpenCode servers. Unset fields take `[opencode]`'s value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Label in `/status`, `/metrics`, logs and the shared store (default `upstream-<n>`):
    /// replicas must agree on it, so it names the server, not its position.
    pub name: String,
    /// Base URL of the OpenCode server.
    pub url: String,
    /// Basic-auth user name (default: `opencode.username`).
    pub username: Option<String>,
    /// Basic-auth password (default: `opencode.password`).
    pub password: Option<String>,
    /// Relative share of new conversations (at least 1).
    pub weight: u32,
    /// Project directory (default: `opencode.directory`).
    pub directory: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            url: String::new(),
            username: None,
            password: None,
            weight: 1,
            directory: None,
        }
    }
}

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

/// Which store holds the state replicas share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// This process only.
    #[default]
    Memory,
    /// A Redis server shared by every replica.
    Redis,
}

/// `[store]`: state shared by gateway replicas (see [`crate::store`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` (default) or `redis`.
    pub kind: StoreKind,
    /// Redis URL (env `PORTATEK_REDIS_URL`), required with `kind = "redis"`.
    pub url: Option<String>,
    /// Prefix of every key the gateway writes.
    pub key_prefix: String,
    /// Bound of each Redis call (`timeout_ms`); slower counts as Redis down.
    #[serde(rename = "timeout_ms", with = "units::millis")]
    pub timeout: Duration,
    /// How long a run's claim on a session outlives its holder's last renewal (`lease_ttl_secs`).
    #[serde(rename = "lease_ttl_secs", with = "units::secs")]
    pub lease_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Memory,
            url: None,
            key_prefix: "portatek:".into(),
            timeout: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(30),
        }
    }
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

/// `[auth]`: bearer API keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted client keys (env `PORTATEK_API_KEYS`, comma-separated): role `client`.
    pub api_keys: Vec<String>,
    /// Must be `true` to run without keys on a non-loopback address.
    pub disabled: bool,
    /// Keys with a name, a role and a scope (`[[auth.keys]]`).
    pub keys: Vec<KeyConfig>,
}

/// A key's role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Its own sessions and responses only.
    #[default]
    Client,
    /// Everything, admin routes included.
    Admin,
}

/// `[[auth.keys]]`: one key with its name, role and scope.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs and audit lines (never the key).
    pub name: String,
    /// The key itself…
    pub key: Option<String>,
    /// …or its SHA-256 in hex (`printf %s "$KEY" | sha256sum`), so the file holds no secret.
    pub key_sha256: Option<String>,
    /// `client` (default) or `admin`.
    pub role: KeyRole,
    /// Agents it may select per request (empty: only its default).
    pub agents: Vec<String>,
    /// Project directories it may select per request (empty: only its default).
    pub directories: Vec<String>,
    /// Whether its runs may use OpenCode's own tools (unset: `prompt.tools_enabled`).
    pub tools: Option<bool>,
    /// Agent when a request names none (unset: `prompt.agent`).
    pub default_agent: Option<String>,
    /// Directory when a request names none (unset: `opencode.directory`).
    pub default_directory: Option<String>,
    /// Its own requests per minute (unset: `rate_limits`).
    pub requests_per_minute: Option<u32>,
    /// Its own tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Its own runs at once.
    pub concurrent_runs: Option<u32>,
}

/// `[models]`: the catalog exposed at `/v1/models`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Only these model ids are exposed (`provider/model`; a trailing `*` matches a prefix). Empty = all.
    pub allowlist: Vec<String>,
    /// How long a fetched catalog stays fresh; it is refreshed in the background (`cache_ttl_secs`).
    #[serde(rename = "cache_ttl_secs", with = "units::secs")]
    pub cache_ttl: Duration,
}

/// `[prompt]`: how each chat request runs upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptConfig {
    /// OpenCode agent to run prompts with; unset uses OpenCode's default agent.
    pub agent: Option<String>,
    /// Let the model use OpenCode's tools (bash, edit, …), as the agent allows them. Off: every
    /// prompt carries `tools: {"*": false}`, whatever the agent. Dangerous: gives API callers
    /// the OpenCode host.
    pub tools_enabled: bool,
    /// Model retries OpenCode may make before the gateway gives up (0 = fail at the first retry).
    pub max_model_retries: u32,
    /// Overall deadline of one chat completion (`deadline_secs`).
    #[serde(rename = "deadline_secs", with = "units::secs")]
    pub deadline: Duration,
    /// Interval of SSE keep-alive comments while the model is silent (`keepalive_secs`).
    #[serde(rename = "keepalive_secs", with = "units::secs")]
    pub keepalive: Duration,
    /// Title given to every OpenCode session the gateway creates (a title avoids an extra model call).
    pub session_title: String,
}

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

/// How permission requests of OpenCode's agent are answered (see [`crate::permissions`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionPolicy {
    /// Reject at once; the model carries on.
    #[default]
    Deny,
    /// Grant what the allowlist names, reject the rest.
    Allow,
    /// Ask the API caller, reject after the timeout.
    Client,
}

/// `[permissions]`: permission requests and questions of OpenCode's agent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionsConfig {
    /// `deny`, `allow` or `client`.
    pub policy: PermissionPolicy,
    /// With `allow`: what is granted, `tool` or `tool:pattern` (`bash:git *`, `read`).
    pub allow: Vec<String>,
    /// With `client`: how long a request waits for the caller before it is rejected.
    #[serde(rename = "timeout_secs", with = "units::secs")]
    pub timeout: Duration,
    /// At start, on an OpenCode the gateway did not start itself: end the OpenCode instances
    /// of the project directories it serves (when none of their sessions is busy), clearing
    /// `always` approvals other clients saved there. Off by default: it also drops what
    /// others keep in those instances (MCP servers added at run time).
    pub reset_on_start: bool,
}

impl Default for PermissionsConfig {
    fn default() -> Self {
        PermissionsConfig {
            policy: PermissionPolicy::Deny,
            allow: Vec::new(),
            timeout: Duration::from_secs(60),
            reset_on_start: false,
        }
    }
}

/// `[admin]`: what admin keys may do beyond reading (each off by default).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Let admin keys run commands and shell lines in sessions (shell access to the OpenCode
    /// host).
    pub allow_execution: bool,
    /// Let owners share sessions publicly (OpenCode's share links).
    pub allow_share: bool,
    /// Let admin keys change OpenCode's configuration.
    pub allow_config_patch: bool,
}

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

impl Default for OpenCodeConfig {
    fn default() -> Self {
        OpenCodeConfig {
            base_url: None,
            binary: None,
            config_file: None,
            cache_dir: None,
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

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            allowlist: Vec::new(),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            agent: None,
            tools_enabled: false,
            max_model_retries: 2,
            deadline: Duration::from_secs(300),
            keepalive: Duration::from_secs(15),
            session_title: "PorTaTek Gateway".into(),
        }
    }
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
