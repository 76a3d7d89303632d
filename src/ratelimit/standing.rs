//! What the limits answer: a request's [`Standing`] (limit, remaining and reset for requests and
//! tokens) as OpenAI's `x-ratelimit-*` headers, and a refusal as OpenAI's 429 with
//! `Retry-After`. Apart from the counting, which the local and shared limiters do each their way.

use std::time::Duration;

use axum::http::HeaderName;

use crate::error::ApiError;

/// What the request-per-minute and token limits say about a request.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// `(limit, remaining, reset)` for requests.
    pub(super) requests: Option<(u32, u32, Duration)>,
    /// `(limit, remaining, reset)` for tokens.
    pub(super) tokens: Option<(u64, u64, Duration)>,
}

/// OpenAI's reset format: `20ms`, `1s`, `6m0s`.
pub(super) fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64().ceil() as u64;
    match secs / 60 {
        0 => format!("{secs}s"),
        m => format!("{m}m{}s", secs % 60),
    }
}

impl Standing {
    /// The `x-ratelimit-*` headers.
    pub fn headers(&self) -> Vec<(HeaderName, String)> {
        let mut out = Vec::new();
        if let Some((limit, remaining, reset)) = self.requests {
            out.push(("x-ratelimit-limit-requests", limit.to_string()));
            out.push(("x-ratelimit-remaining-requests", remaining.to_string()));
            out.push(("x-ratelimit-reset-requests", reset_text(reset)));
        }
        if let Some((limit, remaining, reset)) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", limit.to_string()));
            out.push(("x-ratelimit-remaining-tokens", remaining.to_string()));
            out.push(("x-ratelimit-reset-tokens", reset_text(reset)));
        }
        out.into_iter()
            .map(|(k, v)| (HeaderName::from_static(k), v))
            .collect()
    }
}

/// A 429 in OpenAI's shape, counted in the metrics under `limit` (`requests`, `tokens`, `runs`).
pub(super) fn too_many(message: String, retry_after: Duration, limit: &'static str) -> ApiError {
    crate::metrics::rate_limited(limit);
    ApiError::TooManyRequests {
        message,
        code: "rate_limit_exceeded",
        retry_after: Some(retry_after.max(Duration::from_secs(1))),
    }
}
