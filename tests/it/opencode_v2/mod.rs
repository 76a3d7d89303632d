//! The gateway in front of OpenCode 2.x (`@opencode/cli` at `OPENCODE_VERSION`), end to
//! end: the real 2.x server, its provider pointed at the scripted mock model. The tests share
//! one bed (a fresh conversation per test); what needs its own server starts one.
//!
//! What 2.x support has today, and what it lacks, is in the README's "OpenCode versions".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::support;
use support::harness::Harness;
use support::mock_model::{content_text, turns_of};
use support::{BedPool, TestBed, ECHO, THINKER};

static V2: BedPool<TestBed> = BedPool::new();

fn on_v2<F, TF>(test: F)
where
    F: FnOnce(&'static TestBed) -> TF,
    TF: std::future::Future<Output = ()>,
{
    V2.run(|| Harness::real().v2().start(), test)
}

/// A question no other test asks (the mock's requests are told apart by it).
fn unique(what: &str) -> String {
    format!("{what} {}", uuid::Uuid::new_v4().simple())
}

/// The mock's requests whose last user text contains `marker`.
fn model_calls_with(bed: &TestBed, marker: &str) -> Vec<Value> {
    bed.mock
        .requests()
        .into_iter()
        .filter(|r| {
            turns_of(r)
                .iter()
                .any(|(role, text)| role == "user" && text.contains(marker))
        })
        .collect()
}

#[test]
fn health_status_and_metrics_name_the_opencode_version() {
    on_v2(|bed| async move {
        let version = support::opencode_v2_version();
        let (code, health) = bed.get("/health").await;
        assert_eq!(code, 200, "{health}");
        assert_eq!(health["opencode"]["version"], version, "{health}");
        assert_eq!(health["opencode"]["api"], "2.x", "{health}");
        let (_, status) = bed.get("/status").await;
        assert_eq!(
            status["upstreams"][0]["opencode"],
            json!({"api": "2.x", "version": version}),
            "{status}"
        );
        let metrics = bed
            .client
            .get(bed.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("portatek_upstream_opencode_info")
                    && l.contains("api=\"2.x\"")
                    && l.contains(&format!("version=\"{version}\""))),
            "{metrics}"
        );
    })
}

#[test]
fn chat_completions_answer_with_usage_streamed_or_not() {
    on_v2(|bed| async move {
        let question = unique("hello v2");
        let (code, body) = bed
            .chat(json!({"model": ECHO, "messages": [{"role": "user", "content": question}]}))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("echo: {question}"),
            "{body}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert!(
            body["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
            "{body}"
        );

        let question = unique("stream v2 [chunks:4]");
        let streamed = bed
            .read_ok_stream(json!({
                "model": ECHO, "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": question}]
            }))
            .await;
        assert_eq!(streamed.content, format!("echo: {question}"));
        assert_eq!(
            streamed.usage_chunks.len(),
            1,
            "include_usage gives a usage chunk"
        );
    })
}

#[test]
fn reasoning_streams_as_reasoning_content() {
    on_v2(|bed| async move {
        let question = unique("[reasoning] think v2");
        let (code, body) = bed
            .chat(json!({"model": THINKER, "messages": [{"role": "user", "content": question}]}))
            .await;
        assert_eq!(code, 200, "{body}");
        let reasoning = body["choices"][0]["message"]["reasoning_content"]
            .as_str()
            .unwrap_or("");
        assert!(reasoning.starts_with("thinking about"), "{body}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("echo: {question}")
        );
    })
}

#[test]
fn a_follow_up_continues_the_session_with_only_the_new_turn() {
    on_v2(|bed| async move {
        let first = unique("first turn");
        let (code, a) = bed
            .chat(json!({"model": ECHO, "messages": [{"role": "user", "content": first}]}))
            .await;
        assert_eq!(code, 200, "{a}");
        let answer = a["choices"][0]["message"]["content"].clone();
        let second = unique("second turn [count]");
        let (code, b) = bed
            .chat(json!({"model": ECHO, "messages": [
                {"role": "user", "content": first},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": second}
            ]}))
            .await;
        assert_eq!(code, 200, "{b}");
        let calls = model_calls_with(bed, &second);
        assert_eq!(calls.len(), 1, "one model call for the second turn");
        let turns = turns_of(&calls[0]);
        let users: Vec<&String> = turns
            .iter()
            .filter(|(r, _)| r == "user")
            .map(|(_, t)| t)
            .collect();
        // The session kept the first turn: it was not seeded again as text.
        assert_eq!(
            users.iter().filter(|t| t.contains(&first)).count(),
            1,
            "{turns:?}"
        );
        assert!(
            !users
                .iter()
                .any(|t| t.contains(&first) && t.contains(&second)),
            "the new turn alone: {turns:?}"
        );
        let sessions = bed.opencode.get_json("/api/session?limit=100").await;
        let titled: Vec<&Value> = sessions["data"].as_array().unwrap().iter().collect();
        assert!(!titled.is_empty());
    })
}

#[test]
fn the_system_prompt_reaches_the_model_and_a_change_takes_effect() {
    on_v2(|bed| async move {
        let q1 = unique("sys one");
        let system_a = unique("You are pirate A.");
        let (code, a) = bed
            .chat(json!({"model": ECHO, "messages": [
                {"role": "system", "content": system_a},
                {"role": "user", "content": q1}
            ]}))
            .await;
        assert_eq!(code, 200, "{a}");
        let seen = |r: &Value, text: &str| {
            r["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| content_text(&m["content"]).contains(text))
        };
        let calls = model_calls_with(bed, &q1);
        assert!(
            calls.iter().any(|r| seen(r, &system_a)),
            "system text A reached the model: {calls:?}"
        );
        let system_b = unique("You are pirate B.");
        let q2 = unique("sys two");
        let (code, b) = bed
            .chat(json!({"model": ECHO, "messages": [
                {"role": "system", "content": system_b},
                {"role": "user", "content": q1},
                {"role": "assistant", "content": a["choices"][0]["message"]["content"]},
                {"role": "user", "content": q2}
            ]}))
            .await;
        assert_eq!(code, 200, "{b}");
        let calls = model_calls_with(bed, &q2);
        assert!(
            calls.iter().any(|r| seen(r, &system_b)),
            "the changed system text reached the model: {calls:?}"
        );
    })
}

/// 2.x has no structured output: the gateway offers the schema as a tool and takes the call's
/// arguments as the answer, checked; text instead of the call is an error, never the answer.
#[test]
fn structured_outputs_come_through_the_gateways_answer_tool() {
    on_v2(|bed| async move {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
        let format =
            json!({"type": "json_schema", "json_schema": {"name": "place", "schema": schema}});
        let marker = unique("structured");
        let (code, body) = bed
            .chat(json!({"model": ECHO, "response_format": format,
                "messages": [{"role": "user", "content": format!(r#"{marker} [call:StructuredOutput:{{"city":"Oslo"}}]"#)}]}))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["choices"][0]["message"]["content"], r#"{"city":"Oslo"}"#,
            "{body}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert!(
            body["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
            "the answer's step counts: {body}"
        );
        let calls = model_calls_with(bed, &marker);
        assert_eq!(
            calls.len(),
            1,
            "the response ends with the answer: OpenCode is interrupted"
        );
        let offered: Vec<&str> = calls[0]["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str())
            .collect();
        assert!(
            offered.len() == 1 && offered[0].ends_with("_StructuredOutput"),
            "only the answer tool is offered: {offered:?}"
        );
        assert_eq!(calls[0]["tools"][0]["function"]["parameters"], schema);

        let (code, body) = bed
            .chat(json!({"model": ECHO, "response_format": format,
                "messages": [{"role": "user", "content": format!(r#"{} [call:StructuredOutput:{{"town":1}}]"#, unique("bad"))}]}))
            .await;
        // 2.x checks a tool's arguments against its schema and tells the model, which here
        // answers in text then: an error, never the text.
        assert_eq!(code, 502, "a value off the schema is an error: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("structured output"),
            "{body}"
        );

        let (code, body) = bed
            .chat(
                json!({"model": ECHO, "response_format": {"type": "json_object"},
                "messages": [{"role": "user", "content": unique("just text")}]}),
            )
            .await;
        assert_eq!(code, 502, "text instead of the answer is an error: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("structured output"),
            "{body}"
        );
    })
}

#[test]
fn routes_2x_dropped_answer_501_naming_the_version() {
    on_v2(|bed| async move {
        let (code, body) = bed.get("/v1/lsp").await;
        assert_eq!(code, 501, "{body}");
        assert_eq!(body["error"]["code"], "not_supported_by_upstream", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(support::opencode_v2_version()),
            "{body}"
        );
        let (code, agents) = bed.get("/v1/agents").await;
        assert_eq!(code, 200, "{agents}");
        assert!(
            agents.to_string().contains("build"),
            "2.x's agents are listed: {agents}"
        );
        let (code, models) = bed.get("/v1/models").await;
        assert_eq!(code, 200, "{models}");
        assert!(
            models["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == ECHO),
            "{models}"
        );
    })
}

#[test]
fn a_deleted_conversation_leaves_no_session_upstream() {
    on_v2(|bed| async move {
        let question = unique("session api");
        let (code, created) = bed.post("/v1/sessions", &json!({})).await;
        assert_eq!(code, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let resp = bed
            .client
            .post(bed.url("/v1/chat/completions"))
            .header("x-session-id", &id)
            .json(&json!({"model": ECHO, "messages": [{"role": "user", "content": question}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        let (code, messages) = bed.get(&format!("/v1/sessions/{id}/messages")).await;
        assert_eq!(code, 200, "{messages}");
        let texts: Vec<&str> = messages["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        assert!(
            texts.contains(&question.as_str())
                && texts.contains(&format!("echo: {question}").as_str()),
            "{messages}"
        );
        let resp = bed
            .client
            .delete(bed.url(&format!("/v1/sessions/{id}")))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let gone = support::eventually(Duration::from_secs(10), || async {
            bed.opencode
                .client()
                .get(format!("{}/api/session/{id}", bed.opencode.url()))
                .send()
                .await
                .map(|r| r.status() == 404)
                .unwrap_or(false)
        })
        .await;
        assert!(gone, "the session is deleted upstream");
    })
}

/// The OpenAPI description marks the operations 2.x dropped with their 501.
#[test]
fn the_openapi_description_names_the_501s() {
    let doc = portatek_gateway::openapi::document();
    let lsp = &doc["paths"]["/v1/lsp"]["get"]["responses"]["501"];
    assert!(
        lsp["description"]
            .as_str()
            .unwrap_or("")
            .contains("OpenCode 2.x"),
        "{lsp}"
    );
    assert!(doc["paths"]["/v1/chat/completions"]["post"]["responses"]["501"].is_null());
}

mod mixed;
