//! What can go wrong talking to OpenCode, and how to read OpenCode's error bodies.

use serde_json::Value;

use crate::error::causes;

/// What went wrong talking to OpenCode.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made: the request was surely not sent.
    #[error("unreachable: {0}")]
    Connect(String),
    /// Reset mid-exchange, DNS, …
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// 404 from OpenCode (e.g. an unknown session).
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other non-success status, with OpenCode's message.
    #[error("status {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// OpenCode's error message.
        message: String,
    },
    /// A success status with a body we could not understand.
    #[error("bad response: {0}")]
    Decode(String),
}

impl UpstreamError {
    pub(super) fn from_reqwest(what: &str, e: reqwest::Error) -> Self {
        // Never tell clients the upstream's internal address.
        let e = e.without_url();
        if e.is_timeout() {
            UpstreamError::Timeout(format!("{what}: {e}"))
        } else if e.is_decode() {
            UpstreamError::Decode(format!("{what}: {e}"))
        } else if e.is_connect() {
            UpstreamError::Connect(format!("{what}: {}", error_chain(&e)))
        } else {
            UpstreamError::Unreachable(format!("{what}: {}", error_chain(&e)))
        }
    }

    /// Whether retrying a call that creates something could help without risking a duplicate:
    /// the request was not sent, or OpenCode answered with a server error.
    pub(super) fn is_safe_to_resend(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Whether retrying an idempotent call could help.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::Unreachable(_)
            | UpstreamError::Timeout(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::NotFound(_) | UpstreamError::Decode(_) => false,
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Pulls the human message out of an OpenCode error body (`{"data":{"message"}}`, `{"message"}`).
pub fn upstream_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    error_message(&v)
}

/// The message of an OpenCode error object (`{name, data:{message}}` or `{message}`).
pub fn error_message(v: &Value) -> Option<String> {
    v.pointer("/data/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| v.get("name").and_then(Value::as_str).map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(
            upstream_message(r#"{"name":"NotFoundError","data":{"message":"Session not found"}}"#)
                .as_deref(),
            Some("Session not found")
        );
        assert_eq!(upstream_message("nope"), None);
    }
}
