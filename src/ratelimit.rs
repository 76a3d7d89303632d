//! Per-key rate limits and fair share: requests per minute, tokens per minute, runs at once.
//!
//! - **Requests per minute** use `governor`'s GCRA limiter, one per key (so each key can have
//!   its own quota), on every `/v1/…` request.
//! - **Tokens per minute** are only known after a run, so they are a bucket debited afterwards
//!   (`governor` only takes cells up front): a key whose bucket is empty (or in debt after a
//!   long answer) is refused until it refills, at `tokens_per_minute / 60` a second.
//! - **Concurrent runs** are a semaphore per key; a run holds its permit until it ends,
//!   including while it waits for the client's tool results.
//!
//! With a shared store (Redis, several replicas), requests and tokens per minute are counted
//! there instead, so a key's quota is the same however its requests are spread: a counter per
//! key and minute (`INCRBY`, expiring after two minutes), a fixed window rather than GCRA's
//! smooth one (governor keeps its state in memory only). With Redis unreachable, each replica
//! falls back to its own in-memory limiters. Concurrent runs stay per replica.
//!
//! A refusal is a 429 in OpenAI's shape with `Retry-After` and OpenAI's `x-ratelimit-*` headers
//! (`limit`, `remaining`, `reset` for requests and tokens), which the SDKs' own back-off reads;
//! the same headers go with every completion response.

mod shared;
mod standing;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::auth::ClientId;
use crate::config::RateLimitsConfig;
use crate::error::ApiError;
use crate::store::Store;
use crate::sync::lock;

use shared::{window, WINDOW_TTL};
use standing::{reset_text, too_many};

pub use standing::Standing;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One key's limits (0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per minute.
    pub requests_per_minute: u32,
    /// Tokens per minute.
    pub tokens_per_minute: u64,
    /// Runs at once.
    pub concurrent_runs: u32,
}

/// A bucket of tokens refilled continuously, debited after the fact.
#[derive(Debug)]
struct Bucket {
    level: f64,
    capacity: f64,
    per_second: f64,
    updated: Instant,
}

impl Bucket {
    fn new(per_minute: u64) -> Bucket {
        Bucket {
            level: per_minute as f64,
            capacity: per_minute as f64,
            per_second: per_minute as f64 / 60.0,
            updated: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// Time until the bucket holds `amount`.
    fn wait_for(&self, amount: f64) -> Duration {
        let missing = (amount - self.level).max(0.0);
        Duration::from_secs_f64(missing / self.per_second)
    }
}

struct KeyState {
    limits: KeyLimits,
    requests: Option<Limiter>,
    tokens: Option<Mutex<Bucket>>,
    runs: Option<Arc<Semaphore>>,
}

/// Per-key limit state; cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    defaults: KeyLimits,
    overrides: Arc<HashMap<String, KeyLimits>>,
    keys: Arc<Mutex<HashMap<ClientId, Arc<KeyState>>>>,
    /// Shared counters (memory-only: none).
    store: Store,
}

impl RateLimits {
    /// Limits from the config: defaults for every key, overrides by key id.
    pub fn new(config: &RateLimitsConfig) -> RateLimits {
        let defaults = KeyLimits {
            requests_per_minute: config.requests_per_minute,
            tokens_per_minute: config.tokens_per_minute,
            concurrent_runs: config.concurrent_runs,
        };
        let overrides = config
            .keys
            .iter()
            .map(|o| {
                let limits = KeyLimits {
                    requests_per_minute: o
                        .requests_per_minute
                        .unwrap_or(defaults.requests_per_minute),
                    tokens_per_minute: o.tokens_per_minute.unwrap_or(defaults.tokens_per_minute),
                    concurrent_runs: o.concurrent_runs.unwrap_or(defaults.concurrent_runs),
                };
                (o.key_id.clone(), limits)
            })
            .collect();
        RateLimits {
            defaults,
            overrides: Arc::new(overrides),
            keys: Arc::default(),
            store: Store::memory(),
        }
    }

    /// Limits from the config: defaults for every key, overrides by key id from
    /// `[[rate_limits.keys]]` and from the limits of `[[auth.keys]]` entries.
    pub fn with_keys(config: &RateLimitsConfig, auth: &crate::config::AuthConfig) -> RateLimits {
        let mut limits = Self::new(config);
        let d = limits.defaults;
        let mut overrides = (*limits.overrides).clone();
        for k in &auth.keys {
            let own = k.requests_per_minute.is_some()
                || k.tokens_per_minute.is_some()
                || k.concurrent_runs.is_some();
            let id = match (&k.key, &k.key_sha256) {
                (Some(key), _) => Some(ClientId::of_key(key)),
                (None, Some(hex)) => {
                    crate::auth::parse_digest(hex).map(|d| ClientId::of_digest(&d))
                }
                _ => None,
            };
            if let (Some(id), true) = (id, own) {
                let key_limits = KeyLimits {
                    requests_per_minute: k.requests_per_minute.unwrap_or(d.requests_per_minute),
                    tokens_per_minute: k.tokens_per_minute.unwrap_or(d.tokens_per_minute),
                    concurrent_runs: k.concurrent_runs.unwrap_or(d.concurrent_runs),
                };
                overrides.insert(id.0.to_string(), key_limits);
            }
        }
        limits.overrides = Arc::new(overrides);
        limits
    }

    /// Counts requests and tokens in `store` when it is shared.
    pub fn with_store(mut self, store: Store) -> RateLimits {
        self.store = store;
        self
    }

    /// The state of `client`'s key, made on first use from its limits.
    fn key(&self, client: &ClientId) -> Arc<KeyState> {
        let mut keys = lock(&self.keys);
        keys.entry(client.clone())
            .or_insert_with(|| {
                let limits = self
                    .overrides
                    .get(client.0.as_ref())
                    .copied()
                    .unwrap_or(self.defaults);
                Arc::new(KeyState {
                    limits,
                    requests: NonZeroU32::new(limits.requests_per_minute).map(|n| {
                        RateLimiter::direct(Quota::per_minute(n))
                            .with_middleware::<StateInformationMiddleware>()
                    }),
                    tokens: (limits.tokens_per_minute > 0)
                        .then(|| Mutex::new(Bucket::new(limits.tokens_per_minute))),
                    runs: (limits.concurrent_runs > 0)
                        .then(|| Arc::new(Semaphore::new(limits.concurrent_runs as usize))),
                })
            })
            .clone()
    }

    /// Counts one request against `client`'s requests per minute and checks its tokens.
    pub fn admit(
        &self,
        client: &ClientId,
        uses_tokens: bool,
    ) -> Result<Standing, (ApiError, Standing)> {
        let key = self.key(client);
        let mut standing = Standing::default();
        if let Some(tokens) = key.tokens.as_ref().filter(|_| uses_tokens) {
            let mut bucket = lock(tokens);
            bucket.refill();
            let limit = key.limits.tokens_per_minute;
            let reset = bucket.wait_for(bucket.capacity);
            standing.tokens = Some((limit, bucket.level.max(0.0) as u64, reset));
            if bucket.level < 1.0 {
                let wait = bucket.wait_for(1.0);
                let e = too_many(
                    format!("Rate limit reached: {limit} tokens per minute for this API key. Try again in {}.", reset_text(wait)),
                    wait,
                    "tokens",
                );
                return Err((e, standing));
            }
        }
        if let Some(limiter) = &key.requests {
            let limit = key.limits.requests_per_minute;
            let per_request = Duration::from_secs(60) / limit;
            match limiter.check() {
                Ok(state) => {
                    let remaining = state.remaining_burst_capacity();
                    standing.requests = Some((limit, remaining, per_request * (limit - remaining)));
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    standing.requests = Some((limit, 0, per_request * limit));
                    let e = too_many(
                        format!("Rate limit reached: {limit} requests per minute for this API key. Try again in {}.", reset_text(wait)),
                        wait,
                        "requests",
                    );
                    return Err((e, standing));
                }
            }
        }
        Ok(standing)
    }

    /// A permit for one more run of `client` (429 when it already runs as many as it may).
    pub fn start_run(&self, client: &ClientId) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let key = self.key(client);
        let Some(runs) = &key.runs else {
            return Ok(None);
        };
        runs.clone().try_acquire_owned().map(Some).map_err(|_| {
            too_many(
                format!(
                    "This API key already runs {} requests at once, its limit; try again when one ends.",
                    key.limits.concurrent_runs
                ),
                Duration::from_secs(1),
                "concurrent_runs",
            )
        })
    }

    /// Takes the tokens a run used from `client`'s bucket.
    pub fn spend_tokens(&self, client: &ClientId, tokens: u64) {
        if self.store.is_shared() && self.key(client).limits.tokens_per_minute > 0 {
            let name = format!("tok:{}:{}", client.0, window().0);
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = store.add_to_counter(&name, tokens, WINDOW_TTL).await;
            });
        }
        if let Some(bucket) = &self.key(client).tokens {
            let mut bucket = lock(bucket);
            bucket.refill();
            bucket.level -= tokens as f64;
        }
    }

    /// Whether any limit is configured at all (else the middleware does nothing).
    pub fn active(&self) -> bool {
        self.defaults
            != (KeyLimits {
                requests_per_minute: 0,
                tokens_per_minute: 0,
                concurrent_runs: 0,
            })
            || !self.overrides.is_empty()
    }
}

/// Whether a request runs the model (and so draws on the token budget).
fn runs_model(req: &Request) -> bool {
    req.method() == Method::POST
        && matches!(req.uri().path(), "/v1/chat/completions" | "/v1/responses")
}

/// Middleware (after authentication): admits `/v1/…` requests by the calling key's limits and
/// puts the `x-ratelimit-*` headers on the response.
pub async fn enforce(State(limits): State<RateLimits>, req: Request, next: Next) -> Response {
    if !limits.active() || !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let Some(client) = req.extensions().get::<ClientId>().cloned() else {
        return next.run(req).await;
    };
    let uses_tokens = runs_model(&req);
    let admitted = match limits.admit_shared(&client, uses_tokens).await {
        Some(shared) => shared,
        None => limits.admit(&client, uses_tokens),
    };
    let (mut response, standing) = match admitted {
        Ok(standing) => (next.run(req).await, standing),
        Err((refusal, standing)) => (refusal.into_response(), standing),
    };
    for (name, value) in standing.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests;
