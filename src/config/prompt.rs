//! `[prompt]`: how each chat request is run upstream (agent, tools, retries, deadline), so that
//! an API caller gets no more of OpenCode than the operator allows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, units, ConfigError};

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

impl PromptConfig {
    /// Checks the session title (durations are checked with every section's).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.session_title.trim().is_empty() {
            return Err(invalid("prompt.session_title", "must not be empty"));
        }
        Ok(())
    }
}
