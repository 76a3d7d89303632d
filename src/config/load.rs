//! Layering (defaults < file < environment < flags) and validation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::units::parse_address;
use super::{Cli, Config, ConfigError, LogFormat, StoreKind};

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
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
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let mut config = match file {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        config.apply_env(&env)?;
        config.apply_flags(cli)?;
        config.validate()?;
        Ok(config)
    }

    /// Environment overrides. An empty variable counts as unset, except for the key list and the
    /// upstream password, where empty means "none".
    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = set("OPENCODE_BASE_URL") {
            self.opencode.base_url = Some(v);
        }
        if let Some(v) = set("OPENCODE_BIN") {
            self.opencode.binary = Some(PathBuf::from(v));
        }
        if let Some(v) = set("PORTATEK_LISTEN") {
            self.listen = parse_address(&v).map_err(|m| invalid("listen", m))?;
        }
        if let Some(v) = env("PORTATEK_API_KEYS") {
            self.auth.api_keys = v
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("OPENCODE_SERVER_PASSWORD") {
            self.opencode.password = Some(v).filter(|p| !p.is_empty());
        }
        if let Some(v) = set("OPENCODE_SERVER_USERNAME") {
            self.opencode.username = v;
        }
        if let Some(v) = set("PORTATEK_STATE_DIR") {
            self.sessions.state_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = set("PORTATEK_REDIS_URL") {
            self.store.url = Some(v);
        }
        if let Some(v) = set("PORTATEK_LOG_FORMAT") {
            self.log_format = match v.to_ascii_lowercase().as_str() {
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
        Ok(())
    }

    fn apply_flags(&mut self, cli: &Cli) -> Result<(), ConfigError> {
        if let Some(v) = &cli.listen {
            self.listen = parse_address(v).map_err(|m| invalid("listen", m))?;
        }
        if let Some(v) = &cli.opencode_url {
            self.opencode.base_url = Some(v.clone());
        }
        Ok(())
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
        self.validate_upstream()?;
        self.validate_auth()?;
        if let Some((key, why)) = self.admission.problem() {
            return Err(invalid(key, why));
        }
        for (key, value) in self.durations() {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        for (key, value) in [
            (
                "opencode.retry_attempts",
                u64::from(self.opencode.retry_attempts),
            ),
            ("limits.max_body_bytes", self.limits.max_body_bytes as u64),
            ("sessions.max_capacity", self.sessions.max_capacity),
            ("responses.max_sessions", self.responses.max_sessions as u64),
            (
                "sessions.max_explicit_per_key",
                self.sessions.max_explicit_per_key as u64,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if !(1..=100).contains(&self.client_tools.max_runs) {
            return Err(invalid(
                "client_tools.max_runs",
                "must be between 1 and 100",
            ));
        }
        if let Some(url) = &self.client_tools.advertise_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| invalid("client_tools.advertise_url", format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "client_tools.advertise_url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        for (i, o) in self.rate_limits.keys.iter().enumerate() {
            let id = o.key_id.as_bytes();
            let well_formed = id.len() == 17
                && id[0] == b'k'
                && id[1..]
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
            if !well_formed {
                // Not echoed: the likely mistake is the API key itself pasted here.
                return Err(invalid(
                    &format!("rate_limits.keys[{i}].key_id"),
                    "must be a key id (`k` and the first 16 hex digits of the key's SHA-256), not the key",
                ));
            }
        }
        if let Some(name) = &self.sessions.deployment {
            let fits =
                !name.trim().is_empty() && name.len() <= 128 && !name.chars().any(char::is_control);
            if !fits {
                return Err(invalid(
                    "sessions.deployment",
                    "must be 1 to 128 characters, none of them control characters",
                ));
            }
        }
        if self.prompt.session_title.trim().is_empty() {
            return Err(invalid("prompt.session_title", "must not be empty"));
        }
        Ok(())
    }

    /// Every duration setting with its key.
    fn durations(&self) -> [(&'static str, Duration); 16] {
        [
            ("opencode.connect_timeout_ms", self.opencode.connect_timeout),
            ("opencode.request_timeout_ms", self.opencode.request_timeout),
            ("opencode.health_timeout_ms", self.opencode.health_timeout),
            ("models.cache_ttl_secs", self.models.cache_ttl),
            ("prompt.deadline_secs", self.prompt.deadline),
            ("prompt.keepalive_secs", self.prompt.keepalive),
            ("limits.body_timeout_secs", self.limits.body_timeout),
            ("limits.header_timeout_secs", self.limits.header_timeout),
            ("sessions.ttl_secs", self.sessions.ttl),
            (
                "client_tools.result_timeout_secs",
                self.client_tools.result_timeout,
            ),
            ("responses.ttl_secs", self.responses.ttl),
            ("permissions.timeout_secs", self.permissions.timeout),
            (
                "balancing.health_interval_secs",
                self.balancing.health_interval,
            ),
            ("balancing.open_secs", self.balancing.open_for),
            ("store.timeout_ms", self.store.timeout),
            ("store.lease_ttl_secs", self.store.lease_ttl),
        ]
    }

    fn validate_upstream(&self) -> Result<(), ConfigError> {
        if let Some(base) = &self.opencode.base_url {
            let url = reqwest::Url::parse(base)
                .map_err(|e| invalid("opencode.base_url", format!("{base:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(invalid(
                    "opencode.base_url",
                    format!("{base:?} is not an http(s) URL"),
                ));
            }
        }
        if self.opencode.username.is_empty() {
            return Err(invalid("opencode.username", "must not be empty"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            let url = reqwest::Url::parse(&u.url)
                .map_err(|e| invalid(&format!("{at}.url"), format!("{:?}: {e}", u.url)))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(invalid(
                    &format!("{at}.url"),
                    format!("{:?} is not an http(s) URL", u.url),
                ));
            }
            if u.weight == 0 {
                return Err(invalid(&format!("{at}.weight"), "must be at least 1"));
            }
            if !names.insert(self.upstream_name(i)) {
                return Err(invalid(
                    &format!("{at}.name"),
                    "each upstream needs a unique name",
                ));
            }
        }
        if !self.upstreams.is_empty() && self.opencode.base_url.is_some() {
            return Err(invalid(
                "upstreams",
                "name the OpenCode servers either in `[[upstreams]]` or in `opencode.base_url`, not both",
            ));
        }
        if self.balancing.failure_threshold == 0 {
            return Err(invalid("balancing.failure_threshold", "must be at least 1"));
        }
        match (&self.store.kind, &self.store.url) {
            (StoreKind::Redis, None) => {
                return Err(invalid(
                    "store.url",
                    "required with `store.kind = \"redis\"` (or PORTATEK_REDIS_URL)",
                ))
            }
            (StoreKind::Redis, Some(u)) => {
                let parsed = reqwest::Url::parse(u)
                    .map_err(|e| invalid("store.url", format!("not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "redis" | "rediss") {
                    return Err(invalid("store.url", "must be a redis:// or rediss:// URL"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The name of upstream `i` (its own, or `upstream-<i+1>`).
    pub fn upstream_name(&self, i: usize) -> String {
        match self.upstreams.get(i).map(|u| u.name.trim()) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("upstream-{}", i + 1),
        }
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        if self.auth.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("auth.api_keys", "keys must not be empty"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, k) in self.auth.keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            if k.name.trim().is_empty() || !names.insert(k.name.as_str()) {
                return Err(invalid(
                    &format!("{at}.name"),
                    "each key needs a unique, non-empty name",
                ));
            }
            match (&k.key, &k.key_sha256) {
                (Some(key), None) if !key.trim().is_empty() => {}
                (None, Some(hex)) if crate::auth::parse_digest(hex).is_some() => {}
                (None, Some(_)) => {
                    return Err(invalid(
                        &format!("{at}.key_sha256"),
                        "must be 64 hex digits",
                    ))
                }
                _ => {
                    return Err(invalid(
                        &format!("{at}.key"),
                        "give exactly one of `key` and `key_sha256`",
                    ))
                }
            }
        }
        let no_keys = self.auth.api_keys.is_empty() && self.auth.keys.is_empty();
        if no_keys && !self.auth.disabled && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "auth.api_keys",
                format!(
                    "no API keys configured while listening on non-loopback {}; \
                     set PORTATEK_API_KEYS (or auth.api_keys), or set auth.disabled = true to run unauthenticated",
                    self.listen
                ),
            ));
        }
        Ok(())
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

    fn with_file(path: &Path) -> Cli {
        Cli {
            config: Some(path.to_path_buf()),
            ..Cli::default()
        }
    }

    fn err(cli: Cli, env: &[(&str, &str)]) -> String {
        load(cli, env).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = load(Cli::default(), &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.prompt.deadline, Duration::from_secs(300));
        assert_eq!(c.opencode.connect_timeout, Duration::from_millis(2_000));
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
        let c = load(with_file(&path), &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:1");
        assert_eq!(c.opencode.username, "file");

        let c = load(
            with_file(&path),
            &[
                ("PORTATEK_LISTEN", "127.0.0.1:3"),
                ("OPENCODE_BASE_URL", "http://127.0.0.1:4"),
                ("OPENCODE_SERVER_USERNAME", "env"),
                ("OPENCODE_SERVER_PASSWORD", "pw"),
                ("PORTATEK_API_KEYS", " a, b ,,"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3");
        assert_eq!(c.opencode.base_url.as_deref(), Some("http://127.0.0.1:4"));
        assert_eq!(c.opencode.username, "env");
        assert_eq!(c.opencode.password.as_deref(), Some("pw"));
        assert_eq!(c.auth.api_keys, vec!["a", "b"]);

        let cli = Cli {
            config: Some(path),
            listen: Some("127.0.0.1:5".into()),
            opencode_url: Some("http://127.0.0.1:6".into()),
            ..Cli::default()
        };
        let c = load(cli, &[("PORTATEK_LISTEN", "127.0.0.1:3")]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:5");
        assert_eq!(c.opencode.base_url.as_deref(), Some("http://127.0.0.1:6"));
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
        assert_eq!(c.prompt.deadline, Duration::from_secs(7));
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err(Cli::default(), &[("PORTATEK_LISTEN", "nonsense")]).contains("`listen`"));
        let flag = Cli {
            listen: Some("nonsense".into()),
            ..Cli::default()
        };
        assert!(err(flag, &[]).contains("`listen`"));
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
        for (text, key) in [
            ("[prompt]\ndeadline_secs = \"soon\"\n", "deadline_secs"),
            ("[prompt]\ndeadline_secs = 0\n", "prompt.deadline_secs"),
            (
                "[opencode]\nconnect_timeout_ms = 0\n",
                "opencode.connect_timeout_ms",
            ),
            ("[prompt]\ndeadline = 3\n", "deadline"),
            ("listen = \"nowhere\"\n", "listen"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = err(with_file(&path), &[]);
            assert!(e.contains(key), "{text}: {e}");
        }
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
        load(with_file(&path), &[]).unwrap();
    }

    /// config.example.toml must parse and equal the defaults (so it documents them truthfully).
    #[test]
    fn example_file_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let parsed = Config::from_file(&path).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn upstreams_and_store_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let check = |toml: &str| {
            std::fs::write(&path, toml).unwrap();
            load(with_file(&path), &[])
        };
        let two = "[[upstreams]]\nurl = \"http://10.0.0.1:4096\"\n[[upstreams]]\nname = \"b\"\nurl = \"http://10.0.0.2:4096\"\npassword = \"pw\"\nweight = 3\n";
        let c = check(two).unwrap();
        assert_eq!(c.upstream_name(0), "upstream-1", "unnamed: by position");
        assert_eq!(c.upstream_name(1), "b");
        assert!(!c.opencode_on_this_host(), "remote upstreams");
        let masked = c.masked_toml();
        assert!(!masked.contains("\"pw\""), "{masked}");

        let cases = [
            ("[[upstreams]]\nname = \"a\"\nurl = \"http://h:1\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://h:2\"\n", "upstreams[1].name"),
            ("[[upstreams]]\nurl = \"ftp://h\"\n", "upstreams[0].url"),
            ("[[upstreams]]\nurl = \"http://h:1\"\nweight = 0\n", "upstreams[0].weight"),
            ("[opencode]\nbase_url = \"http://h:1\"\n[[upstreams]]\nurl = \"http://h:2\"\n", "`upstreams`"),
            ("[store]\nkind = \"redis\"\n", "store.url"),
            ("[store]\nkind = \"redis\"\nurl = \"http://h:6379\"\n", "store.url"),
            ("[balancing]\nfailure_threshold = 0\n", "balancing.failure_threshold"),
            ("[store]\nlease_ttl_secs = 0\n", "store.lease_ttl_secs"),
            ("[sessions]\ndeployment = \" \"\n", "sessions.deployment"),
            ("[sessions]\ndeployment = \"a\\nb\"\n", "sessions.deployment"),
        ];
        for (toml, key) in cases {
            let e = check(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        std::fs::write(&path, "[store]\nkind = \"redis\"\n").unwrap();
        let c = load(
            with_file(&path),
            &[("PORTATEK_REDIS_URL", "redis://:secret@127.0.0.1:6379/0")],
        )
        .unwrap();
        let masked = c.masked_toml();
        assert!(
            !masked.contains("secret") && masked.contains("127.0.0.1:6379"),
            "{masked}"
        );
    }

    #[test]
    fn the_sweep_and_the_state_dir_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let toml =
            "[sessions]\nsweep_interval_secs = 0\nstate_dir = \"/file\"\ndeployment = \"prod\"\n";
        std::fs::write(&path, toml).unwrap();
        let c = load(with_file(&path), &[]).unwrap();
        assert_eq!(c.sessions.sweep_interval, Duration::ZERO, "0 = no sweep");
        assert_eq!(c.sessions.state_dir, Some(PathBuf::from("/file")));
        assert_eq!(c.sessions.deployment.as_deref(), Some("prod"));
        let c = load(with_file(&path), &[("PORTATEK_STATE_DIR", "/env")]).unwrap();
        assert_eq!(
            c.sessions.state_dir,
            Some(PathBuf::from("/env")),
            "env over file"
        );
    }
}
