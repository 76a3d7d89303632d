//! Fault injection: the real gateway binary against a small scriptable FAKE OpenCode (axum, bound
//! to 127.0.0.1:0) that speaks OpenCode's wire format and fails on demand: 5xx answers, slow
//! headers, a dropped or unavailable `/event` stream, prompts that never produce events.
//!
//! No real OpenCode is needed; every test spawns its own fake and its own gateway.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use support::gateway::test_client;
use support::parse_sse_data;
use support::{Gateway, GatewayOptions};

const MODEL: &str = "mock/echo";
const ANSWER: &str = "fake answer";
/// No single request of these tests may take longer than this (so a hang fails, not stalls).
const REQUEST_CAP: Duration = Duration::from_secs(30);
/// "Always fail" for the failure counters.
const ALWAYS: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------------
// The fake OpenCode
// ---------------------------------------------------------------------------------------------

/// Switches a test flips to make the fake misbehave.
#[derive(Default)]
struct Faults {
    /// The next N `GET /config/providers` answer 500 ([`ALWAYS`] = every one).
    providers_failures: AtomicU32,
    /// The next N `POST /session` answer 503 ([`ALWAYS`] = every one).
    session_failures: AtomicU32,
    /// `POST /session` sleeps this long before answering.
    session_delay_ms: AtomicU64,
    /// `GET /global/health` sleeps this long before answering.
    health_delay_ms: AtomicU64,
    /// `POST /session/:id/prompt_async` answers 500 `boom`.
    prompt_fails: AtomicBool,
    /// `prompt_async` is accepted (204) but no event of the run is ever emitted.
    prompt_silent: AtomicBool,
    /// Each `/event` stream ends right after forwarding a `message.part.delta`.
    drop_after_delta: AtomicBool,
    /// `GET /event` answers 500.
    events_fail: AtomicBool,
    /// When non-zero, a prompt's run streams this many 2 KiB deltas and never ends.
    flood_deltas: AtomicU32,
    /// `GET /config/providers` also lists `mock/added`.
    extra_model: AtomicBool,
}

/// What the fake has been asked.
#[derive(Default)]
struct Seen {
    health: AtomicU32,
    providers: AtomicU32,
    session_creates: AtomicU32,
    event_connections: AtomicU32,
    prompts: Mutex<Vec<String>>,
    aborts: Mutex<Vec<String>>,
    deletes: Mutex<Vec<String>>,
}

struct FakeState {
    faults: Faults,
    seen: Seen,
    next_session: AtomicU32,
    next_event: AtomicU64,
    sessions: Mutex<HashMap<String, Value>>,
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
    let mut models = json!({"echo": {"id": "echo", "capabilities": {"input": {"image": false}}}});
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

async fn prompt_async(State(s): St, Path(id): Path<String>) -> Response {
    s.seen.prompts.lock().unwrap().push(id.clone());
    if s.faults.prompt_fails.load(SeqCst) {
        return opencode_error(StatusCode::INTERNAL_SERVER_ERROR, "boom");
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
            emit_run(&s, &id);
        });
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A run's opening events: its user message, busy, the assistant message and its text part.
fn emit_run_start(s: &FakeState, sid: &str) {
    s.emit(
        "message.updated",
        json!({"info": {"id": "msg_u1", "sessionID": sid, "role": "user"}}),
    );
    s.emit(
        "session.status",
        json!({"sessionID": sid, "status": {"type": "busy"}}),
    );
    s.emit(
        "message.updated",
        json!({"info": {"id": "msg_a1", "sessionID": sid, "role": "assistant", "parentID": "msg_u1"}}),
    );
    s.emit(
        "message.part.updated",
        json!({"part": {"id": "prt_1", "sessionID": sid, "messageID": "msg_a1", "type": "text", "text": ""}}),
    );
}

/// The start of a run of `sid` followed by `n` 2 KiB deltas (paced so that the broadcast to
/// `/event` streams keeps up), and no end.
async fn emit_flood(s: &FakeState, sid: &str, n: u32) {
    emit_run_start(s, sid);
    let delta = "x".repeat(2048);
    for i in 0..n {
        s.emit(
            "message.part.delta",
            json!({"sessionID": sid, "messageID": "msg_a1", "partID": "prt_1", "field": "text", "delta": delta}),
        );
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The events of one short successful run of `sid`, in OpenCode's order.
fn emit_run(s: &FakeState, sid: &str) {
    emit_run_start(s, sid);
    s.emit(
        "message.part.delta",
        json!({"sessionID": sid, "messageID": "msg_a1", "partID": "prt_1", "field": "text", "delta": ANSWER}),
    );
    s.emit(
        "message.updated",
        json!({"info": {
            "id": "msg_a1", "sessionID": sid, "role": "assistant", "parentID": "msg_u1",
            "finish": "stop",
            "tokens": {"input": 1, "output": 2, "reasoning": 0, "cache": {"read": 0, "write": 0}}
        }}),
    );
    s.emit("session.idle", json!({"sessionID": sid}));
}

async fn event_stream(State(s): St) -> Response {
    if s.faults.events_fail.load(SeqCst) {
        return opencode_error(StatusCode::INTERNAL_SERVER_ERROR, "event stream broken");
    }
    s.seen.event_connections.fetch_add(1, SeqCst);
    // Subscribe before answering so that nothing emitted after the headers is missed.
    let rx = s.events.subscribe();
    let first = s.frame("server.connected", json!({}));
    let stream = futures::stream::unfold(
        (Some(first), rx, s, false),
        |(first, mut rx, s, ended)| async move {
            if ended {
                return None;
            }
            if let Some(f) = first {
                let ev = SseEvent::default().data(f.to_string());
                return Some((Ok::<_, Infallible>(ev), (None, rx, s, false)));
            }
            loop {
                match rx.recv().await {
                    Ok(f) => {
                        let drop_now = f["type"] == "message.part.delta"
                            && s.faults.drop_after_delta.load(SeqCst);
                        let ev = SseEvent::default().data(f.to_string());
                        return Some((Ok(ev), (None, rx, s, drop_now)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream).into_response()
}

/// A running fake OpenCode.
struct Fake {
    state: Arc<FakeState>,
    url: String,
}

impl Fake {
    async fn start() -> Fake {
        let (events, _) = broadcast::channel(1024);
        let state = Arc::new(FakeState {
            faults: Faults::default(),
            seen: Seen::default(),
            next_session: AtomicU32::new(0),
            next_event: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
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
        Fake {
            state,
            url: format!("http://{addr}"),
        }
    }

    fn faults(&self) -> &Faults {
        &self.state.faults
    }

    fn seen(&self) -> &Seen {
        &self.state.seen
    }

    fn prompts(&self) -> Vec<String> {
        self.seen().prompts.lock().unwrap().clone()
    }

    fn aborts(&self) -> Vec<String> {
        self.seen().aborts.lock().unwrap().clone()
    }

    async fn gateway(&self) -> Gateway {
        Gateway::start_with(&self.url, GatewayOptions::default()).await
    }

    async fn gateway_with(&self, toml: &str) -> Gateway {
        Gateway::start_with(&self.url, GatewayOptions::default().config(toml)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

fn chat_body(text: &str, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    })
}

/// Sends a request, capped at [`REQUEST_CAP`] → (status, JSON body, elapsed).
async fn timed_json(rb: reqwest::RequestBuilder, what: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let fut = async {
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        support::gateway::read_json(resp).await
    };
    let (status, body) = tokio::time::timeout(REQUEST_CAP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {REQUEST_CAP:?}"));
    (status, body, started.elapsed())
}

/// `GET` on the gateway → (status, JSON body, elapsed).
async fn get_json(gw: &Gateway, path: &str) -> (StatusCode, Value, Duration) {
    let rb = test_client().get(format!("{}{path}", gw.url()));
    timed_json(rb, &format!("GET {path}")).await
}

/// Non-streaming chat → (status, JSON body, elapsed).
async fn chat(gw: &Gateway, text: &str) -> (StatusCode, Value, Duration) {
    let rb = test_client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat_body(text, false));
    timed_json(rb, "chat completion").await
}

/// Streaming chat → (status, is SSE, `data:` payloads (or the whole body if not SSE), elapsed).
async fn chat_stream(gw: &Gateway, text: &str) -> (StatusCode, bool, Vec<String>, Duration) {
    let started = Instant::now();
    let fut = async {
        let resp = test_client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&chat_body(text, true))
            .send()
            .await
            .expect("POST /v1/chat/completions (stream)");
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = resp.text().await.expect("read stream body");
        let payloads = if is_sse {
            parse_sse_data(&text)
        } else {
            vec![text]
        };
        (status, is_sse, payloads)
    };
    let (status, is_sse, payloads) = tokio::time::timeout(REQUEST_CAP, fut)
        .await
        .unwrap_or_else(|_| panic!("streaming chat hung for {REQUEST_CAP:?}"));
    (status, is_sse, payloads, started.elapsed())
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no choices[0].message.content in {body}"))
}

/// Asserts an OpenAI-shaped error `{"error":{message,type,param,code}}` with this status and code.
fn assert_error(gw: &Gateway, status: StatusCode, body: &Value, want: u16, code: &str) {
    assert_eq!(
        status.as_u16(),
        want,
        "expected {want} `{code}`, got {status}: {body}\ngateway logs:\n{}",
        gw.logs()
    );
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message missing: {body}"
    );
    assert!(err["type"].is_string(), "error.type missing: {body}");
    assert!(err.get("param").is_some(), "error.param missing: {body}");
    assert_eq!(err["code"], code, "error.code: {body}");
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether it held.
async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `counter` is at least 1 and has not moved for `quiet` (at most 10 s).
async fn wait_quiet(counter: &AtomicU32, quiet: Duration) -> u32 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let before = counter.load(SeqCst);
        tokio::time::sleep(quiet).await;
        let after = counter.load(SeqCst);
        if (after >= 1 && after == before) || Instant::now() >= until {
            return after;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 1a. `GET /config/providers` is idempotent: one 500 is retried and the client never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_500_once_is_retried() {
    let fake = Fake::start().await;
    // The catalog's start-up refresh must not fill the cache, so the request below has to fetch.
    fake.faults().providers_failures.store(ALWAYS, SeqCst);
    let gw = fake.gateway_with("[models]\ncache_ttl_secs = 600\n").await;
    let startup_calls = wait_quiet(&fake.seen().providers, Duration::from_millis(800)).await;
    assert!(startup_calls >= 1, "the gateway never fetched the catalog");

    fake.faults().providers_failures.store(1, SeqCst);
    fake.seen().providers.store(0, SeqCst);
    let (status, body, _) = get_json(&gw, "/v1/models").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one upstream 500 must be retried: {body}\nlogs:\n{}",
        gw.logs()
    );
    let ids: Vec<&str> = body["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [MODEL], "{body}");
    assert_eq!(
        fake.seen().providers.load(SeqCst),
        2,
        "expected exactly one failed call and one retry"
    );
}

/// 1b. `POST /session` is retried: one 503 and the chat still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_create_503_once_is_retried() {
    let fake = Fake::start().await;
    fake.faults().session_failures.store(1, SeqCst);
    let gw = fake.gateway().await;
    let (status, body, _) = chat(&gw, "hello").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one upstream 503 on session create must be retried: {body}\nlogs:\n{}",
        gw.logs()
    );
    assert_eq!(content(&body), ANSWER);
    assert_eq!(fake.seen().session_creates.load(SeqCst), 2);
    assert_eq!(fake.prompts().len(), 1);
}

/// 2. Prompts are never retried: a 500 from `prompt_async` is a 502 carrying OpenCode's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_500_is_not_retried() {
    let fake = Fake::start().await;
    fake.faults().prompt_fails.store(true, SeqCst);
    let gw = fake.gateway().await;
    let (status, body, elapsed) = chat(&gw, "hello").await;
    assert_error(&gw, status, &body, 502, "upstream_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("boom"), "message lacks upstream's: {body}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // Give a (wrong) background retry a moment to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.prompts().len(),
        1,
        "prompt_async must be sent exactly once"
    );
}

/// 3. Slow health headers: readiness gives up at the health timeout; liveness never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_health_is_503_and_livez_is_immediate() {
    let fake = Fake::start().await;
    fake.faults().health_delay_ms.store(10_000, SeqCst);
    let gw = fake.gateway().await;
    let health = {
        let url = gw.url();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = test_client()
                .get(format!("{url}/health"))
                .send()
                .await
                .expect("GET /health");
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body, started.elapsed())
        })
    };
    // While the readiness probe waits on upstream, liveness answers at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body, elapsed) = get_json(&gw, "/livez").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(elapsed < Duration::from_secs(1), "/livez took {elapsed:?}");

    let (status, body, elapsed) = tokio::time::timeout(REQUEST_CAP, health)
        .await
        .expect("/health hung")
        .expect("health task");
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a health answer slower than health_timeout_ms must be 503: {body}"
    );
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(
        elapsed < Duration::from_millis(3_500),
        "/health took {elapsed:?} (health_timeout_ms is 2000)"
    );
    assert!(fake.seen().health.load(SeqCst) >= 1);
}

/// 4. A slow `POST /session` hits `request_timeout_ms`: 504 `upstream_timeout`, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_session_create_is_504() {
    let fake = Fake::start().await;
    fake.faults().session_delay_ms.store(30_000, SeqCst);
    let gw = fake
        .gateway_with("[opencode]\nrequest_timeout_ms = 1000\nretry_attempts = 1\n")
        .await;
    let (status, body, elapsed) = chat(&gw, "hello").await;
    assert_error(&gw, status, &body, 504, "upstream_timeout");
    assert!(
        elapsed < Duration::from_secs(3),
        "took {elapsed:?} with request_timeout_ms = 1000"
    );
    assert!(fake.prompts().is_empty(), "no prompt without a session");
}

/// 5. The event stream drops mid-run: both modes fail fast with an error, the hub reconnects,
/// and the next chat works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_event_stream_fails_run_and_hub_reconnects() {
    let fake = Fake::start().await;
    fake.faults().drop_after_delta.store(true, SeqCst);
    let gw = fake.gateway().await;
    let conns = || fake.seen().event_connections.load(SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || conns() >= 1).await,
        "the gateway never subscribed to /event"
    );

    // Streaming: the text before the drop arrives, then an error event, and no [DONE].
    let before = conns();
    let (status, is_sse, payloads, elapsed) = chat_stream(&gw, "first").await;
    assert_eq!(status, StatusCode::OK, "{payloads:?}");
    assert!(is_sse, "not SSE: {payloads:?}");
    assert!(elapsed < Duration::from_secs(5), "stream took {elapsed:?}");
    assert!(
        !payloads.iter().any(|p| p == "[DONE]"),
        "a failed stream must not end with [DONE]: {payloads:?}"
    );
    let last: Value = payloads
        .last()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    assert!(
        last["error"]["message"].is_string(),
        "the stream must end with a data: {{\"error\":…}} event: {payloads:?}"
    );
    let streamed: String = payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(streamed, ANSWER, "text sent before the drop: {payloads:?}");
    assert!(
        eventually(Duration::from_secs(2), || conns() > before).await,
        "the hub did not reconnect within 2 s (connections: {})",
        conns()
    );

    // Non-streaming: 502.
    let before = conns();
    let (status, body, elapsed) = chat(&gw, "second").await;
    assert_error(&gw, status, &body, 502, "upstream_error");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        eventually(Duration::from_secs(2), || conns() > before).await,
        "the hub did not reconnect within 2 s (connections: {})",
        conns()
    );

    // Both failed runs were aborted upstream.
    let prompts = fake.prompts();
    assert_eq!(prompts.len(), 2);
    let aborts = fake.aborts();
    for p in &prompts {
        assert!(aborts.contains(p), "run of {p} not aborted: {aborts:?}");
    }

    // Healthy again: the next chat succeeds over the new connection.
    fake.faults().drop_after_delta.store(false, SeqCst);
    let (status, body, _) = chat(&gw, "third").await;
    assert_eq!(status, StatusCode::OK, "{body}\nlogs:\n{}", gw.logs());
    assert_eq!(content(&body), ANSWER);
}

/// 6. `/event` always 500: a chat is 503 `upstream_unavailable` after the bounded wait, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_unavailable_is_503() {
    let fake = Fake::start().await;
    fake.faults().events_fail.store(true, SeqCst);
    let gw = fake.gateway().await;
    let (status, body, elapsed) = chat(&gw, "hello").await;
    assert_error(&gw, status, &body, 503, "upstream_unavailable");
    assert!(
        elapsed < Duration::from_secs(7),
        "took {elapsed:?} (the event wait is 5 s)"
    );
    assert!(
        fake.prompts().is_empty(),
        "no prompt may be sent without an event subscription"
    );
    assert_eq!(
        fake.seen().session_creates.load(SeqCst),
        0,
        "no session may be created while the event stream is down"
    );
    // Readiness reflects it: OpenCode answers its health check, but chats cannot be served.
    let resp = test_client()
        .get(format!("{}/health", gw.url()))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = resp.json().await.expect("health JSON");
    assert_eq!(v["opencode"]["healthy"], true, "{v}");
    assert_eq!(v["events"]["connected"], false, "{v}");
}

/// 7. The prompt is accepted but nothing ever comes back: 504 at the deadline, run aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_run_hits_deadline_and_is_aborted() {
    let fake = Fake::start().await;
    fake.faults().prompt_silent.store(true, SeqCst);
    let gw = fake.gateway_with("[prompt]\ndeadline_secs = 2\n").await;
    let (status, body, elapsed) = chat(&gw, "hello").await;
    assert_error(&gw, status, &body, 504, "upstream_timeout");
    assert!(
        elapsed >= Duration::from_millis(1_500) && elapsed < Duration::from_secs(4),
        "took {elapsed:?} with deadline_secs = 2"
    );
    let prompts = fake.prompts();
    assert_eq!(prompts.len(), 1);
    assert!(
        eventually(Duration::from_secs(2), || fake
            .aborts()
            .contains(&prompts[0]))
        .await,
        "session {} was not aborted (aborts: {:?})",
        prompts[0],
        fake.aborts()
    );
}

/// 8. `/config/providers` failing persistently: `/v1/models` is a prompt 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_500_persistently_is_502() {
    let fake = Fake::start().await;
    fake.faults().providers_failures.store(ALWAYS, SeqCst);
    let gw = fake.gateway().await;
    let (status, body, elapsed) = get_json(&gw, "/v1/models").await;
    assert_error(&gw, status, &body, 502, "upstream_error");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("providers exploded"),
        "upstream's message should be passed on: {body}"
    );
}

/// 10. A streaming client that stops reading (its socket full) cannot hold the run past the
/// deadline: the gateway aborts it upstream on time even though nothing can be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_reader_is_cut_at_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let fake = Fake::start().await;
    fake.faults().flood_deltas.store(6_000, SeqCst);
    let gw = fake.gateway_with("[prompt]\ndeadline_secs = 3\n").await;
    let addr: std::net::SocketAddr = gw.url().trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.expect("connect");
    let body = chat_body("flood", true).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Never read. The run streams ~12 MB, far beyond what the sockets buffer.
    let started = Instant::now();
    let aborted = loop {
        if !fake.aborts().is_empty() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        aborted,
        "the stalled run was not aborted within 10 s of a 3 s deadline\nlogs:\n{}",
        gw.logs()
    );
    assert_eq!(
        fake.aborts(),
        fake.prompts(),
        "the run's own session is aborted"
    );
    drop(tcp);
}

/// 11. The model list is cached (requests do not each hit OpenCode) and refreshed in the
/// background within the TTL, so a model added upstream appears without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_catalog_is_cached_and_refreshed_in_the_background() {
    let fake = Fake::start().await;
    let gw = fake.gateway_with("[models]\ncache_ttl_secs = 2\n").await;
    let client = test_client();
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = || async {
        let resp = client
            .get(format!("{}/v1/models", gw.url()))
            .send()
            .await
            .expect("models");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.expect("JSON")
    };
    assert_eq!(ids(&list().await), ["mock/echo"]);
    let before = fake.seen().providers.load(SeqCst);
    for _ in 0..20 {
        list().await;
    }
    assert!(
        fake.seen().providers.load(SeqCst) <= before + 1,
        "20 model lists must be served from the cache"
    );
    fake.faults().extra_model.store(true, SeqCst);
    let idle_from = fake.seen().providers.load(SeqCst);
    // No requests meanwhile: only the background refresh can fetch.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        fake.seen().providers.load(SeqCst) > idle_from,
        "the catalog was not refreshed in the background"
    );
    assert_eq!(ids(&list().await), ["mock/added", "mock/echo"]);
}
