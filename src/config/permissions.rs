//! `[permissions]`: how the permission requests and questions of OpenCode's agent are answered
//! (denied, granted from an allowlist, or asked of the API caller), since nobody sits at
//! OpenCode's own prompt.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

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
