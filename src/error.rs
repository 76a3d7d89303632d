//! The one error type of the HTTP API and its OpenAI-shaped JSON rendering.
//!
//! Every handler returns [`ApiError`]; [`ApiError::into_response`] is the single place where an
//! error becomes `{"error":{"message","type","param","code"}}` with its distinct status. The
//! variants say whose fault it was: the client's (4xx, named after what the client did) or the
//! upstream's (`Upstream*`, 5xx), so a reader never confuses a slow client (408) with a slow
//! OpenCode (504).

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or asks for something unsupported.
    #[error("{message}")]
    InvalidRequest {
        /// Human-readable explanation.
        message: String,
        /// The request parameter at fault, e.g. `messages[1].content`.
        param: Option<String>,
        /// A machine-readable code.
        code: Option<&'static str>,
    },
    /// 401: missing or wrong API key.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the key may not do this (its role or scope).
    #[error("{0}")]
    PermissionDenied(String),
    /// 404: the model does not exist or is not exposed.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// 404: some other resource (route, session) does not exist.
    #[error("{message}")]
    NotFound {
        /// Explanation.
        message: String,
        /// Machine-readable code.
        code: &'static str,
    },
    /// 405: the route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 408: the client was too slow sending its request.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409: the resource is busy (e.g. a session already running a prompt).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body exceeds the configured limit.
    #[error("Request body too large: the limit is {0} bytes.")]
    PayloadTooLarge(usize),
    /// 429: a per-key quota or rate limit is used up.
    #[error("{message}")]
    TooManyRequests {
        /// Explanation.
        message: String,
        /// Machine-readable code, e.g. `too_many_sessions`, `rate_limit_exceeded`.
        code: &'static str,
        /// When to try again (sent as `Retry-After`).
        retry_after: Option<std::time::Duration>,
    },
    /// 503: the upstream is at its limit of runs in flight and its queue is full or the wait
    /// ran out (admission control): try again after `retry_after`.
    #[error("{message}")]
    Overloaded {
        /// Explanation.
        message: String,
        /// When to try again (sent as `Retry-After`).
        retry_after: std::time::Duration,
    },
    /// 502: OpenCode or the model provider answered with an error.
    #[error("{0}")]
    Upstream(String),
    /// 503: OpenCode cannot be reached (or its event stream is down), or the gateway is stopping.
    #[error("{0}")]
    Unavailable(String),
    /// 504: OpenCode or the model did not answer within the deadline.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A request the HTTP layer refused before routing (malformed framing, a URL or headers
    /// too large): 400, 414, 431, …, answered by [`crate::server`] in this shape too.
    #[error("{message}")]
    Http {
        /// The status hyper chose.
        status: StatusCode,
        /// Explanation.
        message: &'static str,
        /// Machine-readable code.
        code: &'static str,
    },
    /// 501: the upstream's OpenCode version has no such feature (2.x dropped todo, share,
    /// code search, LSP…); the message names the version.
    #[error("{0}")]
    NotImplemented(String),
    /// 500: a bug in the gateway.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the parameter at fault.
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.into(),
            code: None,
        }
    }

    /// 404 for a session that does not exist or belongs to another key (never tell which).
    pub fn session_not_found(id: &str) -> Self {
        ApiError::NotFound {
            message: format!("No session found with id '{id}'."),
            code: "session_not_found",
        }
    }

    /// 429 for a key that holds as many explicit sessions as it may.
    pub fn too_many_sessions(message: impl Into<String>) -> Self {
        ApiError::TooManyRequests {
            message: message.into(),
            code: "too_many_sessions",
            retry_after: None,
        }
    }

    /// 503 while OpenCode's event stream is down (a run could not be followed).
    pub fn event_stream_down() -> Self {
        ApiError::Unavailable("OpenCode's event stream is not connected; try again shortly.".into())
    }

    /// Maps a failure to read the request body: over the limit → 413, too slow → 408,
    /// anything else → 400.
    pub fn from_body_rejection(rejection: &BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else if causes(rejection).any(|e| e.is::<BodyDeadlineExceeded>()) {
            ApiError::RequestTimeout("The request body was not received in time.".into())
        } else {
            ApiError::invalid(
                format!("Could not read the request body: {rejection}"),
                None,
            )
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound(_) | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Http { status, .. } => *status,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error `type`.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::UpstreamTimeout(_) => "timeout",
            ApiError::Internal(_) | ApiError::Overloaded { .. } => "server_error",
            ApiError::PermissionDenied(_) => "permission_error",
            _ => "invalid_request_error",
        }
    }

    /// The OpenAI error `code`.
    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidRequest { code, .. } => *code,
            ApiError::Unauthorized(_) => Some("invalid_api_key"),
            ApiError::PermissionDenied(_) => Some("permission_denied"),
            ApiError::ModelNotFound(_) => Some("model_not_found"),
            ApiError::NotFound { code, .. }
            | ApiError::TooManyRequests { code, .. }
            | ApiError::Http { code, .. } => Some(code),
            ApiError::MethodNotAllowed(_) => Some("method_not_allowed"),
            ApiError::RequestTimeout(_) => Some("request_timeout"),
            ApiError::Conflict(_) => Some("conflict"),
            ApiError::PayloadTooLarge(_) => Some("request_too_large"),
            ApiError::Upstream(_) => Some("upstream_error"),
            ApiError::Unavailable(_) => Some("upstream_unavailable"),
            ApiError::UpstreamTimeout(_) => Some("upstream_timeout"),
            ApiError::Overloaded { .. } => Some("overloaded"),
            ApiError::NotImplemented(_) => Some("not_supported_by_upstream"),
            ApiError::Internal(_) => None,
        }
    }

    /// The `{"error":{…}}` body (also used for mid-stream SSE error events).
    pub fn body(&self) -> Value {
        let param = match self {
            ApiError::InvalidRequest { param, .. } => param.clone(),
            ApiError::ModelNotFound(_) => Some("model".to_string()),
            _ => None,
        };
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": param,
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Refusals under overload come by the thousand: counted in /metrics, not logged each.
        if matches!(self, ApiError::Overloaded { .. }) {
            tracing::debug!(error = %self, "request refused by admission control");
        } else if self.status().is_server_error() {
            tracing::warn!(status = self.status().as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = self.status().as_u16(), error = %self, "request rejected");
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        if let ApiError::TooManyRequests {
            retry_after: Some(wait),
            ..
        }
        | ApiError::Overloaded {
            retry_after: wait, ..
        } = &self
        {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A query string axum could not read into the handler's type: the client's 400, with axum's
/// reason (which names the parameter).
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::invalid(e.body_text(), None)
    }
}

/// A JSON body axum could not read into the handler's type: the client's 400, with axum's
/// reason (which names the field).
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::invalid(e.body_text(), None)
    }
}

/// The body did not arrive within its deadline (found in a body-read error's chain, it becomes
/// a 408). Raised by the body-limit middleware (`body`), turned into its answer here.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within its deadline")]
pub struct BodyDeadlineExceeded;

/// An error and its chain of sources, outermost first.
pub fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_and_shape_is_openai() {
        let cases = [
            (ApiError::invalid("bad", Some("messages".into())), 400),
            (ApiError::Unauthorized("no".into()), 401),
            (ApiError::ModelNotFound("x/y".into()), 404),
            (ApiError::RequestTimeout("slow client".into()), 408),
            (ApiError::PayloadTooLarge(10), 413),
            (ApiError::too_many_sessions("full"), 429),
            (ApiError::Upstream("boom".into()), 502),
            (ApiError::Unavailable("down".into()), 503),
            (ApiError::UpstreamTimeout("slow".into()), 504),
        ];
        for (e, status) in cases {
            assert_eq!(e.status().as_u16(), status);
            let b = e.body();
            let err = &b["error"];
            assert!(err["message"].is_string());
            assert!(err["type"].is_string());
            assert!(err.get("param").is_some() && err.get("code").is_some());
        }
        assert_eq!(
            ApiError::ModelNotFound("x/y".into()).body()["error"]["code"],
            "model_not_found"
        );
        assert_eq!(
            ApiError::too_many_sessions("full").body()["error"]["code"],
            "too_many_sessions"
        );
    }
}
