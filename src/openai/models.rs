//! What `GET /v1/models` answers.

use serde::Serialize;

/// One entry of `/v1/models`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Model {
    /// `provider/model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds (the model's release date when OpenCode knows it).
    pub created: u64,
    /// The provider id.
    pub owned_by: String,
}

/// `/v1/models`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<Model>,
}
