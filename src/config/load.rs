//! Layering: defaults < file < environment < flags. The result is checked by
//! [`Config::validate`] (in `validate.rs`) before it is handed out.

use std::path::{Path, PathBuf};

use super::units::parse_address;
use super::{invalid, Cli, Config, ConfigError, LogFormat};

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
}

#[cfg(test)]
mod tests;
