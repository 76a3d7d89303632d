//! `GET /health` (readiness: is OpenCode answering?) and `GET /livez` (the process is alive).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;

use crate::app::AppState;

/// Readiness: 200 when OpenCode's `/global/health` answers within the health timeout, else 503.
pub async fn ready(State(state): State<AppState>) -> Response {
    let timeout = Duration::from_millis(state.config.opencode.health_timeout_ms);
    let events = json!({ "connected": state.hub.is_connected() });
    match state.client.health(timeout).await {
        Ok(h) if h.healthy => (
            StatusCode::OK,
            Json(json!({
                "status": "ok",
                "opencode": { "healthy": true, "version": h.version },
                "events": events,
            })),
        )
            .into_response(),
        Ok(_) => unavailable("OpenCode reports itself unhealthy".into(), events),
        Err(e) => unavailable(e.to_string(), events),
    }
}

fn unavailable(reason: String, events: serde_json::Value) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "unavailable",
            "opencode": { "healthy": false, "error": reason },
            "events": events,
        })),
    )
        .into_response()
}

/// Liveness: the process answers; never depends on OpenCode.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /status` (needs a key when keys are configured): the gateway's own state for operators.
pub async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "events": {
            "connected": state.hub.is_connected(),
            "connections_opened": state.hub.connections_opened(),
        },
        "pool": {
            "remembered": state.pool.len(),
            "pinned": state.pool.pinned_count(),
        },
    }))
}
