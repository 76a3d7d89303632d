//! Tools, language servers, formatters and MCP servers: their status for admin keys and
//! project-scoped keys; adding, connecting and disconnecting MCP servers for admins only.
//! The gateways' own MCP servers (client tools, `ptk<tag>NN`) are internal: hidden and refused.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::client_tools::slots::{is_slot_name, SLOT_PREFIX};
use crate::error::ApiError;

/// `GET /v1/tools`: the ids of OpenCode's tools.
#[utoipa::path(
    get,
    path = "/v1/tools",
    operation_id = "tooling_tool_ids",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "OpenCode's tool ids.", body = Object))
)]
pub async fn tool_ids(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let ids = client.tool_ids().await.map_err(access::upstream)?;
    Ok(Json(json!({ "object": "list", "data": ids })))
}

/// Query of `GET /v1/tools/definitions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DefinitionsQuery {
    /// `provider/model`.
    model: String,
}

/// `GET /v1/tools/definitions?model=`: the tools (with their schemas) a model would get.
#[utoipa::path(
    get,
    path = "/v1/tools/definitions",
    operation_id = "tooling_tool_definitions",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), DefinitionsQuery),
    responses((status = 200, description = "The tools a model would get, with schemas.", body = Object))
)]
pub async fn tool_definitions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<DefinitionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let model = state
        .on_default_upstream()
        .backend
        .catalog
        .get(&q.model)
        .await?;
    let defs = client
        .tool_definitions(&model.provider_id, &model.model_id)
        .await
        .map_err(access::upstream)?;
    Ok(Json(json!({ "object": "list", "data": defs })))
}

/// `GET /v1/lsp`: language servers.
#[utoipa::path(
    get,
    path = "/v1/lsp",
    operation_id = "tooling_lsp",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "Language servers.", body = Object))
)]
pub async fn lsp(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let status = client.lsp_status().await.map_err(access::upstream)?;
    Ok(Json(json!({ "object": "list", "data": status })))
}

/// `GET /v1/formatters`: formatters.
#[utoipa::path(
    get,
    path = "/v1/formatters",
    operation_id = "tooling_formatters",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "Formatters.", body = Object))
)]
pub async fn formatters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let status = client.formatter_status().await.map_err(access::upstream)?;
    Ok(Json(json!({ "object": "list", "data": status })))
}

/// `GET /v1/mcp`: MCP servers and their status (the gateway's own left out).
#[utoipa::path(
    get,
    path = "/v1/mcp",
    operation_id = "tooling_mcp_status",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "MCP servers and their status.", body = Object))
)]
pub async fn mcp_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let status = client.mcp_status().await.map_err(access::upstream)?;
    let data: Vec<Value> = status
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| !is_slot_name(name))
        .map(|(name, s)| json!({"name": name, "object": "mcp_server", "status": s["status"], "error": s.get("error")}))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// An MCP server name an admin may manage (not the gateway's own).
fn manageable(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok || is_slot_name(name) || name.starts_with(SLOT_PREFIX) {
        return Err(ApiError::invalid(
            "MCP server names are 1 to 64 letters, digits, `-`, `_` or `.`, and `ptk…` is the gateway's own.",
            Some("name".into()),
        ));
    }
    Ok(name)
}

/// Body of `POST /v1/mcp`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMcp {
    /// The server's name (its tools become `<name>_<tool>`).
    name: String,
    /// OpenCode's server config: `{"type":"remote","url",…}` or `{"type":"local","command":[…]}`.
    #[schema(value_type = Object)]
    config: Value,
}

/// `POST /v1/mcp`: adds an MCP server (admin).
#[utoipa::path(
    post,
    path = "/v1/mcp",
    operation_id = "tooling_mcp_add",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    request_body = AddMcp,
    responses((status = 200, description = "The added server's status (admin).", body = Object))
)]
pub async fn mcp_add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Json<AddMcp>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Adding MCP servers")?;
    let Json(body) = body?;
    let name = manageable(&body.name)?;
    if !body.config.is_object() {
        return Err(ApiError::invalid(
            "`config` must be an object.",
            Some("config".into()),
        ));
    }
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, server = %name, "MCP server added");
    let status = client
        .add_mcp(name, &body.config)
        .await
        .map_err(access::upstream)?;
    Ok(Json(
        json!({ "name": name, "object": "mcp_server", "status": status.get(name) }),
    ))
}

/// `POST /v1/mcp/{name}/connect` (admin).
#[utoipa::path(
    post,
    path = "/v1/mcp/{name}/connect",
    operation_id = "tooling_mcp_connect",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), ("name" = String, Path, description = "MCP server name.")),
    responses((status = 200, description = "Connected (admin).", body = Object))
)]
pub async fn mcp_connect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    switch(state, caller, headers, name, true).await
}

/// `POST /v1/mcp/{name}/disconnect` (admin).
#[utoipa::path(
    post,
    path = "/v1/mcp/{name}/disconnect",
    operation_id = "tooling_mcp_disconnect",
    tag = "Tools",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), ("name" = String, Path, description = "MCP server name.")),
    responses((status = 200, description = "Disconnected (admin).", body = Object))
)]
pub async fn mcp_disconnect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    switch(state, caller, headers, name, false).await
}

async fn switch(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    name: String,
    connect: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Managing MCP servers")?;
    let name = manageable(&name)?;
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, server = %name, connect, "MCP server switched");
    client
        .mcp_switch(name, connect)
        .await
        .map_err(|e| match e {
            crate::opencode::UpstreamError::NotFound(_) => ApiError::NotFound {
                message: format!("No MCP server '{name}'."),
                code: "mcp_server_not_found",
            },
            e => e.into(),
        })?;
    Ok(Json(
        json!({ "name": name, "object": "mcp_server", "connected": connect }),
    ))
}
