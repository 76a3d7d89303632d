//! `GET /health` (readiness: is OpenCode answering?) and `GET /livez` (the process is alive).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::state::AppState;

/// Readiness: 200 when OpenCode's health call (`/global/health` on 1.x, `/api/info` on 2.x) answers and the shared event stream is
/// connected (both within the health timeout), else 503 with the reason.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health_ready",
    tag = "Operations",
    responses((status = 200, description = "Ready: OpenCode answers.", body = Object), (status = 503, description = "Not ready.", body = Object)),
    security(())
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    if !state.upstreams.is_single() {
        return ready_any(&state).await;
    }
    let timeout = state.config.opencode.health_timeout;
    let (health, events_up) = tokio::join!(
        state.backend.client.health(timeout),
        state.backend.hub.wait_connected(timeout)
    );
    let events = json!({ "connected": events_up });
    let (status, opencode) = match health {
        Ok(h) if h.healthy => (
            if events_up { "ok" } else { "unavailable" },
            json!({ "healthy": true, "version": h.version, "api": h.api.label() }),
        ),
        Ok(_) => (
            "unavailable",
            json!({ "healthy": false, "error": "OpenCode reports itself unhealthy" }),
        ),
        Err(e) => (
            "unavailable",
            json!({ "healthy": false, "error": e.to_string() }),
        ),
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": status, "opencode": opencode, "events": events });
    (code, Json(body)).into_response()
}

/// Readiness with several upstreams: ready while at least one is (its breaker closed, its
/// event stream up); the body lists each. The probes already ran in the background, so this
/// answers at once.
async fn ready_any(state: &AppState) -> Response {
    let upstreams: Vec<serde_json::Value> = state
        .upstreams
        .all()
        .iter()
        .map(|b| json!({ "name": b.name, "ready": b.available() }))
        .collect();
    let any = state.upstreams.all().iter().any(|b| b.available());
    let (code, status) = match any {
        true => (StatusCode::OK, "ok"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let body = json!({ "status": status, "upstreams": upstreams });
    (code, Json(body)).into_response()
}

/// Liveness: the process answers; never depends on OpenCode.
#[utoipa::path(
    get,
    path = "/livez",
    operation_id = "health_live",
    tag = "Operations",
    responses((status = 200, description = "Alive.", body = Object)),
    security(())
)]
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /status` (needs a key when keys are configured): the gateway's own state for operators.
#[utoipa::path(
    get,
    path = "/status",
    operation_id = "health_status",
    tag = "Operations",
    responses((status = 200, description = "The gateway's state: upstreams (URL, load), store, event stream, pool. A client key gets only whether each upstream, the store and the event stream are up.", body = Object))
)]
pub async fn status(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
) -> Json<serde_json::Value> {
    // A client key sees whether the gateway and its upstreams are up, not where they are nor
    // how busy every key's pool is: that is for admins.
    if caller.is_some_and(|axum::Extension(c)| !c.is_admin()) {
        let upstreams: Vec<serde_json::Value> = state
            .upstreams
            .all()
            .iter()
            .map(|b| {
                json!({
                    "name": b.name,
                    "state": b.breaker.state().label(),
                    "opencode": { "version": b.client.detected_version() },
                })
            })
            .collect();
        return Json(json!({
            "upstreams": upstreams,
            "store": { "up": state.upstreams.store().is_up() },
            "events": { "connected": state.backend.hub.is_connected() },
        }));
    }
    let upstreams: Vec<serde_json::Value> = state
        .upstreams
        .all()
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "url": b.url,
                "state": b.breaker.state().label(),
                "in_flight": b.in_flight(),
                "events_connected": b.hub.is_connected(),
                "remembered": b.sessions.conversations.remembered(),
                "admission": b.admission.snapshot(),
                "opencode": {
                    "api": b.client.detected_api().map(|a| a.label()),
                    "version": b.client.detected_version(),
                },
            })
        })
        .collect();
    let store = state.upstreams.store();
    Json(json!({
        "upstreams": upstreams,
        "store": { "kind": store.kind(), "up": store.is_up() },
        "events": {
            "connected": state.backend.hub.is_connected(),
            "connections_opened": state.backend.hub.connections_opened(),
        },
        "pool": {
            "remembered": state.backend.sessions.conversations.remembered(),
            "explicit": state.backend.sessions.explicit.count(),
            "pending_cleanup": state.backend.sessions.upstream().reaper().pending(),
        },
    }))
}
