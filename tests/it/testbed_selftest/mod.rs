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

mod mock_and_schema;
mod recording;

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
