//! Providers: `GET /v1/providers` (what is configured, connected and default, with models; no
//! secrets), `POST /v1/providers/refresh` (the model catalog, now), and the admin-only auth flows
//! (`PUT /v1/providers/{id}/auth`, OAuth authorize and callback).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::access;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// A provider id as OpenCode names them (letters, digits, `-`, `_`, `.`).
fn provider_id(id: &str) -> Result<&str, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(id)
    } else {
        Err(ApiError::NotFound {
            message: format!("No provider '{id}'."),
            code: "provider_not_found",
        })
    }
}

/// `GET /v1/providers`.
#[utoipa::path(
    get,
    path = "/v1/providers",
    operation_id = "providers_list",
    tag = "Providers",
    responses((status = 200, description = "Providers with connected/default and their models; no secrets.", body = Object))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = state
        .backend
        .client
        .provider_list()
        .await
        .map_err(access::upstream)?;
    let connected: Vec<&str> = all["connected"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let defaults = &all["default"];
    let data: Vec<Value> = all["all"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = p["id"].as_str()?;
            let models: Vec<Value> = p["models"]
                .as_object()
                .map(|m| {
                    m.values()
                        .map(|m| json!({"id": format!("{id}/{}", m["id"].as_str().unwrap_or_default()), "name": m["name"]}))
                        .collect()
                })
                .unwrap_or_default();
            Some(json!({
                "id": id,
                "object": "provider",
                "name": p["name"],
                "connected": connected.contains(&id),
                "default_model": defaults.get(id),
                "models": models,
            }))
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `POST /v1/providers/refresh`: fetches the model catalog now (admin).
#[utoipa::path(
    post,
    path = "/v1/providers/refresh",
    operation_id = "providers_refresh",
    tag = "Providers",
    responses((status = 200, description = "The model catalog, refreshed (admin).", body = Object))
)]
pub async fn refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Refreshing the model catalog")?;
    // Every upstream's catalog (the first available one's answer is shown).
    for b in state.upstreams.all() {
        if b.index != state.upstreams.default_upstream() {
            b.catalog.refresh().await.ok();
        }
    }
    let models = state
        .on_default_upstream()
        .backend
        .catalog
        .refresh()
        .await?;
    Ok(Json(json!({ "object": "catalog", "models": models })))
}

/// `PUT /v1/providers/{id}/auth`: stores credentials for a provider (admin).
#[utoipa::path(
    put,
    path = "/v1/providers/{id}/auth",
    operation_id = "providers_set_auth",
    tag = "Providers",
    params(("id" = String, Path, description = "Provider id, as in `/v1/providers`.")),
    request_body(content = Object, description = "OpenCode's provider auth, e.g. `{\"type\":\"api\",\"key\":\"…\"}`."),
    responses((status = 200, description = "Stored (admin).", body = Object))
)]
pub async fn set_auth(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    auth: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Setting provider credentials")?;
    let Json(auth) = auth?;
    let id = provider_id(&id)?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, provider = %id, "provider credentials set");
    // On every upstream: each OpenCode keeps its own credentials.
    let (mut stored, mut failed) = (None, None);
    for b in state.upstreams.all() {
        match b.client.set_provider_auth(id, &auth).await {
            Ok(r) => {
                stored.get_or_insert(r);
            }
            Err(e) => {
                tracing::warn!(upstream = %b.name, error = %e, "provider credentials not stored on this upstream");
                failed.get_or_insert(e);
            }
        }
        b.catalog.refresh().await.ok();
    }
    let result = match (stored, failed) {
        (Some(r), _) => r,
        (None, Some(e)) => return Err(access::upstream(e)),
        (None, None) => Value::Null,
    };
    Ok(Json(
        json!({ "id": id, "object": "provider.auth", "result": result }),
    ))
}

/// `POST /v1/providers/{id}/oauth/authorize` (admin).
#[utoipa::path(
    post,
    path = "/v1/providers/{id}/oauth/authorize",
    operation_id = "providers_oauth_authorize",
    tag = "Providers",
    params(("id" = String, Path, description = "Provider id, as in `/v1/providers`.")),
    request_body(content = Object, description = "OpenCode's OAuth authorize body (`{\"method\": 0}`)."),
    responses((status = 200, description = "OpenCode's authorization (admin).", body = Object))
)]
pub async fn oauth_authorize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Provider OAuth")?;
    let Json(body) = body?;
    let id = provider_id(&id)?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, provider = %id, "provider OAuth started");
    Ok(Json(
        state
            .backend
            .client
            .oauth_authorize(id, &body)
            .await
            .map_err(access::upstream)?,
    ))
}

/// `POST /v1/providers/{id}/oauth/callback` (admin).
#[utoipa::path(
    post,
    path = "/v1/providers/{id}/oauth/callback",
    operation_id = "providers_oauth_callback",
    tag = "Providers",
    params(("id" = String, Path, description = "Provider id, as in `/v1/providers`.")),
    request_body(content = Object, description = "OpenCode's OAuth callback body (`{\"method\": 0, \"code\": \"…\"}`)."),
    responses((status = 200, description = "Completed (admin).", body = Object))
)]
pub async fn oauth_callback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("Provider OAuth")?;
    let Json(body) = body?;
    let id = provider_id(&id)?;
    tracing::info!(target: "portatek_gateway::audit", key = %caller.name, provider = %id, "provider OAuth completed");
    let result = state
        .backend
        .client
        .oauth_callback(id, &body)
        .await
        .map_err(access::upstream)?;
    state.backend.catalog.refresh().await.ok();
    Ok(Json(result))
}
