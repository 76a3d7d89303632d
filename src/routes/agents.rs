//! `GET /v1/agents`: the OpenCode agents the calling key may select (`x-opencode-agent`).

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// The handler: OpenCode's agents of the request's project, those outside the key's scope and
/// OpenCode's internal ones (`hidden`: title, summary, compaction) left out.
#[utoipa::path(
    get,
    path = "/v1/agents",
    operation_id = "agents_list",
    tag = "Agents",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "The OpenCode agents this key may select.", body = Object))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let requested = crate::run::placement::Requested::from_request(&headers, None)?;
    let placement = crate::run::placement::resolve(&state.config, &caller, &requested)?;
    let client = state
        .on_default_upstream()
        .backend
        .client
        .in_directory(placement.directory.as_deref());
    let agents = client.agents().await?;
    let scope = &caller.scope;
    let default = scope
        .default_agent
        .clone()
        .or_else(|| state.config.prompt.agent.clone());
    let data: Vec<Value> = agents
        .iter()
        .filter_map(|a| {
            let name = a.get("name")?.as_str()?;
            if a.get("hidden").and_then(Value::as_bool) == Some(true) {
                return None;
            }
            let usable = caller.is_admin()
                || scope.agents.iter().any(|s| s == name)
                || default.as_deref() == Some(name);
            usable.then(|| {
                json!({
                    "id": name,
                    "object": "agent",
                    "description": a.get("description"),
                    "mode": a.get("mode"),
                    "default": default.as_deref() == Some(name),
                })
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
