//! `GET /v1/agents`: the OpenCode agents the calling key may select (`x-opencode-agent`).

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// The handler: OpenCode's agents, those outside the key's scope left out.
#[utoipa::path(
    get,
    path = "/v1/agents",
    operation_id = "agents_list",
    tag = "Agents",
    responses((status = 200, description = "The OpenCode agents this key may select.", body = Object))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.client.agents().await?;
    let scope = &caller.scope;
    let default = scope
        .default_agent
        .clone()
        .or_else(|| state.config.prompt.agent.clone());
    let data: Vec<Value> = agents
        .iter()
        .filter_map(|a| {
            let name = a.get("name")?.as_str()?;
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
