//! `[models]`: which upstream models `/v1/models` exposes, and how long the fetched catalog is
//! trusted before it is refreshed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

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

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            allowlist: Vec::new(),
            cache_ttl: Duration::from_secs(60),
        }
    }
}
