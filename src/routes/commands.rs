//! Commands and shell: `GET /v1/commands` lists OpenCode's commands;
//! `POST /v1/sessions/{id}/command` and `POST /v1/sessions/{id}/shell` run one in a session —
//! admin keys only, and only with `admin.allow_execution = true` (else 403, even for admins):
//! they give shell access to the OpenCode host. Every run is audit-logged with the key's name;
//! the result is the session's new message in chat form.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::opencode::history::HistoryMessage;
use crate::routes::sessions::{chat_message, SessionId};
use crate::sessions::not_found_as_session;

/// `GET /v1/commands`.
#[utoipa::path(
    get,
    path = "/v1/commands",
    operation_id = "commands_list",
    tag = "Execution",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "OpenCode's commands.", body = Object))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    // A project's own commands live in its directory.
    let requested = crate::run::placement::Requested::from_request(&headers, None)?;
    let placement = crate::run::placement::resolve(&state.config, &caller, &requested)?;
    let client = state
        .on_default_upstream()
        .backend
        .client
        .in_directory(placement.directory.as_deref());
    let commands = client.commands().await.map_err(access::upstream)?;
    let data: Vec<Value> = commands
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"id": c["name"], "object": "command", "description": c["description"], "agent": c["agent"]}))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// Refused unless the caller is an admin and execution is on.
fn may_execute(state: &AppState, caller: &Caller, what: &str) -> Result<(), ApiError> {
    caller.require_admin(what)?;
    if !state.config.admin.allow_execution {
        return Err(ApiError::PermissionDenied(format!(
            "{what} is off on this gateway (`admin.allow_execution`)."
        )));
    }
    Ok(())
}

/// Body of `POST /v1/sessions/{id}/command`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// The command's name.
    command: String,
    /// Its arguments as one text.
    #[serde(default)]
    arguments: String,
    /// The agent to run it with.
    agent: Option<String>,
    /// `provider/model`.
    model: Option<String>,
}

/// `POST /v1/sessions/{id}/command`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/command",
    operation_id = "commands_run_command",
    tag = "Execution",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    request_body = CommandBody,
    responses((status = 200, description = "The command's message, in chat form (admin, only with `admin.allow_execution`).", body = Object))
)]
pub async fn run_command(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
    body: Result<Json<CommandBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    may_execute(&state, &caller, "Running commands")?;
    let Json(body) = body?;
    let session = state.backend.sessions.explicit.owned(&caller, &id).await?;
    let lease = state
        .backend
        .sessions
        .explicit
        .acquire(&caller, &id)
        .await?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, session = %id, command = %body.command, "command run");
    let mut upstream = json!({ "command": body.command, "arguments": body.arguments });
    if let Some(agent) = body.agent {
        upstream["agent"] = json!(agent);
    }
    if let Some(model) = body.model {
        upstream["model"] = json!(model);
    }
    let message = state
        .backend
        .client
        .in_directory(session.directory.as_deref())
        .run_command(&id, &upstream)
        .await
        .map_err(not_found_as_session(&id))?;
    lease.free();
    Ok(Json(chat_message(&message).unwrap_or(message)))
}

/// Body of `POST /v1/sessions/{id}/shell`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellBody {
    /// The shell line.
    command: String,
    /// The agent to run it as (OpenCode requires one; default: the key's or global default,
    /// else `build`).
    agent: Option<String>,
}

/// `POST /v1/sessions/{id}/shell`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/shell",
    operation_id = "commands_run_shell",
    tag = "Execution",
    params(("id" = String, Path, description = "Session id (`ses_…`); a key sees its own sessions, an admin every one.")),
    request_body = ShellBody,
    responses((status = 200, description = "The shell run's message, in chat form (admin, only with `admin.allow_execution`).", body = Object))
)]
pub async fn run_shell(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SessionId(id): SessionId,
    body: Result<Json<ShellBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let state = state.for_session(&id).await?;
    may_execute(&state, &caller, "Running shell commands")?;
    let Json(body) = body?;
    let session = state.backend.sessions.explicit.owned(&caller, &id).await?;
    let lease = state
        .backend
        .sessions
        .explicit
        .acquire(&caller, &id)
        .await?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, session = %id, command = %body.command, "shell run");
    let agent = body
        .agent
        .or_else(|| caller.scope.default_agent.clone())
        .or_else(|| state.config.prompt.agent.clone())
        .unwrap_or_else(|| "build".into());
    let upstream = json!({ "command": body.command, "agent": agent });
    let message = state
        .backend
        .client
        .in_directory(session.directory.as_deref())
        .run_shell(&id, &upstream)
        .await
        .map_err(not_found_as_session(&id))?;
    lease.free();
    Ok(Json(shell_message(&message)))
}

/// A shell run's message in chat form, its content what the shell printed: OpenCode keeps
/// the output (or the error) in the message's tool part, which the chat form leaves out.
fn shell_message(message: &Value) -> Value {
    let Some(mut chat) = chat_message(message) else {
        return message.clone();
    };
    if chat["content"].as_str().is_some_and(str::is_empty) {
        let output = HistoryMessage::read(message).map(|m| m.tool_output);
        chat["content"] = Value::String(output.unwrap_or_default());
    }
    chat
}
