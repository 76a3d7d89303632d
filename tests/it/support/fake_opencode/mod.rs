//! A small scriptable FAKE OpenCode (axum, bound to 127.0.0.1:0) that speaks OpenCode's wire
//! format and fails on demand: 5xx answers, slow answers, a dropped or unavailable `/event`
//! stream, prompts that never produce events, error bodies and `session.error`s carrying stack
//! traces, runs streamed slowly. It serves what the gateway uses: `/global/health`,
//! `/config/providers`, sessions (create, get, delete, abort, `prompt_async`) and `/event`.
//!
//! A prompt's run emits the events of one short answer, [`FAKE_ANSWER`], in OpenCode's order.
//! Used by the fault-injection tests (with the gateway binary) and as the stub upstream of the
//! in-process router tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::gateway::{Gateway, GatewayOptions};

mod events;

pub use events::*;

/// The text of every run's answer.
pub const FAKE_ANSWER: &str = "fake answer";
/// "Always fail" for the failure counters.
pub const ALWAYS: u32 = u32::MAX;

/// Switches a test flips to make the fake misbehave.
#[derive(Default)]
pub struct Faults {
    /// The next N `GET /config/providers` answer 500 ([`ALWAYS`] = every one).
    pub providers_failures: AtomicU32,
    /// The next N `POST /session` answer 503 ([`ALWAYS`] = every one).
    pub session_failures: AtomicU32,
    /// `POST /session` sleeps this long before answering.
    pub session_delay_ms: AtomicU64,
    /// `GET /global/health` sleeps this long before answering.
    pub health_delay_ms: AtomicU64,
    /// `POST /session/:id/prompt_async` answers 500 `boom`.
    pub prompt_fails: AtomicBool,
    /// `prompt_async` is accepted (204) but no event of the run is ever emitted.
    pub prompt_silent: AtomicBool,
    /// Each `/event` stream ends right after forwarding a `message.part.delta`.
    pub drop_after_delta: AtomicBool,
    /// `GET /event` answers 500.
    pub events_fail: AtomicBool,
    /// When non-zero, a prompt's run streams this many 2 KiB deltas and never ends.
    pub flood_deltas: AtomicU32,
    /// `GET /config/providers` also lists `mock/added`.
    pub extra_model: AtomicBool,
    /// When set, `prompt_async` answers 500 with this text as OpenCode's error message
    /// (`{"name","data":{"message"}}`), e.g. a Bun stack trace.
    pub prompt_error: Mutex<Option<String>>,
    /// When set, `prompt_async` answers 500 with this raw `text/plain` body (not OpenCode's JSON).
    pub prompt_error_raw: Mutex<Option<String>>,
    /// When set, a prompt's run starts, then fails with a `session.error` carrying this error
    /// object (OpenCode's `{"name","data":{"message"}}`), then goes idle.
    pub run_error: Mutex<Option<Value>>,
    /// When non-zero, a prompt's run streams its answer as this many deltas…
    pub slow_deltas: AtomicU32,
    /// …this many milliseconds apart, then ends normally.
    pub slow_delta_gap_ms: AtomicU64,
}

/// What the fake has been asked.
#[derive(Default)]
pub struct Seen {
    pub health: AtomicU32,
    pub providers: AtomicU32,
    pub session_creates: AtomicU32,
    /// `GET /session/:id` lookups.
    pub session_gets: AtomicU32,
    pub event_connections: AtomicU32,
    pub prompts: Mutex<Vec<String>>,
    pub aborts: Mutex<Vec<String>>,
    pub deletes: Mutex<Vec<String>>,
}

struct FakeState {
    faults: Faults,
    seen: Seen,
    next_session: AtomicU32,
    next_event: AtomicU64,
    sessions: Mutex<HashMap<String, Value>>,
    /// Runs prompted per session (numbers each run's message ids).
    turns: Mutex<HashMap<String, u32>>,
    /// The `mock` provider's models, as `GET /config/providers` lists them.
    models: Mutex<Value>,
    /// Every emitted event frame, fed to every open `/event` stream.
    events: broadcast::Sender<Value>,
}

impl FakeState {
    fn frame(&self, kind: &str, properties: Value) -> Value {
        let n = self.next_event.fetch_add(1, SeqCst);
        json!({"id": format!("evt_{n:06}"), "type": kind, "properties": properties})
    }

    fn emit(&self, kind: &str, properties: Value) {
        // No receiver (no open stream) is fine: events are not replayed, as in OpenCode.
        let _ = self.events.send(self.frame(kind, properties));
    }
}

/// Takes one failure from a counter (never exhausts [`ALWAYS`]).
fn take_failure(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(SeqCst, SeqCst, |n| match n {
            0 => None,
            ALWAYS => Some(ALWAYS),
            n => Some(n - 1),
        })
        .is_ok()
}

/// OpenCode's error body: `{"name","data":{"message"}}`.
fn opencode_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"name": "UnknownError", "data": {"message": message}})),
    )
        .into_response()
}

type St = State<Arc<FakeState>>;

async fn health(State(s): St) -> Json<Value> {
    s.seen.health.fetch_add(1, SeqCst);
    let delay = s.faults.health_delay_ms.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    Json(json!({"healthy": true, "version": "fake"}))
}

async fn providers(State(s): St) -> Response {
    s.seen.providers.fetch_add(1, SeqCst);
    if take_failure(&s.faults.providers_failures) {
        return opencode_error(StatusCode::INTERNAL_SERVER_ERROR, "providers exploded");
    }
    let mut models = s.models.lock().unwrap().clone();
    if s.faults.extra_model.load(SeqCst) {
        models["added"] = json!({"id": "added"});
    }
    Json(json!({
        "providers": [{"id": "mock", "models": models}],
        "default": {}
    }))
    .into_response()
}

async fn create_session(State(s): St, body: Bytes) -> Response {
    s.seen.session_creates.fetch_add(1, SeqCst);
    let delay = s.faults.session_delay_ms.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if take_failure(&s.faults.session_failures) {
        return opencode_error(StatusCode::SERVICE_UNAVAILABLE, "try again later");
    }
    let title = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("title").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "New session".into());
    let n = s.next_session.fetch_add(1, SeqCst) + 1;
    let id = format!("ses_fake{n}");
    let session = json!({
        "id": id,
        "title": title,
        "projectID": "global",
        "directory": "/tmp",
        "version": "fake",
        "time": {"created": 0, "updated": 0}
    });
    s.sessions
        .lock()
        .unwrap()
        .insert(id.clone(), session.clone());
    Json(session).into_response()
}

async fn get_session(State(s): St, Path(id): Path<String>) -> Response {
    s.seen.session_gets.fetch_add(1, SeqCst);
    match s.sessions.lock().unwrap().get(&id) {
        Some(session) => Json(session.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"name": "NotFoundError", "data": {"message": "Session not found"}})),
        )
            .into_response(),
    }
}

async fn delete_session(State(s): St, Path(id): Path<String>) -> Json<Value> {
    s.sessions.lock().unwrap().remove(&id);
    s.seen.deletes.lock().unwrap().push(id);
    Json(json!(true))
}

async fn abort(State(s): St, Path(id): Path<String>) -> Json<Value> {
    s.seen.aborts.lock().unwrap().push(id);
    Json(json!(true))
}

async fn prompt_async(State(s): St, Path(id): Path<String>, body: Bytes) -> Response {
    s.seen.prompts.lock().unwrap().push(id.clone());
    // As 1.18: a prompt with an output format is answered with a structured value (the
    // smallest one its schema accepts), not text.
    let structured = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.pointer("/format/schema").cloned())
        .map(|schema| minimal_instance(&schema, &schema, 0));
    // As OpenCode: a prompt for a session it does not hold is a 404.
    if !s.sessions.lock().unwrap().contains_key(&id) {
        let message = format!("Session not found: {id}");
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"name": "NotFoundError", "data": {"message": message}})),
        )
            .into_response();
    }
    *s.turns.lock().unwrap().entry(id.clone()).or_insert(0) += 1;
    if s.faults.prompt_fails.load(SeqCst) {
        return opencode_error(StatusCode::INTERNAL_SERVER_ERROR, "boom");
    }
    if let Some(message) = s.faults.prompt_error.lock().unwrap().clone() {
        return opencode_error(StatusCode::INTERNAL_SERVER_ERROR, &message);
    }
    if let Some(text) = s.faults.prompt_error_raw.lock().unwrap().clone() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            text,
        )
            .into_response();
    }
    if let Some(error) = s.faults.run_error.lock().unwrap().clone() {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            emit_run_start(&s, &id);
            s.emit("session.error", json!({"sessionID": id, "error": error}));
            s.emit("session.idle", json!({"sessionID": id}));
        });
        return StatusCode::NO_CONTENT.into_response();
    }
    let slow = s.faults.slow_deltas.load(SeqCst);
    if slow > 0 {
        let gap = Duration::from_millis(s.faults.slow_delta_gap_ms.load(SeqCst));
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            emit_slow_run(&s, &id, slow, gap).await;
        });
        return StatusCode::NO_CONTENT.into_response();
    }
    let flood = s.faults.flood_deltas.load(SeqCst);
    if flood > 0 {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            emit_flood(&s, &id, flood).await;
        });
    } else if !s.faults.prompt_silent.load(SeqCst) {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match structured {
                Some(value) => emit_structured_run(&s, &id, value),
                None => emit_run(&s, &id),
            }
        });
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A running fake OpenCode (it stops with the test's runtime).
pub struct FakeOpenCode {
    state: Arc<FakeState>,
    url: String,
}

impl FakeOpenCode {
    /// Starts a well-behaved fake listing [`echo_only`].
    pub async fn start() -> FakeOpenCode {
        Self::start_with_models(echo_only()).await
    }

    /// Starts a well-behaved fake whose `mock` provider lists `models`.
    pub async fn start_with_models(models: Value) -> FakeOpenCode {
        let (events, _) = broadcast::channel(1024);
        let state = Arc::new(FakeState {
            faults: Faults::default(),
            seen: Seen::default(),
            next_session: AtomicU32::new(0),
            next_event: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
            models: Mutex::new(models),
            events,
        });
        let app = Router::new()
            .route("/global/health", get(health))
            .route("/config/providers", get(providers))
            .route("/session", post(create_session))
            .route("/session/{id}", get(get_session).delete(delete_session))
            .route("/session/{id}/abort", post(abort))
            .route("/session/{id}/prompt_async", post(prompt_async))
            .route("/event", get(event_stream))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake OpenCode");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake OpenCode");
        });
        FakeOpenCode {
            state,
            url: format!("http://{addr}"),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The switches that make it misbehave.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// What it has been asked so far.
    pub fn seen(&self) -> &Seen {
        &self.state.seen
    }

    /// Session ids prompted, in order.
    pub fn prompts(&self) -> Vec<String> {
        self.seen().prompts.lock().unwrap().clone()
    }

    /// Session ids aborted, in order.
    pub fn aborts(&self) -> Vec<String> {
        self.seen().aborts.lock().unwrap().clone()
    }

    /// Panics if any session was created or prompted: the request never got past the gateway.
    #[track_caller]
    pub fn assert_untouched(&self, what: &str) {
        let creates = self.seen().session_creates.load(SeqCst);
        let prompts = self.prompts();
        assert!(
            creates == 0 && prompts.is_empty(),
            "{what} reached OpenCode: {creates} session(s) created, prompts {prompts:?}"
        );
    }

    /// The gateway binary in front of this fake, default settings.
    pub async fn gateway(&self) -> Gateway {
        Gateway::start_with(&self.url, GatewayOptions::default()).await
    }

    /// The gateway binary in front of this fake, with a config file.
    pub async fn gateway_with(&self, toml: &str) -> Gateway {
        Gateway::start_with(&self.url, GatewayOptions::default().config(toml)).await
    }
}
