//! [`Config::validate`]: every check, in one fixed order, so that a file with several mistakes
//! always reports the same one first. Each section checks its own values (`validate` in its
//! file); what spans sections (durations and counts that must not be 0, `[[upstreams]]` against
//! `opencode.base_url`, keys against the listen address) is checked here.

use std::time::Duration;

use super::{invalid, upstreams, Config, ConfigError};

impl Config {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_upstream()?;
        self.auth.validate(self.listen)?;
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
        self.client_tools.validate()?;
        self.rate_limits.validate()?;
        self.sessions.validate()?;
        self.prompt.validate()?;
        Ok(())
    }

    /// Every duration setting with its key (`sessions.sweep_interval_secs` is not one of them:
    /// 0 there means "never").
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

    /// The upstream side: `[opencode]`, `[[upstreams]]` (one or the other), `[balancing]`,
    /// `[store]`.
    fn validate_upstream(&self) -> Result<(), ConfigError> {
        self.opencode.validate()?;
        upstreams::validate(&self.upstreams)?;
        if !self.upstreams.is_empty() && self.opencode.base_url.is_some() {
            return Err(invalid(
                "upstreams",
                "name the OpenCode servers either in `[[upstreams]]` or in `opencode.base_url`, not both",
            ));
        }
        self.balancing.validate()?;
        self.store.validate()?;
        Ok(())
    }
}
