//! A minimal fake OpenCode for the core's unit tests: just enough of 1.18's server for a
//! [`Backend`](crate::upstreams::Backend) to connect (the event stream, health) and for the conversation
//! pool to create and forget sessions. Every session create is counted. The integration
//! tests' fake (`tests/it/support/fake_opencode.rs`) injects faults; this one only has to be
//! there, in-process, and go away when asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A running fake.
pub struct Fake {
    /// Its base URL.
    pub url: String,
    /// Sessions created on it.
    pub creates: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Fake {
    /// Serves a fake on a free loopback port until [`Fake::stop`] (or the test's runtime ends).
    pub async fn start() -> Fake {
        let creates = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route(
                "/global/health",
                get(|| async { Json(json!({"healthy": true, "version": "fake"})) }),
            )
            .route("/global/event", get(|| async { StatusCode::NOT_FOUND }))
            .route("/event", get(events))
            .route("/session", post(create).get(|| async { Json(json!([])) }))
            .route("/session/{id}/message", get(|| async { Json(json!([])) }))
            .fallback(|| async { Json(json!({})) })
            .with_state((creates.clone(), stop.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .ok();
        });
        Fake { url, creates, stop }
    }

    /// Stops serving and ends its event streams (the gateway sees its upstream go away).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

type St = State<(Arc<AtomicUsize>, CancellationToken)>;

/// `server.connected`, then silence until the fake stops, when the stream ends.
async fn events(State((_, stop)): St) -> impl IntoResponse {
    use futures::StreamExt;
    let connected = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>(
            Event::default().data(r#"{"type":"server.connected","properties":{}}"#),
        )
    });
    let until_stopped = futures::stream::once(async move { stop.cancelled().await })
        .filter_map(|()| async { None });
    Sse::new(connected.chain(until_stopped)).into_response()
}

async fn create(State((creates, _)): St) -> Json<serde_json::Value> {
    let n = creates.fetch_add(1, Ordering::SeqCst) + 1;
    Json(
        json!({"id": format!("ses_fake{n}"), "title": "t", "directory": "/tmp",
        "time": {"created": 0, "updated": 0}}),
    )
}
