//! Fault injection: the real gateway binary against the scriptable FAKE OpenCode of
//! `tests/it/support/fake_opencode.rs`, which fails on demand: 5xx answers, slow headers, a dropped
//! or unavailable `/event` stream, prompts that never produce events.
//!
//! No real OpenCode is needed; every test spawns its own fake and its own gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use support::api::{content, read_json};
use support::fake_opencode::{ALWAYS, FAKE_ANSWER};
use support::gateway::test_client;
use support::sse::{final_error, read_payloads, streamed_content};
use support::{
    ask, assistant, chat_body, eventually, streaming, user, FakeOpenCode, Gateway, ECHO,
};

mod event_stream;

/// No single request of these tests may take longer than this (so a hang fails, not stalls).
const REQUEST_CAP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

/// Sends a request, capped at [`REQUEST_CAP`] → (status, JSON body, elapsed).
async fn timed_json(rb: reqwest::RequestBuilder, what: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let fut = async {
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        read_json(resp).await
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
        .json(&ask(ECHO, text));
    timed_json(rb, "chat completion").await
}

/// Streaming chat → (status, is SSE, `data:` payloads (or the whole body if not SSE), elapsed).
async fn chat_stream(gw: &Gateway, text: &str) -> (StatusCode, bool, Vec<String>, Duration) {
    let started = Instant::now();
    let fut = async {
        let resp = test_client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&streaming(ask(ECHO, text)))
            .send()
            .await
            .expect("POST /v1/chat/completions (stream)");
        read_payloads(resp, REQUEST_CAP).await
    };
    let (status, is_sse, payloads) = tokio::time::timeout(REQUEST_CAP, fut)
        .await
        .unwrap_or_else(|_| panic!("streaming chat hung for {REQUEST_CAP:?}"));
    (status, is_sse, payloads, started.elapsed())
}

/// Asserts an OpenAI-shaped error with this status and code, showing the gateway's logs.
#[track_caller]
fn assert_error(gw: &Gateway, status: StatusCode, body: &Value, want: u16, code: &str) {
    support::assert_error(
        status,
        body,
        want,
        Some(code),
        None,
        format_args!("gateway logs:\n{}", gw.logs()),
    );
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
    let fake = Harness::fake().start().await;
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
    assert_eq!(ids, [ECHO], "{body}");
    assert_eq!(
        fake.seen().providers.load(SeqCst),
        2,
        "expected exactly one failed call and one retry"
    );
}

/// 1b. `POST /session` is retried: one 503 and the chat still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_create_503_once_is_retried() {
    let fake = Harness::fake().start().await;
    fake.faults().session_failures.store(1, SeqCst);
    let gw = fake.gateway().await;
    let (status, body, _) = chat(&gw, "hello").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one upstream 503 on session create must be retried: {body}\nlogs:\n{}",
        gw.logs()
    );
    assert_eq!(content(&body), FAKE_ANSWER);
    assert_eq!(fake.seen().session_creates.load(SeqCst), 2);
    assert_eq!(fake.prompts().len(), 1);
}

/// 1c. A continued conversation's turn goes straight to its remembered session, with no
/// `GET /session/:id` lookup first (a lookup costs OpenCode the CPU of a small request on every
/// turn); a remembered session deleted behind the gateway's back still answers, without delay:
/// its prompt's 404 sends the turn to a new session, seeded with the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continued_turns_skip_the_session_lookup_and_survive_a_vanished_session() {
    let fake = Harness::fake().start().await;
    let gw = fake.gateway().await;
    let turn = |texts: &[&str]| {
        let mut messages = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            if i > 0 {
                messages.push(assistant(FAKE_ANSWER));
            }
            messages.push(user(text));
        }
        let rb = test_client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&chat_body(ECHO, messages));
        async move { timed_json(rb, "chat completion").await }
    };
    let (status, body, _) = turn(&["one"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = turn(&["one", "two"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let prompts = fake.prompts();
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    assert_eq!(prompts[0], prompts[1], "turn 2 continues turn 1's session");
    assert_eq!(
        fake.seen().session_gets.load(SeqCst),
        0,
        "a continued turn must not look its session up first"
    );

    // Delete the remembered session behind the gateway's back: turn 3 still answers.
    let resp = test_client()
        .delete(format!("{}/session/{}", fake.url(), prompts[1]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let (status, body, took) = turn(&["one", "two", "three"]).await;
    assert_eq!(status, StatusCode::OK, "{body}\nlogs:\n{}", gw.logs());
    assert_eq!(content(&body), FAKE_ANSWER);
    // At once: the vanished session's claim is let go before the turn asks again, rather than
    // counted as a busy history that the turn would wait (seconds) to fork.
    assert!(took < Duration::from_secs(2), "the fallback took {took:?}");
    let prompts = fake.prompts();
    assert_eq!(prompts.len(), 4, "{prompts:?}");
    assert_eq!(
        prompts[2], prompts[1],
        "turn 3 tried the remembered session"
    );
    assert_ne!(prompts[3], prompts[1], "then ran in a new one");
    assert_eq!(fake.seen().session_creates.load(SeqCst), 2);
}

/// 2. Prompts are never retried: a 500 from `prompt_async` is a 502 carrying OpenCode's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_500_is_not_retried() {
    let fake = Harness::fake().start().await;
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
    let fake = Harness::fake().start().await;
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
    let fake = Harness::fake().start().await;
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
