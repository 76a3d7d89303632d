//! `[[upstreams]]`: several OpenCode servers behind one gateway, each entry taking the
//! `[opencode]` values it leaves unset.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

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

/// The name of upstream `i` of `upstreams` (its own, or `upstream-<i+1>`).
pub(super) fn name_of(upstreams: &[UpstreamConfig], i: usize) -> String {
    match upstreams.get(i).map(|u| u.name.trim()) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("upstream-{}", i + 1),
    }
}

/// Checks every entry's URL and weight, and that their names are unique.
pub(super) fn validate(upstreams: &[UpstreamConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
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
        if !names.insert(name_of(upstreams, i)) {
            return Err(invalid(
                &format!("{at}.name"),
                "each upstream needs a unique name",
            ));
        }
    }
    Ok(())
}
