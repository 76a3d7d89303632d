//! A FAST fake OpenCode for the benchmark suite (the fault-injection fake in
//! `tests/it/support/fake_opencode.rs` is built for failures, not speed: one global mutex, a 20 ms
//! pause before every run, `axum::Sse` framing).
//!
//! Why it exists: to measure what the gateway itself costs, the upstream must cost (almost)
//! nothing and behave the same every time. It serves the subset of OpenCode's API a plain chat
//! completion uses — `GET /global/health`, `GET /config/providers` (provider `mock`, model
//! `echo`), sessions (create, get, delete, fork, messages, abort, `prompt_async`) and the `GET
//! /event` stream — on its own Tokio runtime and threads, so that its work is not scheduled
//! behind the load generator's.
//!
//! A prompt's run emits the event sequence a real OpenCode emits for a plain text answer (see
//! `tests/fixtures/events/text.jsonl` and its README), with N `message.part.delta`s. Each
//! delta's text is `t<µs> `: the fake's send time in microseconds since [`epoch`], so a client
//! in the same process computes a chunk's added latency as its receive time − that send time.
//! The prompt text chooses the run: `[deltas:N]` (default [`DEFAULT_DELTAS`]) and
//! `[gap_us:N]` (pause before each delta; default none, then the whole run is emitted at once).
//!
//! Hot path: sessions live in sharded maps (no global mutex), every event is serialized once
//! into an SSE frame and broadcast as shared bytes; each `/event` stream writes whatever frames
//! are ready in one chunk. `tests/bench_fake.rs` keeps the event shapes honest against a recorded
//! real OpenCode run.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Deltas of a run whose prompt does not say `[deltas:N]`.
pub const DEFAULT_DELTAS: u32 = 2;
/// Frames the broadcast keeps for a slow `/event` reader before it loses some (counted).
const BROADCAST_CAPACITY: usize = 1 << 18;
/// OpenCode sends a heartbeat every 10 s; the gateway treats 30 s of silence as a dead stream.
const HEARTBEAT: Duration = Duration::from_secs(10);
const SHARDS: usize = 64;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The bench-wide time origin of the `t<µs>` stamps.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// Every `t<µs>` stamp in a piece of answer text.
pub fn stamps(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix('t').and_then(|n| n.parse().ok()))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh id with OpenCode's prefix; ids ascend (the gateway relies on message ids ascending).
fn next_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", NEXT_ID.fetch_add(1, Relaxed))
}

/// One event as OpenCode sends it on `/event` (JSON text), `properties` being JSON text.
pub fn frame(kind: &str, properties: &str) -> String {
    format!(
        r#"{{"id":"{}","type":"{kind}","properties":{properties}}}"#,
        next_id("evt")
    )
}

/// What a prompt asks of its run (from markers in the prompt text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSpec {
    pub deltas: u32,
    pub gap: Duration,
}

impl RunSpec {
    pub fn from_prompt(text: &str) -> RunSpec {
        let marker = |name: &str| -> Option<u64> {
            let start = text.find(&format!("[{name}:"))? + name.len() + 2;
            let end = start + text[start..].find(']')?;
            text[start..end].trim().parse().ok()
        };
        RunSpec {
            deltas: marker("deltas").map_or(DEFAULT_DELTAS, |n| n as u32),
            gap: Duration::from_micros(marker("gap_us").unwrap_or(0)),
        }
    }
}

/// A session object as OpenCode answers it.
fn session_json(id: &str, title: &str, metadata: &Value) -> Value {
    json!({
        "id": id,
        "slug": "fast-fake",
        "title": title,
        "projectID": "global",
        "directory": "/tmp/fast-fake",
        "version": "fake",
        "metadata": metadata,
        "time": {"created": 1, "updated": 1}
    })
}

const ZERO_TOKENS: &str = r#"{"input":0,"output":0,"reasoning":0,"cache":{"read":0,"write":0}}"#;

/// The ids of one run and the events it emits, in OpenCode's order for a text answer. The
/// events are written as JSON text directly (ids are plain ASCII; only the user's prompt needs
/// escaping): building `serde_json::Value`s for every event would make the fake cost more
/// than the gateway it measures.
pub struct Script {
    pub sid: String,
    user: String,
    user_part: String,
    assistant: String,
    step_start: String,
    text_part: String,
    step_finish: String,
}

impl Script {
    pub fn new(sid: &str) -> Script {
        Script {
            sid: sid.to_string(),
            user: next_id("msg"),
            user_part: next_id("prt"),
            assistant: next_id("msg"),
            step_start: next_id("prt"),
            text_part: next_id("prt"),
            step_finish: next_id("prt"),
        }
    }

    fn session_updated(&self) -> String {
        let sid = &self.sid;
        frame(
            "session.updated",
            &format!(
                r#"{{"sessionID":"{sid}","info":{{"id":"{sid}","slug":"fast-fake","title":"bench","projectID":"global","directory":"/tmp/fast-fake","version":"fake","time":{{"created":1,"updated":1}}}}}}"#
            ),
        )
    }

    fn user_message(&self) -> String {
        let (sid, user) = (&self.sid, &self.user);
        frame(
            "message.updated",
            &format!(
                r#"{{"sessionID":"{sid}","info":{{"id":"{user}","sessionID":"{sid}","role":"user","agent":"build","model":{{"providerID":"mock","modelID":"echo"}},"time":{{"created":1}},"tools":{{"*":false}}}}}}"#
            ),
        )
    }

    fn status(&self, kind: &str) -> String {
        frame(
            "session.status",
            &format!(
                r#"{{"sessionID":"{}","status":{{"type":"{kind}"}}}}"#,
                self.sid
            ),
        )
    }

    fn assistant(&self, finish: Option<&str>, output_tokens: u32, error: Option<&str>) -> String {
        let (sid, id, user) = (&self.sid, &self.assistant, &self.user);
        let mut extra = String::new();
        let mut time = r#"{"created":1}"#;
        let mut tokens = ZERO_TOKENS.to_string();
        if let Some(f) = finish {
            extra.push_str(&format!(r#","finish":"{f}""#));
            time = r#"{"created":1,"completed":2}"#;
            tokens = format!(
                r#"{{"input":11,"output":{output_tokens},"reasoning":0,"total":{},"cache":{{"read":0,"write":0}}}}"#,
                11 + output_tokens
            );
        }
        if let Some(e) = error {
            extra.push_str(&format!(r#","error":{e}"#));
            time = r#"{"created":1,"completed":2}"#;
        }
        frame(
            "message.updated",
            &format!(
                r#"{{"sessionID":"{sid}","info":{{"id":"{id}","sessionID":"{sid}","role":"assistant","parentID":"{user}","agent":"build","mode":"build","cost":0,"modelID":"echo","providerID":"mock","path":{{"cwd":"/tmp/fast-fake","root":"/"}},"time":{time},"tokens":{tokens}{extra}}}}}"#
            ),
        )
    }

    /// `message.part.updated` of a part given as JSON text without its closing brace.
    fn part(&self, part_open: &str) -> String {
        frame(
            "message.part.updated",
            &format!(
                r#"{{"sessionID":"{}","part":{part_open}}},"time":1}}"#,
                self.sid
            ),
        )
    }

    fn text_part_with(&self, text: &str, ended: bool) -> String {
        let time = if ended {
            r#"{"start":1,"end":2}"#
        } else {
            r#"{"start":1}"#
        };
        let text = serde_json::to_string(text).unwrap_or_default();
        self.part(&format!(
            r#"{{"id":"{}","messageID":"{}","sessionID":"{}","type":"text","text":{text},"time":{time}"#,
            self.text_part, self.assistant, self.sid
        ))
    }

    fn diff(&self) -> String {
        frame(
            "session.diff",
            &format!(r#"{{"sessionID":"{}","diff":[]}}"#, self.sid),
        )
    }

    fn idle(&self) -> String {
        frame(
            "session.idle",
            &format!(r#"{{"sessionID":"{}"}}"#, self.sid),
        )
    }

    /// From the user's message to the empty text part the deltas go to.
    pub fn start(&self, prompt: &str) -> Vec<String> {
        let prompt = serde_json::to_string(prompt).unwrap_or_default();
        vec![
            self.session_updated(),
            self.user_message(),
            self.part(&format!(
                r#"{{"id":"{}","messageID":"{}","sessionID":"{}","type":"text","text":{prompt}"#,
                self.user_part, self.user, self.sid
            )),
            self.session_updated(),
            self.status("busy"),
            self.assistant(None, 0, None),
            self.session_updated(),
            self.diff(),
            self.user_message(),
            self.status("busy"),
            self.part(&format!(
                r#"{{"id":"{}","messageID":"{}","sessionID":"{}","type":"step-start""#,
                self.step_start, self.assistant, self.sid
            )),
            self.text_part_with("", false),
        ]
    }

    /// One piece of answer text (plain ASCII without quotes or backslashes, as the stamps are).
    pub fn delta(&self, text: &str) -> String {
        frame(
            "message.part.delta",
            &format!(
                r#"{{"sessionID":"{}","messageID":"{}","partID":"{}","field":"text","delta":"{text}"}}"#,
                self.sid, self.assistant, self.text_part
            ),
        )
    }

    /// From the closed text part to `session.idle` and the updates that follow it.
    pub fn end(&self, text: &str, deltas: u32) -> Vec<String> {
        vec![
            self.text_part_with(text, true),
            self.part(&format!(
                r#"{{"id":"{}","messageID":"{}","sessionID":"{}","type":"step-finish","reason":"stop","cost":0,"tokens":{{"input":11,"output":{deltas},"reasoning":0,"total":{},"cache":{{"read":0,"write":0}}}}"#,
                self.step_finish,
                self.assistant,
                self.sid,
                11 + deltas
            )),
            self.assistant(Some("stop"), deltas, None),
            self.assistant(Some("stop"), deltas, None),
            self.status("busy"),
            self.status("idle"),
            self.idle(),
            self.session_updated(),
            self.diff(),
            self.user_message(),
        ]
    }

    /// What OpenCode sends after `POST /session/:id/abort` mid-answer.
    pub fn aborted(&self, text: &str) -> Vec<String> {
        let error = r#"{"name":"MessageAbortedError","data":{"message":"Aborted"}}"#;
        vec![
            frame(
                "session.error",
                &format!(r#"{{"sessionID":"{}","error":{error}}}"#, self.sid),
            ),
            self.status("idle"),
            self.idle(),
            self.text_part_with(text, true),
            self.assistant(None, 0, Some(error)),
            self.status("idle"),
            self.idle(),
        ]
    }

    /// Every event of a run answering `prompt` with `deltas` stamped deltas, emitted at once.
    pub fn whole_run(&self, prompt: &str, deltas: u32) -> Vec<String> {
        let mut events = self.start(prompt);
        let mut text = String::new();
        for _ in 0..deltas {
            let d = format!("t{} ", now_us());
            text.push_str(&d);
            events.push(self.delta(&d));
        }
        events.extend(self.end(&text, deltas));
        events
    }
}

struct Entry {
    title: String,
    metadata: Value,
    aborted: AtomicBool,
}

/// Counters of what the fake was asked (all relaxed atomics).
#[derive(Default)]
pub struct Counters {
    pub sessions_created: AtomicU64,
    pub prompts: AtomicU64,
    pub runs_finished: AtomicU64,
    pub deletes: AtomicU64,
    pub aborts: AtomicU64,
    pub events_emitted: AtomicU64,
    /// `/event` connections ever opened, and open now.
    pub event_connections_opened: AtomicU64,
    pub event_connections_open: AtomicU64,
    /// Frames an `/event` reader missed because it fell [`BROADCAST_CAPACITY`] behind.
    pub frames_lost: AtomicU64,
}

struct FakeState {
    shards: Vec<Mutex<HashMap<u64, Arc<Entry>>>>,
    next_session: AtomicU64,
    events: broadcast::Sender<Bytes>,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeState {
    fn shard(&self, n: u64) -> &Mutex<HashMap<u64, Arc<Entry>>> {
        &self.shards[(n as usize) % SHARDS]
    }

    fn get(&self, id: &str) -> Option<Arc<Entry>> {
        let n = parse_session(id)?;
        lock(self.shard(n)).get(&n).cloned()
    }

    fn insert(&self, title: String, metadata: Value) -> (String, Value) {
        let n = self.next_session.fetch_add(1, Relaxed);
        let id = format!("ses_{n:016x}");
        let body = session_json(&id, &title, &metadata);
        let entry = Arc::new(Entry {
            title,
            metadata,
            aborted: AtomicBool::new(false),
        });
        lock(self.shard(n)).insert(n, entry);
        self.counters.sessions_created.fetch_add(1, Relaxed);
        (id, body)
    }

    fn emit(&self, event: &str) {
        let mut frame = Vec::with_capacity(event.len() + 8);
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(event.as_bytes());
        frame.extend_from_slice(b"\n\n");
        self.counters.events_emitted.fetch_add(1, Relaxed);
        // No open `/event` stream is fine: events are not replayed, as in OpenCode.
        let _ = self.events.send(Bytes::from(frame));
    }
}

fn parse_session(id: &str) -> Option<u64> {
    u64::from_str_radix(id.strip_prefix("ses_")?, 16).ok()
}

type St = State<Arc<FakeState>>;

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"name": "NotFoundError", "data": {"message": "Session not found"}})),
    )
        .into_response()
}

async fn health() -> Json<Value> {
    Json(json!({"healthy": true, "version": "fast-fake"}))
}

async fn providers() -> Json<Value> {
    Json(json!({
        "providers": [{"id": "mock", "name": "Mock", "models": {
            "echo": {"id": "echo", "name": "Echo", "capabilities": {"input": {"image": false}}}
        }}],
        "default": {"mock": "echo"}
    }))
}

#[derive(serde::Deserialize, Default)]
struct CreateBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    metadata: Value,
}

async fn create_session(State(s): St, body: Bytes) -> Json<Value> {
    let b: CreateBody = serde_json::from_slice(&body).unwrap_or_default();
    let (id, session) = s.insert(b.title.unwrap_or_else(|| "New session".into()), b.metadata);
    s.emit(&frame(
        "session.created",
        &format!(r#"{{"sessionID":"{id}","info":{session}}}"#),
    ));
    Json(session)
}

async fn get_session(State(s): St, Path(id): Path<String>) -> Response {
    match s.get(&id) {
        Some(e) => Json(session_json(&id, &e.title, &e.metadata)).into_response(),
        None => not_found(),
    }
}

async fn delete_session(State(s): St, Path(id): Path<String>) -> Response {
    s.counters.deletes.fetch_add(1, Relaxed);
    let Some(n) = parse_session(&id) else {
        return not_found();
    };
    match lock(s.shard(n)).remove(&n) {
        Some(_) => Json(json!(true)).into_response(),
        None => not_found(),
    }
}

async fn fork(State(s): St, Path(id): Path<String>) -> Response {
    match s.get(&id) {
        Some(e) => Json(s.insert(e.title.clone(), e.metadata.clone()).1).into_response(),
        None => not_found(),
    }
}

async fn messages(State(s): St, Path(id): Path<String>) -> Response {
    match s.get(&id) {
        Some(_) => Json(json!([])).into_response(),
        None => not_found(),
    }
}

async fn abort(State(s): St, Path(id): Path<String>) -> Response {
    s.counters.aborts.fetch_add(1, Relaxed);
    match s.get(&id) {
        Some(e) => {
            e.aborted.store(true, Relaxed);
            Json(json!(true)).into_response()
        }
        None => not_found(),
    }
}

#[derive(serde::Deserialize)]
struct PromptPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(serde::Deserialize)]
struct PromptRequest {
    #[serde(default)]
    parts: Vec<PromptPart>,
}

async fn prompt_async(State(s): St, Path(id): Path<String>, body: Bytes) -> Response {
    s.counters.prompts.fetch_add(1, Relaxed);
    let Some(entry) = s.get(&id) else {
        return not_found();
    };
    let Ok(req) = serde_json::from_slice::<PromptRequest>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"name": "BadRequest", "data": {"message": "bad prompt body"}})),
        )
            .into_response();
    };
    let prompt: String = req.parts.into_iter().filter_map(|p| p.text).collect();
    let spec = RunSpec::from_prompt(&prompt);
    entry.aborted.store(false, Relaxed);
    tokio::spawn(run(s, entry, id, prompt, spec));
    StatusCode::NO_CONTENT.into_response()
}

/// One run: its opening events, `spec.deltas` stamped deltas (`spec.gap` apart, on a fixed
/// schedule so that slow wake-ups do not add up), its closing events.
async fn run(s: Arc<FakeState>, entry: Arc<Entry>, sid: String, prompt: String, spec: RunSpec) {
    let script = Script::new(&sid);
    for e in script.start(&prompt) {
        s.emit(&e);
    }
    let began = tokio::time::Instant::now();
    let mut text = String::with_capacity(spec.deltas as usize * 18);
    for i in 0..spec.deltas {
        if !spec.gap.is_zero() {
            tokio::time::sleep_until(began + spec.gap * (i + 1)).await;
            if entry.aborted.load(Relaxed) {
                for e in script.aborted(&text) {
                    s.emit(&e);
                }
                return;
            }
        }
        let d = format!("t{} ", now_us());
        text.push_str(&d);
        s.emit(&script.delta(&d));
    }
    for e in script.end(&text, spec.deltas) {
        s.emit(&e);
    }
    s.counters.runs_finished.fetch_add(1, Relaxed);
}

/// Counts an `/event` stream as open while it lives.
struct OpenStream(Arc<FakeState>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.counters.event_connections_open.fetch_sub(1, Relaxed);
    }
}

async fn event_stream(State(s): St) -> Response {
    // Subscribe before answering so that nothing emitted after the headers is missed.
    let rx = s.events.subscribe();
    s.counters.event_connections_opened.fetch_add(1, Relaxed);
    s.counters.event_connections_open.fetch_add(1, Relaxed);
    let open = OpenStream(s.clone());
    let mut first = b"data: ".to_vec();
    first.extend_from_slice(frame("server.connected", "{}").as_bytes());
    first.extend_from_slice(b"\n\n");
    let stream = futures::stream::unfold(
        (Some(Bytes::from(first)), rx, open),
        |(first, mut rx, open)| async move {
            if let Some(f) = first {
                return Some((Ok::<_, Infallible>(f), (None, rx, open)));
            }
            let lost = |n: u64| {
                open.0.counters.frames_lost.fetch_add(n, Relaxed);
            };
            let head = loop {
                match rx.recv().await {
                    Ok(b) => break b,
                    Err(broadcast::error::RecvError::Lagged(n)) => lost(n),
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            };
            // Whatever else is ready goes out in the same write.
            let mut buf: Option<Vec<u8>> = None;
            loop {
                match rx.try_recv() {
                    Ok(b) => {
                        let v = buf.get_or_insert_with(|| head.to_vec());
                        v.extend_from_slice(&b);
                        if v.len() > 64 * 1024 {
                            break;
                        }
                    }
                    Err(broadcast::error::TryRecvError::Lagged(n)) => lost(n),
                    Err(_) => break,
                }
            }
            let chunk = buf.map_or(head, Bytes::from);
            Some((Ok(chunk), (None, rx, open)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A running fast fake OpenCode on its own runtime; stops when dropped.
pub struct FastFake {
    url: String,
    state: Arc<FakeState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FastFake {
    /// Starts the fake on 127.0.0.1:0 with a runtime of `workers` threads.
    pub fn start(workers: usize) -> FastFake {
        epoch();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fast fake");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("fast fake address");
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let state = Arc::new(FakeState {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_session: AtomicU64::new(1),
            events,
            counters: Counters::default(),
        });
        let app = Router::new()
            .route("/global/health", get(health))
            .route("/config/providers", get(providers))
            .route("/session", post(create_session))
            .route("/session/{id}", get(get_session).delete(delete_session))
            .route("/session/{id}/fork", post(fork))
            .route("/session/{id}/message", get(messages))
            .route("/session/{id}/abort", post(abort))
            .route("/session/{id}/prompt_async", post(prompt_async))
            .route("/event", get(event_stream))
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let beat = state.clone();
        let thread = std::thread::Builder::new()
            .name("fast-fake".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers.max(1))
                    .thread_name("fast-fake-worker")
                    .enable_all()
                    .build()
                    .expect("fast fake runtime");
                rt.block_on(async move {
                    use axum::serve::ListenerExt;
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("fast fake listener")
                        .tap_io(|tcp| {
                            let _ = tcp.set_nodelay(true);
                        });
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(HEARTBEAT).await;
                            beat.emit(&frame("server.heartbeat", "{}"));
                        }
                    });
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn fast fake thread");
        FastFake {
            url: format!("http://{addr}"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }
}

impl Drop for FastFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
