//! The Responses API (`/v1/responses`) end to end, against a real `opencode serve` and the
//! scripted model. Every response object, stream event and input-item page is validated against
//! OpenAI's Responses schemas (`src/openapi/openai-responses.schema.json`).
//!
//! Two beds (one OpenCode each, running in parallel), their steps as named scenarios:
//! - [`responses_api`] (keys `k1`, `k2`; `prompt.max_model_retries = 0`): the response object
//!   and what it echoes, the typed stream, reasoning, `previous_response_id` (continuation
//!   without replay, branches), input items and their pages, function tools (`tool_choice`,
//!   `parallel_tool_calls`), incomplete responses, `text.format`, `store: false`, failures,
//!   delete, other keys and unknown ids, and the openai-node SDK;
//! - [`responses_lifecycle`]: cancelling a running response, and stored responses surviving a
//!   gateway restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::api::read_json;
use support::gateway::FRAME_WAIT;
use support::mock_model::content_text;
use support::responses_api::{
    check_structure, function_calls, items, output_text, read_stream, ResponseStream,
};
use support::responses_schema::{assert_response, assert_valid};
use support::scenarios::scenario;
use support::sse::SseReader;
use support::{
    assert_error, BedPool, Gateway, GatewayOptions, OpenCodeOptions, Scenarios, TestBed, ECHO,
    THINKER, VISION,
};

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
const TRANSCRIPT_MARK: &str = "The conversation so far";
/// A 1x1 transparent PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
const K1: &str = "k1";
const K2: &str = "k2";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One request as `key` (none: the bed's own) → (status, JSON body).
async fn call(
    bed: &TestBed,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut rb = bed.client.request(method.clone(), bed.url(path));
    if let Some(k) = key.or(bed.api_key.as_deref()) {
        rb = rb.bearer_auth(k);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let resp = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    read_json(resp).await
}

/// `POST /v1/responses` (non-streaming) as the bed's key.
async fn create(bed: &TestBed, body: &Value) -> (StatusCode, Value) {
    call(bed, None, Method::POST, "/v1/responses", Some(body)).await
}

/// `POST /v1/responses` with `stream: true`, read to its end with every event checked.
async fn create_stream(bed: &TestBed, body: &Value) -> ResponseStream {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let mut rb = bed.client.post(bed.url("/v1/responses")).json(&body);
    if let Some(k) = &bed.api_key {
        rb = rb.bearer_auth(k);
    }
    let resp = rb.send().await.expect("POST /v1/responses");
    read_stream(resp, FRAME_WAIT).await
}

/// A completed response: 200, valid against the `Response` schema, `status: completed`.
#[track_caller]
fn completed(status: StatusCode, v: &Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_response(v);
    assert_eq!(v["object"], "response", "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    assert!(v["error"].is_null(), "{v}");
    v.clone()
}

/// A 404 `response_not_found` in OpenAI's error shape.
#[track_caller]
fn assert_not_found(status: StatusCode, v: &Value, what: &str) {
    assert_error(status, v, 404, Some("response_not_found"), None, what);
    assert_valid("ErrorResponse", v);
}

/// The id of a response.
fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_string()
}

/// Every non-system message of a model request, compactly: `{"user": text}`,
/// `{"assistant": text, "calls": [[name without the slot prefix, args]]}`, `{"tool": [id, text]}`.
fn turns(req: &Value) -> Vec<Value> {
    req["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in model request {req}"))
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            let text = content_text(&m["content"]);
            match m["role"].as_str().unwrap_or("") {
                "assistant" => match m["tool_calls"].as_array() {
                    Some(calls) if !calls.is_empty() => {
                        let calls: Vec<Value> = calls
                            .iter()
                            .map(|c| {
                                let name = c["function"]["name"].as_str().unwrap_or("");
                                let name = name.split_once('_').map_or(name, |(_, n)| n);
                                let args: Value = serde_json::from_str(
                                    c["function"]["arguments"].as_str().unwrap(),
                                )
                                .unwrap();
                                json!([name, args])
                            })
                            .collect();
                        json!({"assistant": text, "calls": calls})
                    }
                    _ => json!({ "assistant": text }),
                },
                "tool" => json!({"tool": [m["tool_call_id"], text]}),
                role => json!({ role: text }),
            }
        })
        .collect()
}

/// Model requests made since `before`, checked to be exactly `n`.
#[track_caller]
fn model_calls_since(bed: &TestBed, before: usize, n: usize, what: &str) -> Vec<Value> {
    let new = bed.mock.requests()[before..].to_vec();
    assert_eq!(
        new.len(),
        n,
        "{what}: expected {n} model call(s), got {}: {:#?}",
        new.len(),
        new.iter().map(turns).collect::<Vec<_>>()
    );
    new
}

/// Asserts that no model request since `before` replayed a transcript.
#[track_caller]
fn assert_no_replay(bed: &TestBed, before: usize, what: &str) {
    for req in &bed.mock.requests()[before..] {
        assert!(
            !req["messages"].to_string().contains(TRANSCRIPT_MARK),
            "{what}: the model got a replayed transcript: {:#?}",
            turns(req)
        );
    }
}

/// A flat (Responses-shaped) function tool taking `{"city": string}`.
fn city_tool(name: &str) -> Value {
    json!({"type": "function", "name": name, "description": format!("{name} for a city"),
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": false},
           "strict": true})
}

/// A `function_call_output` input item.
fn call_output(call_id: &str, output: &str) -> Value {
    json!({"type": "function_call_output", "call_id": call_id, "output": output})
}

/// Upstream session ids.
async fn sessions(bed: &TestBed) -> BTreeSet<String> {
    bed.opencode.session_ids().await
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

/// The Responses bed: the thinker with `reasoning_effort` variants, keys `k1` (used by the
/// helpers) and `k2`, no model retries.
async fn responses_bed() -> TestBed {
    let mut bed = Harness::real()
        .opencode_config(json!({"provider": {"mock": {"models": {"thinker": {
            "variants": {"high": {"reasoningEffort": "high"}, "low": {"reasoningEffort": "low"}}
        }}}}}))
        .gateway(
            GatewayOptions::default()
                .env("PORTATEK_API_KEYS", "k1,k2")
                .config("[prompt]\nmax_model_retries = 0\n"),
        )
        .start()
        .await;
    bed.api_key = Some(K1.into());
    bed
}

/// The Responses API, one test per behaviour on a shared bed (see the module docs).
mod responses_api {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn response_object_and_what_it_echoes() {
        BED.run(responses_bed, super::response_object_and_what_it_echoes);
    }

    #[test]
    fn streamed_text_events() {
        BED.run(responses_bed, super::streamed_text_events);
    }

    #[test]
    fn reasoning_becomes_a_summary() {
        BED.run(responses_bed, super::reasoning_becomes_a_summary);
    }

    #[test]
    fn previous_response_id_continues_and_branches() {
        BED.run(
            responses_bed,
            super::previous_response_id_continues_and_branches,
        );
    }

    #[test]
    fn input_items_parts_and_pages() {
        BED.run(responses_bed, super::input_items_parts_and_pages);
    }

    #[test]
    fn function_tool_loop() {
        BED.run(responses_bed, super::function_tool_loop);
    }

    #[test]
    fn streamed_function_tool_loop() {
        BED.run(responses_bed, super::streamed_function_tool_loop);
    }

    #[test]
    fn tool_choice_and_parallel_calls() {
        BED.run(responses_bed, super::tool_choice_and_parallel_calls);
    }

    #[test]
    fn output_limit_is_incomplete() {
        BED.run(responses_bed, super::output_limit_is_incomplete);
    }

    #[test]
    fn text_formats() {
        BED.run(responses_bed, super::text_formats);
    }

    #[test]
    fn store_false_is_stateless() {
        BED.run(responses_bed, super::store_false_is_stateless);
    }

    #[test]
    fn failures_are_reported() {
        BED.run(responses_bed, super::failures_are_reported);
    }

    #[test]
    fn delete_removes_it() {
        BED.run(responses_bed, super::delete_removes_it);
    }

    #[test]
    fn other_keys_and_unknown_ids_get_404() {
        BED.run(responses_bed, super::other_keys_and_unknown_ids_get_404);
    }

    #[test]
    fn sdk_drives_responses() {
        BED.run(responses_bed, super::sdk_drives_responses);
    }
}

/// `POST /v1/responses` with a string input: a completed `response` (id `resp_…`, created_at,
/// model, one assistant message with `output_text`, usage with its details) that echoes
/// `instructions`, `metadata`, `temperature`, `top_p`, `truncation`, `max_output_tokens` and
/// `store` (default true). `GET` returns the same object; the instructions reached the model
/// as its system prompt.
async fn response_object_and_what_it_echoes(bed: &TestBed) {
    let before = bed.mock.call_count();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = json!({"model": ECHO, "input": "hello responses", "instructions": "Be terse.",
        "metadata": {"ticket": "T-1"}, "temperature": 0.5, "top_p": 0.9, "truncation": "auto",
        "max_output_tokens": 256});
    let (s, v) = create(bed, &body).await;
    let r = completed(s, &v);
    let id = id_of(&r);
    assert!(id.starts_with("resp_"), "{id}");
    assert!(r["created_at"].as_u64().unwrap().abs_diff(now) < 60, "{r}");
    assert_eq!(r["model"], ECHO);
    assert_eq!(output_text(&r), "echo: hello responses");
    let messages = items(&r, "message");
    assert_eq!(messages.len(), 1, "{r}");
    assert_eq!(messages[0]["role"], "assistant");
    assert_eq!(messages[0]["status"], "completed");
    assert!(messages[0]["id"].as_str().unwrap().starts_with("msg_"));
    for (field, want) in [
        ("instructions", json!("Be terse.")),
        ("metadata", json!({"ticket": "T-1"})),
        ("temperature", json!(0.5)),
        ("top_p", json!(0.9)),
        ("truncation", json!("auto")),
        ("max_output_tokens", json!(256)),
        ("store", json!(true)),
        ("previous_response_id", Value::Null),
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("text", json!({"format": {"type": "text"}})),
    ] {
        assert_eq!(r[field], want, "`{field}` echoed: {r}");
    }
    let usage = &r["usage"];
    assert_eq!(usage["input_tokens"], 11, "{usage}");
    assert_eq!(usage["output_tokens"], 7, "{usage}");
    assert_eq!(usage["total_tokens"], 18, "{usage}");
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0, "{usage}");
    assert_eq!(
        usage["output_tokens_details"]["reasoning_tokens"], 0,
        "{usage}"
    );

    let req = &model_calls_since(bed, before, 1, "one response")[0];
    assert!(
        req["messages"][0]["role"] == "system"
            && content_text(&req["messages"][0]["content"]).contains("Be terse."),
        "instructions reach the model as its system prompt"
    );
    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_response(&got);
    assert_eq!(got, r, "GET returns the response as it was answered");
}

/// `stream: true`: `response.created` and `.in_progress`, the message item added, its part
/// added, text deltas, then everything done in order, `response.completed` — each event valid
/// against its schema, numbered from 0; the final response is what `GET` returns.
async fn streamed_text_events(bed: &TestBed) {
    let body = json!({"model": ECHO, "input": "stream this [chunks:3]"});
    let stream = create_stream(bed, &body).await;
    assert_eq!(stream.status, 200, "{:?}", stream.body);
    let r = check_structure(&stream);
    assert_eq!(r["status"], "completed");
    let kinds = stream.kinds();
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    assert_eq!(deltas, 3, "{kinds:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", 3));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    assert_eq!(output_text(&r), "echo: stream this [chunks:3]");
    let (s, got) = bed.get(&format!("/v1/responses/{}", stream.id())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, r, "the stored response is the streamed one");
}

/// A reasoning model: `reasoning.effort` is forwarded (as OpenCode's variant), the reasoning
/// becomes a `reasoning` item with summary text before the message — streamed as reasoning
/// summary events — and usage reports reasoning tokens.
async fn reasoning_becomes_a_summary(bed: &TestBed) {
    let before = bed.mock.call_count();
    let body =
        json!({"model": THINKER, "input": "ponder [reasoning]", "reasoning": {"effort": "high"}});
    let (s, v) = create(bed, &body).await;
    let r = completed(s, &v);
    let kinds: Vec<&str> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reasoning", "message"], "{r}");
    assert_eq!(
        r["output"][0]["summary"],
        json!([{"type": "summary_text", "text": "thinking about ponder [reasoning]"}])
    );
    assert_eq!(output_text(&r), "echo: ponder [reasoning]");
    assert_eq!(r["reasoning"], json!({"effort": "high"}));
    assert!(r["usage"]["output_tokens_details"]["reasoning_tokens"].is_u64());
    let req = &model_calls_since(bed, before, 1, "reasoning")[0];
    assert_eq!(
        req["reasoning_effort"], "high",
        "the effort reaches the model"
    );

    let stream = create_stream(
        bed,
        &json!({"model": THINKER, "input": "ponder more [reasoning]"}),
    )
    .await;
    let r = check_structure(&stream);
    let kinds = stream.kinds();
    let first_text = kinds
        .iter()
        .position(|k| *k == "response.output_text.delta")
        .unwrap();
    for k in [
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ] {
        let at = kinds.iter().position(|x| *x == k);
        assert!(
            at.is_some_and(|i| i < first_text),
            "{k} comes before the text: {kinds:?}"
        );
    }
    assert_eq!(
        r["output"][0]["summary"][0]["text"],
        "thinking about ponder more [reasoning]"
    );
}

/// `previous_response_id` continues the response's OpenCode session: the client sends only the
/// new input and the model sees the earlier turn once, as real messages. Continuing an older
/// response branches (a fork): both branches live on, each without the other's turns.
async fn previous_response_id_continues_and_branches(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "chain one"})).await;
    let r1 = id_of(&completed(s, &v));
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "chain two", "previous_response_id": r1}),
    )
    .await;
    let r2v = completed(s, &v);
    let r2 = id_of(&r2v);
    assert_eq!(r2v["previous_response_id"], r1.as_str());
    let req = &model_calls_since(bed, before, 2, "a continued chain")[1];
    assert_eq!(
        turns(req),
        vec![
            json!({"user": "chain one"}),
            json!({"assistant": "echo: chain one"}),
            json!({"user": "chain two"}),
        ],
        "the earlier turn reaches the model once, as real messages"
    );
    let chain: Vec<String> = sessions(bed)
        .await
        .difference(&before_sessions)
        .cloned()
        .collect();
    assert_eq!(chain.len(), 1, "a chain is one session: {chain:?}");
    let (s, page) = bed.get(&format!("/v1/responses/{r2}/input_items")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        1,
        "a continuation's input is only what the client sent: {page}"
    );

    // A branch from r1, then both branches continued.
    let step = |prev: &str, text: &str| json!({"model": ECHO, "input": text, "previous_response_id": prev});
    let before = bed.mock.call_count();
    let (s, v) = create(bed, &step(&r1, "branch")).await;
    let r3 = id_of(&completed(s, &v));
    let (s, v) = create(bed, &step(&r2, "after two")).await;
    completed(s, &v);
    let (s, v) = create(bed, &step(&r3, "after branch")).await;
    completed(s, &v);
    let calls = model_calls_since(bed, before, 3, "two branches");
    let (one, echo1) = (
        json!({"user": "chain one"}),
        json!({"assistant": "echo: chain one"}),
    );
    assert_eq!(
        turns(&calls[0]),
        vec![one.clone(), echo1.clone(), json!({"user": "branch"})],
        "a branch from r1 does not see r2's turn"
    );
    assert_eq!(
        turns(&calls[1]),
        vec![
            one.clone(),
            echo1.clone(),
            json!({"user": "chain two"}),
            json!({"assistant": "echo: chain two"}),
            json!({"user": "after two"}),
        ],
        "the original branch goes on without the new one"
    );
    assert_eq!(
        turns(&calls[2]),
        vec![
            one,
            echo1,
            json!({"user": "branch"}),
            json!({"assistant": "echo: branch"}),
            json!({"user": "after branch"}),
        ],
        "the new branch goes on without r2's turn"
    );
    assert_no_replay(bed, before, "branches");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        2,
        "the branch is a second session"
    );
}

/// Input items: a developer message, an earlier question, an earlier function call and its
/// output, and a user message with text and an image reach the model (the image as an image);
/// `GET …/input_items` pages through them (`limit`, `order`, `after`,
/// `first_id`/`last_id`/`has_more`), every page schema-valid.
async fn input_items_parts_and_pages(bed: &TestBed) {
    let before = bed.mock.call_count();
    let image = format!("data:image/png;base64,{PNG_B64}");
    let input = json!([
        {"type": "message", "role": "developer", "content": "Answer in haiku."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "earlier question"}]},
        {"type": "function_call", "call_id": "call_earlier", "name": "lookup", "arguments": "{\"q\":1}"},
        call_output("call_earlier", "earlier output"),
        {"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": image},
        ]},
    ]);
    let (s, v) = create(bed, &json!({"model": VISION, "input": input})).await;
    let r = completed(s, &v);
    let id = id_of(&r);
    let req = &model_calls_since(bed, before, 1, "items")[0];
    let seen = req["messages"].to_string();
    assert!(
        seen.contains("Answer in haiku."),
        "developer text reaches the system prompt"
    );
    assert!(
        seen.contains("earlier question")
            && seen.contains("call_earlier")
            && seen.contains("earlier output"),
        "earlier items reach the model: {seen}"
    );
    assert!(
        seen.contains(&format!("data:image/png;base64,{PNG_B64}")),
        "the image reaches the model as an image"
    );

    let page = |query: &str| {
        let path = format!("/v1/responses/{id}/input_items{query}");
        async move {
            let (s, v) = bed.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
            assert_valid("ResponseItemList", &v);
            v
        }
    };
    let ids_of = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = page("?order=asc").await;
    let kinds: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().or(i["type"].as_str()).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "developer",
            "user",
            "function_call",
            "function_call_output",
            "user"
        ],
        "{all}"
    );
    assert_eq!(all["has_more"], false);
    assert_eq!(
        all["data"][4]["content"][1],
        json!({"type": "input_image", "image_url": image, "detail": "auto"})
    );
    let ids = ids_of(&all);
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(
        ids_of(&page("").await),
        reversed,
        "the default order is desc"
    );

    let first = page("?order=asc&limit=2").await;
    assert_eq!(ids_of(&first), ids[..2]);
    assert_eq!(first["has_more"], true, "{first}");
    assert_eq!(first["first_id"], ids[0].as_str());
    assert_eq!(first["last_id"], ids[1].as_str());
    let second = page(&format!("?order=asc&limit=2&after={}", ids[1])).await;
    assert_eq!(ids_of(&second), ids[2..4]);
    assert_eq!(second["has_more"], true, "{second}");
    let third = page(&format!("?order=asc&limit=2&after={}", ids[3])).await;
    assert_eq!(ids_of(&third), ids[4..]);
    assert_eq!(third["has_more"], false, "{third}");
    assert_eq!(third["first_id"], ids[4].as_str());
    assert_eq!(third["last_id"], ids[4].as_str());
    let newest = page("?limit=1").await;
    assert_eq!(ids_of(&newest), ids[4..], "desc starts with the newest");
    let (s, v) = bed
        .get(&format!("/v1/responses/{id}/input_items?limit=0"))
        .await;
    assert_error(s, &v, 400, None, Some("limit"), "limit 0");
}

/// Function tools (flat shape): the response ends with a `function_call` item (call id, the
/// client's name, arguments as JSON text); `function_call_output` sent with
/// `previous_response_id` reaches the model as the tool result of the same run, and the chain
/// goes on from there.
async fn function_tool_loop(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = json!([city_tool("get_weather"), city_tool("get_time")]);
    let prompt = r#"weather? [call:get_weather:{"city":"Paris"}]"#;
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools}),
    )
    .await;
    let r1 = completed(s, &v);
    assert_eq!(r1["tools"], tools, "tools are echoed");
    let calls = items(&r1, "function_call");
    assert_eq!(calls.len(), 1, "{r1}");
    let call = &calls[0];
    assert_eq!(call["name"], "get_weather", "the client's own name: {call}");
    assert_eq!(call["status"], "completed");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"), "{call}");
    let call_id = call["call_id"].as_str().unwrap().to_string();
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(output_text(&r1), "", "no text with the call");

    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "previous_response_id": r1["id"], "tools": tools,
                "input": [call_output(&call_id, "sunny, 21 C")]}),
    )
    .await;
    let r2 = completed(s, &v);
    assert_eq!(output_text(&r2), "echo tool results: call_0_0=sunny, 21 C");
    assert_eq!(r2["previous_response_id"], r1["id"]);
    let req = &model_calls_since(bed, before, 2, "call and result")[1];
    assert_eq!(
        turns(req),
        vec![
            json!({"user": prompt}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Paris"}]]}),
            json!({"tool": ["call_0_0", "sunny, 21 C"]}),
        ],
        "the output reaches the model as the result of its own call"
    );
    let (s, page) = bed
        .get(&format!("/v1/responses/{}/input_items", id_of(&r2)))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);
    assert_eq!(page["data"][0]["type"], "function_call_output", "{page}");

    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "previous_response_id": r2["id"], "input": "thanks"}),
    )
    .await;
    completed(s, &v);
    let req = &model_calls_since(bed, before, 3, "then a follow-up")[2];
    assert_eq!(turns(req).len(), 5, "{:#?}", turns(req));
    assert_no_replay(bed, before, "tool loop");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        1,
        "one session for the loop and its follow-up"
    );
}

/// `tool_choice` naming one function (Responses shape `{"type":"function","name"}`) offers the
/// model only that one; `parallel_tool_calls: false` gives one call per response (the second
/// in the response continuing the first, without another model call); both are echoed.
async fn tool_choice_and_parallel_calls(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = json!([city_tool("get_weather"), city_tool("get_time")]);
    let choice = json!({"type": "function", "name": "get_time"});
    let prompt = r#"named [call:get_time:{"city":"Bonn"}] [call:get_time:{"city":"Linz"}]"#;
    let body = json!({"model": ECHO, "input": prompt, "tools": tools, "tool_choice": choice,
                      "parallel_tool_calls": false});
    let (s, v) = create(bed, &body).await;
    let r1 = completed(s, &v);
    assert_eq!(r1["tool_choice"], choice);
    assert_eq!(r1["parallel_tool_calls"], false);
    let first = function_calls(&r1);
    assert_eq!(first.len(), 1, "one call per response: {r1}");
    let req = &model_calls_since(bed, before, 1, "named tool_choice")[0];
    let offered: Vec<&str> = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(
        offered.len() == 1 && offered[0].ends_with("_get_time"),
        "only the named function is offered: {offered:?}"
    );
    let next = json!({"model": ECHO, "previous_response_id": r1["id"], "tools": tools,
                      "tool_choice": choice, "parallel_tool_calls": false,
                      "input": [call_output(&first[0].0, "ten")]});
    let (s, v) = create(bed, &next).await;
    let r2 = completed(s, &v);
    let second = function_calls(&r2);
    assert_eq!(second.len(), 1, "the second call in its own response: {r2}");
    assert_eq!(second[0].2, r#"{"city":"Linz"}"#);
    model_calls_since(bed, before, 1, "both calls came from one model step");
    // Answering the second call (previous_response_id = r2) is the ignored bug test
    // `function_calls_continue_from_the_latest_response`; this run waits until the bed ends.
}

/// A model that stops at its output limit: `status: incomplete` with
/// `incomplete_details.reason = max_output_tokens` (JSON), and `response.incomplete` as the
/// stream's terminal event.
async fn output_limit_is_incomplete(bed: &TestBed) {
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "cut short [length]"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_response(&v);
    assert_eq!(v["status"], "incomplete", "{v}");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(output_text(&v), "echo: cut short [length]");
    let stream = create_stream(bed, &json!({"model": ECHO, "input": "cut short [length]"})).await;
    let r = check_structure(&stream);
    assert_eq!(stream.kinds().last(), Some(&"response.incomplete"));
    assert_eq!(r["status"], "incomplete");
}

/// The same loop streamed: the call as `output_item.added` (arguments empty),
/// `function_call_arguments.delta`/`.done`, `output_item.done`, `response.completed`; then the
/// outputs streamed back produce the text events.
async fn streamed_function_tool_loop(bed: &TestBed) {
    let tools = json!([city_tool("get_weather")]);
    let prompt = r#"stream weather [call:get_weather:{"city":"Oslo"}]"#;
    let stream = create_stream(
        bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools}),
    )
    .await;
    let r1 = check_structure(&stream);
    assert_eq!(
        stream.kinds(),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let added = stream.of("response.output_item.added")[0];
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["name"], "get_weather");
    let done = stream.of("response.function_call_arguments.done")[0];
    let args: Value = serde_json::from_str(done["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Oslo"}));
    let (call_id, name, _) = function_calls(&r1).remove(0);
    assert_eq!(name, "get_weather");

    let body = json!({"model": ECHO, "previous_response_id": r1["id"], "tools": tools,
                      "input": [call_output(&call_id, "snow")]});
    let stream = create_stream(bed, &body).await;
    let r2 = check_structure(&stream);
    assert_eq!(output_text(&r2), "echo tool results: call_0_0=snow");
}

/// `text.format`: `json_schema` (strict) makes the output text a JSON document valid against
/// the schema, `json_object` a JSON object, `text` plain text; output that breaks the schema is
/// a 502 (JSON) or an `error` event and `response.failed` (streamed), at once.
async fn text_formats(bed: &TestBed) {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"},
        "n": {"type": "integer"}}, "required": ["answer", "n"], "additionalProperties": false});
    let format = json!({"format": {"type": "json_schema", "name": "verdict", "strict": true,
        "schema": schema}});
    let body = json!({"model": ECHO, "input": r#"[call:StructuredOutput:{"answer":"yes","n":2}]"#,
                      "text": format});
    let (s, v) = create(bed, &body).await;
    let r = completed(s, &v);
    let parsed: Value = serde_json::from_str(&output_text(&r)).unwrap();
    assert!(jsonschema::validator_for(&schema)
        .unwrap()
        .is_valid(&parsed));
    assert_eq!(parsed, json!({"answer": "yes", "n": 2}));
    assert_eq!(r["text"], format, "text.format is echoed");
    assert!(
        items(&r, "function_call").is_empty(),
        "the structured result is the text: {r}"
    );

    let body = json!({"model": ECHO, "input": r#"[call:StructuredOutput:{"k":[1]}]"#,
                      "text": {"format": {"type": "json_object"}}});
    let (s, v) = create(bed, &body).await;
    let parsed: Value = serde_json::from_str(&output_text(&completed(s, &v))).unwrap();
    assert_eq!(parsed, json!({"k": [1]}));

    let body = json!({"model": ECHO, "input": "plain", "text": {"format": {"type": "text"}}});
    let (s, v) = create(bed, &body).await;
    assert_eq!(output_text(&completed(s, &v)), "echo: plain");

    let bad = json!({"model": ECHO, "input": r#"[call:StructuredOutput:{"answer":7}]"#,
                     "text": format});
    let started = Instant::now();
    let (s, v) = create(bed, &bad).await;
    assert_error(s, &v, 502, Some("upstream_error"), None, "schema violation");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("schema"),
        "{v}"
    );
    let stream = create_stream(bed, &bad).await;
    let r = check_structure(&stream);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(!stream.of("error").is_empty(), "{:?}", stream.kinds());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// `store: false`: answered, but nothing is retrievable (GET and input_items 404) and it cannot
/// be continued by id (400 naming `store`). It is stateless: the client sends the whole history,
/// `function_call` items included — a history the gateway produced resumes its run (the model
/// gets a real tool result, no replay), one it never saw is seeded with the calls written out.
async fn store_false_is_stateless(bed: &TestBed) {
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "forget me", "store": false}),
    )
    .await;
    let r = completed(s, &v);
    assert_eq!(r["store"], false);
    let id = id_of(&r);
    let (s, v) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_not_found(s, &v, "GET of an unstored response");
    let (s, v) = bed.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_not_found(s, &v, "input_items of an unstored response");
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "x", "store": false, "previous_response_id": id}),
    )
    .await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("store"),
        "store false with previous_response_id",
    );

    // A stateless tool loop: the second request carries the whole history.
    let before = bed.mock.call_count();
    let tools = json!([city_tool("get_weather")]);
    let prompt = r#"stateless [call:get_weather:{"city":"Riga"}]"#;
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools, "store": false}),
    )
    .await;
    let r1 = completed(s, &v);
    let (call_id, name, arguments) = function_calls(&r1).remove(0);
    let history = json!([
        {"role": "user", "content": prompt},
        {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments},
        call_output(&call_id, "hail"),
    ]);
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": history, "tools": tools, "store": false}),
    )
    .await;
    assert_eq!(
        output_text(&completed(s, &v)),
        "echo tool results: call_0_0=hail"
    );
    let req = &model_calls_since(bed, before, 2, "a stateless loop")[1];
    assert_eq!(
        turns(req)[2],
        json!({"tool": ["call_0_0", "hail"]}),
        "the output reaches the model as a tool result"
    );
    assert_no_replay(bed, before, "stateless loop");

    // A history the gateway never produced.
    let before = bed.mock.call_count();
    let history = json!([
        {"role": "user", "content": "weather in Bonn?"},
        {"type": "function_call", "call_id": "call_from_elsewhere", "name": "get_weather",
         "arguments": "{\"city\":\"Bonn\"}"},
        call_output("call_from_elsewhere", "drizzle"),
    ]);
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": history, "tools": tools, "store": false}),
    )
    .await;
    completed(s, &v);
    let req = &model_calls_since(bed, before, 1, "an unseen stateless history")[0];
    let seen = req["messages"].to_string();
    assert!(
        seen.contains(TRANSCRIPT_MARK)
            && seen.contains("call_from_elsewhere")
            && seen.contains("drizzle"),
        "an unseen history is seeded with its calls and outputs: {:#?}",
        turns(req)
    );
}

/// A model that fails (`max_model_retries = 0`): JSON gets a 502 at once; a stream gets
/// `response.created`, then an `error` event and `response.failed` (with `error` set), and the
/// stored response says `failed`.
async fn failures_are_reported(bed: &TestBed) {
    let started = Instant::now();
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "break [fail]"})).await;
    assert_error(s, &v, 502, Some("upstream_error"), None, "a failing model");
    assert_valid("ErrorResponse", &v);

    let stream = create_stream(bed, &json!({"model": ECHO, "input": "break again [fail]"})).await;
    let r = check_structure(&stream);
    let kinds = stream.kinds();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["error", "response.failed"],
        "{kinds:?}"
    );
    assert_eq!(r["status"], "failed");
    assert!(r["error"]["message"].is_string(), "{r}");
    let error = stream.of("error")[0];
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("scripted model failure")),
        "the provider's message is passed on: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let (s, got) = bed.get(&format!("/v1/responses/{}", stream.id())).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_response(&got);
    assert_eq!(got["status"], "failed", "{got}");
}

/// `DELETE`: `{"id", "object": "response.deleted", "deleted": true}`; then the response is a 404
/// everywhere (GET, input_items, DELETE, continuing it), and its session — it held no other
/// response — is deleted upstream.
async fn delete_removes_it(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "short-lived"})).await;
    let id = id_of(&completed(s, &v));
    let session: Vec<String> = sessions(bed)
        .await
        .difference(&before_sessions)
        .cloned()
        .collect();
    let (s, v) = call(
        bed,
        None,
        Method::DELETE,
        &format!("/v1/responses/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    for (method, path) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let (s, v) = call(bed, None, method.clone(), &path, None).await;
        assert_not_found(s, &v, &format!("{method} {path} after DELETE"));
    }
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "again", "previous_response_id": id}),
    )
    .await;
    assert_not_found(s, &v, "continuing a deleted response");
    let after = sessions(bed).await;
    assert!(
        session.iter().all(|s| !after.contains(s)),
        "the deleted response's session is gone upstream"
    );
}

/// Responses belong to their key: another key gets 404 for everything about one (GET, DELETE,
/// input_items, cancel, continuing it) and reaches no model; unknown and malformed ids are 404
/// in OpenAI's shape (`response_not_found`). The owner's response is untouched.
async fn other_keys_and_unknown_ids_get_404(bed: &TestBed) {
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "mine"})).await;
    let mine = completed(s, &v);
    let id = id_of(&mine);
    let session_part = id
        .strip_prefix("resp_")
        .and_then(|r| r.rsplit_once('_'))
        .map(|(s, _)| s.to_string())
        .unwrap();
    let before = bed.mock.call_count();
    let unknown = [
        "resp_nope".to_string(),
        "resp_de1b5e886ffepPpVYB0d7o3k6l_0123456789abcdef".to_string(),
        format!("resp_{session_part}_0123456789abcdef"),
    ];
    let cases = std::iter::once((K2, id.clone())).chain(unknown.iter().map(|u| (K1, u.clone())));
    for (key, rid) in cases {
        for (method, path) in [
            (Method::GET, format!("/v1/responses/{rid}")),
            (Method::GET, format!("/v1/responses/{rid}/input_items")),
            (Method::POST, format!("/v1/responses/{rid}/cancel")),
            (Method::DELETE, format!("/v1/responses/{rid}")),
        ] {
            let (s, v) = call(bed, Some(key), method.clone(), &path, None).await;
            assert_not_found(s, &v, &format!("{key} {method} {path}"));
        }
        let body = json!({"model": ECHO, "input": "intrude", "previous_response_id": rid});
        let (s, v) = call(bed, Some(key), Method::POST, "/v1/responses", Some(&body)).await;
        assert_not_found(s, &v, &format!("{key} continuing {rid}"));
    }
    assert_eq!(bed.mock.call_count(), before, "no 404 reached the model");
    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, mine, "the owner's response is untouched");
}

/// The official openai-node SDK: `responses.create` (and its `output_text`), the stream helper
/// continuing with `previous_response_id`, a function tool loop JSON and streamed, retrieve,
/// input items, delete (then a 404 the SDK reports as such).
async fn sdk_drives_responses(bed: &TestBed) {
    let out = support::node_sdk::run_script(
        "responses.mjs",
        &bed.gateway.url(),
        Some(K1),
        Duration::from_secs(90),
    )
    .await;
    eprintln!("[sdk] {out}");
    let create = &out["create"];
    assert_eq!(create["status"], "completed", "{out}");
    assert_eq!(create["output_text"], "echo: sdk hello");
    assert_eq!(create["metadata"], json!({"suite": "sdk"}));
    let stream = &out["stream"];
    assert_eq!(
        stream["output_text"],
        "echo: sdk again [count] (messages: 4)"
    );
    assert_eq!(stream["deltas"], stream["output_text"]);
    assert_eq!(stream["previous_response_id"], create["id"]);
    let types: Vec<&str> = stream["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    assert_eq!(
        out["tools"],
        json!({"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
               "output_text": "echo tool results: call_0_0=sunny in Paris", "status": "completed"})
    );
    assert_eq!(
        out["streamedTools"],
        json!({"calls": [{"name": "get_weather", "arguments": {"city": "Lima"}}],
               "argumentDeltas": "{\"city\":\"Lima\"}",
               "output_text": "echo tool results: call_0_0=sunny in Lima"})
    );
    let lifecycle = &out["lifecycle"];
    assert_eq!(lifecycle["retrieved_text"], "echo: sdk hello", "{out}");
    assert_eq!(
        lifecycle["items"],
        json!([{"type": "message", "role": "user", "text": "sdk hello"}])
    );
    assert_eq!(lifecycle["afterDelete"]["status"], 404, "{out}");
}

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

/// Cancelling and restarts, on their own OpenCode.
#[tokio::test(flavor = "multi_thread")]
async fn responses_lifecycle() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(s, cancel_stops_a_running_response(&bed));
    scenario!(s, stored_responses_survive_a_gateway_restart(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// A slow streaming response is cancelled from another request: `POST …/cancel` answers the
/// response as `cancelled`, the stream ends at once, OpenCode stops, the stored response says
/// `cancelled`; cancelling it again (or any finished response) is a 400.
async fn cancel_stops_a_running_response(bed: &TestBed) {
    let body = json!({"model": ECHO, "input": "long story [slow:300] [chunks:20]", "stream": true});
    let resp = bed
        .client
        .post(bed.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let mut events = Vec::new();
    while let Some(frame) = reader.next(FRAME_WAIT).await {
        let Some(e) = frame.json() else { continue };
        let first_text = e["type"] == "response.output_text.delta";
        events.push(e);
        if first_text {
            break;
        }
    }
    let id = events[0]["response"]["id"].as_str().unwrap().to_string();
    let (s, running) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{running}");
    assert_eq!(
        running["status"], "in_progress",
        "GET while it runs: {running}"
    );

    let cancelled_at = Instant::now();
    let (s, v) = bed
        .post(&format!("/v1/responses/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_response(&v);
    assert_eq!(v["status"], "cancelled", "{v}");
    let rest = reader.rest(FRAME_WAIT).await;
    let ended = cancelled_at.elapsed();
    events.extend(rest.iter().filter_map(|f| f.json()));
    assert!(
        ended < Duration::from_secs(3),
        "the stream ends soon after the cancel, not with the story ({ended:?})"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    eprintln!("[cancel] the stream after the cancel ({ended:?}): {kinds:?}");
    let last = events.last().unwrap();
    assert!(
        matches!(
            last["type"].as_str(),
            Some(
                "response.failed"
                    | "response.cancelled"
                    | "response.completed"
                    | "response.incomplete"
            )
        ),
        "the stream ends with a terminal event: {last}"
    );
    for e in &events {
        support::responses_schema::assert_event(e);
    }
    assert!(
        bed.opencode
            .wait_not_busy(Duration::from_secs(3))
            .await
            .is_ok(),
        "OpenCode still runs the cancelled response"
    );
    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_response(&got);
    assert_eq!(got["status"], "cancelled", "the stored response: {got}");

    let (s, v) = bed
        .post(&format!("/v1/responses/{id}/cancel"), &json!({}))
        .await;
    assert_error(s, &v, 400, None, None, "cancelling a cancelled response");
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "quick"})).await;
    let done = id_of(&completed(s, &v));
    let (s, v) = bed
        .post(&format!("/v1/responses/{done}/cancel"), &json!({}))
        .await;
    assert_error(s, &v, 400, None, None, "cancelling a completed response");
}

/// A gateway restarted over the same OpenCode still finds a stored response (GET, input items)
/// and continues it with `previous_response_id` in the same session, the model seeing the
/// earlier turn once as real messages.
async fn stored_responses_survive_a_gateway_restart(bed: &mut TestBed) {
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "before the restart"})).await;
    let r1 = completed(s, &v);
    let id = id_of(&r1);
    let upstream = sessions(bed).await;

    bed.gateway.kill().await;
    bed.gateway = Gateway::start(&bed.opencode.url()).await;

    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, r1, "the same response after the restart");
    let (s, page) = bed.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);

    let before = bed.mock.call_count();
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "after the restart", "previous_response_id": id}),
    )
    .await;
    assert_eq!(output_text(&completed(s, &v)), "echo: after the restart");
    let req = &model_calls_since(bed, before, 1, "continued after a restart")[0];
    assert_eq!(
        turns(req),
        vec![
            json!({"user": "before the restart"}),
            json!({"assistant": "echo: before the restart"}),
            json!({"user": "after the restart"}),
        ]
    );
    let chain = format!(
        "ses_{}",
        id.strip_prefix("resp_")
            .unwrap()
            .rsplit_once('_')
            .unwrap()
            .0
    );
    let after = sessions(bed).await;
    assert!(after.contains(&chain), "{chain} is gone: {after:?}");
    assert_eq!(
        after.difference(&upstream).count(),
        0,
        "the chain goes on in its own session, no new one"
    );
}

// ---------------------------------------------------------------------------------------------
// Schema deviations (gateway bugs)
// ---------------------------------------------------------------------------------------------

/// Response objects whose usage is not known yet — the snapshot in `response.created` and
/// `response.in_progress`, and a failed response — follow OpenAI's `Response` schema strictly.
/// (`usage` is an object or absent, never `null`.)
#[tokio::test(flavor = "multi_thread")]
async fn response_snapshots_follow_the_schema() {
    let bed = Harness::real()
        .opencode(OpenCodeOptions::default())
        .gateway(GatewayOptions::default().config("[prompt]\nmax_model_retries = 0\n"))
        .start()
        .await;
    let stream = create_stream(&bed, &json!({"model": ECHO, "input": "snapshot"})).await;
    assert_valid("ResponseCreatedEvent", &stream.events[0]);
    assert_valid("ResponseInProgressEvent", &stream.events[1]);
    let failed = create_stream(&bed, &json!({"model": ECHO, "input": "snapshot [fail]"})).await;
    let (s, got) = bed.get(&format!("/v1/responses/{}", failed.id())).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_valid("Response", &got);
}

/// An earlier assistant message given as an input item is listed by `input_items` as a valid
/// item (an output message, whose `output_text` parts carry `annotations` and `logprobs`).
/// (A bare `output_text` part would match neither `OutputMessage` nor `InputMessageResource`.)
#[tokio::test(flavor = "multi_thread")]
async fn assistant_input_items_follow_the_schema() {
    let bed = Harness::real().start().await;
    let input = json!([
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "earlier answer"}]},
        {"role": "assistant", "content": "said as a string"},
        {"role": "user", "content": "next question"},
    ]);
    let (s, v) = create(&bed, &json!({"model": ECHO, "input": input})).await;
    let id = id_of(&completed(s, &v));
    let (s, page) = bed.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);
}

/// A model that calls tools in several rounds (`[sticky:2]`: call → output → call → output →
/// answer): each round's outputs continue the response that asked for them.
/// (A resumed run answers under a new response id and must park again under that one.)
#[tokio::test(flavor = "multi_thread")]
async fn function_calls_continue_from_the_latest_response() {
    let bed = Harness::real().start().await;
    let tools = json!([city_tool("get_weather")]);
    let prompt = r#"two rounds [sticky:2] [call:get_weather:{"city":"Pisa"}]"#;
    let (s, v) = create(
        &bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools}),
    )
    .await;
    let mut previous = completed(s, &v);
    for (round, output) in ["warm", "warmer"].into_iter().enumerate() {
        let (call_id, name, _) = function_calls(&previous)
            .pop()
            .unwrap_or_else(|| panic!("round {round}: no function call in {previous}"));
        assert_eq!(name, "get_weather");
        let body = json!({"model": ECHO, "previous_response_id": previous["id"], "tools": tools,
                          "input": [call_output(&call_id, output)]});
        let (s, v) = create(&bed, &body).await;
        assert_eq!(s, StatusCode::OK, "round {round}'s outputs: {v}");
        previous = completed(s, &v);
    }
    assert_eq!(output_text(&previous), "echo tool results: call_1_0=warmer");
}
