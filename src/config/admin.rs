//! `[admin]`: the admin routes' dangerous powers, each off by default, so that an admin key
//! alone does not hand out shell access, public links or OpenCode's configuration.

use serde::{Deserialize, Serialize};

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
