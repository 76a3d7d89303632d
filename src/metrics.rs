//! Prometheus metrics at `/metrics`, with the `metrics` facade and
//! `metrics-exporter-prometheus`'s recorder (rendered by the gateway's own route: no second
//! HTTP server from the exporter).
//!
//! Labels never carry API keys or message content: routes are the matched path templates
//! (`/v1/sessions/{id}`), models only ids the catalog knows. What exists as state (pool sizes,
//! the event stream, parked runs) is read at scrape time; what happens (requests, tokens,
//! evictions, upstream errors, restarts) is counted where it happens.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `portatek_http_requests_total` | counter | `route`, `method`, `status`, `model` |
//! | `portatek_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `portatek_time_to_first_token_seconds` | histogram | `model` |
//! | `portatek_tokens_total` | counter | `model`, `direction` (`in`, `out`) |
//! | `portatek_runs_total` | counter | `model`, `outcome` |
//! | `portatek_active_streams` | gauge | |
//! | `portatek_sessions` | gauge | `kind` (`pooled`, `explicit`, `parked`) |
//! | `portatek_session_evictions_total` | counter | `cause` |
//! | `portatek_sessions_swept_total` | counter | `upstream` (pooled sessions of dead gateways the sweep deleted) |
//! | `portatek_upstream_errors_total` | counter | `kind` |
//! | `portatek_event_stream_connected` | gauge | |
//! | `portatek_event_stream_connections_total` | counter | |
//! | `portatek_opencode_restarts_total` | counter | |
//! | `portatek_rate_limited_total` | counter | `limit` |
//! | `portatek_tool_slots_in_use` | gauge | |
//! | `portatek_pending_session_cleanup` | gauge | |
//! | `portatek_admission_limit` | gauge | `upstream` |
//! | `portatek_admission_in_flight` | gauge | `upstream` |
//! | `portatek_admission_queued` | gauge | `upstream` |
//! | `portatek_admission_admitted_total` | counter | `upstream` |
//! | `portatek_admission_refused_total` | counter | `upstream`, `reason` (`overloaded`, `queue_full`, `queue_timeout`) |
//! | `portatek_admission_wait_seconds_total` | counter | `upstream` (time admitted requests queued) |

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The model a response was for, set by handlers so the request counter can carry it.
#[derive(Debug, Clone)]
pub struct ModelLabel(pub String);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| b.install_recorder());
            match builder {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Middleware: counts every request by route, method, status (and model when known) and
/// times it.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = method_label(req.method().as_str()).to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let model = response
        .extensions()
        .get::<ModelLabel>()
        .map_or(String::new(), |m| m.0.clone());
    let status = response.status().as_u16().to_string();
    metrics::counter!("portatek_http_requests_total",
        "route" => route.clone(), "method" => method.clone(), "status" => status, "model" => model)
    .increment(1);
    metrics::histogram!("portatek_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A run produced its first output after `elapsed`.
pub fn first_token(model: &str, elapsed: Duration) {
    metrics::histogram!("portatek_time_to_first_token_seconds", "model" => model.to_string())
        .record(elapsed.as_secs_f64());
}

/// A method as a label: the standard ones as they are, anything else `other` — the method is
/// the client's text, and a label per made-up token would let any client grow the metrics
/// without bound.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// A request no route matched (404/405), or refused before routing (413), counted like the
/// routed ones.
pub fn unmatched(method: &str, status: u16) {
    metrics::counter!("portatek_http_requests_total",
        "route" => "unmatched", "method" => method_label(method), "status" => status.to_string(), "model" => "")
    .increment(1);
}

/// A run (or one response of it) ended: its outcome and tokens.
pub fn run_ended(model: &str, outcome: &'static str, tokens_in: u64, tokens_out: u64) {
    let model = model.to_string();
    metrics::counter!("portatek_runs_total", "model" => model.clone(), "outcome" => outcome)
        .increment(1);
    metrics::counter!("portatek_tokens_total", "model" => model.clone(), "direction" => "in")
        .increment(tokens_in);
    metrics::counter!("portatek_tokens_total", "model" => model, "direction" => "out")
        .increment(tokens_out);
}

/// Counts an upstream error by kind.
pub fn upstream_error(kind: &'static str) {
    metrics::counter!("portatek_upstream_errors_total", "kind" => kind).increment(1);
}

/// Counts a pooled session's eviction by cause.
pub fn eviction(cause: &'static str) {
    metrics::counter!("portatek_session_evictions_total", "cause" => cause).increment(1);
}

/// Counts an event-stream connection.
pub fn event_stream_connected() {
    metrics::counter!("portatek_event_stream_connections_total").increment(1);
}

/// Counts an embedded-OpenCode restart.
pub fn opencode_restarted() {
    metrics::counter!("portatek_opencode_restarts_total").increment(1);
}

/// Counts a request refused by a rate limit.
pub fn rate_limited(limit: &'static str) {
    metrics::counter!("portatek_rate_limited_total", "limit" => limit).increment(1);
}

/// An open SSE stream, counted in `portatek_active_streams` while it lives.
#[derive(Debug)]
pub struct StreamGauge(());

impl StreamGauge {
    /// A stream opened.
    pub fn open() -> StreamGauge {
        metrics::gauge!("portatek_active_streams").increment(1.0);
        StreamGauge(())
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("portatek_active_streams").decrement(1.0);
    }
}
