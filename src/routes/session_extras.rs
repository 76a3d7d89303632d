//! What else a session has in OpenCode: its children (sub-agent sessions), todo list, file
//! diff, one message by id, compaction (`summarize`), revert/unrevert, and sharing (off unless
//! `admin.allow_share`: a shared session is published on OpenCode's public share service).
//!
//! Every route first checks that the caller owns the session (404 otherwise, as for one that
//! does not exist) and then asks the OpenCode instance of the session's own directory.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::opencode::history::{revert_point, HistoryMessage};
use crate::opencode::{OpenCodeClient, UpstreamError};
use crate::routes::sessions::{chat_message, SessionId};
use crate::sessions::not_found_as_session;

/// The session's client, once the caller is known to own it.
async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<OpenCodeClient, ApiError> {
    let session = state.backend.sessions.explicit.owned(caller, id).await?;
    Ok(state
        .backend
        .client
        .in_directory(session.directory.as_deref()))
}

/// `GET /v1/sessions/{id}/children`: sessions the agent started from this one (sub-agents).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/children",
    operation_id = "session_extras_children",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "Sessions the agent started from this one.", body = Object))
)]
pub async fn children(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let client = owned(&state, &caller, &id).await?;
    let raw = client
        .session_children(&id)
        .await
        .map_err(not_found_as_session(&id))?;
    let data: Vec<Value> = raw
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| json!({"id": s["id"], "object": "session", "title": s["title"], "parent_id": s["parentID"]}))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /v1/sessions/{id}/todo`: the agent's todo list.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/todo",
    operation_id = "session_extras_todo",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "The agent's todo list.", body = Object))
)]
pub async fn todo(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let client = owned(&state, &caller, &id).await?;
    let todo = client
        .session_todo(&id)
        .await
        .map_err(not_found_as_session(&id))?;
    Ok(Json(json!({ "object": "list", "data": list(todo) })))
}

/// `GET /v1/sessions/{id}/diff`: the files the session changed.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/diff",
    operation_id = "session_extras_diff",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "Files the session changed.", body = Object))
)]
pub async fn diff(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let client = owned(&state, &caller, &id).await?;
    let diff = client
        .session_diff(&id)
        .await
        .map_err(not_found_as_session(&id))?;
    Ok(Json(json!({ "object": "list", "data": list(diff) })))
}

fn list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// `GET /v1/sessions/{id}/messages/{message_id}`: one message, in chat form plus its raw parts.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/messages/{message_id}",
    operation_id = "session_extras_message",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one."), ("message_id" = String, Path, description = "Message id (`msg_…`).")),
    responses((status = 200, description = "The message, in chat form with its raw parts.", body = Object))
)]
pub async fn message(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let not_found = || ApiError::NotFound {
        message: format!("No message '{message_id}' in this session."),
        code: "message_not_found",
    };
    if !is_message_id(&message_id) {
        return Err(not_found());
    }
    let client = owned(&state, &caller, &id).await?;
    let raw = client
        .session_message(&id, &message_id)
        .await
        .map_err(|e| match e {
            UpstreamError::NotFound(_) => not_found(),
            e => e.into(),
        })?;
    let mut message = chat_message(&raw).ok_or_else(not_found)?;
    message["parts"] = HistoryMessage::read(&raw)
        .map(|m| m.parts)
        .unwrap_or_default();
    Ok(Json(message))
}

/// OpenCode's message ids: `msg_` and letters/digits.
fn is_message_id(id: &str) -> bool {
    id.strip_prefix("msg_").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Body of `POST /v1/sessions/{id}/summarize`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummarizeBody {
    /// The model that writes the summary (`provider/model`, as in `/v1/models`).
    model: String,
}

/// `POST /v1/sessions/{id}/summarize`: compacts a long history into a summary, so later
/// turns send less. Blocks until the summary is written (the client's deadline applies).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/summarize",
    operation_id = "session_extras_summarize",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    request_body = SummarizeBody,
    responses((status = 200, description = "Summarized.", body = Object))
)]
pub async fn summarize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
    b: Result<Json<SummarizeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let Json(b) = b?;
    let client = owned(&state, &caller, &id).await?;
    let model = state.backend.catalog.get(&b.model).await?;
    // One prompt per session at a time: the summary is one. Dropped on failure (the session
    // is aborted), freed once the summary is written.
    let lease = state
        .backend
        .sessions
        .explicit
        .acquire(&caller, &id)
        .await?;
    client
        .summarize(&id, &model.provider_id, &model.model_id)
        .await
        .map_err(not_found_as_session(&id))?;
    // OpenCode answers `true` whether or not the summary was written; a failed one is the
    // session's newest message: a summary carrying an error.
    let failed = client
        .messages(&id)
        .await
        .ok()
        .and_then(|m| m.last().and_then(summary_error));
    lease.free();
    if let Some(message) = failed {
        return Err(ApiError::Upstream(format!(
            "The model failed to summarize the session: {message}"
        )));
    }
    Ok(Json(
        json!({ "id": id, "object": "session", "summarized": true }),
    ))
}

/// The error of a summary message that failed.
fn summary_error(message: &Value) -> Option<String> {
    HistoryMessage::read(message)?.summary_error
}

/// Body of `POST /v1/sessions/{id}/revert`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertBody {
    /// The first message to undo (it and everything after it are reverted, files included).
    message_id: String,
    /// Only from this part of the message on.
    part_id: Option<String>,
}

/// `POST /v1/sessions/{id}/revert`: undoes the session (messages and the files they changed)
/// back to a message; `unrevert` brings it all back until the next prompt.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/revert",
    operation_id = "session_extras_revert",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    request_body = RevertBody,
    responses((status = 200, description = "The revert state.", body = Object))
)]
pub async fn revert(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
    b: Result<Json<RevertBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let Json(b) = b?;
    if !is_message_id(&b.message_id) {
        return Err(ApiError::invalid(
            "`message_id` must be one of the session's message ids.",
            Some("message_id".into()),
        ));
    }
    let client = owned(&state, &caller, &id).await?;
    let session = client
        .revert(&id, &b.message_id, b.part_id.as_deref())
        .await
        .map_err(not_found_as_session(&id))?;
    Ok(Json(revert_state(&id, &session)))
}

/// `POST /v1/sessions/{id}/unrevert`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/unrevert",
    operation_id = "session_extras_unrevert",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "The revert state.", body = Object))
)]
pub async fn unrevert(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let client = owned(&state, &caller, &id).await?;
    let session = client
        .unrevert(&id)
        .await
        .map_err(not_found_as_session(&id))?;
    Ok(Json(revert_state(&id, &session)))
}

fn revert_state(id: &str, session: &Value) -> Value {
    let revert = revert_point(session);
    json!({
        "id": id,
        "object": "session",
        "reverted": revert.is_some(),
        "revert": revert.map(|(message, part)| json!({"message_id": message, "part_id": part})),
    })
}

/// `POST /v1/sessions/{id}/share` (and `DELETE` to unshare): off unless `admin.allow_share`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/share",
    operation_id = "session_extras_share",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "The share URL (only with `admin.allow_share`).", body = Object))
)]
pub async fn share(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    switch_share(state, caller, id, true).await
}

/// `DELETE /v1/sessions/{id}/share`.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}/share",
    operation_id = "session_extras_unshare",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "Unshared (only with `admin.allow_share`).", body = Object))
)]
pub async fn unshare(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    switch_share(state, caller, id, false).await
}

async fn switch_share(
    state: AppState,
    caller: Caller,
    id: String,
    on: bool,
) -> Result<Json<Value>, ApiError> {
    if !state.config.admin.allow_share {
        return Err(ApiError::PermissionDenied(
            "Sharing sessions is off on this gateway (`admin.allow_share`): a shared session is public.".into(),
        ));
    }
    let client = owned(&state, &caller, &id).await?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, session = %id, share = on, "session share switched");
    let session = client
        .share(&id, on)
        .await
        .map_err(not_found_as_session(&id))?;
    Ok(Json(
        json!({ "id": id, "object": "session", "share_url": session.pointer("/share/url") }),
    ))
}
