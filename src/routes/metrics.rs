//! `GET /metrics`: the process's Prometheus recorder ([`crate::metrics`]) rendered, after the
//! gauges of what exists (sessions, slots, admission, upstreams) are read at scrape time.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::app::state::AppState;
use crate::metrics::handle;

/// `GET /metrics`: the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics_render",
    tag = "Operations",
    responses((status = 200, description = "Prometheus text format (when `metrics.enabled` and no `metrics.listen`).", content_type = "text/plain", body = String))
)]
pub async fn render(State(state): State<AppState>) -> Response {
    sample_state(&state);
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Gauges of what exists, read at scrape time: totals over every upstream, and with several
/// upstreams each one's own series (label `upstream`).
fn sample_state(state: &AppState) {
    let all = state.upstreams.all();
    let sum = |f: &dyn Fn(&crate::upstreams::Backend) -> usize| -> f64 {
        all.iter().map(|b| f(b)).sum::<usize>() as f64
    };
    metrics::gauge!("portatek_sessions", "kind" => "pooled")
        .set(sum(&|b| b.sessions.conversations.remembered() as usize));
    metrics::gauge!("portatek_sessions", "kind" => "explicit")
        .set(sum(&|b| b.sessions.explicit.count()));
    metrics::gauge!("portatek_sessions", "kind" => "parked").set(state.parked.len() as f64);
    let connected = all.iter().all(|b| b.hub.is_connected());
    metrics::gauge!("portatek_event_stream_connected").set(if connected { 1.0 } else { 0.0 });
    metrics::gauge!("portatek_tool_slots_in_use").set(sum(&|b| b.tools.slots.in_use()));
    metrics::gauge!("portatek_pending_session_cleanup")
        .set(sum(&|b| b.sessions.upstream().reaper().pending()));
    let store = state.upstreams.store();
    if store.is_shared() {
        metrics::gauge!("portatek_store_up").set(if store.is_up() { 1.0 } else { 0.0 });
    }
    for b in all {
        let a = b.admission.snapshot();
        let name = b.name.clone();
        metrics::gauge!("portatek_admission_limit", "upstream" => name.clone()).set(a.limit as f64);
        metrics::gauge!("portatek_admission_in_flight", "upstream" => name.clone())
            .set(a.in_flight as f64);
        metrics::gauge!("portatek_admission_queued", "upstream" => name.clone())
            .set(a.queued as f64);
        metrics::counter!("portatek_admission_admitted_total", "upstream" => name.clone())
            .absolute(a.admitted);
        metrics::counter!("portatek_admission_wait_seconds_total", "upstream" => name.clone())
            .absolute(a.waited_secs as u64);
        // Which OpenCode each upstream runs (an info series: its labels are the facts).
        if let Some(api) = b.client.detected_api() {
            let version = b.client.detected_version().unwrap_or_default();
            metrics::gauge!("portatek_upstream_opencode_info", "upstream" => name, "api" => api.label(), "version" => version)
                .set(1.0);
        }
    }
    if state.upstreams.is_single() {
        return;
    }
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    for b in all {
        let name = b.name.clone();
        metrics::gauge!("portatek_upstream_up", "upstream" => name.clone())
            .set(flag(b.available()));
        metrics::gauge!("portatek_upstream_in_flight", "upstream" => name.clone())
            .set(b.in_flight() as f64);
        metrics::gauge!("portatek_upstream_event_stream_connected", "upstream" => name.clone())
            .set(flag(b.hub.is_connected()));
        metrics::gauge!("portatek_upstream_sessions", "upstream" => name)
            .set(b.sessions.conversations.remembered() as f64);
    }
}
