//! Self-tests of the integration-test bed (mock model, real OpenCode, schema validation).
//! The gateway itself is not tested here.
//!
//! Re-record the stream-adapter fixtures with
//! `cargo test --test it testbed_selftest::record -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::mock_model::{self, MockModel};
use support::opencode::{event_session_id, OpenCode};
use support::schema;
use support::user;

fn client() -> reqwest::Client {
    support::gateway::test_client()
}

async fn mock_chat(mock: &MockModel, body: Value) -> (reqwest::StatusCode, String) {
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

/// (reasoning text, content text, finish_reason, usage) of a mock SSE stream.
fn assemble(payloads: &[String]) -> (String, String, Option<String>, Option<Value>) {
    let mut reasoning = String::new();
    let mut content = String::new();
    let mut finish = None;
    let mut usage = None;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    for p in &payloads[..payloads.len() - 1] {
        let v: Value = serde_json::from_str(p).unwrap();
        schema::assert_valid("CreateChatCompletionStreamResponse", &v);
        if let Some(c) = v["choices"].get(0) {
            if let Some(r) = c["delta"]["reasoning_content"].as_str() {
                reasoning.push_str(r);
            }
            if let Some(t) = c["delta"]["content"].as_str() {
                content.push_str(t);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
        }
    }
    (reasoning, content, finish, usage)
}

/// The SSE `data:` parser: comments and other fields ignored, multi-line data joined, CRLF and a
/// trailing frame without a blank line handled.
#[test]
fn sse_parser() {
    let v = support::parse_sse_data(
        "data: a\n\n: comment\n\ndata:b\r\n\r\nevent: x\ndata: {\"x\":1}\ndata: y\n\ndata: [DONE]",
    );
    assert_eq!(v, vec!["a", "b", "{\"x\":1}\ny", "[DONE]"]);
}

/// The mock model's chunking loses nothing and makes the asked number of chunks.
#[test]
fn chunk_splitting_is_lossless() {
    for text in [
        "echo: hello",
        "echo: a b c d e f g",
        "x",
        "echo: héllo wörld [chunks:4]",
    ] {
        for n in [None, Some(1), Some(2), Some(5), Some(100)] {
            let parts = mock_model::split_chunks(text, n);
            assert_eq!(parts.concat(), text);
            if let Some(n) = n {
                assert_eq!(parts.len(), n.min(text.chars().count()));
            }
        }
    }
    assert_eq!(mock_model::split_chunks("echo: a b c d", None).len(), 3);
}

/// The mock model without streaming: a schema-valid echo of the last user message with fixed
/// usage, the `[count]` and `[length]` markers, request recording, and its model list.
#[tokio::test]
async fn mock_model_non_streaming() {
    let mock = MockModel::start().await;
    let (status, text) = mock_chat(
        &mock,
        json!({"model": "vision", "messages": [{"role": "system", "content": "sys"}, user("first"),
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}]}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    schema::assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(v["model"], "vision");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
    assert_eq!(mock.call_count(), 1);
    assert_eq!(mock.requests()[0]["model"], "vision");

    // [count] and [length]
    let (_, text) = mock_chat(
        &mock,
        json!({"model": "echo", "messages": [user("a"), {"role":"assistant","content":"b"}, user("c [count] [length]")]}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo: c [count] [length] (messages: 3)"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert!(mock.wait_for_calls(2, Duration::from_secs(1)).await);
    assert!(!mock.wait_for_calls(3, Duration::from_millis(50)).await);

    let (_, models) = (
        (),
        client()
            .get(format!("{}/models", mock.base_url()))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
    );
    schema::assert_valid("ListModelsResponse", &models);
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
}

/// Dropping the mock model closes its keep-alive connections too: "down" really means down.
#[tokio::test]
async fn mock_model_drop_closes_keepalive_connections() {
    let mock = MockModel::start().await;
    let c = client();
    let url = format!("{}/models", mock.base_url());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    drop(mock);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // the pooled keep-alive connection is gone too, and nothing listens any more
    assert!(c.get(&url).send().await.is_err());
}

/// The mock model's streams: plain, with reasoning/chunks/slow/length markers, `[fail]` (500)
/// and `[hang]` (headers, then nothing).
#[tokio::test]
async fn mock_model_streaming_modes() {
    let mock = MockModel::start().await;
    // plain
    let (status, text) = mock_chat(
        &mock,
        json!({"model": "echo", "stream": true, "messages": [user("hello there big world")]}),
    )
    .await;
    assert_eq!(status, 200);
    let payloads = support::parse_sse_data(&text);
    let (reasoning, content, finish, usage) = assemble(&payloads);
    assert_eq!(reasoning, "");
    assert_eq!(content, "echo: hello there big world");
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(usage.unwrap()["total_tokens"], 18);
    // role chunk + 3 content chunks + finish chunk + usage chunk + [DONE]
    assert_eq!(payloads.len(), 7, "{payloads:#?}");
    let usage_chunk: Value = serde_json::from_str(&payloads[5]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));

    // reasoning + chunks + slow + length
    let started = std::time::Instant::now();
    let (_, text) = mock_chat(
        &mock,
        json!({"model": "thinker", "stream": true,
               "messages": [user("q [reasoning] [chunks:4] [slow:50] [length]")]}),
    )
    .await;
    let payloads = support::parse_sse_data(&text);
    let (reasoning, content, finish, _) = assemble(&payloads);
    assert_eq!(
        reasoning,
        "thinking about q [reasoning] [chunks:4] [slow:50] [length]"
    );
    assert_eq!(content, "echo: q [reasoning] [chunks:4] [slow:50] [length]");
    assert_eq!(finish.as_deref(), Some("length"));
    assert!(started.elapsed() >= Duration::from_millis(150));
    let reasoning_chunks = payloads
        .iter()
        .filter(|p| p.contains("reasoning_content"))
        .count();
    let content_chunks = payloads
        .iter()
        .filter(|p| p.contains("\"content\":\"") && !p.contains("\"content\":\"\""))
        .count();
    assert!(reasoning_chunks >= 2);
    assert_eq!(content_chunks, 4);

    // [fail]
    let (status, text) = mock_chat(
        &mock,
        json!({"model": "echo", "stream": true, "messages": [user("x [fail]")]}),
    )
    .await;
    assert_eq!(status, 500);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "scripted model failure", "type": "server_error"}})
    );

    // [hang]: headers arrive, the body does not
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&json!({"model": "echo", "stream": true, "messages": [user("x [hang]")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    use futures::StreamExt;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), body.next())
            .await
            .is_err(),
        "[hang] must not send any body"
    );
    assert_eq!(mock.call_count(), 4);
}

/// The OpenAI schema check accepts valid chunks, completions, model lists and errors, and
/// rejects broken ones.
#[test]
fn schema_accepts_good_and_rejects_bad() {
    let good_chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mock/echo",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": null}]
    });
    schema::assert_valid("CreateChatCompletionStreamResponse", &good_chunk);
    let mut with_logprobs_null = good_chunk.clone();
    with_logprobs_null["choices"][0]["logprobs"] = Value::Null;
    schema::assert_valid("CreateChatCompletionStreamResponse", &with_logprobs_null);
    let usage_chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mock/echo",
        "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    });
    schema::assert_valid("CreateChatCompletionStreamResponse", &usage_chunk);
    let mut null_usage = good_chunk.clone();
    null_usage["usage"] = Value::Null;
    schema::assert_valid("CreateChatCompletionStreamResponse", &null_usage);

    let mut missing_id = good_chunk.clone();
    missing_id.as_object_mut().unwrap().remove("id");
    assert!(!schema::is_valid(
        "CreateChatCompletionStreamResponse",
        &missing_id
    ));
    let mut bad_finish = good_chunk.clone();
    bad_finish["choices"][0]["finish_reason"] = json!("done");
    assert!(!schema::is_valid(
        "CreateChatCompletionStreamResponse",
        &bad_finish
    ));
    let mut bad_object = good_chunk.clone();
    bad_object["object"] = json!("chat.completion");
    assert!(!schema::is_valid(
        "CreateChatCompletionStreamResponse",
        &bad_object
    ));
    let r = std::panic::catch_unwind(|| {
        schema::assert_valid("CreateChatCompletionStreamResponse", &missing_id)
    });
    assert!(r.is_err());

    let good_response = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "mock/echo",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                     "message": {"role": "assistant", "content": "hi", "refusal": null}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    });
    schema::assert_valid("CreateChatCompletionResponse", &good_response);
    let mut no_choices = good_response.clone();
    no_choices.as_object_mut().unwrap().remove("choices");
    assert!(!schema::is_valid(
        "CreateChatCompletionResponse",
        &no_choices
    ));

    schema::assert_valid(
        "ListModelsResponse",
        &json!({"object": "list", "data": [{"id": "mock/echo", "object": "model", "created": 0, "owned_by": "opencode"}]}),
    );
    assert!(!schema::is_valid(
        "Model",
        &json!({"id": "mock/echo", "object": "model"})
    ));
    schema::assert_valid(
        "ErrorResponse",
        &json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}}),
    );
    assert!(!schema::is_valid(
        "ErrorResponse",
        &json!({"error": {"message": "bad"}})
    ));
}

/// A real OpenCode in front of the mock model: healthy at the pinned version, lists the mock
/// models with their capabilities, answers a prompt in one model call, and sends the model what
/// the gateway relies on (streaming with usage, no tools).
#[tokio::test]
async fn opencode_lists_mock_models_and_answers() {
    let mock = MockModel::start().await;
    let oc = OpenCode::start(&mock.base_url()).await;

    let health = oc.get_json("/global/health").await;
    assert_eq!(health["healthy"], true);
    assert_eq!(health["version"], support::opencode::opencode_version());

    let providers = oc.get_json("/config/providers").await;
    let mock_provider = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "mock")
        .unwrap_or_else(|| panic!("no mock provider in {providers}"))
        .clone();
    let models = &mock_provider["models"];
    for id in ["echo", "vision", "thinker"] {
        assert_eq!(models[id]["id"], id, "{models}");
    }
    assert_eq!(models["vision"]["capabilities"]["input"]["image"], true);
    assert_eq!(models["vision"]["capabilities"]["attachment"], true);
    assert_eq!(models["echo"]["capabilities"]["input"]["image"], false);
    assert_eq!(models["thinker"]["capabilities"]["reasoning"], true);
    assert_eq!(models["echo"]["capabilities"]["reasoning"], false);
    assert_eq!(oc.get_json("/config").await["model"], "mock/echo");

    let sid = oc.create_session("selftest").await;
    let (status, v) = oc
        .post_json(
            &format!("/session/{sid}/message"),
            &json!({"parts": [{"type": "text", "text": "hello"}],
                    "model": {"providerID": "mock", "modelID": "echo"}, "tools": {"*": false}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["info"]["error"].is_null(), "{v}");
    let text: String = v["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "text")
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert_eq!(text, "echo: hello");
    assert_eq!(v["info"]["finish"], "stop");
    assert_eq!(
        mock.call_count(),
        1,
        "a titled session costs one model call"
    );
    let req = mock.last_request().unwrap();
    assert_eq!(req["model"], "echo");
    assert_eq!(mock_model::last_user_text(&req), "hello");
    // What OpenCode's @ai-sdk/openai-compatible provider sends.
    assert_eq!(req["stream"], true);
    assert_eq!(req["stream_options"]["include_usage"], true);
    assert!(
        req.get("tools").is_none(),
        "tools {{\"*\": false}} offers no tools"
    );
    eprintln!(
        "model request (messages elided): {}; last message: {}",
        json!({"model": req["model"], "max_tokens": req["max_tokens"], "stream": req["stream"],
               "stream_options": req["stream_options"]}),
        req["messages"].as_array().unwrap().last().unwrap()
    );

    let sessions = oc.sessions().await;
    assert!(sessions.iter().any(|s| s["id"] == sid.as_str()));
    let msgs = oc.messages(&sid).await;
    assert_eq!(msgs.len(), 2);
    assert!(
        !oc.session_status().await.contains_key(&sid) || {
            oc.session_status().await[&sid]["type"] == "idle"
        }
    );
}

/// A password-protected OpenCode wants basic auth (the bed's client has it); after a kill and a
/// restart it is back on the same port with its sessions.
#[tokio::test]
async fn opencode_password_and_restart() {
    let mock = MockModel::start().await;
    let mut oc = OpenCode::start_with(
        &mock.base_url(),
        support::OpenCodeOptions {
            password: Some("s3cret".into()),
            ..Default::default()
        },
    )
    .await;
    // the bed's client authenticates; a bare client does not
    assert_eq!(oc.get_json("/global/health").await["healthy"], true);
    let bare = client()
        .get(format!("{}/global/health", oc.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);

    let sid = oc.create_session("persist").await;
    let url = oc.url();
    oc.kill().await;
    assert!(client()
        .get(format!("{url}/global/health"))
        .send()
        .await
        .is_err());
    oc.restart().await;
    assert_eq!(oc.url(), url);
    assert!(oc.sessions().await.iter().any(|s| s["id"] == sid.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Fixture recorder: `cargo test --test it testbed_selftest::record -- --ignored`

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

enum Stop {
    /// until `session.idle` of the session (or timeout)
    Idle,
    /// record for exactly this long
    For(Duration),
}

/// Subscribe to `/event`, run `prompt` (which gets the session id), and record the session's events.
async fn record_one(
    oc: &OpenCode,
    name: &str,
    body: Value,
    stop: Stop,
    abort_after_deltas: Option<usize>,
) -> Vec<Value> {
    let mut events = oc.subscribe_events().await;
    let first = events
        .next(Duration::from_secs(10))
        .await
        .expect("server.connected");
    assert_eq!(first["type"], "server.connected");
    let sid = oc.create_session(&format!("fixture {name}")).await;
    let (status, v) = oc
        .post_json(&format!("/session/{sid}/prompt_async"), &body)
        .await;
    assert!(status.is_success(), "prompt_async -> {status}: {v}");

    let (limit, idle_stops) = match stop {
        Stop::Idle => (Duration::from_secs(60), true),
        Stop::For(d) => (d, false),
    };
    let deadline = std::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut deltas = 0usize;
    let mut aborted = false;
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        let Some(ev) = events.next(deadline - now).await else {
            break;
        };
        let ty = ev["type"].as_str().unwrap_or("").to_string();
        if ty == "server.heartbeat" || ty == "server.connected" {
            continue;
        }
        // Only this session's events (global ones such as plugin.added / catalog.updated,
        // which carry no session id, are dropped too).
        if event_session_id(&ev) != Some(sid.as_str()) {
            continue;
        }
        if ty == "message.part.delta" {
            deltas += 1;
        }
        out.push(ev);
        if let Some(n) = abort_after_deltas {
            if !aborted && deltas >= n {
                aborted = true;
                let (st, v) = oc
                    .post_json(&format!("/session/{sid}/abort"), &json!({}))
                    .await;
                eprintln!("[record {name}] abort -> {st} {v}");
            }
        }
        if idle_stops && ty == "session.idle" {
            // collect stragglers for a moment
            let extra_deadline = std::time::Instant::now() + Duration::from_millis(500);
            while let Some(ev) = events
                .next(extra_deadline.saturating_duration_since(std::time::Instant::now()))
                .await
            {
                if event_session_id(&ev) == Some(sid.as_str()) && ev["type"] != "server.heartbeat" {
                    out.push(ev);
                }
            }
            break;
        }
    }
    if !idle_stops {
        // stop the retry loop so it doesn't outlive the recording
        let _ = oc
            .post_json(&format!("/session/{sid}/abort"), &json!({}))
            .await;
    }
    let mut text = String::new();
    for ev in &out {
        text.push_str(&serde_json::to_string(ev).unwrap());
        text.push('\n');
    }
    std::fs::create_dir_all(fixture_dir()).unwrap();
    std::fs::write(fixture_dir().join(format!("{name}.jsonl")), text).unwrap();
    eprintln!("[record {name}] {} events", out.len());
    out
}

/// Re-records the adapter fixtures (`tests/fixtures/events/*.jsonl`) from a real OpenCode.
#[tokio::test]
#[ignore = "re-records tests/fixtures/events/*.jsonl (slow)"]
async fn record_event_fixtures() {
    let mock = MockModel::start().await;
    let oc = OpenCode::start(&mock.base_url()).await;
    let prompt = |text: &str, model: &str| {
        json!({"parts": [{"type": "text", "text": text}],
               "model": {"providerID": "mock", "modelID": model}, "tools": {"*": false}})
    };
    record_one(&oc, "text", prompt("hello", "echo"), Stop::Idle, None).await;
    record_one(
        &oc,
        "reasoning",
        prompt("why [reasoning]", "thinker"),
        Stop::Idle,
        None,
    )
    .await;
    record_one(
        &oc,
        "model_failure",
        prompt("boom [fail]", "echo"),
        Stop::For(Duration::from_secs(10)),
        None,
    )
    .await;
    record_one(
        &oc,
        "abort",
        prompt("one two three four five six [slow:300] [chunks:6]", "echo"),
        Stop::Idle,
        Some(2),
    )
    .await;
    record_one(
        &oc,
        "unknown_model",
        prompt("hello", "nope"),
        Stop::Idle,
        None,
    )
    .await;
    for (i, r) in mock.requests().iter().enumerate() {
        let mut r = r.clone();
        let msgs = r["messages"].take();
        let roles: Vec<&str> = msgs
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["role"].as_str()).collect())
            .unwrap_or_default();
        eprintln!(
            "[record] model request {i}: roles {roles:?}, last user {:?}, rest {}",
            mock_model::last_user_text(&json!({ "messages": msgs })),
            serde_json::to_string(&r).unwrap()
        );
    }
}

/// How long does OpenCode keep retrying a failing model? (`--ignored probe_fail --nocapture`)
#[tokio::test]
#[ignore = "manual probe (several minutes)"]
async fn probe_fail_retry_duration() {
    let mock = MockModel::start().await;
    let oc = OpenCode::start(&mock.base_url()).await;
    let mut events = oc.subscribe_events().await;
    let sid = oc.create_session("probe").await;
    let started = std::time::Instant::now();
    let (st, _) = oc
        .post_json(
            &format!("/session/{sid}/prompt_async"),
            &json!({"parts": [{"type": "text", "text": "x [fail]"}],
                    "model": {"providerID": "mock", "modelID": "echo"}, "tools": {"*": false}}),
        )
        .await;
    assert!(st.is_success());
    let limit = Duration::from_secs(
        std::env::var("PROBE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    while started.elapsed() < limit {
        let Some(ev) = events.next(Duration::from_secs(15)).await else {
            continue;
        };
        if event_session_id(&ev) != Some(sid.as_str()) {
            continue;
        }
        let ty = ev["type"].as_str().unwrap_or("");
        if ty != "session.updated" && ty != "session.diff" {
            eprintln!(
                "[probe] t={:>6.1}s calls={} {ty} {}",
                started.elapsed().as_secs_f64(),
                mock.call_count(),
                ev["properties"]
            );
        }
        if ty == "session.idle" {
            break;
        }
    }
    // what follows the idle
    let tail = events
        .collect_until(Duration::from_secs(2), |_| false)
        .await;
    for ev in tail
        .iter()
        .filter(|ev| event_session_id(ev) == Some(sid.as_str()))
    {
        eprintln!("[probe] after idle: {} {}", ev["type"], ev["properties"]);
    }
    let msgs = oc.messages(&sid).await;
    eprintln!(
        "[probe] last message info: {}",
        msgs.last().map(|m| m["info"].clone()).unwrap_or_default()
    );
    eprintln!(
        "[probe] end t={:.1}s calls={}",
        started.elapsed().as_secs_f64(),
        mock.call_count()
    );
}
