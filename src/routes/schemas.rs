//! The shapes of the gateway's own answers, as the OpenAPI description ([`crate::openapi`])
//! names them: declared here, beside the routes whose annotations refer to them, so the
//! routes need nothing from the module that collects them.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// An error, as every non-2xx answer carries it (OpenAI's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorObject,
}

/// The `error` of an [`ErrorResponse`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// For people: what went wrong and, where it helps, what to do.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_denied`, `not_found_error`,
    /// `rate_limit_error`, `api_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault (`messages[2].content`), when one is.
    pub param: Option<String>,
    /// A stable machine-readable code (`model_not_found`, `session_busy`, …).
    pub code: Option<String>,
}

/// `{id, object, deleted: true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// What was deleted.
    pub id: String,
    /// `session.deleted`, `response.deleted`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}

/// An explicit session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionObject {
    /// `ses_…`.
    pub id: String,
    /// Always `session`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Its title (without the gateway's owner tag).
    pub title: Option<String>,
}

/// A list of sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Always `list`.
    pub object: String,
    /// The sessions, oldest first.
    pub data: Vec<SessionObject>,
}

/// One message of a session's history, in chat form.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatMessage {
    /// `msg_…`.
    pub id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
    /// The model's reasoning, when it showed any.
    pub reasoning_content: Option<String>,
    /// Unix seconds.
    pub created: Option<u64>,
}

/// A session's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    /// Always `list`.
    pub object: String,
    /// The messages, oldest first.
    pub data: Vec<ChatMessage>,
}

/// One page of a listing (`limit`, `offset`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PageList {
    /// Always `list`.
    pub object: String,
    /// This page's items, as OpenCode gives them.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
    /// Whether more follow.
    pub has_more: bool,
    /// The `offset` of the next page, when there is one.
    pub next_offset: Option<u64>,
}
