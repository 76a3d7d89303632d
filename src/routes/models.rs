//! `GET /v1/models` and `GET /v1/models/{provider/model}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;

use crate::app::AppState;
use crate::error::ApiError;
use crate::openai::{Model, ModelList};

/// Lists the exposed models.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "models_list",
    tag = "Models",
    responses((status = 200, description = "The exposed models.", body = ModelList), (status = "4XX", description = "Refused, in OpenAI's error shape: 400 invalid (names the field), 401 no or unknown key, 403 role, scope or switch, 404 unknown, 409 busy, 413 too large, 429 rate limited.", body = crate::openapi::ErrorResponse), (status = "5XX", description = "OpenCode or gateway trouble, in OpenAI's error shape: 502 upstream failed, 503 unavailable, 504 deadline.", body = crate::openapi::ErrorResponse))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let models = state.catalog.models().await?;
    Ok(Json(ModelList {
        object: "list",
        data: models.values().map(|m| m.model.clone()).collect(),
    }))
}

/// One model by id (ids contain a slash: `provider/model`).
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    operation_id = "models_get",
    tag = "Models",
    params(("id" = String, Path, description = "`provider/model` (the slash is part of the id).")),
    responses((status = 200, description = "The model.", body = Model), (status = "4XX", description = "Refused, in OpenAI's error shape: 400 invalid (names the field), 401 no or unknown key, 403 role, scope or switch, 404 unknown, 409 busy, 413 too large, 429 rate limited.", body = crate::openapi::ErrorResponse), (status = "5XX", description = "OpenCode or gateway trouble, in OpenAI's error shape: 502 upstream failed, 503 unavailable, 504 deadline.", body = crate::openapi::ErrorResponse))
)]
pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Model>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::ModelNotFound(String::new()))?;
    Ok(Json(state.catalog.get(&id).await?.model))
}
