//! `GET /v1/events`: OpenCode's events as SSE, for the calling key's sessions only (an admin:
//! every session, optionally of one `?directory=`), fed from the gateway's one upstream event
//! subscription. A consumer that falls behind is dropped with a final `error` event rather than
//! buffered without bound.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::opencode::hub::TAP_BUFFER;

/// An event as `GET /v1/events` sends it: `{type, properties, directory}`.
#[derive(serde::Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    properties: &'a serde_json::Value,
    directory: Option<&'a str>,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Admins only: the events of this project directory.
    directory: Option<String>,
}

/// One tap on every upstream's hub, merged: with one upstream its own tap; with several, a
/// forwarder per upstream into one channel of the same size, which ends (overflowed) as soon
/// as any of them falls behind, so a slow consumer is dropped as it would be with one.
fn tap_all(
    state: &AppState,
) -> (
    tokio::sync::mpsc::Receiver<std::sync::Arc<crate::opencode::Event>>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    if state.upstreams.is_single() {
        return state.backend.hub.tap();
    }
    let (tx, rx) = tokio::sync::mpsc::channel(TAP_BUFFER);
    let overflowed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for backend in state.upstreams.all() {
        let (mut from, source_overflowed) = backend.hub.tap();
        let (tx, overflowed) = (tx.clone(), overflowed.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = from.recv() => match event {
                        Some(event) => {
                            if tx.try_send(event).is_err() {
                                overflowed.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                        None => {
                            if source_overflowed.load(Ordering::SeqCst) {
                                overflowed.store(true, Ordering::SeqCst);
                            }
                            return;
                        }
                    },
                    // The consumer left.
                    _ = tx.closed() => return,
                }
            }
        });
    }
    (rx, overflowed)
}

/// `GET /v1/events`: OpenCode's events as SSE, filtered to what the caller may see.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events_stream",
    tag = "Agents",
    params(("directory" = Option<String>, Query, description = "Admins only: the events of this project directory.")),
    responses((status = 200, description = "OpenCode's events of the caller's sessions (an admin's: all) as SSE; a consumer too slow to keep up gets a final `error` event and is dropped.", content_type = "text/event-stream", body = String))
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    if query.directory.is_some() && !caller.is_admin() {
        return Err(ApiError::PermissionDenied(
            "Filtering events by directory needs an admin API key.".into(),
        ));
    }
    if caller.is_admin() {
        tracing::info!(target: "portatek_gateway::audit", key = %caller.name, "admin event stream opened");
    }
    let (rx, overflowed) = tap_all(&state);
    let owners: Vec<_> = state
        .upstreams
        .all()
        .iter()
        .map(|b| b.sessions.owners.clone())
        .collect();
    let events = futures::stream::unfold(Some(rx), move |rx| {
        let caller = caller.clone();
        let owners = owners.clone();
        let overflowed = overflowed.clone();
        let directory = query.directory.clone();
        async move {
            let mut rx = rx?;
            loop {
                let Some(event) = rx.recv().await else {
                    if overflowed.load(Ordering::SeqCst) {
                        let e = ApiError::Unavailable(format!(
                            "This event stream fell {TAP_BUFFER} events behind and was closed; reconnect to continue."
                        ));
                        let sse = SseEvent::default()
                            .event("error")
                            .data(e.body().to_string());
                        return Some((Ok::<_, Infallible>(sse), None));
                    }
                    return None;
                };
                let visible = if caller.is_admin() {
                    directory.is_none() || event.directory == directory
                } else {
                    event
                        .session_id()
                        .and_then(|s| owners.iter().find_map(|o| o.of(s)))
                        .is_some_and(|owner| owner == caller.id)
                };
                if !visible {
                    continue;
                }
                // Serialized from the shared event, not from a copy of it (an event can carry
                // megabytes: a whole message's text).
                let body = serde_json::to_string(&Outgoing {
                    kind: &event.kind,
                    properties: &event.properties,
                    directory: event.directory.as_deref(),
                })
                .unwrap_or_default();
                let sse = SseEvent::default().event(event.kind.clone()).data(body);
                return Some((Ok(sse), Some(rx)));
            }
        }
    });
    let keepalive = KeepAlive::new()
        .interval(state.config.prompt.keepalive)
        .text("keep-alive");
    Ok(Sse::new(events).keep_alive(keepalive).into_response())
}
