//! Hardening against hostile or broken clients and upstreams (issue 14): each test here would
//! fail without its fix.
//!
//! - the request-body deadline is total (a trickle cannot outlive it);
//! - an oversized `Content-Length` is a 413 at once, before any body;
//! - a connection that does not send its request head in time is closed;
//! - what hyper refuses by itself (malformed request line, header bytes, framing, a URL or
//!   headers too large) is answered in OpenAI's error shape;
//! - a malformed image data URL is a 400 naming it, end to end;
//! - 502 messages pass on the upstream's words but never its internals (Bun stack frames,
//!   `/$bunfs/…js` paths);
//! - memory comes back after a spike of very large requests (issue 23).
//!
//! The gateway binary runs against no OpenCode (`UNUSED_OPENCODE_URL`) or the fake one; the
//! 502 checks run in-process. No real OpenCode is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::fake_opencode::mock_models;
use support::gateway::UNUSED_OPENCODE_URL;
use support::raw_http::{addr_of, closed_within, exchange, read_response, RawResponse};
use support::sse::{final_error, parse_sse_data};
use support::{ask, assert_error, chat_body, streaming, Gateway, GatewayOptions};
use support::{ECHO, VISION};

/// Asserts a response in OpenAI's error shape: `status`, `content-type: application/json`, a
/// body valid as `ErrorResponse`, and (when given) its `code`.
#[track_caller]
fn assert_openai_error(r: &RawResponse, status: u16, code: Option<&str>, what: &str) {
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content-type {:?} (headers {:?})",
        r.header("content-type"),
        r.headers
    );
    let got = reqwest::StatusCode::from_u16(r.status).unwrap();
    assert_error(got, &r.body, status, code, None, what);
}

// ---------------------------------------------------------------------------------------------
// Request bodies: total deadline, size up front
// ---------------------------------------------------------------------------------------------

/// Sends `head`, then `piece` every second (30 times at most), and reads the answer (10 s at
/// most): the answer and whether the connection was closed within 3 s after it.
async fn trickle(addr: &str, head: String, piece: &'static [u8]) -> (RawResponse, bool) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(head.as_bytes()).await.expect("write head");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            if wr.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let r = read_response(&mut rd, started, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("a trickled body must be answered within 10 s: {e}"));
    let closed = closed_within(&mut rd, Duration::from_secs(3)).await;
    writer.abort();
    (r, closed)
}

/// The body deadline is total, not per read: a client declaring 100,000 bytes and sending one
/// every second (so no gap ever reaches the timeout) gets a 408 in OpenAI's shape when
/// `limits.body_timeout_secs = 3` have passed since its headers — not never — and the
/// connection is closed soon after. The same for a chunked body sent one 1-byte chunk a second,
/// and for `/v1/responses`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_at_the_total_deadline() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nbody_timeout_secs = 3\n"),
    )
    .await;
    let addr = addr_of(&gw.url());
    let head = |path: &str, framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             {framing}\r\n\r\n"
        )
    };
    let chat = "/v1/chat/completions";
    let (sized, chunked, responses) = tokio::join!(
        trickle(&addr, head(chat, "content-length: 100000"), b" "),
        trickle(
            &addr,
            head(chat, "transfer-encoding: chunked"),
            b"1\r\n \r\n"
        ),
        trickle(&addr, head("/v1/responses", "content-length: 100000"), b" "),
    );
    let cases = [
        (sized, "content-length"),
        (chunked, "chunked"),
        (responses, "/v1/responses"),
    ];
    for ((r, closed), what) in cases {
        assert_openai_error(&r, 408, Some("request_timeout"), what);
        assert!(
            r.elapsed >= Duration::from_millis(2500) && r.elapsed <= Duration::from_secs(6),
            "{what}: 408 after {:?}, expected about 3 s",
            r.elapsed
        );
        assert!(closed, "{what}: the connection stayed open after the 408");
    }
}

/// A `Content-Length` over `limits.max_body_bytes` (11 MiB against the default 10 MiB, and
/// 2^63, beyond any signed 64-bit length) with no body sent is a 413 in OpenAI's shape at once,
/// not after waiting for a body that never comes; and the bytes after the head are not taken
/// for a next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_content_length_is_413_at_once() {
    let gw = Gateway::start(UNUSED_OPENCODE_URL).await;
    let addr = addr_of(&gw.url());
    for length in ["11534336", "9223372036854775808"] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n"
        );
        let r = exchange(&addr, req.into_bytes(), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("content-length {length}: {e}"));
        let what = format!("content-length {length}");
        assert_openai_error(&r, 413, Some("request_too_large"), &what);
        assert!(
            r.elapsed < Duration::from_millis(500),
            "{what}: 413 after {:?}",
            r.elapsed
        );
    }
    // What follows the refused head is never read as a request of its own: the connection is
    // closed after the 413 (a request "smuggled" in the body gets no answer).
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    let smuggled =
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 11534336\r\n\r\n\
                    GET /livez HTTP/1.1\r\nhost: x\r\n\r\n";
    tcp.write_all(smuggled.as_bytes()).await.expect("write");
    let r = read_response(&mut tcp, Instant::now(), Duration::from_secs(5))
        .await
        .expect("the 413");
    assert_eq!(r.status, 413);
    let next = read_response(&mut tcp, Instant::now(), Duration::from_secs(2)).await;
    assert!(
        next.is_err(),
        "the body was answered as a request: {next:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Request heads: a deadline from the connection's start
// ---------------------------------------------------------------------------------------------

/// Sends `bytes` on a new connection and says whether the gateway closed it within `within`.
async fn closed_after_sending(addr: &str, bytes: &[u8], within: Duration) -> bool {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    closed_within(&mut tcp, within).await
}

/// With `limits.header_timeout_secs = 1`, a keep-alive connection that stays silent after its
/// first request is closed within a few seconds, as is one that starts a request line and
/// stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_at_the_header_deadline() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nheader_timeout_secs = 1\n"),
    )
    .await;
    let addr = addr_of(&gw.url());
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    tcp.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let r = read_response(&mut tcp, Instant::now(), Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(r.status, 200);
    let (idle, stalled) = tokio::join!(
        closed_within(&mut tcp, Duration::from_secs(4)),
        closed_after_sending(&addr, b"GET /livez HT", Duration::from_secs(4)),
    );
    assert!(
        idle,
        "an idle keep-alive connection stayed open 4 s into a 1 s header deadline"
    );
    assert!(
        stalled,
        "a stalled request line stayed open 4 s into a 1 s header deadline"
    );
}

/// With `limits.header_timeout_secs = 1`, a connection that sends nothing at all, or only the
/// first bytes of something (`P`, the start of HTTP/2's preface), is closed within a few
/// seconds too, like one stalling in a request line: else a client can hold any number of
/// connections open forever without sending a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_header_deadline() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nheader_timeout_secs = 1\n"),
    )
    .await;
    let addr = addr_of(&gw.url());
    let wait = Duration::from_secs(4);
    let (silent, p, preface) = tokio::join!(
        closed_after_sending(&addr, b"", wait),
        closed_after_sending(&addr, b"P", wait),
        closed_after_sending(&addr, b"PRI * HTTP/2.0\r\n", wait),
    );
    let open: Vec<&str> = [
        (silent, "nothing"),
        (p, "`P`"),
        (preface, "half an HTTP/2 preface"),
    ]
    .into_iter()
    .filter(|(closed, _)| !closed)
    .map(|(_, what)| what)
    .collect();
    assert!(
        open.is_empty(),
        "still open 4 s into a 1 s header deadline after sending: {open:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// What hyper refuses by itself
// ---------------------------------------------------------------------------------------------

/// Requests hyper refuses before routing get OpenAI-shaped answers (`content-type:
/// application/json`, a valid `ErrorResponse`), not hyper's empty canned ones: a space in the
/// path, a control byte in `Content-Type`, NUL in a header value, `Content-Length` `-1`, `+5`,
/// `0x10`, a list of lengths (`5, 5`, `5, 6`), and `Transfer-Encoding: identity` → 400; a
/// 70,000-character path → 414; a 1 MB header → 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_refuses_get_openai_errors() {
    let gw = Gateway::start(UNUSED_OPENCODE_URL).await;
    let addr = addr_of(&gw.url());
    let post = |extra: &str, body: &str| -> Vec<u8> {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{extra}\r\n{body}").into_bytes()
    };
    let long_path = format!("/v1/{}", "a".repeat(70_000));
    let big_header = "b".repeat(1 << 20);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a space in the path",
            b"GET /v1/mo dels HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a control byte in content-type",
            post(
                "content-type: application/\x01json\r\ncontent-length: 2\r\n",
                "{}",
            ),
            400,
        ),
        (
            "NUL in a header value",
            b"GET /livez HTTP/1.1\r\nhost: x\r\nx-note: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "content-length -1",
            post("content-length: -1\r\n", "{}"),
            400,
        ),
        (
            "content-length +5",
            post("content-length: +5\r\n", "{\"a\":1}"),
            400,
        ),
        (
            "content-length 0x10",
            post("content-length: 0x10\r\n", "{}"),
            400,
        ),
        (
            "content-length 5, 5",
            post("content-length: 5, 5\r\n", "{\"a\":1}"),
            400,
        ),
        (
            "content-length 5, 6",
            post("content-length: 5, 6\r\n", "{\"a\":1}"),
            400,
        ),
        (
            "transfer-encoding identity",
            post("transfer-encoding: identity\r\n", "{}"),
            400,
        ),
        (
            "a 70,000-character path",
            format!("GET {long_path} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes(),
            414,
        ),
        (
            "a 1 MB header",
            format!("GET /livez HTTP/1.1\r\nhost: x\r\nx-big: {big_header}\r\n\r\n").into_bytes(),
            431,
        ),
    ];
    let mut failures = Vec::new();
    for (what, bytes, status) in cases {
        let outcome = match exchange(&addr, bytes, Duration::from_secs(10)).await {
            Ok(r) => std::panic::catch_unwind(|| assert_openai_error(&r, status, None, what))
                .map_err(|_| format!("{what}: {} {:?} {}", r.status, r.headers, r.body)),
            Err(e) => Err(format!("{what}: {e}")),
        };
        if let Err(e) = outcome {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Validation end to end
// ---------------------------------------------------------------------------------------------

/// A 1x1 transparent PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// Through the gateway binary: an image data URL with a space after the comma is a 400 naming
/// the field, and nothing is sent upstream (no session, no prompt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_data_url_is_400_end_to_end() {
    let fake = Harness::fake().models(mock_models()).start().await;
    let gw = fake.gateway().await;
    let body = chat_body(
        VISION,
        vec![json!({"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64, {PNG_B64}")}}
        ]})],
    );
    let resp = support::gateway::test_client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&body)
        .send()
        .await
        .expect("POST");
    let (status, v) = support::api::read_json(resp).await;
    assert_error(
        status,
        &v,
        400,
        None,
        Some("messages[0].content[1].image_url.url"),
        "data URL with a space",
    );
    fake.assert_untouched("a malformed data URL");
}

// ---------------------------------------------------------------------------------------------
// 502s never expose OpenCode's internals
// ---------------------------------------------------------------------------------------------

/// A Bun error as OpenCode reports it: the message, then stack frames naming its bundle.
const BUN_TRACE: &str = "Error: bad image\n    at catch (/$bunfs/root/chunk-abc.js:1004:6414)\n    at processTicksAndRejections (native:7:39)";
/// The same, with the frame on the message's line.
const BUN_INLINE: &str = "Error: bad image at catch (/$bunfs/root/chunk-abc.js:1004:6414)";

/// Asserts a 502-style message keeps the upstream's words and none of its internals.
#[track_caller]
fn assert_scrubbed(message: &str, what: &str) {
    assert!(message.contains("bad image"), "{what}: {message:?}");
    for internal in ["$bunfs", ".js:", " at ", "chunk-abc"] {
        assert!(
            !message.contains(internal),
            "{what}: the message exposes {internal:?}: {message:?}"
        );
    }
}

/// `prompt_async` refused with OpenCode's JSON error whose message carries a Bun stack trace
/// (multi-line, and inline): the client's 502 keeps "bad image", not the frames.
#[tokio::test]
async fn a_stack_trace_in_an_upstream_error_body_is_not_passed_on() {
    let app = Harness::in_process().start().await;
    for trace in [BUN_TRACE, BUN_INLINE] {
        *app.fake.faults().prompt_error.lock().unwrap() = Some(trace.to_string());
        let r = app.chat(&ask(ECHO, "describe this")).await;
        r.assert_error(502, Some("upstream_error"), None, "prompt refused");
        assert_scrubbed(r.body["error"]["message"].as_str().unwrap(), trace);
    }
}

/// `prompt_async` refused with a plain-text body that is nothing but a stack trace: it is not
/// forwarded at all (the 502 names the HTTP status instead).
#[tokio::test]
async fn a_non_json_upstream_error_body_is_not_passed_on() {
    let app = Harness::in_process().start().await;
    *app.fake.faults().prompt_error_raw.lock().unwrap() = Some(BUN_TRACE.to_string());
    let r = app.chat(&ask(ECHO, "describe this")).await;
    r.assert_error(502, Some("upstream_error"), None, "plain-text error body");
    let message = r.body["error"]["message"].as_str().unwrap();
    for internal in ["$bunfs", ".js:", "chunk-abc", "bad image"] {
        assert!(!message.contains(internal), "{message:?}");
    }
}

/// A run failing with a `session.error` whose message carries a Bun stack trace: the
/// non-streaming 502, the stream's final error event, and the Responses API's 502 all keep
/// "bad image" and none of the frames.
#[tokio::test]
async fn a_stack_trace_in_a_session_error_is_not_passed_on() {
    let app = Harness::in_process().start().await;
    for trace in [BUN_TRACE, BUN_INLINE] {
        *app.fake.faults().run_error.lock().unwrap() =
            Some(json!({"name": "UnknownError", "data": {"message": trace}}));

        let r = app.chat(&ask(ECHO, &format!("chat {trace}"))).await;
        r.assert_error(502, Some("upstream_error"), None, "session.error");
        assert_scrubbed(r.body["error"]["message"].as_str().unwrap(), "chat");

        let r = app
            .chat(&streaming(ask(ECHO, &format!("stream {trace}"))))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let payloads = parse_sse_data(r.body.as_str().expect("an SSE body"));
        let event = final_error(&payloads);
        assert_scrubbed(event["error"]["message"].as_str().unwrap(), "stream");

        let body = json!({"model": ECHO, "input": format!("responses {trace}")});
        let r = app.post_raw("/v1/responses", body.to_string(), &[]).await;
        r.assert_error(502, None, None, "responses");
        assert_scrubbed(r.body["error"]["message"].as_str().unwrap(), "responses");
    }
    assert_eq!(app.fake.prompts().len(), 6, "every request reached the run");
}

// ---------------------------------------------------------------------------------------------
// Memory after spikes
// ---------------------------------------------------------------------------------------------

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A few very large requests (1,000 tools, a 5 MB schema, 50,000 input items — each parsed in
/// full before its 400) used to raise the gateway's memory from 30 to 235 MiB and leave it near
/// 150 MiB (malloc keeping freed memory). Now it comes back near where it started within
/// seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_comes_back_after_large_requests() {
    let fake = Harness::fake().models(mock_models()).start().await;
    let gw = fake.gateway().await;
    let pid = gw.pid().unwrap();
    let http = support::gateway::test_client();
    let send = |path: &'static str, body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{}{path}", gw.url());
        async move {
            let resp = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{path}");
        }
    };
    // Warm up the paths once, then take the baseline.
    send(
        "/v1/chat/completions",
        json!({"model": ECHO, "messages": []}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib(pid);

    let tool = |i: usize| {
        json!({"type": "function", "function": {"name": format!("tool_{i}"), "description": "x".repeat(200),
            "parameters": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}}})
    };
    let tools: Vec<_> = (0..1_000).map(tool).collect();
    let big_schema: serde_json::Map<String, serde_json::Value> = (0..60_000)
        .map(|i| {
            (
                format!("p{i}"),
                json!({"type": "string", "description": "y".repeat(40)}),
            )
        })
        .collect();
    let items: Vec<_> = (0..50_000)
        .map(|i| json!({"role": "user", "content": format!("item {i} {}", "z".repeat(50))}))
        .collect();
    let mut peak: f64 = 0.0;
    for _ in 0..3 {
        send(
            "/v1/chat/completions",
            json!({"model": ECHO, "messages": [{"role": "user", "content": "x"}],
            "tools": tools, "tool_choice": {"type": "function", "function": {"name": "missing"}}}),
        )
        .await;
        send(
            "/v1/chat/completions",
            json!({"model": ECHO, "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s",
                "schema": {"type": "object", "properties": big_schema}}}}),
        )
        .await;
        send(
            "/v1/responses",
            json!({"model": ECHO, "input": items, "temperature": "hot"}),
        )
        .await;
        peak = peak.max(rss_mib(pid));
    }
    let settled = {
        let mut now = rss_mib(pid);
        for _ in 0..30 {
            if now < before + 40.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            now = rss_mib(pid);
        }
        now
    };
    eprintln!("[memory] before {before:.1} MiB, peak {peak:.1} MiB, after {settled:.1} MiB");
    assert!(
        settled < before + 40.0,
        "memory stayed up after the spike: {before:.1} → {peak:.1} → {settled:.1} MiB"
    );
}
