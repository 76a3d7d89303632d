//! The session API: explicit OpenCode sessions owned by the calling key. A key never sees or
//! touches another key's sessions (404, exactly as for a session that does not exist).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::opencode::history::HistoryMessage;
use crate::opencode::Session;
use crate::run::placement::{self, Requested};
use crate::sessions::display_title;

/// The `{id}` of a session route; a malformed one is the same 404 as an unknown one, in
/// OpenAI's error shape.
pub struct SessionId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SessionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(SessionId(id)),
            Err(_) => Err(ApiError::session_not_found("")),
        }
    }
}

fn session_json(s: &Session) -> Value {
    json!({
        "id": s.id,
        "object": "session",
        "created": s.created_secs(),
        "title": s.title.as_deref().map(display_title),
    })
}

fn created(s: &Session) -> Response {
    (StatusCode::CREATED, Json(session_json(s))).into_response()
}

/// `POST /v1/sessions`.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    operation_id = "sessions_create",
    tag = "Sessions",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 201, description = "The new session.", body = crate::routes::schemas::SessionObject))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let requested = Requested::from_request(&headers, None)?;
    let placement = placement::resolve(&state.config, &caller, &requested)?;
    let dir = placement.directory.as_deref();
    let state = state.for_new();
    let session = state
        .backend
        .sessions
        .explicit
        .create(&caller.id, dir)
        .await?;
    state.upstreams.set_home(&session.id, state.backend.index);
    Ok(created(&session))
}

/// `GET /v1/sessions`.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "sessions_list",
    tag = "Sessions",
    responses((status = 200, description = "The caller's sessions (an admin's: all).", body = crate::routes::schemas::SessionList))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    // Every upstream's (one that does not answer is left out rather than fail the list).
    let backends = state.upstreams.all();
    let lists = futures::future::join_all(
        backends
            .iter()
            .map(|b| async { (b.available(), b.sessions.explicit.list(&caller).await) }),
    )
    .await;
    let mut sessions = Vec::new();
    for (available, list) in lists {
        match list {
            Ok(list) => sessions.extend(list),
            // A drained upstream's sessions are left out; a serving one's error is the answer.
            Err(_) if !available && backends.len() > 1 => {}
            Err(e) => return Err(e),
        }
    }
    let data: Vec<Value> = sessions.iter().map(session_json).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /v1/sessions/{id}`.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "sessions_get",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "The session.", body = crate::routes::schemas::SessionObject))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let session = state.backend.sessions.explicit.owned(&caller, &id).await?;
    Ok(Json(session_json(&session)))
}

/// `DELETE /v1/sessions/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    operation_id = "sessions_delete",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "Deleted.", body = crate::routes::schemas::Deleted))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    state.backend.sessions.explicit.delete(&caller, &id).await?;
    state.upstreams.forget_home(&id);
    Ok(Json(
        json!({ "id": id, "object": "session.deleted", "deleted": true }),
    ))
}

/// `GET /v1/sessions/{id}/messages`: the history in chat-message form.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/messages",
    operation_id = "sessions_messages",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "The history as chat messages.", body = crate::routes::schemas::MessageList))
)]
pub async fn messages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let raw = state
        .backend
        .sessions
        .explicit
        .messages(&caller, &id)
        .await?;
    let data: Vec<Value> = raw.iter().filter_map(chat_message).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// One stored OpenCode message as `{id, role, content, reasoning_content?, created}`.
pub fn chat_message(raw: &Value) -> Option<Value> {
    let m = HistoryMessage::read(raw)?;
    let mut out = json!({
        "id": m.id,
        "role": m.role,
        "content": m.text,
        "created": m.created_secs,
    });
    if !m.reasoning.is_empty() {
        out["reasoning_content"] = Value::String(m.reasoning);
    }
    Some(out)
}

/// `POST /v1/sessions/{id}/fork`: a new session owned by the same key with the same history.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/fork",
    operation_id = "sessions_fork",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 201, description = "The new session.", body = crate::routes::schemas::SessionObject))
)]
pub async fn fork(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Response, ApiError> {
    let state = state.for_session(&id).await?;
    let fork = state.backend.sessions.explicit.fork(&caller, &id).await?;
    state.upstreams.set_home(&fork.id, state.backend.index);
    Ok(created(&fork))
}

/// `POST /v1/sessions/{id}/abort`: stops a running request on the session.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/abort",
    operation_id = "sessions_abort",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "Aborted.", body = Object))
)]
pub async fn abort(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    state.backend.sessions.explicit.abort(&caller, &id).await?;
    Ok(Json(
        json!({ "id": id, "object": "session", "aborted": true }),
    ))
}

/// `GET /v1/sessions/{id}/permissions`: the requests of OpenCode's agent waiting for the
/// caller on this session (policy `client`).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/permissions",
    operation_id = "sessions_permissions",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    responses((status = 200, description = "Requests of OpenCode's agent waiting for the caller (policy `client`).", body = Object))
)]
pub async fn permissions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    // A session the caller's runs use (a conversation's, or one with a request of theirs
    // waiting), or an explicit session of theirs (an admin: any session); anything else is
    // the same 404 as on every other session route.
    let runs_there = state
        .backend
        .sessions
        .owners
        .of(&id)
        .is_some_and(|o| o == caller.id);
    if !runs_there
        && !state
            .backend
            .permissions
            .waiting_for(&id, &caller.id, caller.is_admin())
    {
        state.backend.sessions.explicit.owned(&caller, &id).await?;
    }
    let data = state
        .backend
        .permissions
        .list(&id, &caller.id, caller.is_admin());
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// Body of `POST /v1/sessions/{id}/permissions/{permission_id}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionAnswer {
    /// `once`, `always` (this request and the matching requests of the rest of the same run;
    /// never saved in OpenCode) or `reject` (for a question: omit it and give `answers`, or
    /// `reject`).
    reply: Option<String>,
    /// A question's answers: one array of chosen labels per question.
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    answers: Option<Value>,
}

/// `POST /v1/sessions/{id}/permissions/{permission_id}`: answers one waiting request.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/permissions/{permission_id}",
    operation_id = "sessions_answer_permission",
    tag = "Sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one."), ("permission_id" = String, Path, description = "The waiting request's id.")),
    request_body = PermissionAnswer,
    responses((status = 200, description = "Answered.", body = Object))
)]
pub async fn answer_permission(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, permission_id)): Path<(String, String)>,
    body: Result<Json<PermissionAnswer>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    let Json(answer) = body?;
    let reply = match (answer.reply.as_deref(), &answer.answers) {
        (Some(r @ ("once" | "always" | "reject")), _) => r,
        (None, Some(_)) => "once",
        (Some(other), _) => {
            return Err(ApiError::invalid(
                format!("`reply` must be once, always or reject, not {other:?}."),
                Some("reply".into()),
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "Give `reply` (once, always, reject) or a question's `answers`.",
                Some("reply".into()),
            ))
        }
    };
    let answers = answer.answers.as_ref().filter(|_| reply != "reject");
    let pending = state
        .backend
        .permissions
        .answer(
            &id,
            &permission_id,
            &caller.id,
            caller.is_admin(),
            reply,
            answers,
        )
        .await?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, session = %id, permission = %pending.permission, reply, "permission answered");
    Ok(Json(
        json!({ "id": permission_id, "object": "permission", "reply": reply }),
    ))
}
