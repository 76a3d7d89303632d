//! `[auth]` and `[[auth.keys]]`: which bearer API keys the gateway accepts, with their roles and
//! scopes. How a request's key is checked against them is [`crate::auth`]'s business; what a
//! key entry may say, and [`parse_digest`] (which decides whether a `key_sha256` is one), live
//! here so that validating the file needs nothing above the config layer.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

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

/// A SHA-256 in hex, as `key_sha256` gives it. Here rather than in [`crate::auth`] (which
/// re-exports it) because validation must tell a well-formed digest without importing the
/// layers built on the configuration.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl AuthConfig {
    /// Checks every key, and that keys are configured (or explicitly disabled) when the gateway
    /// listens on `listen` beyond loopback.
    pub(super) fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if self.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("auth.api_keys", "keys must not be empty"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            if k.name.trim().is_empty() || !names.insert(k.name.as_str()) {
                return Err(invalid(
                    &format!("{at}.name"),
                    "each key needs a unique, non-empty name",
                ));
            }
            match (&k.key, &k.key_sha256) {
                (Some(key), None) if !key.trim().is_empty() => {}
                (None, Some(hex)) if parse_digest(hex).is_some() => {}
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
        let no_keys = self.api_keys.is_empty() && self.keys.is_empty();
        if no_keys && !self.disabled && !listen.ip().is_loopback() {
            return Err(invalid(
                "auth.api_keys",
                format!(
                    "no API keys configured while listening on non-loopback {listen}; \
                     set PORTATEK_API_KEYS (or auth.api_keys), or set auth.disabled = true to run unauthenticated"
                ),
            ));
        }
        Ok(())
    }
}
