//! `POST /v1/chat/completions`: JSON (`chat.completion`) or SSE (`chat.completion.chunk`s),
//! both driven by the same [`run::Run`](crate::run::Run).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::app::state::AppState;
use crate::auth::Caller;
use crate::encode::chat::{ChatAnswer, Chunks};
use crate::error::ApiError;
use crate::metrics::ModelLabel;
use crate::openai::ChatRequest;
use crate::routes::now_secs;
use crate::run::placement::Requested;
use crate::run::{self, RunRequest, Target};

/// Header pinning a request to an explicit session created through `/v1/sessions`.
pub const SESSION_HEADER: &str = "x-session-id";
/// Header asking a stream to show OpenCode's activity (as SSE comments).
pub const ACTIVITY_HEADER: &str = "x-opencode-activity";

/// `POST /v1/chat/completions`: starts (or resumes) a run and answers it as JSON or SSE.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    operation_id = "chat_completions",
    tag = "Chat",
    params(("x-session-id" = Option<String>, Header, description = "Run on this explicit session instead of the conversation pool."), ("x-opencode-agent" = Option<String>, Header, description = "OpenCode agent, within the key's scope (default: the key's, then `prompt.agent`)."), ("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), ("x-opencode-activity" = Option<String>, Header, description = "`1`: show OpenCode's tool activity as SSE comments in the stream.")),
    request_body(content = Object, description = "OpenAI's `CreateChatCompletionRequest`. Refused with 400 naming the field: `n` > 1, `audio`, `logprobs`, `prediction`, and other fields OpenCode cannot honour."),
    responses((status = 200, description = "A chat completion (`CreateChatCompletionResponse`), or with `stream: true` an SSE stream of `CreateChatCompletionStreamResponse` chunks ending in `data: [DONE]`.", content((Object = "application/json"), (String = "text/event-stream"))))
)]
pub async fn completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = state.config.limits.max_body_bytes;
    let body = body.map_err(|r| ApiError::from_body_rejection(&r, limit))?;
    let req = ChatRequest::parse(&body)?;
    let target = match explicit_session(&headers)? {
        Some(id) => Target::Explicit(id.to_string()),
        None => Target::Conversation,
    };
    let mut run_req = RunRequest::from(&req);
    run_req.requested = Requested::from_request(&headers, req.metadata.as_ref())?;
    let run = run::start_or_resume(&state, &caller, target, &run_req).await?;
    let label = ModelLabel(req.model.clone());
    let session = session_header(run.session_id());
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if req.stream {
        let chunks = Chunks {
            id,
            created,
            model: req.model,
            include_usage: req.include_usage,
            include_activity: headers
                .get(ACTIVITY_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes")),
        };
        let keepalive = KeepAlive::new()
            .interval(state.config.prompt.keepalive)
            .text("keep-alive");
        let mut response = Sse::new(chunks.stream(run))
            .keep_alive(keepalive)
            .into_response();
        response.extensions_mut().insert(label);
        response.headers_mut().extend(session);
        return Ok(response);
    }
    let mut answer = ChatAnswer::new(id, created, req.model);
    if let Some(failure) = run.drain(&mut answer).await.failure {
        return Err(failure);
    }
    let mut response = Json(answer.finish()?).into_response();
    response.extensions_mut().insert(label);
    response.headers_mut().extend(session);
    Ok(response)
}

/// `x-opencode-session-id: <session>`: the OpenCode session a completion ran on (for its
/// permission requests and events).
pub fn session_header(
    session_id: &str,
) -> Option<(axum::http::HeaderName, axum::http::HeaderValue)> {
    let value = axum::http::HeaderValue::from_str(session_id).ok()?;
    Some((
        axum::http::HeaderName::from_static("x-opencode-session-id"),
        value,
    ))
}

/// The explicit session named by `x-session-id`, if any (an unreadable one is a 404).
fn explicit_session(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(SESSION_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(id) if !id.is_empty() => Ok(Some(id)),
        _ => Err(ApiError::session_not_found("")),
    }
}
