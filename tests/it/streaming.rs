//! Streaming (`stream: true`) behaviour of `POST /v1/chat/completions`, end to end against a real
//! `opencode serve` and the scripted mock model. Two beds, each one OpenCode shared by named
//! scenarios (see `tests/it/support/scenarios.rs`), running in parallel:
//! - [`streaming_through_one_event_connection`]: the OpenAI stream shape, real incremental
//!   streaming, reasoning, usage, keep-alives, client disconnects, failures, 50 concurrent
//!   streams over one upstream event connection, and OpenCode dying mid-stream;
//! - [`runs_end_when_clients_leave_deadlines_pass_or_the_gateway_stops`]: a non-streaming
//!   client leaving, a silent model hitting the deadline, and graceful shutdown.
//!
//! The stream adapter alone (no OpenCode) is tested on recorded events in
//! `tests/it/adapter_fixtures.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::gateway::FRAME_WAIT;
use support::mock_model::{self, FAILURE_MESSAGE};
use support::scenarios::scenario;
use support::schema;
use support::sse::{datas, final_error, streamed_content, Frame};
use support::{ask, streaming, ECHO, THINKER};
use support::{Gateway, GatewayOptions, MockModel, OpenCode, OpenCodeOptions, Scenarios, TestBed};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn echo(text: &str) -> String {
    format!("echo: {text}")
}

fn reasoning_of(text: &str) -> String {
    mock_model::expected_reasoning(&json!({"messages": [{"role": "user", "content": text}]}))
}

/// Panics unless no session is busy or retrying upstream within `within`.
async fn assert_not_busy(oc: &OpenCode, within: Duration, after: &str) {
    match oc.wait_not_busy(within).await {
        Ok(took) => eprintln!("upstream idle {took:?} after {after}"),
        Err(busy) => panic!("{within:?} after {after}, sessions still busy upstream: {busy:?}"),
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
    /// Request lines of an event subscription: `GET /global/event` or `GET /event` (with or
    /// without a query, not `/events`).
    fn event_requests(&self) -> usize {
        let s = &self.sent;
        [b"GET /event".as_slice(), b"GET /global/event".as_slice()]
            .iter()
            .map(|pat| {
                (0..s.len())
                    .filter(|&i| {
                        s[i..].starts_with(pat)
                            && (i == 0 || s[..i].ends_with(b"\r\n"))
                            && matches!(s.get(i + pat.len()), Some(b' ') | Some(b'?'))
                    })
                    .count()
            })
            .sum()
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
// One bed, the gateway behind a logging proxy
// ---------------------------------------------------------------------------------------------

const MAIN_CONFIG: &str =
    "[prompt]\nmax_model_retries = 1\ndeadline_secs = 20\nkeepalive_secs = 1\n";

/// Streams through one OpenCode, the gateway reaching it through a proxy that counts its
/// `GET /event` connections (retry budget 1, deadline 20 s, keep-alive every second).
#[tokio::test(flavor = "multi_thread")]
async fn streaming_through_one_event_connection() {
    let mock = MockModel::start().await;
    let opencode = OpenCode::start_with(&mock.base_url(), OpenCodeOptions::default()).await;
    let proxy = Proxy::start(opencode.port()).await;
    let gateway =
        Gateway::start_with(&proxy.url(), GatewayOptions::default().config(MAIN_CONFIG)).await;
    let mut bed = TestBed::assemble(mock, opencode, gateway);
    let mut s = Scenarios::new();
    scenario!(s, basic_stream_shape(&bed));
    scenario!(s, finish_reason_length(&bed));
    scenario!(s, stream_equals_non_stream(&bed));
    scenario!(s, real_streaming(&bed));
    scenario!(s, reasoning_content(&bed));
    scenario!(s, include_usage(&bed));
    scenario!(s, keepalive_comments(&bed));
    scenario!(s, client_disconnect_aborts(&bed));
    scenario!(s, model_failure_error_event(&bed));
    scenario!(s, fifty_streams(&bed, &proxy));
    // Last: it kills OpenCode.
    scenario!(s, opencode_killed_mid_stream(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// The basic OpenAI stream shape ([`support::sse::check_ok_stream`]), `finish_reason` `stop`, no
/// usage unless asked for, no reasoning from a plain model.
async fn basic_stream_shape(bed: &TestBed) {
    let text = "hello stream";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
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
}

/// The model's `length` finish reason ends the stream.
async fn finish_reason_length(bed: &TestBed) {
    let text = "cut short [length]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    assert_eq!(st.finish_reason, "length");
    assert_eq!(st.content, echo(text));
}

/// Streamed content equals non-streamed content, both exactly the model's reply (the user's own
/// text never comes back as a delta).
async fn stream_equals_non_stream(bed: &TestBed) {
    let text = "same answer both ways [chunks:4]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    let (status, v) = bed.chat(ask(ECHO, text)).await;
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
}

/// Several chunks, not one blob; with a slow model the first chunk arrives well before the last.
async fn real_streaming(bed: &TestBed) {
    let text = "one two three four five six seven [chunks:5]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    assert_eq!(st.content, echo(text));
    assert!(
        st.content_pieces.len() >= 3,
        "content arrived in {} piece(s): {:?}",
        st.content_pieces.len(),
        st.content_pieces
    );

    let text = "slowly but surely we get there [slow:300] [chunks:5]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
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
}

/// Reasoning arrives as `delta.reasoning_content` (in pieces, before the answer, never mixed
/// into a content chunk) and as `message.reasoning_content` without streaming.
async fn reasoning_content(bed: &TestBed) {
    let text = "ponder deeply [reasoning]";
    let st = bed.read_ok_stream(streaming(ask(THINKER, text))).await;
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
    let (status, v) = bed.chat(ask(THINKER, text2)).await;
    assert_eq!(status, 200, "{v}");
    schema::assert_valid("CreateChatCompletionResponse", &v);
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], reasoning_of(text2), "{v}");
    assert_eq!(m["content"], echo(text2), "{v}");
}

/// `stream_options.include_usage`: exactly one usage chunk (`choices: []`, the model's
/// usage), right before `[DONE]`.
async fn include_usage(bed: &TestBed) {
    let text = "count my tokens";
    let mut req = streaming(ask(ECHO, text));
    req["stream_options"] = json!({"include_usage": true});
    let st = bed.read_ok_stream(req).await;
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
}

/// Keep-alive comments go out while the model is silent between chunks.
async fn keepalive_comments(bed: &TestBed) {
    let text = "wait for it [slow:2500] [chunks:2]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
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
}

/// A streaming client that disconnects mid-stream gets its run aborted upstream within 1 s.
async fn client_disconnect_aborts(bed: &TestBed) {
    let text = "a long answer nobody waits for [slow:500] [chunks:20]";
    let mut reader = bed.open_stream(streaming(ask(ECHO, text))).await;
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
    let busy = bed.opencode.busy_sessions().await;
    assert!(
        !busy.is_empty(),
        "sanity: the run should be busy upstream mid-stream"
    );
    drop(reader);
    assert_not_busy(&bed.opencode, Duration::from_secs(1), "the client left").await;
}

/// A failing model mid-stream: an error event carrying the provider's message, no `[DONE]`, well
/// within the deadline, and no session left busy.
async fn model_failure_error_event(bed: &TestBed) {
    let started = Instant::now();
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "this breaks [fail]")))
        .await;
    let frames = reader.rest(FRAME_WAIT).await;
    let took = started.elapsed();
    let v = final_error(&datas(&frames));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(FAILURE_MESSAGE),
        "error message {msg:?} lacks the provider's {FAILURE_MESSAGE:?}"
    );
    assert!(v["error"]["type"].is_string(), "error.type: {v}");
    assert!(
        took < Duration::from_secs(12),
        "failure took {took:?} (retry budget 1, deadline 20 s)"
    );
    assert_not_busy(&bed.opencode, Duration::from_secs(1), "the failed stream").await;
}

/// 50 concurrent streams each get their own answer, over one upstream event connection (the
/// hub's: `/status` and the proxy agree) before, during and after the burst.
async fn fifty_streams(bed: &TestBed, proxy: &Proxy) {
    let (connected, opened) = hub_status(bed).await;
    assert!(connected, "hub not connected before the burst");
    assert_eq!(opened, 1, "connections_opened before the burst");
    let done = AtomicBool::new(false);
    let streams = futures::future::join_all((0..50).map(|i| {
        let one = async move {
            let text = format!("stream number {i} says hi [slow:150] [chunks:4]");
            let st = bed.read_ok_stream(streaming(ask(ECHO, &text))).await;
            assert_eq!(
                st.content,
                echo(&text),
                "stream {i} got someone else's text"
            );
            assert_eq!(st.finish_reason, "stop", "stream {i}");
        };
        AssertUnwindSafe(one).catch_unwind()
    }));
    let burst = async {
        let results = streams.await;
        done.store(true, Ordering::SeqCst);
        results
    };
    // While they run.
    let sample = async {
        let mut samples = 0;
        while !done.load(Ordering::SeqCst) && samples < 20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (connected, opened) = hub_status(bed).await;
            assert!(connected, "hub disconnected during the burst");
            assert_eq!(opened, 1, "connections_opened during the burst");
            assert_eq!(
                proxy.event_connections(),
                (1, 1),
                "GET /event requests seen by the proxy (total, open) during the burst"
            );
            samples += 1;
        }
        samples
    };
    let (results, samples) = tokio::join!(burst, sample);
    assert!(
        samples > 0,
        "the burst ended before /status could be sampled"
    );
    let failures: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| format!("#{i}"))
        .collect();
    assert!(
        failures.is_empty(),
        "concurrent streams failed: {failures:?}"
    );
    let (connected, opened) = hub_status(bed).await;
    assert!(connected, "hub not connected after the burst");
    assert_eq!(opened, 1, "connections_opened after the burst");
    assert_eq!(
        proxy.event_connections(),
        (1, 1),
        "GET /event requests seen by the proxy (total, open) after the burst"
    );
}

/// OpenCode killed mid-stream (its event stream lost): the stream ends with an error event, no
/// `[DONE]`, within 5 s.
async fn opencode_killed_mid_stream(bed: &mut TestBed) {
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "interrupted [slow:500] [chunks:10]")))
        .await;
    reader.until_content(FRAME_WAIT).await;
    bed.opencode.kill().await;
    let killed = Instant::now();
    let frames = tokio::time::timeout(Duration::from_secs(10), reader.rest(FRAME_WAIT))
        .await
        .expect("stream still open 10 s after OpenCode was killed");
    let ended = killed.elapsed();
    final_error(&datas(&frames));
    assert!(
        ended < Duration::from_secs(5),
        "error came {ended:?} after the kill (want < 5 s)"
    );
}

// ---------------------------------------------------------------------------------------------
// Runs that end early: clients leaving, deadlines, shutdown
// ---------------------------------------------------------------------------------------------

/// How runs end other than by finishing, on one OpenCode: a non-streaming client leaving, a
/// silent model hitting the deadline, and graceful shutdown (a stream in flight at SIGTERM
/// finishes; one outliving the grace period is ended and aborted). Scenarios that need other
/// settings replace the bed's gateway.
#[tokio::test(flavor = "multi_thread")]
async fn runs_end_when_clients_leave_deadlines_pass_or_the_gateway_stops() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(s, non_streaming_disconnect_aborts(&bed));
    scenario!(s, stream_in_flight_at_sigterm_completes(&mut bed));
    scenario!(s, deadline_on_a_silent_model(&mut bed));
    scenario!(s, stream_outliving_the_grace_period(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// Replaces the bed's gateway (the old one is killed) with one using `config`.
async fn replace_gateway(bed: &mut TestBed, config: &str) {
    bed.gateway = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config(config),
    )
    .await;
}

/// A non-streaming client that gives up mid-run gets its run aborted upstream too.
async fn non_streaming_disconnect_aborts(bed: &TestBed) {
    let before = bed.mock.call_count();
    let request = bed
        .client
        .post(bed.url("/v1/chat/completions"))
        .json(&ask(ECHO, "give up [slow:500] [chunks:40]"))
        .send();
    let pending = tokio::spawn(request);
    // Once the model is streaming (it would go on for ~20 s), the client gives up.
    assert!(
        bed.mock
            .wait_for_calls(before + 1, Duration::from_secs(30))
            .await,
        "the run never reached the model"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    pending.abort();
    let _ = pending.await;
    if let Err(busy) = bed.opencode.wait_not_busy(Duration::from_secs(2)).await {
        panic!("the run kept going after the client left: {busy:?}");
    }
}

/// A stream in flight at SIGTERM finishes (to `[DONE]`, with all its content) and the gateway
/// then exits cleanly.
async fn stream_in_flight_at_sigterm_completes(bed: &mut TestBed) {
    let text = "drain me [slow:300] [chunks:6]";
    let mut reader = bed.open_stream(streaming(ask(ECHO, text))).await;
    // Wait for the first content chunk, so the run is under way upstream.
    let mut frames = reader.until_content(FRAME_WAIT).await;
    let rest = tokio::spawn(async move { reader.rest(FRAME_WAIT).await });
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    frames.extend(rest.await.expect("reader"));
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway must exit cleanly after draining: {status:?}"
    );
    let datas = datas(&frames);
    assert_eq!(
        datas.last().map(String::as_str),
        Some("[DONE]"),
        "the in-flight stream must finish: {datas:?}"
    );
    assert_eq!(streamed_content(&datas), echo(text));
}

/// A model that sends nothing: the 4 s deadline (which covers the whole request, from its
/// arrival to the end of the stream) ends the stream with a timeout error event and no
/// `[DONE]`, and nothing stays busy upstream.
async fn deadline_on_a_silent_model(bed: &mut TestBed) {
    replace_gateway(bed, "[prompt]\ndeadline_secs = 4\n").await;
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
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "say nothing [hang]")))
        .await;
    // Headers go out when the run has started upstream.
    let run_started = started.elapsed();
    let frames = reader.rest(Duration::from_secs(20)).await;
    let took = started.elapsed();
    let after_start = frames.last().map_or(took, |f| f.at) - run_started;
    let v = final_error(&datas(&frames));
    let kind = format!("{} {}", v["error"]["type"], v["error"]["code"]);
    assert!(
        kind.contains("timeout"),
        "expected a timeout-typed error (504-style), got {v}"
    );
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(6),
        "deadline 4 s: the request took {took:?} in all ({after_start:?} after the headers)"
    );
    assert_not_busy(&bed.opencode, Duration::from_secs(2), "the deadline").await;
}

/// A stream still running when the grace period ends is ended with an error event (not cut
/// off), its run is aborted upstream and its session deleted before the gateway exits.
async fn stream_outliving_the_grace_period(bed: &mut TestBed) {
    // Its own session title tells its sessions from earlier gateways'.
    replace_gateway(
        bed,
        "shutdown_grace_secs = 1\n[prompt]\nsession_title = \"grace\"\n",
    )
    .await;
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "long [slow:500] [chunks:30]")))
        .await;
    let mut frames = reader.until_content(FRAME_WAIT).await;
    let rest = tokio::spawn(async move { reader.rest(FRAME_WAIT).await });
    let started = Instant::now();
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    frames.extend(rest.await.expect("reader"));
    let v = final_error(&datas(&frames));
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    // Upstream: nothing left running, and the run's session is gone.
    assert_not_busy(&bed.opencode, Duration::from_secs(2), "shutdown").await;
    let left = bed.opencode.session_ids_titled("grace").await;
    assert!(left.is_empty(), "sessions left upstream: {left:?}");
}
