//! The model catalog: OpenCode's `GET /config/providers` as OpenAI models, cached with a TTL
//! (moka) and refreshed in the background, filtered by the configured allowlist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::openai::Model;
use crate::opencode::{OpenCodeClient, Providers};

/// One exposed model and what it can do.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The OpenAI-facing entry.
    pub model: Model,
    /// OpenCode's provider id.
    pub provider_id: String,
    /// OpenCode's model id within the provider.
    pub model_id: String,
    /// Accepts image input.
    pub image_input: bool,
    /// Accepted `reasoning_effort` values (OpenCode's variants); empty when none.
    pub variants: Vec<String>,
}

/// The exposed models by id.
pub type Models = BTreeMap<String, ModelInfo>;

/// Cached, allowlisted view of the upstream models.
#[derive(Clone)]
pub struct Catalog {
    client: OpenCodeClient,
    allowlist: Arc<Vec<String>>,
    cache: Cache<(), Arc<Models>>,
}

impl Catalog {
    /// A catalog whose entries stay fresh for `ttl`.
    pub fn new(client: OpenCodeClient, allowlist: Vec<String>, ttl: Duration) -> Catalog {
        Catalog {
            client,
            allowlist: Arc::new(allowlist),
            cache: Cache::builder().max_capacity(1).time_to_live(ttl).build(),
        }
    }

    /// Refreshes the cache every `every` until `shutdown`, so requests rarely wait on upstream.
    pub fn spawn_refresh(&self, every: Duration, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.fetch().await {
                    Ok(models) => this.cache.insert((), models).await,
                    Err(e) => tracing::debug!(error = %e, "model catalog refresh failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    async fn fetch(&self) -> Result<Arc<Models>, ApiError> {
        let providers = self.client.providers().await?;
        Ok(Arc::new(build(&providers, &self.allowlist)))
    }

    /// Fetches the catalog now (a provider was connected, say); returns how many models it has.
    pub async fn refresh(&self) -> Result<usize, ApiError> {
        let models = self.fetch().await?;
        let count = models.len();
        self.cache.insert((), models).await;
        Ok(count)
    }

    /// The exposed models (cached; fetched on a miss).
    pub async fn models(&self) -> Result<Arc<Models>, ApiError> {
        self.cache
            .try_get_with((), self.fetch())
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())
    }

    /// Looks a model up; unknown or not allowlisted → 404 `model_not_found`.
    pub async fn get(&self, id: &str) -> Result<ModelInfo, ApiError> {
        self.models()
            .await?
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::ModelNotFound(id.to_string()))
    }
}

fn allowed(allowlist: &[String], id: &str) -> bool {
    allowlist.is_empty()
        || allowlist
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => id.starts_with(prefix),
                None => pattern == id,
            })
}

/// Builds the exposed model map from OpenCode's providers.
pub fn build(providers: &Providers, allowlist: &[String]) -> Models {
    let mut out = Models::new();
    for provider in &providers.providers {
        for (key, m) in &provider.models {
            let model_id = if m.id.is_empty() { key } else { &m.id };
            let id = format!("{}/{}", provider.id, model_id);
            if !allowed(allowlist, &id) {
                continue;
            }
            let caps = m.capabilities.clone().unwrap_or_default();
            out.insert(
                id.clone(),
                ModelInfo {
                    model: Model {
                        id,
                        object: "model",
                        created: m
                            .release_date
                            .as_deref()
                            .and_then(date_to_unix)
                            .unwrap_or(0),
                        owned_by: provider.id.clone(),
                    },
                    provider_id: provider.id.clone(),
                    model_id: model_id.clone(),
                    image_input: caps.input.is_some_and(|i| i.image),
                    variants: m.variants.keys().cloned().collect(),
                },
            );
        }
    }
    out
}

/// `YYYY-MM-DD` (or `YYYY-MM`) → Unix seconds at midnight UTC.
fn date_to_unix(date: &str) -> Option<u64> {
    let mut it = date.trim().split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next().map_or(Some(1), |d| d.parse().ok())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_to_unix("1970-01-01"), Some(0));
        assert_eq!(date_to_unix("2024-03-01"), Some(1_709_251_200));
        assert_eq!(date_to_unix("2024-02"), Some(1_706_745_600));
        assert_eq!(date_to_unix("nope"), None);
    }

    #[test]
    fn allowlist_patterns() {
        assert!(allowed(&[], "a/b"));
        assert!(allowed(&["a/b".into()], "a/b"));
        assert!(!allowed(&["a/b".into()], "a/c"));
        assert!(allowed(&["a/*".into()], "a/c"));
        assert!(!allowed(&["a/*".into()], "b/c"));
    }

    #[test]
    fn builds_ids_and_capabilities() {
        let providers: Providers = serde_json::from_value(serde_json::json!({
            "providers": [{"id": "mock", "models": {
                "echo": {"id": "echo", "release_date": "2024-03-01"},
                "vision": {"id": "vision", "capabilities": {"input": {"image": true}},
                           "variants": {"low": {}, "high": {}}}
            }}, {"id": "other", "models": {"x": {"id": "x"}}}]
        }))
        .unwrap();
        let m = build(&providers, &["mock/*".into()]);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["mock/echo", "mock/vision"]);
        assert_eq!(m["mock/echo"].model.created, 1_709_251_200);
        assert_eq!(m["mock/echo"].model.owned_by, "mock");
        assert!(m["mock/vision"].image_input);
        assert!(!m["mock/echo"].image_input);
        assert_eq!(m["mock/vision"].variants, ["high", "low"]);
        assert!(m["mock/echo"].variants.is_empty());
    }
}
