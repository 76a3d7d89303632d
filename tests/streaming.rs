//! Streaming (`stream: true`) behaviour of `POST /v1/chat/completions`, end to end against a real
//! `opencode serve`.
//!
//! Beds are expensive (a real OpenCode each), so one bed runs many sequential *sections*; every
//! section runs in its own task so one failure does not hide the others, and the test fails at the
//! end listing every failed section.

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::gateway::test_client;
use support::mock_model::{self, FAILURE_MESSAGE};
use support::schema;
use support::{Gateway, GatewayOptions, MockModel, OpenCode, OpenCodeOptions, TestBed};

const ECHO: &str = "mock/echo";
const THINKER: &str = "mock/thinker";
/// Upper bound for waiting on any single SSE frame (so a broken gateway fails instead of hanging).
const FRAME_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn body(model: &str, text: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    })
}

fn echo(text: &str) -> String {
    format!("echo: {text}")
}

fn reasoning_of(text: &str) -> String {
    mock_model::expected_reasoning(&json!({"messages": [{"role": "user", "content": text}]}))
}

/// One SSE frame as it arrived.
#[derive(Debug, Clone)]
struct Frame {
    /// When the frame was complete, relative to the request start.
    at: Duration,
    /// The raw frame text (without the blank line).
    raw: String,
}

impl Frame {
    fn is_comment(&self) -> bool {
        self.raw.lines().all(|l| l.starts_with(':') || l.is_empty())
            && self.raw.lines().any(|l| l.starts_with(':'))
    }

    /// The joined `data:` payload, if the frame has one.
    fn data(&self) -> Option<String> {
        support::parse_sse_data(&self.raw).into_iter().next()
    }

    fn json(&self) -> Option<Value> {
        self.data()
            .filter(|d| d != "[DONE]")
            .and_then(|d| serde_json::from_str(&d).ok())
    }

    fn content(&self) -> Option<String> {
        self.json()
            .and_then(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .filter(|s| !s.is_empty())
    }
}

/// Reads an SSE response frame by frame, recording arrival times.
struct SseReader {
    started: Instant,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    raw: String,
    ended: bool,
}

impl SseReader {
    fn new(resp: reqwest::Response, started: Instant) -> SseReader {
        SseReader {
            started,
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            raw: String::new(),
            ended: false,
        }
    }

    /// The next complete frame; `None` at the end of the body (a trailing partial frame is
    /// returned as a frame). Panics after `wait` without a frame.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..pos + 2).collect();
                return Some(Frame {
                    at: self.started.elapsed(),
                    raw: frame.trim_end_matches('\n').to_string(),
                });
            }
            if self.ended {
                if self.buf.trim().is_empty() {
                    return None;
                }
                let rest = std::mem::take(&mut self.buf);
                return Some(Frame {
                    at: self.started.elapsed(),
                    raw: rest.trim_end_matches('\n').to_string(),
                });
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!(
                    "no SSE frame within {wait:?} (after {:?}); received so far:\n{}",
                    self.started.elapsed(),
                    self.raw
                ),
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => {
                    // A reset connection ends the body like EOF for our purposes.
                    eprintln!("stream body error: {e}");
                    self.ended = true;
                }
                Ok(Some(Ok(bytes))) => {
                    let s = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
                    self.raw.push_str(&s);
                    self.buf.push_str(&s);
                }
            }
        }
    }

    /// Every remaining frame.
    async fn rest(&mut self, wait_each: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.next(wait_each).await {
            out.push(f);
        }
        out
    }
}

/// Starts a streaming request and returns the checked response's reader.
async fn open_stream(bed: &TestBed, body: Value) -> SseReader {
    let started = Instant::now();
    let resp = bed.chat_raw(body).await;
    assert_eq!(
        resp.status(),
        200,
        "streaming request answered {}",
        resp.status()
    );
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        ct.starts_with("text/event-stream"),
        "content-type is {ct:?}, not text/event-stream"
    );
    SseReader::new(resp, started)
}

/// A whole successful stream, checked for OpenAI conformance.
#[derive(Debug)]
struct Streamed {
    frames: Vec<Frame>,
    chunks: Vec<Value>,
    content: String,
    reasoning: String,
    content_pieces: Vec<(Duration, String)>,
    reasoning_pieces: Vec<(Duration, String)>,
    finish_reason: String,
    usage_chunks: Vec<Value>,
}

/// Reads a stream to its end and checks everything a successful OpenAI stream must satisfy:
/// schema-valid chunks, role first, one id/created/model, one finish chunk, `[DONE]` last.
async fn read_ok_stream(bed: &TestBed, body: Value) -> Streamed {
    let model = body["model"].as_str().unwrap().to_string();
    let mut reader = open_stream(bed, body).await;
    let frames = reader.rest(FRAME_WAIT).await;
    check_ok_stream(frames, &model)
}

fn check_ok_stream(frames: Vec<Frame>, model: &str) -> Streamed {
    let datas: Vec<(Duration, String)> = frames
        .iter()
        .filter_map(|f| f.data().map(|d| (f.at, d)))
        .collect();
    let dump = || {
        frames
            .iter()
            .map(|f| f.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    assert!(
        datas.last().is_some_and(|(_, d)| d == "[DONE]"),
        "the stream does not end with `data: [DONE]`:\n{}",
        dump()
    );
    assert_eq!(
        datas.iter().filter(|(_, d)| d == "[DONE]").count(),
        1,
        "[DONE] must appear exactly once:\n{}",
        dump()
    );
    let mut chunks = Vec::new();
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut content_pieces = Vec::new();
    let mut reasoning_pieces = Vec::new();
    let mut finishes = Vec::new();
    let mut usage_chunks = Vec::new();
    for (i, (at, d)) in datas[..datas.len() - 1].iter().enumerate() {
        let v: Value = serde_json::from_str(d)
            .unwrap_or_else(|e| panic!("chunk {i} is not JSON ({e}): {d}\nstream:\n{}", dump()));
        assert!(
            v.get("error").is_none(),
            "error event in a successful stream: {v}"
        );
        schema::assert_valid("CreateChatCompletionStreamResponse", &v);
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        assert_eq!(v["model"], model, "chunk model: {v}");
        if !v["usage"].is_null() {
            usage_chunks.push(v.clone());
        }
        if let Some(choice) = v["choices"].get(0) {
            if let Some(t) = choice["delta"]["content"].as_str() {
                content.push_str(t);
                if !t.is_empty() {
                    content_pieces.push((*at, t.to_string()));
                }
            }
            if let Some(t) = choice["delta"]["reasoning_content"].as_str() {
                reasoning.push_str(t);
                if !t.is_empty() {
                    reasoning_pieces.push((*at, t.to_string()));
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finishes.push((i, f.to_string()));
            }
        }
        chunks.push(v);
    }
    assert!(!chunks.is_empty(), "no chunk before [DONE]");
    let first = &chunks[0];
    assert_eq!(
        first["choices"][0]["delta"]["role"], "assistant",
        "the first chunk must carry delta.role = assistant: {first}"
    );
    for c in &chunks[1..] {
        assert_eq!(c["id"], first["id"], "all chunks share one id: {c}");
        assert_eq!(
            c["created"], first["created"],
            "all chunks share one created: {c}"
        );
    }
    assert_eq!(
        finishes.len(),
        1,
        "exactly one chunk carries a finish_reason: {finishes:?}\n{}",
        dump()
    );
    let (fi, finish_reason) = finishes.pop().unwrap();
    // The finish chunk is the last chunk with choices (only a usage chunk may follow it).
    for c in &chunks[fi + 1..] {
        assert_eq!(
            c["choices"],
            json!([]),
            "only a usage chunk may follow the finish chunk: {c}"
        );
    }
    Streamed {
        frames,
        chunks,
        content,
        reasoning,
        content_pieces,
        reasoning_pieces,
        finish_reason,
        usage_chunks,
    }
}

/// Sessions OpenCode reports as busy or retrying.
async fn busy_sessions(oc: &OpenCode) -> Vec<(String, Value)> {
    oc.session_status()
        .await
        .into_iter()
        .filter(|(_, v)| matches!(v["type"].as_str(), Some("busy") | Some("retry")))
        .collect()
}

/// Polls until no session is busy/retrying; returns how long it took, or the busy ones.
async fn wait_not_busy(oc: &OpenCode, within: Duration) -> Result<Duration, Vec<(String, Value)>> {
    let start = Instant::now();
    loop {
        let busy = busy_sessions(oc).await;
        if busy.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= within {
            return Err(busy);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sections of a shared bed: each runs in its own task; failures are collected.
struct Sections {
    failures: Vec<String>,
}

impl Sections {
    fn new() -> Sections {
        Sections {
            failures: Vec::new(),
        }
    }

    async fn run<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let start = Instant::now();
        let result = tokio::spawn(f()).await;
        match result {
            Ok(()) => eprintln!("[section] {name}: ok ({:?})", start.elapsed()),
            Err(e) => {
                let msg = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())
                } else {
                    e.to_string()
                };
                eprintln!("[section] {name}: FAILED ({:?}): {msg}", start.elapsed());
                self.failures.push(format!("{name}: {msg}"));
            }
        }
    }

    fn finish(self, logs: &str) {
        if !self.failures.is_empty() {
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{} section(s) failed:\n- {}\n\ngateway log tail:\n{}",
                self.failures.len(),
                self.failures.join("\n- "),
                tail.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A logging TCP proxy between the gateway and OpenCode (counts `GET /event` connections)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ConnLog {
    /// Every byte the gateway sent on this connection.
    sent: Vec<u8>,
    open: bool,
}

impl ConnLog {
    /// Request lines starting with `GET /event` (`/event` or `/event?…`, not `/events`).
    fn event_requests(&self) -> usize {
        let pat = b"GET /event";
        let s = &self.sent;
        (0..s.len())
            .filter(|&i| {
                s[i..].starts_with(pat)
                    && (i == 0 || s[..i].ends_with(b"\r\n"))
                    && matches!(s.get(i + pat.len()), Some(b' ') | Some(b'?'))
            })
            .count()
    }
}

struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>> = Arc::default();
        let registry = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let log = Arc::new(Mutex::new(ConnLog {
                    sent: Vec::new(),
                    open: true,
                }));
                registry.lock().unwrap().push(log.clone());
                tokio::spawn(async move {
                    match TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        Ok(upstream) => pipe(client, upstream, log.clone()).await,
                        Err(_) => drop(client),
                    }
                    log.lock().unwrap().open = false;
                });
            }
        });
        Proxy { port, conns, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (total `GET /event` requests seen, connections with one that are still open).
    fn event_connections(&self) -> (usize, usize) {
        let conns = self.conns.lock().unwrap();
        let mut total = 0;
        let mut open = 0;
        for c in conns.iter() {
            let c = c.lock().unwrap();
            let n = c.event_requests();
            total += n;
            if n > 0 && c.open {
                open += 1;
            }
        }
        (total, open)
    }
}

async fn pipe(mut client: TcpStream, mut upstream: TcpStream, log: Arc<Mutex<ConnLog>>) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut ubuf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = cr.read(&mut cbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.lock().unwrap().sent.extend_from_slice(&cbuf[..n]);
                    if uw.write_all(&cbuf[..n]).await.is_err() {
                        break;
                    }
                }
            },
            r = ur.read(&mut ubuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if cw.write_all(&ubuf[..n]).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
}

/// `GET /status` on the gateway → (connected, connections_opened).
async fn hub_status(bed: &TestBed) -> (bool, u64) {
    let (status, v) = bed.get("/status").await;
    assert_eq!(status, 200, "GET /status: {v}");
    (
        v["events"]["connected"].as_bool().unwrap_or(false),
        v["events"]["connections_opened"]
            .as_u64()
            .unwrap_or_else(|| panic!("no events.connections_opened in /status: {v}")),
    )
}

// ---------------------------------------------------------------------------------------------
// The main bed: many behaviours, one OpenCode, gateway behind a logging proxy
// ---------------------------------------------------------------------------------------------

const MAIN_CONFIG: &str =
    "[prompt]\nmax_model_retries = 1\ndeadline_secs = 20\nkeepalive_secs = 1\n";

#[tokio::test(flavor = "multi_thread")]
async fn streaming_end_to_end() {
    let mock = MockModel::start().await;
    let opencode = OpenCode::start_with(&mock.base_url(), OpenCodeOptions::default()).await;
    let proxy = Arc::new(Proxy::start(opencode.port()).await);
    let gateway =
        Gateway::start_with(&proxy.url(), GatewayOptions::default().config(MAIN_CONFIG)).await;
    let bed = Arc::new(TestBed {
        gateway,
        opencode,
        mock,
        client: test_client(),
        api_key: None,
    });
    let mut s = Sections::new();

    // Basic OpenAI stream shape; finish_reason stop; no usage unless asked for.
    let b = bed.clone();
    s.run("basic stream shape (stop)", move || async move {
        let text = "hello stream";
        let st = read_ok_stream(&b, body(ECHO, text, true)).await;
        assert_eq!(st.finish_reason, "stop");
        assert_eq!(st.content, echo(text));
        assert!(
            st.usage_chunks.is_empty(),
            "no chunk may carry usage without stream_options.include_usage: {:?}",
            st.usage_chunks
        );
        assert!(
            st.reasoning.is_empty(),
            "unexpected reasoning: {}",
            st.reasoning
        );
    })
    .await;

    let b = bed.clone();
    s.run("finish_reason length", move || async move {
        let text = "cut short [length]";
        let st = read_ok_stream(&b, body(ECHO, text, true)).await;
        assert_eq!(st.finish_reason, "length");
        assert_eq!(st.content, echo(text));
    })
    .await;

    // Streamed content == non-streamed content, both == the mock's reply exactly (no echo of
    // the user's own text as a delta).
    let b = bed.clone();
    s.run(
        "stream equals non-stream; no user echo",
        move || async move {
            let text = "same answer both ways [chunks:4]";
            let st = read_ok_stream(&b, body(ECHO, text, true)).await;
            let (status, v) = b.chat(body(ECHO, text, false)).await;
            assert_eq!(status, 200, "{v}");
            schema::assert_valid("CreateChatCompletionResponse", &v);
            let plain = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(st.content, plain, "streamed vs non-streamed content");
            assert_eq!(st.content, echo(text), "exactly the model's reply");
            assert!(
                !st.content_pieces.iter().any(|(_, p)| p == text),
                "the user's own text came back as a delta: {:?}",
                st.content_pieces
            );
        },
    )
    .await;

    // Several chunks, not one blob; with [slow] the first chunk arrives well before the last.
    let b = bed.clone();
    s.run(
        "real streaming: several chunks, incremental arrival",
        move || async move {
            let text = "one two three four five six seven [chunks:5]";
            let st = read_ok_stream(&b, body(ECHO, text, true)).await;
            assert_eq!(st.content, echo(text));
            assert!(
                st.content_pieces.len() >= 3,
                "content arrived in {} piece(s): {:?}",
                st.content_pieces.len(),
                st.content_pieces
            );

            let text = "slowly but surely we get there [slow:300] [chunks:5]";
            let st = read_ok_stream(&b, body(ECHO, text, true)).await;
            assert_eq!(st.content, echo(text));
            assert!(
                st.content_pieces.len() >= 5,
                "expected the 5 spaced-out model chunks as separate deltas: {:?}",
                st.content_pieces
            );
            let first = st.content_pieces.first().unwrap().0;
            let last = st.content_pieces.last().unwrap().0;
            assert!(
            last >= first + Duration::from_millis(900),
            "first content at {first:?}, last at {last:?}: not incremental (model spaced 4×300 ms)"
        );
        },
    )
    .await;

    // Reasoning deltas (streaming) and reasoning_content (non-streaming).
    let b = bed.clone();
    s.run("reasoning_content", move || async move {
        let text = "ponder deeply [reasoning]";
        let st = read_ok_stream(&b, body(THINKER, text, true)).await;
        assert_eq!(st.reasoning, reasoning_of(text), "streamed reasoning");
        assert_eq!(st.content, echo(text), "streamed content");
        assert!(
            !st.content.contains("thinking about"),
            "reasoning leaked into content: {}",
            st.content
        );
        assert!(
            st.reasoning_pieces.len() >= 2,
            "reasoning in {} piece(s)",
            st.reasoning_pieces.len()
        );
        let last_reasoning = st.reasoning_pieces.last().unwrap().0;
        let first_content = st.content_pieces.first().unwrap().0;
        assert!(
            last_reasoning <= first_content,
            "reasoning must come before the answer"
        );
        for c in &st.chunks {
            let d = &c["choices"][0]["delta"];
            assert!(
                !(d["content"].as_str().is_some_and(|s| !s.is_empty())
                    && d["reasoning_content"].is_string()),
                "a chunk mixes content and reasoning: {c}"
            );
        }

        let text2 = "ponder again [reasoning]";
        let (status, v) = b.chat(body(THINKER, text2, false)).await;
        assert_eq!(status, 200, "{v}");
        schema::assert_valid("CreateChatCompletionResponse", &v);
        let m = &v["choices"][0]["message"];
        assert_eq!(m["reasoning_content"], reasoning_of(text2), "{v}");
        assert_eq!(m["content"], echo(text2), "{v}");
    })
    .await;

    // stream_options.include_usage.
    let b = bed.clone();
    s.run("include_usage", move || async move {
        let text = "count my tokens";
        let mut req = body(ECHO, text, true);
        req["stream_options"] = json!({"include_usage": true});
        let st = read_ok_stream(&b, req).await;
        assert_eq!(st.content, echo(text));
        assert_eq!(st.usage_chunks.len(), 1, "exactly one usage chunk");
        let last = st.chunks.last().unwrap();
        assert_eq!(
            last, &st.usage_chunks[0],
            "the usage chunk comes right before [DONE]"
        );
        assert_eq!(last["choices"], json!([]), "usage chunk has choices: []");
        let u = &last["usage"];
        assert_eq!(u["prompt_tokens"], mock_model::USAGE_PROMPT_TOKENS, "{u}");
        assert_eq!(
            u["completion_tokens"],
            mock_model::USAGE_COMPLETION_TOKENS,
            "{u}"
        );
        assert_eq!(u["total_tokens"], mock_model::USAGE_TOTAL_TOKENS, "{u}");
    })
    .await;

    // Keep-alive comments between slow chunks.
    let b = bed.clone();
    s.run("keep-alive comments", move || async move {
        let text = "wait for it [slow:2500] [chunks:2]";
        let st = read_ok_stream(&b, body(ECHO, text, true)).await;
        assert_eq!(st.content, echo(text));
        let idx: Vec<usize> = st
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.content().is_some())
            .map(|(i, _)| i)
            .collect();
        assert!(
            idx.len() >= 2,
            "two content chunks expected: {:?}",
            st.frames
        );
        let between = &st.frames[idx[0] + 1..idx[idx.len() - 1]];
        assert!(
            between.iter().any(Frame::is_comment),
            "no `:` comment line between chunks 2.5 s apart (keepalive_secs = 1); frames:\n{}",
            st.frames
                .iter()
                .map(|f| format!("{:?} {}", f.at, f.raw))
                .collect::<Vec<_>>()
                .join("\n")
        );
    })
    .await;

    // Client disconnect aborts the run upstream.
    let b = bed.clone();
    s.run("client disconnect aborts upstream", move || async move {
        let text = "a long answer nobody waits for [slow:500] [chunks:20]";
        let mut reader = open_stream(&b, body(ECHO, text, true)).await;
        let mut contents = 0;
        while contents < 2 {
            let f = reader
                .next(FRAME_WAIT)
                .await
                .expect("stream ended before 2 content chunks");
            if f.content().is_some() {
                contents += 1;
            }
        }
        let busy = busy_sessions(&b.opencode).await;
        assert!(
            !busy.is_empty(),
            "sanity: the run should be busy upstream mid-stream"
        );
        drop(reader);
        match wait_not_busy(&b.opencode, Duration::from_secs(1)).await {
            Ok(took) => eprintln!("upstream idle {took:?} after the disconnect"),
            Err(busy) => {
                panic!("1 s after the client left, sessions still busy upstream: {busy:?}")
            }
        }
    })
    .await;

    // Model failure mid-stream → error event, no [DONE], well within the deadline, no busy session.
    let b = bed.clone();
    s.run("model failure → error event", move || async move {
        let started = Instant::now();
        let mut reader = open_stream(&b, body(ECHO, "this breaks [fail]", true)).await;
        let frames = reader.rest(FRAME_WAIT).await;
        let took = started.elapsed();
        let datas: Vec<String> = frames.iter().filter_map(Frame::data).collect();
        assert!(
            !datas.iter().any(|d| d == "[DONE]"),
            "[DONE] after a failure: {datas:?}"
        );
        let last = datas.last().expect("no data at all");
        let v: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("last payload not JSON ({e}): {last}"));
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("last payload is not an error event: {v}"));
        assert!(
            msg.contains(FAILURE_MESSAGE),
            "error message {msg:?} lacks the provider's {FAILURE_MESSAGE:?}"
        );
        assert!(v["error"]["type"].is_string(), "error.type: {v}");
        schema::assert_valid("ErrorResponse", &v);
        assert!(
            took < Duration::from_secs(12),
            "failure took {took:?} (retry budget 1, deadline 20 s)"
        );
        if let Err(busy) = wait_not_busy(&b.opencode, Duration::from_secs(1)).await {
            panic!("after the failed stream, sessions still busy/retrying upstream: {busy:?}");
        }
    })
    .await;

    // 50 concurrent streams, one upstream event connection.
    let b = bed.clone();
    let p = proxy.clone();
    s.run(
        "50 concurrent streams, one event connection",
        move || async move {
            let (connected, opened) = hub_status(&b).await;
            assert!(connected, "hub not connected before the burst");
            assert_eq!(opened, 1, "connections_opened before the burst");
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let b = b.clone();
                    tokio::spawn(async move {
                        let text = format!("stream number {i} says hi [slow:150] [chunks:4]");
                        let st = read_ok_stream(&b, body(ECHO, &text, true)).await;
                        assert_eq!(
                            st.content,
                            echo(&text),
                            "stream {i} got someone else's text"
                        );
                        assert_eq!(st.finish_reason, "stop", "stream {i}");
                    })
                })
                .collect();
            // While they run.
            let mut samples = 0;
            while tasks.iter().any(|t| !t.is_finished()) && samples < 20 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (connected, opened) = hub_status(&b).await;
                assert!(connected, "hub disconnected during the burst");
                assert_eq!(opened, 1, "connections_opened during the burst");
                let (total, open) = p.event_connections();
                assert_eq!(
                    (total, open),
                    (1, 1),
                    "GET /event requests seen by the proxy (total, open) during the burst"
                );
                samples += 1;
            }
            assert!(
                samples > 0,
                "the burst ended before /status could be sampled"
            );
            let mut failures = Vec::new();
            for (i, t) in tasks.into_iter().enumerate() {
                if let Err(e) = t.await {
                    failures.push(format!("#{i}: {e}"));
                }
            }
            assert!(
                failures.is_empty(),
                "concurrent streams failed: {failures:?}"
            );
            let (connected, opened) = hub_status(&b).await;
            assert!(connected, "hub not connected after the burst");
            assert_eq!(opened, 1, "connections_opened after the burst");
            assert_eq!(
                p.event_connections(),
                (1, 1),
                "GET /event requests seen by the proxy (total, open) after the burst"
            );
        },
    )
    .await;

    // Event-stream loss: kill OpenCode mid-stream → prompt error event, no [DONE].
    let mut bed = match Arc::try_unwrap(bed) {
        Ok(b) => b,
        Err(_) => panic!("bed still shared"),
    };
    let started = Instant::now();
    let lost = async {
        let mut reader =
            open_stream(&bed, body(ECHO, "interrupted [slow:500] [chunks:10]", true)).await;
        loop {
            let f = reader
                .next(FRAME_WAIT)
                .await
                .expect("ended before any content");
            if f.content().is_some() {
                break;
            }
        }
        bed.opencode.kill().await;
        let killed = Instant::now();
        let rest = tokio::time::timeout(Duration::from_secs(10), reader.rest(FRAME_WAIT)).await;
        let ended = killed.elapsed();
        (rest, ended)
    };
    let (rest, ended) = lost.await;
    let mut s_kill = Vec::new();
    match rest {
        Err(_) => s_kill.push("stream still open 10 s after OpenCode was killed".to_string()),
        Ok(frames) => {
            let datas: Vec<String> = frames.iter().filter_map(Frame::data).collect();
            if datas.iter().any(|d| d == "[DONE]") {
                s_kill.push(format!("[DONE] after losing OpenCode: {datas:?}"));
            }
            let last_is_error = datas
                .last()
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .is_some_and(|v| v["error"]["message"].is_string());
            if !last_is_error {
                s_kill.push(format!(
                    "the stream did not end with an error event: {datas:?}"
                ));
            }
            if ended > Duration::from_secs(5) {
                s_kill.push(format!("error came {ended:?} after the kill (want < 5 s)"));
            }
        }
    }
    if s_kill.is_empty() {
        eprintln!(
            "[section] OpenCode killed mid-stream → error event: ok ({:?}, ended {ended:?} after kill)",
            started.elapsed()
        );
    } else {
        eprintln!("[section] OpenCode killed mid-stream: FAILED: {s_kill:?}");
        s.failures
            .push(format!("OpenCode killed mid-stream: {}", s_kill.join("; ")));
    }
    s.finish(&bed.gateway.logs());
}

// ---------------------------------------------------------------------------------------------
// Deadline: a model that sends nothing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn streaming_deadline_on_silent_model() {
    let bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().config("[prompt]\ndeadline_secs = 4\n"),
    )
    .await;
    // Warm OpenCode up directly (its first prompt is slow, and a busy machine could push a
    // warm-up through the gateway past the 4 s deadline).
    let sid = bed.opencode.create_session("warm up").await;
    let (status, v) = bed
        .opencode
        .post_json(
            &format!("/session/{sid}/message"),
            &json!({"parts": [{"type": "text", "text": "warm up"}],
                    "model": {"providerID": "mock", "modelID": "echo"}}),
        )
        .await;
    assert!(status.is_success(), "warm-up prompt: {status} {v}");
    let started = Instant::now();
    let mut reader = open_stream(&bed, body(ECHO, "say nothing [hang]", true)).await;
    // Headers go out when the run has started upstream.
    let run_started = started.elapsed();
    let frames = reader.rest(Duration::from_secs(20)).await;
    let took = started.elapsed();
    let after_start = frames.last().map_or(took, |f| f.at) - run_started;
    let datas: Vec<String> = frames.iter().filter_map(Frame::data).collect();
    assert!(
        !datas.iter().any(|d| d == "[DONE]"),
        "[DONE] after a timeout: {datas:?}"
    );
    let last = datas.last().expect("no data");
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    let err = &v["error"];
    assert!(
        err["message"].is_string(),
        "last payload is not an error: {v}"
    );
    schema::assert_valid("ErrorResponse", &v);
    let kind = format!("{} {}", err["type"], err["code"]);
    assert!(
        kind.contains("timeout"),
        "expected a timeout-typed error (504-style), got {v}"
    );
    // The deadline covers the whole request, from its arrival to the end of the stream.
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(6),
        "deadline 4 s: the request took {took:?} in all ({after_start:?} after the headers)"
    );
    if let Err(busy) = wait_not_busy(&bed.opencode, Duration::from_secs(2)).await {
        panic!("after the deadline, sessions still busy upstream: {busy:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown: a stream in flight at SIGTERM finishes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn stream_in_flight_at_sigterm_completes() {
    let mut bed = TestBed::start().await;
    let text = "drain me [slow:300] [chunks:6]";
    let resp = bed
        .chat_raw(json!({"model": "mock/echo", "stream": true,
                         "messages": [{"role": "user", "content": text}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut raw = String::new();
    // Wait for the first content chunk, so the run is under way upstream.
    while !raw.contains("\"content\":\"echo") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("first chunk in time")
            .expect("stream ended early")
            .expect("read");
        raw.push_str(&String::from_utf8_lossy(&chunk));
    }
    let reader = tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => raw.push_str(&String::from_utf8_lossy(&c)),
                Err(_) => break,
            }
        }
        raw
    });
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    let raw = reader.await.expect("reader");
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway must exit cleanly after draining: {status:?}"
    );
    let datas = support::parse_sse_data(&raw);
    assert_eq!(
        datas.last().map(String::as_str),
        Some("[DONE]"),
        "the in-flight stream must finish: {datas:?}"
    );
    let content: String = datas
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(content, format!("echo: {text}"));
}

/// A stream still running when the grace period ends is ended with an error event (not cut
/// off), its run is aborted upstream and its session deleted before the gateway exits.
#[tokio::test(flavor = "multi_thread")]
async fn stream_outliving_the_grace_period_is_ended_and_aborted() {
    let mut bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().config("shutdown_grace_secs = 1\n"),
    )
    .await;
    let resp = bed
        .chat_raw(json!({"model": "mock/echo", "stream": true,
                         "messages": [{"role": "user", "content": "long [slow:500] [chunks:30]"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut raw = String::new();
    while !raw.contains("\"content\":\"") || !raw.contains("echo") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("first chunk in time")
            .expect("stream ended early")
            .expect("read");
        raw.push_str(&String::from_utf8_lossy(&chunk));
    }
    let reader = tokio::spawn(async move {
        while let Some(Ok(c)) = body.next().await {
            raw.push_str(&String::from_utf8_lossy(&c));
        }
        raw
    });
    let started = Instant::now();
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    let raw = reader.await.expect("reader");
    let datas = support::parse_sse_data(&raw);
    let last = datas.last().expect("data");
    assert_ne!(last, "[DONE]", "{datas:?}");
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    schema::assert_valid("ErrorResponse", &v);
    // Upstream: nothing left running, and the run's session is gone.
    if let Err(busy) = wait_not_busy(&bed.opencode, Duration::from_secs(2)).await {
        panic!("still busy upstream after shutdown: {busy:?}");
    }
    let left = bed.opencode.sessions().await;
    assert!(left.is_empty(), "sessions left upstream: {left:?}");
}

/// A non-streaming client that gives up mid-run gets its run aborted upstream too.
#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_disconnect_aborts_the_run() {
    let bed = TestBed::start().await;
    let request = bed
        .client
        .post(bed.url("/v1/chat/completions"))
        .json(&json!({"model": "mock/echo",
                      "messages": [{"role": "user", "content": "give up [slow:500] [chunks:40]"}]}))
        .send();
    let pending = tokio::spawn(request);
    // Once the model is streaming (it would go on for ~20 s), the client gives up.
    assert!(
        bed.mock.wait_for_calls(1, Duration::from_secs(30)).await,
        "the run never reached the model"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    pending.abort();
    let _ = pending.await;
    if let Err(busy) = wait_not_busy(&bed.opencode, Duration::from_secs(2)).await {
        panic!("the run kept going after the client left: {busy:?}");
    }
}
