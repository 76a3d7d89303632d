//! Configuration: defaults < TOML file < environment < command-line flags.
//!
//! Every key is documented with its default in `config.example.toml`. A bad value makes
//! [`Config::load`] fail with a [`ConfigError`] that names the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Socket address to listen on (`listen`, env `PORTATEK_LISTEN`, flag `--listen`).
    pub listen: String,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
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
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// `[opencode]`: where the upstream is and how to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenCodeConfig {
    /// Base URL (env `OPENCODE_BASE_URL`, flag `--opencode-url`).
    pub base_url: String,
    /// Basic-auth user name (env `OPENCODE_SERVER_USERNAME`).
    pub username: String,
    /// Basic-auth password; unset means no auth (env `OPENCODE_SERVER_PASSWORD`).
    pub password: Option<String>,
    /// Project directory sent as `x-opencode-directory`; unset uses the server's own.
    pub directory: Option<String>,
    /// TCP connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout of ordinary upstream calls (session create, model list, abort, …), milliseconds.
    pub request_timeout_ms: u64,
    /// Timeout of the readiness probe's upstream call, milliseconds.
    pub health_timeout_ms: u64,
    /// Attempts for idempotent upstream calls (session create, model list, health); prompts are never retried.
    pub retry_attempts: u32,
}

/// `[auth]`: bearer API keys for clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted client keys (env `PORTATEK_API_KEYS`, comma-separated).
    pub api_keys: Vec<String>,
    /// Must be `true` to run without keys on a non-loopback address.
    pub disabled: bool,
}

/// `[models]`: the catalog exposed at `/v1/models`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Only these model ids are exposed (`provider/model`; a trailing `*` matches a prefix). Empty = all.
    pub allowlist: Vec<String>,
    /// Seconds a fetched catalog stays fresh; it is refreshed in the background.
    pub cache_ttl_secs: u64,
}

/// `[prompt]`: how each chat request runs upstream.
#[derive(Debug, Clone, Deserialize)]
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
    /// Overall deadline of one chat completion, seconds.
    pub deadline_secs: u64,
    /// Seconds between SSE keep-alive comments while the model is silent.
    pub keepalive_secs: u64,
    /// Title given to every OpenCode session the gateway creates (a title avoids an extra model call).
    pub session_title: String,
}

/// `[limits]`: request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body, bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Seconds a client may take to send its request body (slower → 408).
    pub body_timeout_secs: u64,
    /// Seconds a client may take to send its request headers (slower: connection closed).
    pub header_timeout_secs: u64,
}

/// `[sessions]`: the conversation → OpenCode session pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Idle seconds after which a pooled session is evicted and deleted upstream.
    pub ttl_secs: u64,
    /// Most conversations remembered at once; the least useful are evicted beyond it.
    pub max_capacity: u64,
    /// Delete pooled sessions upstream when the gateway shuts down.
    pub delete_on_shutdown: bool,
    /// Most explicit sessions (`POST /v1/sessions`) one API key may hold at once.
    pub max_explicit_per_key: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            shutdown_grace_secs: 10,
            log_format: LogFormat::Text,
            opencode: OpenCodeConfig::default(),
            auth: AuthConfig::default(),
            models: ModelsConfig::default(),
            prompt: PromptConfig::default(),
            limits: LimitsConfig::default(),
            sessions: SessionsConfig::default(),
        }
    }
}

impl Default for OpenCodeConfig {
    fn default() -> Self {
        OpenCodeConfig {
            base_url: "http://127.0.0.1:4096".into(),
            username: "opencode".into(),
            password: None,
            directory: None,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 15_000,
            health_timeout_ms: 2_000,
            retry_attempts: 3,
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            allowlist: Vec::new(),
            cache_ttl_secs: 60,
        }
    }
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            agent: None,
            tools_enabled: false,
            max_model_retries: 2,
            deadline_secs: 300,
            keepalive_secs: 15,
            session_title: "PorTaTek Gateway".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 10 * 1024 * 1024,
            body_timeout_secs: 30,
            header_timeout_secs: 10,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ttl_secs: 900,
            max_capacity: 1_000,
            delete_on_shutdown: true,
            max_explicit_per_key: 100,
        }
    }
}

impl Config {
    /// Loads the layered configuration from the process's flags and environment.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        Self::load_from(cli, |name| std::env::var(name).ok())
    }

    /// Loads the layered configuration with an explicit environment lookup (for tests).
    pub fn load_from(
        cli: &Cli,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = cli.config.clone().or_else(|| {
            env("PORTATEK_CONFIG")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        });
        let mut config = match file {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        if let Some(v) = env("OPENCODE_BASE_URL").filter(|s| !s.is_empty()) {
            config.opencode.base_url = v;
        }
        if let Some(v) = env("PORTATEK_LISTEN").filter(|s| !s.is_empty()) {
            config.listen = v;
        }
        if let Some(v) = env("PORTATEK_API_KEYS") {
            config.auth.api_keys = v
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("OPENCODE_SERVER_PASSWORD") {
            config.opencode.password = Some(v).filter(|p| !p.is_empty());
        }
        if let Some(v) = env("OPENCODE_SERVER_USERNAME").filter(|s| !s.is_empty()) {
            config.opencode.username = v;
        }
        if let Some(v) = env("PORTATEK_LOG_FORMAT").filter(|s| !s.is_empty()) {
            config.log_format = match v.to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        "log_format",
                        format!("PORTATEK_LOG_FORMAT={v:?}: expected `text` or `json`"),
                    ))
                }
            };
        }
        if let Some(v) = &cli.listen {
            config.listen = v.clone();
        }
        if let Some(v) = &cli.opencode_url {
            config.opencode.base_url = v.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        let url = reqwest::Url::parse(&self.opencode.base_url).map_err(|e| {
            invalid(
                "opencode.base_url",
                format!("{:?}: {e}", self.opencode.base_url),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                "opencode.base_url",
                format!("{:?} is not an http(s) URL", self.opencode.base_url),
            ));
        }
        if self.auth.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("auth.api_keys", "keys must not be empty"));
        }
        if self.auth.api_keys.is_empty() && !self.auth.disabled && !addr.ip().is_loopback() {
            return Err(invalid(
                "auth.api_keys",
                format!(
                    "no API keys configured while listening on non-loopback {addr}; \
                     set PORTATEK_API_KEYS (or auth.api_keys), or set auth.disabled = true to run unauthenticated"
                ),
            ));
        }
        for (key, value) in [
            (
                "opencode.connect_timeout_ms",
                self.opencode.connect_timeout_ms,
            ),
            (
                "opencode.request_timeout_ms",
                self.opencode.request_timeout_ms,
            ),
            (
                "opencode.health_timeout_ms",
                self.opencode.health_timeout_ms,
            ),
            (
                "opencode.retry_attempts",
                self.opencode.retry_attempts.into(),
            ),
            ("models.cache_ttl_secs", self.models.cache_ttl_secs),
            ("prompt.deadline_secs", self.prompt.deadline_secs),
            ("prompt.keepalive_secs", self.prompt.keepalive_secs),
            ("limits.max_body_bytes", self.limits.max_body_bytes as u64),
            ("limits.body_timeout_secs", self.limits.body_timeout_secs),
            (
                "limits.header_timeout_secs",
                self.limits.header_timeout_secs,
            ),
            ("sessions.ttl_secs", self.sessions.ttl_secs),
            ("sessions.max_capacity", self.sessions.max_capacity),
            (
                "sessions.max_explicit_per_key",
                self.sessions.max_explicit_per_key as u64,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.prompt.session_title.trim().is_empty() {
            return Err(invalid("prompt.session_title", "must not be empty"));
        }
        if self.opencode.username.is_empty() {
            return Err(invalid("opencode.username", "must not be empty"));
        }
        Ok(())
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{:?} is not an address like 0.0.0.0:8080", self.listen),
            )
        })
    }

    /// Overall deadline of one chat completion.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.prompt.deadline_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(cli: Cli, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(&cli, |k| env.get(k).cloned())
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = load(Cli::default(), &[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
        assert!(!c.prompt.tools_enabled);
    }

    #[test]
    fn precedence_file_env_cli() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[opencode]\nbase_url = \"http://127.0.0.1:2\"\nusername = \"file\"\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            ..Cli::default()
        };
        let c = load(cli, &[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.opencode.username, "file");

        let cli = Cli {
            config: Some(path.clone()),
            ..Cli::default()
        };
        let c = load(
            cli,
            &[
                ("PORTATEK_LISTEN", "127.0.0.1:3"),
                ("OPENCODE_BASE_URL", "http://127.0.0.1:4"),
                ("OPENCODE_SERVER_USERNAME", "env"),
                ("OPENCODE_SERVER_PASSWORD", "pw"),
                ("PORTATEK_API_KEYS", " a, b ,,"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:3");
        assert_eq!(c.opencode.base_url, "http://127.0.0.1:4");
        assert_eq!(c.opencode.username, "env");
        assert_eq!(c.opencode.password.as_deref(), Some("pw"));
        assert_eq!(c.auth.api_keys, vec!["a", "b"]);

        let cli = Cli {
            config: Some(path),
            listen: Some("127.0.0.1:5".into()),
            opencode_url: Some("http://127.0.0.1:6".into()),
        };
        let c = load(cli, &[("PORTATEK_LISTEN", "127.0.0.1:3")]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:5");
        assert_eq!(c.opencode.base_url, "http://127.0.0.1:6");
    }

    #[test]
    fn config_path_from_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[prompt]\ndeadline_secs = 7\n").unwrap();
        let c = load(
            Cli::default(),
            &[("PORTATEK_CONFIG", path.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(c.prompt.deadline_secs, 7);
    }

    fn err(cli: Cli, env: &[(&str, &str)]) -> String {
        load(cli, env).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err(Cli::default(), &[("PORTATEK_LISTEN", "nonsense")]).contains("`listen`"));
        assert!(err(Cli::default(), &[("PORTATEK_LOG_FORMAT", "xml")]).contains("log_format"));
        assert_eq!(
            load(Cli::default(), &[("PORTATEK_LOG_FORMAT", "JSON")])
                .unwrap()
                .log_format,
            LogFormat::Json
        );
        assert!(
            err(Cli::default(), &[("OPENCODE_BASE_URL", "ftp://x")]).contains("opencode.base_url")
        );
        let e = err(Cli::default(), &[("PORTATEK_LISTEN", "0.0.0.0:8080")]);
        assert!(e.contains("auth.api_keys"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[prompt]\ndeadline_secs = \"soon\"\n").unwrap();
        let e = err(
            Cli {
                config: Some(path.clone()),
                ..Cli::default()
            },
            &[],
        );
        assert!(e.contains("deadline_secs"), "{e}");
        std::fs::write(&path, "[prompt]\ndeadline_secs = 0\n").unwrap();
        let e = err(
            Cli {
                config: Some(path.clone()),
                ..Cli::default()
            },
            &[],
        );
        assert!(e.contains("prompt.deadline_secs"), "{e}");
        std::fs::write(&path, "[prompt]\ndeadline = 3\n").unwrap();
        let e = err(
            Cli {
                config: Some(path),
                ..Cli::default()
            },
            &[],
        );
        assert!(e.contains("deadline"), "{e}");
    }

    #[test]
    fn non_loopback_ok_with_keys_or_explicitly_disabled_auth() {
        load(
            Cli::default(),
            &[
                ("PORTATEK_LISTEN", "0.0.0.0:8080"),
                ("PORTATEK_API_KEYS", "k"),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:8080\"\n[auth]\ndisabled = true\n",
        )
        .unwrap();
        load(
            Cli {
                config: Some(path),
                ..Cli::default()
            },
            &[],
        )
        .unwrap();
    }
}

#[cfg(test)]
mod example_tests {
    /// config.example.toml must parse and equal the defaults (so it documents them truthfully).
    #[test]
    fn example_file_matches_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let parsed = super::Config::from_file(&path).unwrap();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", super::Config::default())
        );
    }
}
