//! `GET /v1/models` and `GET /v1/models/{provider/model}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;

use crate::app::state::AppState;
use crate::error::ApiError;
use crate::openai::{Model, ModelList};

/// Lists the exposed models.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "models_list",
    tag = "Models",
    responses((status = 200, description = "The exposed models.", body = ModelList))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let models = state.on_default_upstream().backend.catalog.models().await?;
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
    responses((status = 200, description = "The model.", body = Model))
)]
pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Model>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::ModelNotFound(String::new()))?;
    Ok(Json(
        state
            .on_default_upstream()
            .backend
            .catalog
            .get(&id)
            .await?
            .model,
    ))
}
