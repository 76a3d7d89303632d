//! Limits counted in the shared store (Redis, several replicas): a counter per key and minute,
//! a fixed window, so a key's quota is the same however its requests are spread. With no shared
//! store, or Redis unreachable, the local limiters of the parent module decide.

use std::time::Duration;

use super::standing::{reset_text, too_many};
use super::{RateLimits, Standing};
use crate::auth::ClientId;
use crate::error::ApiError;

/// How long a shared per-minute counter lives.
pub(super) const WINDOW_TTL: Duration = Duration::from_secs(120);

/// The current minute, and how long until the next one.
pub(super) fn window() -> (u64, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let minute = now.as_secs() / 60;
    let next = Duration::from_secs((minute + 1) * 60).saturating_sub(now);
    (minute, next)
}

impl RateLimits {
    /// [`admit`](Self::admit) against the shared counters; `None` when there are none (memory
    /// store, or Redis unreachable): the local limiters decide.
    pub async fn admit_shared(
        &self,
        client: &ClientId,
        uses_tokens: bool,
    ) -> Option<Result<Standing, (ApiError, Standing)>> {
        if !self.store.is_shared() {
            return None;
        }
        let limits = self.key(client).limits;
        let (minute, reset) = window();
        let mut standing = Standing::default();
        if uses_tokens && limits.tokens_per_minute > 0 {
            let name = format!("tok:{}:{minute}", client.0);
            let used = self.store.add_to_counter(&name, 0, WINDOW_TTL).await.ok()?;
            let limit = limits.tokens_per_minute;
            standing.tokens = Some((limit, limit.saturating_sub(used), reset));
            if used >= limit {
                let e = too_many(
                    format!("Rate limit reached: {limit} tokens per minute for this API key. Try again in {}.", reset_text(reset)),
                    reset,
                    "tokens",
                );
                return Some(Err((e, standing)));
            }
        }
        if limits.requests_per_minute > 0 {
            let name = format!("req:{}:{minute}", client.0);
            let count = self.store.add_to_counter(&name, 1, WINDOW_TTL).await.ok()?;
            let limit = limits.requests_per_minute;
            let remaining = u64::from(limit).saturating_sub(count) as u32;
            standing.requests = Some((limit, remaining, reset));
            if count > u64::from(limit) {
                let e = too_many(
                    format!("Rate limit reached: {limit} requests per minute for this API key. Try again in {}.", reset_text(reset)),
                    reset,
                    "requests",
                );
                return Some(Err((e, standing)));
            }
        }
        Some(Ok(standing))
    }
}
