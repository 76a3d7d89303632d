//! What can go wrong talking to OpenCode, and how to read OpenCode's error bodies.

use serde_json::Value;

use crate::error::{causes, ApiError};

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
    /// The server's API version has no such call (OpenCode 2.x dropped todo, share, code
    /// search, LSP…): what, and the version.
    #[error("{0}")]
    Unsupported(String),
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

    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::NotFound(_) => "not_found",
            UpstreamError::Status { status, .. } if *status >= 500 => "status_5xx",
            UpstreamError::Status { .. } => "status_4xx",
            UpstreamError::Decode(_) => "decode",
            UpstreamError::Unsupported(_) => "unsupported",
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
            UpstreamError::NotFound(_)
            | UpstreamError::Decode(_)
            | UpstreamError::Unsupported(_) => false,
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

/// The message of an OpenCode error object (`{name, data:{message}}` or `{message}`), made fit
/// for clients by [`public_message`].
pub fn error_message(v: &Value) -> Option<String> {
    v.pointer("/data/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(public_message)
        .or_else(|| v.get("name").and_then(Value::as_str).map(String::from))
}

/// Longest upstream error text passed on to clients, in characters.
const PUBLIC_MESSAGE_MAX: usize = 500;

/// Upstream error text as clients may see it: the first line, without stack frames or the
/// server's internal paths (OpenCode is a Bun program: its traces name `/$bunfs/…js` files),
/// at most [`PUBLIC_MESSAGE_MAX`] characters. The whole text is logged at debug level.
pub fn public_message(raw: &str) -> String {
    let first = raw
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = cut_at_frames(first);
    let mut text: String = line.chars().take(PUBLIC_MESSAGE_MAX).collect();
    if text.len() < line.len() {
        text.push('…');
    }
    if text.is_empty() {
        text = "OpenCode reported an error without a message".into();
    }
    if text != raw {
        tracing::debug!(full = %raw, "upstream error text shortened for the client");
    }
    text
}

/// `line` up to the first stack frame or internal path.
fn cut_at_frames(line: &str) -> &str {
    let is_frame = |rest: &str| {
        rest.contains("$bunfs")
            || rest.contains("file://")
            || rest.contains(".js:")
            || rest.contains(".ts:")
            || rest.contains("node_modules")
    };
    let mut cut = line.len();
    for (i, _) in line.match_indices(" at ") {
        if is_frame(&line[i..]) {
            cut = i;
            break;
        }
    }
    for marker in ["/$bunfs/", "file://", "(/"] {
        if let Some(i) = line[..cut].find(marker) {
            cut = i;
        }
    }
    line[..cut]
        .trim_end_matches([' ', '(', ':', ','])
        .trim_end()
}

/// How the API answers OpenCode's trouble: unreachable is 503, slow is 504, anything else a
/// 502 naming what OpenCode said.
impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Connect(m) | UpstreamError::Unreachable(m) => {
                ApiError::Unavailable(format!("OpenCode is unreachable: {m}"))
            }
            UpstreamError::Timeout(m) => {
                ApiError::UpstreamTimeout(format!("OpenCode timed out: {m}"))
            }
            // A 404 the caller could not have caused (routes that map it to their own 404 do so
            // themselves): the upstream lost something it should have.
            UpstreamError::NotFound(m) => ApiError::Upstream(format!("OpenCode answered 404: {m}")),
            UpstreamError::Status { status, message } => {
                ApiError::Upstream(format!("OpenCode answered {status}: {message}"))
            }
            UpstreamError::Decode(m) => {
                ApiError::Upstream(format!("OpenCode sent an unexpected answer: {m}"))
            }
            UpstreamError::Unsupported(m) => ApiError::NotImplemented(m),
        }
    }
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

    #[test]
    fn stack_traces_and_internal_paths_never_reach_clients() {
        let bun = "Bad Request: image could not be decoded\n    at catch (/$bunfs/root/chunk-4x2.js:1004:6414)\n    at run (/$bunfs/root/chunk-4x2.js:12:1)";
        assert_eq!(
            public_message(bun),
            "Bad Request: image could not be decoded"
        );
        let inline =
            "TypeError: undefined is not an object at catch (/$bunfs/root/chunk-a.js:1004:6414)";
        assert_eq!(
            public_message(inline),
            "TypeError: undefined is not an object"
        );
        assert_eq!(
            public_message("rate limited: try again at 10:00"),
            "rate limited: try again at 10:00"
        );
        assert_eq!(
            public_message("a".repeat(2000).as_str()).chars().count(),
            501
        );
        assert!(!public_message("\n\n").is_empty());
        let body = format!(r#"{{"data":{{"message":{}}}}}"#, serde_json::json!(bun));
        assert_eq!(
            upstream_message(&body).as_deref(),
            Some("Bad Request: image could not be decoded")
        );
    }
}
