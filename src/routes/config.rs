//! OpenCode's configuration, for admins: `GET /v1/config` (secrets masked) and
//! `PATCH /v1/config` (only with `admin.allow_config_patch = true`).

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::Value;

use crate::access;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// `GET /v1/config`.
#[utoipa::path(
    get,
    path = "/v1/config",
    operation_id = "config_get",
    tag = "Config",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "OpenCode's configuration, secrets masked (admin).", body = Object))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Reading OpenCode's configuration")?;
    // The configuration of the request's project (its opencode.json over the global one).
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    Ok(Json(access::masked(
        &client.opencode_config().await.map_err(access::upstream)?,
    )))
}

/// `PATCH /v1/config`.
#[utoipa::path(
    patch,
    path = "/v1/config",
    operation_id = "config_patch",
    tag = "Config",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    request_body(content = Object, description = "A partial OpenCode configuration."),
    responses((status = 200, description = "The updated configuration, secrets masked (admin, only with `admin.allow_config_patch`).", body = Object))
)]
pub async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Changing OpenCode's configuration")?;
    if !state.config.admin.allow_config_patch {
        return Err(ApiError::PermissionDenied(
            "Changing OpenCode's configuration is off on this gateway (`admin.allow_config_patch`)."
                .into(),
        ));
    }
    let Json(patch) = body?;
    if !patch.is_object() {
        return Err(ApiError::invalid("The patch must be an object.", None));
    }
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, "OpenCode configuration patched");
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let updated = client
        .patch_opencode_config(&patch)
        .await
        .map_err(access::upstream)?;
    Ok(Json(access::masked(&updated)))
}
