//! Client tools (OpenAI function calling) and structured outputs on `/v1/chat/completions`,
//! end to end: the scripted model calls tools through a real `opencode serve`, the gateway hands
//! the calls to the client and the client's results back to the *same* OpenCode run.
//!
//! Two beds (one OpenCode each, running in parallel), their steps as named scenarios:
//! - [`tool_loop`]: the wire shape of calls (JSON and streamed), results reaching the model as
//!   tool results, follow-ups without replay, multi-round and parallel calls,
//!   `parallel_tool_calls: false`, `tool_choice`, names that collide with OpenCode's tools,
//!   structured outputs, bad tool requests, explicit sessions, seeding of histories the gateway
//!   never saw (also after a gateway restart), `prompt.tools_enabled`, and the official
//!   openai-node SDK running the whole loop;
//! - [`abandoned_tool_runs`]: a client that never brings its results (`result_timeout_secs = 2`,
//!   `max_runs = 1`): the held call errors, the run is aborted, nothing leaks.
//!
//! [`two_gateways_share_one_opencode`] runs tool loops on two gateways
//! in front of one OpenCode.
//!
//! The model never sees the client's tool names as they are: OpenCode shows it `ptk<tag>NN_<name>`
//! (the gateway's MCP slot), which the client must never see. Malformed tool requests are
//! checked in full in-process (`tests/http_api/validation.rs`); here only a smoke check.
//!
//! The scripted model's markers (`tests/it/support/mock_model.rs`): `[call:NAME:{args}]` makes it
//! call a tool (several: parallel calls), `[sticky:N]` for N rounds; after tool results it
//! answers `echo tool results: <its call id>=<content>; …`, so an answer proves what reached it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::api::send;
use support::gateway::{test_client, Gateway};
use support::mock_model::content_text;
use support::opencode::event_session_id;
use support::scenarios::scenario;
use support::schema::assert_valid;
use support::sse::Streamed;
use support::{assert_error, content, user, BedPool, GatewayOptions, Scenarios, TestBed, ECHO};

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
const TRANSCRIPT_MARK: &str = "The conversation so far";
/// The text that introduces tool results written out in a prompt (rather than given to the
/// model as tool results).
const WRITTEN_RESULTS_MARK: &str = "The results of the tool calls you made";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A function tool taking `{"city": string}`.
fn city_tool(name: &str) -> Value {
    json!({"type": "function", "function": {
        "name": name,
        "description": format!("{name} for a city"),
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": false},
        "strict": true,
    }})
}

fn weather() -> Value {
    city_tool("get_weather")
}

fn time() -> Value {
    city_tool("get_time")
}

/// A chat body for `messages` offering `tools`.
fn tool_body(messages: &[Value], tools: &[Value]) -> Value {
    json!({"model": ECHO, "messages": messages, "tools": tools})
}

/// `role: tool` message answering `id`.
fn tool_result(id: &str, content: &str) -> Value {
    json!({"role": "tool", "tool_call_id": id, "content": content})
}

/// The slot prefix `ptk<tag>NN_` (six hex digits of per-start tag, two of index) of a tool name
/// as OpenCode shows it to the model, if it has one.
fn slot_prefix(name: &str) -> Option<&str> {
    let id = name.strip_prefix("ptk")?.get(..8)?;
    (id.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && name.as_bytes().get(11) == Some(&b'_'))
    .then(|| &name[..12])
}

/// The name the client gave a tool the model knows as `name` (the slot prefix removed).
fn client_name(name: &str) -> &str {
    match slot_prefix(name) {
        Some(p) => &name[p.len()..],
        None => name,
    }
}

/// Names of the tools offered to the model in one request.
fn offered(req: &Value) -> Vec<String> {
    req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(String::from))
        .collect()
}

/// The client tools offered to the model (slot-prefixed names, as the client named them),
/// checking that all of them sit on one slot.
fn offered_client_tools(req: &Value) -> BTreeSet<String> {
    let names = offered(req);
    let prefixes: BTreeSet<&str> = names.iter().filter_map(|n| slot_prefix(n)).collect();
    assert!(
        prefixes.len() <= 1,
        "one run's tools sit on one slot: {names:?}"
    );
    names
        .iter()
        .filter(|n| slot_prefix(n).is_some())
        .map(|n| client_name(n).to_string())
        .collect()
}

/// Every non-system message of a model request, compactly: `{"user": text}`,
/// `{"assistant": text, "calls": [[name without slot prefix, args]]}`, `{"tool": [id, text]}`.
/// Assistant tool-call names must carry a slot prefix (that is what OpenCode showed the model).
fn turns(req: &Value) -> Vec<Value> {
    req["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in model request {req}"))
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            let text = content_text(&m["content"]);
            match m["role"].as_str().unwrap_or("") {
                "assistant" => {
                    let calls: Vec<Value> = m["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            let name = c["function"]["name"].as_str().unwrap_or("");
                            assert!(
                                slot_prefix(name).is_some(),
                                "the model's own call names carry the slot prefix: {c}"
                            );
                            let args: Value =
                                serde_json::from_str(c["function"]["arguments"].as_str().unwrap())
                                    .unwrap();
                            json!([client_name(name), args])
                        })
                        .collect();
                    if calls.is_empty() {
                        json!({"assistant": text})
                    } else {
                        json!({"assistant": text, "calls": calls})
                    }
                }
                "tool" => json!({"tool": [m["tool_call_id"], text]}),
                role => json!({ role: text }),
            }
        })
        .collect()
}

/// The system prompt the model received.
fn system_text(req: &Value) -> String {
    req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "system")
        .map(|m| content_text(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Model requests made since `before`, checked to be exactly `n`.
#[track_caller]
fn model_calls_since(bed: &TestBed, before: usize, n: usize, what: &str) -> Vec<Value> {
    let all = bed.mock.requests();
    let new = all[before..].to_vec();
    assert_eq!(
        new.len(),
        n,
        "{what}: expected {n} model call(s), got {}: {:#?}",
        new.len(),
        new.iter().map(turns).collect::<Vec<_>>()
    );
    new
}

/// Asserts that no model request since `before` replayed a transcript or wrote tool results
/// out as prose.
#[track_caller]
fn assert_no_replay(bed: &TestBed, before: usize, what: &str) {
    for req in &bed.mock.requests()[before..] {
        let s = req["messages"].to_string();
        assert!(
            !s.contains(TRANSCRIPT_MARK) && !s.contains(WRITTEN_RESULTS_MARK),
            "{what}: the model got a replayed transcript or written-out results: {:#?}",
            turns(req)
        );
    }
}

/// A tool call as the client received it: `(id, name, arguments)`.
type Call = (String, String, Value);

/// The tool calls of a JSON chat completion that ended with `tool_calls`, checked for OpenAI's
/// shape (schema, `finish_reason`, ids, `type`, names without the slot prefix, arguments a JSON
/// string).
#[track_caller]
fn tool_calls_of(status: StatusCode, v: &Value) -> Vec<Call> {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_valid("CreateChatCompletionResponse", v);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["role"], "assistant", "{v}");
    let calls = message["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no message.tool_calls: {v}"));
    assert!(!calls.is_empty(), "{v}");
    calls.iter().map(|c| call_shape(c, v)).collect()
}

#[track_caller]
fn call_shape(c: &Value, whole: &Value) -> Call {
    let id = c["id"].as_str().unwrap_or_default();
    assert!(
        id.starts_with("call_") && id.len() > 5,
        "call id: {c} in {whole}"
    );
    assert_eq!(c["type"], "function", "{c}");
    let name = c["function"]["name"].as_str().unwrap_or_default();
    assert!(
        slot_prefix(name).is_none() && !name.contains("ptk"),
        "the client must see its own tool name, not OpenCode's: {c}"
    );
    let args = c["function"]["arguments"]
        .as_str()
        .unwrap_or_else(|| panic!("arguments must be a JSON string: {c}"));
    let args: Value =
        serde_json::from_str(args).unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {c}"));
    (id.to_string(), name.to_string(), args)
}

/// `(name, arguments)` of calls, for comparisons.
fn named(calls: &[Call]) -> Vec<(String, Value)> {
    calls
        .iter()
        .map(|(_, n, a)| (n.clone(), a.clone()))
        .collect()
}

/// The text answer of a JSON chat completion that finished with `stop`.
#[track_caller]
fn answer_of(status: StatusCode, v: &Value) -> String {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_valid("CreateChatCompletionResponse", v);
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(
        v["choices"][0]["message"]["tool_calls"].is_null(),
        "a text answer carries no tool_calls: {v}"
    );
    content(v).to_string()
}

/// The tool calls of a conforming stream that finished with `tool_calls`: per call, the first
/// delta carries its index, id, `type: function` and name, the later ones only arguments.
#[track_caller]
fn streamed_calls(s: &Streamed) -> Vec<Call> {
    assert_eq!(s.finish_reason, "tool_calls", "{:#?}", s.chunks);
    assert_eq!(s.content, "", "no text before the calls");
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for chunk in &s.chunks {
        let Some(deltas) = chunk["choices"][0]["delta"]["tool_calls"].as_array() else {
            continue;
        };
        for d in deltas {
            let index = d["index"]
                .as_u64()
                .unwrap_or_else(|| panic!("delta without index: {d}"))
                as usize;
            let piece = d["function"]["arguments"].as_str().unwrap_or("");
            if index == calls.len() {
                let id = d["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("the first delta of a call carries its id: {d}"));
                assert_eq!(d["type"], "function", "{d}");
                let name = d["function"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("the first delta of a call carries its name: {d}"));
                calls.push((id.to_string(), name.to_string(), piece.to_string()));
            } else {
                assert!(index < calls.len(), "call indexes count from 0: {d}");
                assert!(
                    d["id"].is_null() && d["function"]["name"].is_null(),
                    "later deltas of a call carry only arguments: {d}"
                );
                calls[index].2.push_str(piece);
            }
        }
    }
    let fake = json!({"choices": s.chunks});
    calls
        .into_iter()
        .map(|(id, name, args)| {
            call_shape(
                &json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}),
                &fake,
            )
        })
        .collect()
}

/// The assistant message a client sends back for `calls` (`content` as given).
fn assistant_calls(content: Value, calls: &[Call]) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    json!({"role": "assistant", "content": content, "tool_calls": tool_calls})
}

/// A step of 150 parallel calls (a 64-entry queue between the MCP door and the run used to
/// refuse the 65th unread call silently, and a step past 128 hung to the deadline): every call
/// comes back, promptly, and their results reach the model.
async fn many_parallel_calls_all_come_back(bed: &TestBed) {
    const N: usize = 150;
    let markers: String = (0..N)
        .map(|i| format!(r#"[call:get_weather:{{"city":"c{i}"}}]"#))
        .collect();
    let mut messages = vec![user(&format!("many calls {markers}"))];
    let tools = [weather()];
    let started = Instant::now();
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let cities: BTreeSet<String> = calls
        .iter()
        .map(|(_, _, a)| a["city"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(cities.len(), N, "calls came back: {}", calls.len());
    messages.push(v["choices"][0]["message"].clone());
    for (id, _, _) in &calls {
        messages.push(tool_result(id, "sunny"));
    }
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text.matches("=sunny").count(), N, "{text}");
}

/// Answers every call of `v` with "ok" until the model answers in text (leaves no run parked).
async fn finish_loop(bed: &TestBed, mut messages: Vec<Value>, tools: &[Value], mut v: Value) {
    for _ in 0..6 {
        if v["choices"][0]["finish_reason"] != "tool_calls" {
            return;
        }
        messages.push(v["choices"][0]["message"].clone());
        for (id, _, _) in tool_calls_of(StatusCode::OK, &v) {
            messages.push(tool_result(&id, "ok"));
        }
        let (s, next) = bed.chat(tool_body(&messages, tools)).await;
        assert_eq!(s, StatusCode::OK, "{next}");
        v = next;
    }
    panic!("the tool loop did not end: {v}");
}

/// Upstream session ids.
async fn sessions(bed: &TestBed) -> BTreeSet<String> {
    bed.opencode.session_ids().await
}

/// `POST /v1/chat/completions` on `gw` (not necessarily the bed's) → (status, JSON body).
async fn chat_on(gw: &Gateway, body: &Value) -> (StatusCode, Value) {
    let (s, _, v) = send(
        test_client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(body),
    )
    .await;
    (s, v)
}

// ---------------------------------------------------------------------------------------------
// The tool loop
// ---------------------------------------------------------------------------------------------

/// The client-tools loop, one test per behaviour (see the module docs): those that restart the
/// gateway have a bed of their own, the others share one.
mod tool_loop {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    async fn bed() -> TestBed {
        Harness::real().start().await
    }

    #[test]
    fn results_reach_the_model_as_tool_results() {
        BED.run(bed, super::results_reach_the_model_as_tool_results);
    }

    #[test]
    fn streamed_parallel_calls() {
        BED.run(bed, super::streamed_parallel_calls);
    }

    #[test]
    fn several_rounds_in_one_run() {
        BED.run(bed, super::several_rounds_in_one_run);
    }

    #[test]
    fn many_parallel_calls_all_come_back() {
        BED.run(bed, super::many_parallel_calls_all_come_back);
    }

    #[test]
    fn one_call_per_response_without_parallel_tool_calls() {
        BED.run(
            bed,
            super::one_call_per_response_without_parallel_tool_calls,
        );
    }

    #[test]
    fn tool_choice_decides_what_the_model_is_offered() {
        BED.run(bed, super::tool_choice_decides_what_the_model_is_offered);
    }

    #[test]
    fn names_of_opencode_tools_reach_the_client() {
        BED.run(bed, super::names_of_opencode_tools_reach_the_client);
    }

    #[test]
    fn structured_outputs() {
        BED.run(bed, super::structured_outputs);
    }

    #[test]
    fn bad_tool_requests_are_400() {
        BED.run(bed, super::bad_tool_requests_are_400);
    }

    #[test]
    fn explicit_session_runs_the_loop() {
        BED.run(bed, super::explicit_session_runs_the_loop);
    }

    #[test]
    fn unseen_history_is_seeded_with_calls_and_results() {
        BED.run(bed, super::unseen_history_is_seeded_with_calls_and_results);
    }

    #[test]
    fn sdk_runs_the_loop() {
        BED.run(bed, super::sdk_runs_the_loop);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn restarted_gateway_seeds_what_it_never_saw() {
        let mut bed = bed().await;
        super::restarted_gateway_seeds_what_it_never_saw(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn opencode_tools_on_leave_client_tools_alone() {
        let mut bed = bed().await;
        super::opencode_tools_on_leave_client_tools_alone(&mut bed).await;
    }
}

/// One call, JSON: the client gets `finish_reason: "tool_calls"` and the call under its own
/// name (the model was offered exactly the client's tools, slot-prefixed, nothing of
/// OpenCode's); the results come back as a `tool` message and reach the model *as a tool
/// result* in the same run (one session, two model calls, no transcript). A follow-up turn then
/// continues that session without replay, like any follow-up.
async fn results_reach_the_model_as_tool_results(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = [weather(), time()];
    let mut messages = vec![user(r#"weather? [call:get_weather:{"city":"Paris"}]"#)];

    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(
        named(&calls),
        vec![("get_weather".to_string(), json!({"city": "Paris"}))]
    );
    assert!(
        v["choices"][0]["message"]["content"].is_null(),
        "a tool-call-only message has null content: {v}"
    );
    let first = &model_calls_since(bed, before, 1, "the call")[0];
    assert_eq!(
        offered_client_tools(first),
        BTreeSet::from(["get_weather".to_string(), "get_time".to_string()])
    );
    assert_eq!(
        offered(first).len(),
        2,
        "only the client's tools are offered (OpenCode's own are off): {:?}",
        offered(first)
    );

    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "sunny, 21 C"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let answer = answer_of(s, &v);
    assert_eq!(answer, "echo tool results: call_0_0=sunny, 21 C");
    let second = &model_calls_since(bed, before, 2, "the results")[1];
    assert_eq!(
        turns(second),
        vec![
            json!({"user": r#"weather? [call:get_weather:{"city":"Paris"}]"#}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Paris"}]]}),
            json!({"tool": ["call_0_0", "sunny, 21 C"]}),
        ],
        "the results reach the model as a tool result of its own call"
    );
    let after = sessions(bed).await;
    let new: Vec<&String> = after.difference(&before_sessions).collect();
    assert_eq!(new.len(), 1, "one session for the whole loop: {new:?}");
    let session = new[0].clone();

    // A follow-up continues the session, sending only the new message.
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(user("and tomorrow?"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo: and tomorrow?");
    let third = &model_calls_since(bed, before, 3, "the follow-up")[2];
    assert_eq!(
        turns(third),
        vec![
            json!({"user": r#"weather? [call:get_weather:{"city":"Paris"}]"#}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Paris"}]]}),
            json!({"tool": ["call_0_0", "sunny, 21 C"]}),
            json!({"assistant": "echo tool results: call_0_0=sunny, 21 C"}),
            json!({"user": "and tomorrow?"}),
        ],
        "the follow-up sees every turn once, as real messages"
    );
    assert_no_replay(bed, before, "tool loop and follow-up");
    assert_eq!(
        sessions(bed).await,
        after,
        "the follow-up reuses the loop's session"
    );
    let upstream = bed.opencode.messages(&session).await;
    assert_eq!(
        upstream
            .iter()
            .filter(|m| m["info"]["role"] == "user")
            .count(),
        2,
        "the session holds the two user turns, not a replay"
    );
}

/// Streaming, two calls in one step: schema-valid chunks whose `delta.tool_calls` announce each
/// call (index, id, type, name) before its arguments, `finish_reason: "tool_calls"`. The
/// client answers in the other order, streaming: the model gets both results as tool messages
/// in call order, in the same run.
async fn streamed_parallel_calls(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = [weather(), time()];
    let prompt = r#"both [call:get_weather:{"city":"Oslo"}] [call:get_time:{"city":"Lima"}]"#;
    let mut messages = vec![user(prompt)];
    let mut body = tool_body(&messages, &tools);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let streamed = bed.read_ok_stream(body).await;
    let calls = streamed_calls(&streamed);
    assert_eq!(
        named(&calls),
        vec![
            ("get_weather".to_string(), json!({"city": "Oslo"})),
            ("get_time".to_string(), json!({"city": "Lima"})),
        ]
    );
    assert_ne!(calls[0].0, calls[1].0, "each call has its own id");
    assert_eq!(
        streamed.usage_chunks.len(),
        1,
        "the usage chunk was asked for"
    );
    model_calls_since(bed, before, 1, "both calls in one step");

    // The client accumulated `content: ""` from the first chunk, as SDKs do.
    messages.push(assistant_calls(json!(""), &calls));
    messages.push(tool_result(&calls[1].0, "noon"));
    messages.push(tool_result(&calls[0].0, "snow"));
    let mut body = tool_body(&messages, &tools);
    body["stream"] = json!(true);
    let answered = bed.read_ok_stream(body).await;
    assert_eq!(answered.finish_reason, "stop");
    assert_eq!(
        answered.content,
        "echo tool results: call_0_0=snow; call_0_1=noon"
    );
    let second = &model_calls_since(bed, before, 2, "the results")[1];
    assert_eq!(
        turns(second)[1..],
        [
            json!({"assistant": "", "calls": [["get_weather", {"city": "Oslo"}], ["get_time", {"city": "Lima"}]]}),
            json!({"tool": ["call_0_0", "snow"]}),
            json!({"tool": ["call_0_1", "noon"]}),
        ]
    );
    assert_no_replay(bed, before, "streamed parallel calls");
}

/// `[sticky:2]`: call → result → call → result → answer, three responses of one run: each
/// round gets fresh ids, every result reaches the model as a tool result, one session.
async fn several_rounds_in_one_run(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = [weather()];
    let prompt = r#"keep asking [sticky:2] [call:get_weather:{"city":"Rome"}]"#;
    let mut messages = vec![user(prompt)];
    let mut ids = BTreeSet::new();
    for (round, result) in ["warm", "warmer"].into_iter().enumerate() {
        let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
        let calls = tool_calls_of(s, &v);
        assert_eq!(
            named(&calls),
            vec![("get_weather".to_string(), json!({"city": "Rome"}))],
            "round {round}"
        );
        assert!(ids.insert(calls[0].0.clone()), "round {round} reused an id");
        messages.push(v["choices"][0]["message"].clone());
        messages.push(tool_result(&calls[0].0, result));
    }
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_1_0=warmer");
    let last = &model_calls_since(bed, before, 3, "two rounds and the answer")[2];
    assert_eq!(
        turns(last),
        vec![
            json!({"user": prompt}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Rome"}]]}),
            json!({"tool": ["call_0_0", "warm"]}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Rome"}]]}),
            json!({"tool": ["call_1_0", "warmer"]}),
        ]
    );
    assert_no_replay(bed, before, "several rounds");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        1,
        "one session for all rounds"
    );
}

/// `parallel_tool_calls: false` with a model that makes two calls in one step: the client gets
/// them in two responses of one call each (the second without another model call), and the
/// model then gets both results together.
async fn one_call_per_response_without_parallel_tool_calls(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = [weather(), time()];
    let prompt =
        r#"one by one [call:get_weather:{"city":"Kyiv"}] [call:get_time:{"city":"Quito"}]"#;
    let mut messages = vec![user(prompt)];
    let mut got = Vec::new();
    for result in ["cold", "dawn"] {
        let mut body = tool_body(&messages, &tools);
        body["parallel_tool_calls"] = json!(false);
        let (s, v) = bed.chat(body).await;
        let calls = tool_calls_of(s, &v);
        assert_eq!(calls.len(), 1, "one call per response: {v}");
        got.extend(named(&calls));
        messages.push(v["choices"][0]["message"].clone());
        messages.push(tool_result(&calls[0].0, result));
    }
    assert_eq!(
        got,
        vec![
            ("get_weather".to_string(), json!({"city": "Kyiv"})),
            ("get_time".to_string(), json!({"city": "Quito"})),
        ]
    );
    model_calls_since(bed, before, 1, "both calls come from one model step");
    let mut body = tool_body(&messages, &tools);
    body["parallel_tool_calls"] = json!(false);
    let (s, v) = bed.chat(body).await;
    assert_eq!(
        answer_of(s, &v),
        "echo tool results: call_0_0=cold; call_0_1=dawn"
    );
    model_calls_since(bed, before, 2, "then the answer");
    assert_no_replay(bed, before, "one call per response");
}

/// `tool_choice`: `none` offers the model no client tool; `required` offers them all and tells
/// the model it must call one; a named function is the only one offered, and the model is told
/// to call it.
async fn tool_choice_decides_what_the_model_is_offered(bed: &TestBed) {
    let tools = [weather(), time()];

    let before = bed.mock.call_count();
    let mut body = tool_body(&[user("no tools now")], &tools);
    body["tool_choice"] = json!("none");
    let (s, v) = bed.chat(body).await;
    assert_eq!(answer_of(s, &v), "echo: no tools now");
    let req = &model_calls_since(bed, before, 1, "tool_choice none")[0];
    assert!(
        offered_client_tools(req).is_empty(),
        "tool_choice none offers no client tool: {:?}",
        offered(req)
    );

    let before = bed.mock.call_count();
    let messages = vec![user(r#"must [call:get_time:{"city":"Baku"}]"#)];
    let mut body = tool_body(&messages, &tools);
    body["tool_choice"] = json!("required");
    let (s, v) = bed.chat(body).await;
    assert_eq!(tool_calls_of(s, &v)[0].1, "get_time");
    let req = &model_calls_since(bed, before, 1, "tool_choice required")[0];
    assert_eq!(
        offered_client_tools(req),
        BTreeSet::from(["get_weather".to_string(), "get_time".to_string()])
    );
    assert!(
        system_text(req).contains("must call at least one"),
        "required: the model is told to call a tool"
    );
    finish_loop(bed, messages, &tools, v).await;

    let before = bed.mock.call_count();
    let messages = vec![user(r#"named [call:get_time:{"city":"Cairo"}]"#)];
    let mut body = tool_body(&messages, &tools);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let (s, v) = bed.chat(body).await;
    assert_eq!(tool_calls_of(s, &v)[0].1, "get_time");
    let req = &model_calls_since(bed, before, 1, "tool_choice named")[0];
    assert_eq!(
        offered_client_tools(req),
        BTreeSet::from(["get_time".to_string()]),
        "a named choice offers only that function"
    );
    let visible = offered(req)[0].clone();
    assert!(
        system_text(req).contains(&format!("must call the tool `{visible}`")),
        "named: the model is told which tool to call"
    );
    finish_loop(bed, messages, &tools, v).await;
}

/// Client tools named like OpenCode's own (`bash`, `read`) are the client's: the calls reach
/// the client under those names and OpenCode runs nothing itself.
async fn names_of_opencode_tools_reach_the_client(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = [
        json!({"type": "function", "function": {"name": "bash", "parameters": {"type": "object",
            "properties": {"command": {"type": "string"}}}}}),
        json!({"type": "function", "function": {"name": "read", "parameters": {"type": "object",
            "properties": {"path": {"type": "string"}}}}}),
    ];
    let prompt = r#"collide [call:bash:{"command":"rm -rf /"}] [call:read:{"path":"/etc/passwd"}]"#;
    let mut messages = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(
        named(&calls),
        vec![
            ("bash".to_string(), json!({"command": "rm -rf /"})),
            ("read".to_string(), json!({"path": "/etc/passwd"})),
        ]
    );
    let req = &model_calls_since(bed, before, 1, "colliding names")[0];
    assert!(
        offered(req).iter().all(|n| slot_prefix(n).is_some()),
        "only the client's (slot-prefixed) tools are offered: {:?}",
        offered(req)
    );
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "client ran bash"));
    messages.push(tool_result(&calls[1].0, "client read it"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(
        answer_of(s, &v),
        "echo tool results: call_0_0=client ran bash; call_0_1=client read it"
    );
}

/// `response_format`: `json_schema` (strict) returns the structured result as the message
/// content, a JSON string valid against the schema (JSON and streamed); `json_object` a JSON
/// object; output that violates the schema is a clear 502 at once, not a hang.
async fn structured_outputs(bed: &TestBed) {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"},
        "n": {"type": "integer"}}, "required": ["answer", "n"], "additionalProperties": false});
    let format = json!({"type": "json_schema", "json_schema": {"name": "verdict", "strict": true,
        "schema": schema}});
    let validator = jsonschema::validator_for(&schema).unwrap();

    let before = bed.mock.call_count();
    let mut body = support::ask(ECHO, r#"[call:StructuredOutput:{"answer":"yes","n":3}]"#);
    body["response_format"] = format.clone();
    let (s, v) = bed.chat(body.clone()).await;
    let text = answer_of(s, &v);
    let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(validator.is_valid(&parsed), "{parsed}");
    assert_eq!(parsed, json!({"answer": "yes", "n": 3}));
    let req = &model_calls_since(bed, before, 1, "structured output")[0];
    assert!(
        offered(req).contains(&"StructuredOutput".to_string()),
        "{:?}",
        offered(req)
    );

    let streamed = bed.read_ok_stream(support::streaming(body)).await;
    assert_eq!(streamed.finish_reason, "stop");
    let parsed: Value = serde_json::from_str(&streamed.content).unwrap();
    assert_eq!(parsed, json!({"answer": "yes", "n": 3}));

    let mut body = support::ask(ECHO, r#"[call:StructuredOutput:{"any":["thing",1]}]"#);
    body["response_format"] = json!({"type": "json_object"});
    let (s, v) = bed.chat(body).await;
    let parsed: Value = serde_json::from_str(&answer_of(s, &v)).unwrap();
    assert_eq!(parsed, json!({"any": ["thing", 1]}));

    let mut body = support::ask(ECHO, r#"[call:StructuredOutput:{"answer":5}]"#);
    body["response_format"] = format;
    let started = Instant::now();
    let (s, v) = bed.chat(body).await;
    assert_error(s, &v, 502, Some("upstream_error"), None, "schema violation");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("schema"),
        "the error says the output broke the schema: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a schema violation is answered at once, not after a deadline: {:?}",
        started.elapsed()
    );
}

/// Malformed tool requests are refused by the real binary too, naming the field (the full set
/// is in `tests/http_api/validation.rs`), before anything reaches the model; results that leave
/// one of a parked run's calls unanswered are a 400 and the run keeps waiting for them.
async fn bad_tool_requests_are_400(bed: &TestBed) {
    let before = bed.mock.call_count();
    let nameless = json!([{"type": "function", "function": {"parameters": {"type": "object"}}}]);
    let (s, v) = bed
        .chat(tool_body(&[user("hi")], nameless.as_array().unwrap()))
        .await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("tools[0].function.name"),
        "nameless tool",
    );
    let mut body = tool_body(&[user("hi")], &[weather()]);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let (s, v) = bed.chat(body).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("tool_choice"),
        "tool_choice naming no tool",
    );
    assert_eq!(bed.mock.call_count(), before, "a 400 reaches no model");

    let tools = [weather(), time()];
    let prompt =
        r#"two at once [call:get_weather:{"city":"Bari"}] [call:get_time:{"city":"Bari"}]"#;
    let mut messages = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(calls.len(), 2);
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "hot"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_error(s, &v, 400, None, Some("messages"), "one of two results");
    let mut stray = messages.clone();
    stray.push(tool_result(&calls[1].0, "late"));
    stray.push(tool_result("call_nobody_made", "?"));
    let (s, v) = bed.chat(tool_body(&stray, &tools)).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("messages[4].tool_call_id"),
        "a result for no call",
    );
    messages.push(tool_result(&calls[1].0, "late"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(
        answer_of(s, &v),
        "echo tool results: call_0_0=hot; call_0_1=late",
        "after the 400s the run still waits for its results"
    );
    model_calls_since(bed, before, 2, "the call and the results");
}

/// An explicit session (`x-session-id`): the call, the results (only they are sent; the session
/// holds the rest) and a later turn all run in that session, the model getting real tool
/// results.
async fn explicit_session_runs_the_loop(bed: &TestBed) {
    let (s, created) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let pinned = |body: &Value| {
        send(
            bed.client
                .post(bed.url("/v1/chat/completions"))
                .header("x-session-id", &id)
                .json(body),
        )
    };
    let before = bed.mock.call_count();
    let tools = [weather()];
    let prompt = r#"pinned weather [call:get_weather:{"city":"Bern"}]"#;
    let (s, _, v) = pinned(&tool_body(&[user(prompt)], &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(calls[0].1, "get_weather");

    let results = vec![
        user(prompt),
        v["choices"][0]["message"].clone(),
        tool_result(&calls[0].0, "foggy"),
    ];
    let (s, _, v) = pinned(&tool_body(&results, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_0_0=foggy");
    let (s, _, v) = pinned(&tool_body(&[user("pinned next")], &tools)).await;
    assert_eq!(answer_of(s, &v), "echo: pinned next");
    let last = &model_calls_since(bed, before, 3, "pinned loop")[2];
    assert_eq!(
        turns(last),
        vec![
            json!({"user": prompt}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Bern"}]]}),
            json!({"tool": ["call_0_0", "foggy"]}),
            json!({"assistant": "echo tool results: call_0_0=foggy"}),
            json!({"user": "pinned next"}),
        ]
    );
    assert_no_replay(bed, before, "explicit session");
    let (s, v) = bed.get(&format!("/v1/sessions/{id}/messages")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A history with tool calls the gateway never produced (another client's, or from before a
/// restart) cannot resume a run: a new session is seeded with the calls and results written
/// out, in one model call, and the client gets an answer.
async fn unseen_history_is_seeded_with_calls_and_results(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = [weather()];
    let messages = vec![
        user("what is the weather in Paris?"),
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_elsewhere_1",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
        tool_result("call_elsewhere_1", "rainy, 12 C"),
    ];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let answer = answer_of(s, &v);
    assert!(answer.starts_with("echo: "), "{answer}");
    let req = &model_calls_since(bed, before, 1, "a seeded history")[0];
    let t = turns(req);
    assert_eq!(t.len(), 1, "a seeded session gets one user message: {t:#?}");
    let text = t[0]["user"].as_str().unwrap();
    for expected in [
        TRANSCRIPT_MARK,
        "what is the weather in Paris?",
        r#"<tool_call id="call_elsewhere_1" name="get_weather">{"city":"Paris"}</tool_call>"#,
        "<tool_result id=\"call_elsewhere_1\">\nrainy, 12 C\n</tool_result>",
    ] {
        assert!(
            text.contains(expected),
            "the seeded prompt lacks {expected:?}: {text}"
        );
    }
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        1,
        "one new session"
    );
}

/// The official openai-node SDK runs the loop itself: by hand with JSON answers, with its
/// stream helper (parallel calls), and with its `runTools` runner over two rounds. Every resent
/// history resumed its run (no replay, one session per loop).
async fn sdk_runs_the_loop(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let out = support::node_sdk::run_script(
        "chat_tools.mjs",
        &bed.gateway.url(),
        None,
        Duration::from_secs(90),
    )
    .await;
    eprintln!("[sdk] {out}");
    let manual = &out["manual"];
    assert_eq!(manual["finish1"], "tool_calls", "{out}");
    assert_eq!(manual["calls"][0]["name"], "get_weather");
    assert_eq!(manual["calls"][0]["type"], "function");
    assert_eq!(manual["calls"][0]["arguments"], json!({"city": "Paris"}));
    assert_eq!(manual["finish2"], "stop");
    assert_eq!(
        manual["content"],
        "echo tool results: call_0_0=sunny in Paris"
    );

    let streamed = &out["streamed"];
    assert_eq!(streamed["finish1"], "tool_calls", "{out}");
    let names: Vec<&str> = streamed["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(
        streamed["argumentsDone"],
        json!([{"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}},
               {"index": 1, "name": "get_time", "arguments": {"city": "Lima"}}])
    );
    assert_eq!(streamed["finish2"], "stop");
    assert_eq!(
        streamed["content"],
        "echo tool results: call_0_0=sunny in Oslo; call_0_1=noon in Lima"
    );
    assert!(streamed["deltas"].as_u64().unwrap() >= 1);

    let runner = &out["runner"];
    assert_eq!(
        runner["content"], "echo tool results: call_1_0=sunny in Rome",
        "{out}"
    );
    assert_eq!(
        runner["toolCalls"],
        json!([{"city": "Rome"}, {"city": "Rome"}])
    );
    assert_eq!(
        runner["roles"],
        json!([
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant"
        ])
    );

    // 2 + 2 + 3 model calls in three sessions: every resent history resumed its run.
    model_calls_since(bed, before, 7, "the SDK's three loops");
    assert_no_replay(bed, before, "the SDK's loops");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        3,
        "one session per loop"
    );
}

/// A gateway restarted over the same OpenCode has seen nothing: a follow-up of a finished tool
/// loop, and results for a run the old process held, are both answered through a seeded
/// session (calls and results written out).
async fn restarted_gateway_seeds_what_it_never_saw(bed: &mut TestBed) {
    let tools = [weather()];
    let prompt = r#"before restart [call:get_weather:{"city":"Nice"}]"#;
    let mut done = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&done, &tools)).await;
    let calls = tool_calls_of(s, &v);
    done.push(v["choices"][0]["message"].clone());
    done.push(tool_result(&calls[0].0, "mild"));
    let (s, v) = bed.chat(tool_body(&done, &tools)).await;
    done.push(json!({"role": "assistant", "content": answer_of(s, &v)}));
    done.push(user("after restart"));

    let held_prompt = r#"held across restart [call:get_weather:{"city":"Metz"}]"#;
    let (s, v) = bed.chat(tool_body(&[user(held_prompt)], &tools)).await;
    let held = tool_calls_of(s, &v);
    let held_results = vec![
        user(held_prompt),
        v["choices"][0]["message"].clone(),
        tool_result(&held[0].0, "windy"),
    ];

    bed.gateway.kill().await;
    // The old process's held call broke with it; OpenCode finishes that run on its own.
    let _ = bed.opencode.wait_not_busy(Duration::from_secs(10)).await;
    bed.gateway = Gateway::start(&bed.opencode.url()).await;

    let before = bed.mock.call_count();
    let (s, v) = bed.chat(tool_body(&done, &tools)).await;
    let answer = answer_of(s, &v);
    assert!(answer.ends_with("after restart"), "{answer}");
    let req = &model_calls_since(bed, before, 1, "follow-up after restart")[0];
    let text = turns(req)[0]["user"].as_str().unwrap().to_string();
    assert!(
        text.contains(TRANSCRIPT_MARK)
            && text.contains(&format!(
                r#"<tool_call id="{}" name="get_weather">{{"city":"Nice"}}</tool_call>"#,
                calls[0].0
            ))
            && text.contains(&format!(
                "<tool_result id=\"{}\">\nmild\n</tool_result>",
                calls[0].0
            )),
        "the seeded prompt carries the earlier call and result: {text}"
    );

    let before = bed.mock.call_count();
    let (s, v) = bed.chat(tool_body(&held_results, &tools)).await;
    answer_of(s, &v);
    let req = &model_calls_since(bed, before, 1, "results after restart")[0];
    let text = req["messages"].to_string();
    assert!(
        text.contains("windy") && text.contains(WRITTEN_RESULTS_MARK),
        "results for a run the old process held are written into a seeded prompt: {:#?}",
        turns(req)
    );
}

/// `prompt.tools_enabled = true` gives the model OpenCode's own tools as well; client tools work
/// the same beside them (and the default, checked above, offers only the client's).
async fn opencode_tools_on_leave_client_tools_alone(bed: &mut TestBed) {
    bed.gateway.kill().await;
    let opts = GatewayOptions::default().config("[prompt]\ntools_enabled = true\n");
    bed.gateway = Gateway::start_with(&bed.opencode.url(), opts).await;
    let before = bed.mock.call_count();
    let tools = [weather()];
    let prompt = r#"with opencode tools [call:get_weather:{"city":"Graz"}]"#;
    let mut messages = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(calls[0].1, "get_weather");
    let req = &model_calls_since(bed, before, 1, "tools enabled")[0];
    let names = offered(req);
    assert!(
        names.iter().any(|n| n == "read" || n == "bash"),
        "OpenCode's own tools are offered when enabled: {names:?}"
    );
    assert_eq!(
        offered_client_tools(req),
        BTreeSet::from(["get_weather".to_string()])
    );
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "clear"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_0_0=clear");
}

// ---------------------------------------------------------------------------------------------
// Abandoned runs
// ---------------------------------------------------------------------------------------------

/// A client that never comes back, with one tool slot and a 2 s result timeout.
#[tokio::test(flavor = "multi_thread")]
async fn abandoned_tool_runs() {
    let config = "[client_tools]\nresult_timeout_secs = 2\nmax_runs = 1\n";
    let bed = Harness::real()
        .opencode(Default::default())
        .gateway(GatewayOptions::default().config(config))
        .start()
        .await;
    let mut s = Scenarios::new();
    scenario!(s, a_client_that_never_returns_frees_everything(&bed));
    s.finish(&bed.gateway.logs());
}

/// The parked run holds the only slot: another tool run is a 429 `too_many_tool_runs` (with
/// `Retry-After`), a plain chat still runs. After the 2 s timeout the held call is answered
/// with an error while the run is aborted (the model is not called again), OpenCode's session
/// is idle and deleted, the gateway's `/status` is clean, and the next tool run gets the slot.
/// The late results are then answered through a seeded session.
async fn a_client_that_never_returns_frees_everything(bed: &TestBed) {
    let tools = [weather()];
    let before_sessions = sessions(bed).await;
    let mut events = bed.opencode.subscribe_events().await;
    let prompt = r#"never answered [call:get_weather:{"city":"Faro"}]"#;
    let (s, v) = bed.chat(tool_body(&[user(prompt)], &tools)).await;
    let parked_at = Instant::now();
    let calls = tool_calls_of(s, &v);
    let late_results = vec![
        user(prompt),
        v["choices"][0]["message"].clone(),
        tool_result(&calls[0].0, "too late"),
    ];
    let model_calls = bed.mock.call_count();
    let new: Vec<String> = sessions(bed)
        .await
        .difference(&before_sessions)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let session = new[0].clone();
    assert!(
        bed.opencode
            .busy_sessions()
            .await
            .iter()
            .any(|(id, _)| *id == session),
        "while parked, OpenCode's run waits on the held call"
    );

    // The only slot is taken: another tool run is refused, a plain chat is not.
    let other = tool_body(
        &[user(r#"second [call:get_weather:{"city":"Pau"}]"#)],
        &tools,
    );
    let (s, headers, v) = send(
        bed.client
            .post(bed.url("/v1/chat/completions"))
            .json(&other),
    )
    .await;
    assert_error(
        s,
        &v,
        429,
        Some("too_many_tool_runs"),
        None,
        "second tool run",
    );
    assert!(
        headers.get("retry-after").is_some(),
        "a 429 says when to retry: {headers:?}"
    );
    let (s, v) = bed.chat(support::ask(ECHO, "no tools, no slot")).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The timeout: the held call errors, the run stops, the session goes.
    let gone = support::eventually(Duration::from_secs(10), || async {
        !sessions(bed).await.contains(&session)
    })
    .await;
    let waited = parked_at.elapsed();
    assert!(
        gone,
        "the abandoned run's session was not deleted within 10 s"
    );
    assert!(
        waited >= Duration::from_millis(1900),
        "abandoned before the 2 s result timeout: {waited:?}"
    );
    let seen = events
        .collect_until(Duration::from_secs(3), |ev| {
            ev["type"] == "session.deleted" && event_session_id(ev) == Some(session.as_str())
        })
        .await;
    let tool_states: Vec<&Value> = seen
        .iter()
        .filter(|ev| event_session_id(ev) == Some(session.as_str()))
        .filter(|ev| ev["properties"]["part"]["type"] == "tool")
        .map(|ev| &ev["properties"]["part"]["state"])
        .collect();
    assert!(
        tool_states.iter().any(|st| st["status"] == "error"),
        "the held call ends in an error: {tool_states:#?}"
    );
    assert!(
        bed.opencode
            .wait_not_busy(Duration::from_secs(2))
            .await
            .is_ok(),
        "OpenCode still runs something after the abandoned run"
    );
    assert_eq!(
        bed.mock.call_count(),
        model_calls + 1,
        "after the timeout the model is not called again (only the plain chat was)"
    );
    let (s, status) = bed.get("/status").await;
    assert_eq!(s, StatusCode::OK, "{status}");
    assert_eq!(status["events"]["connected"], true, "{status}");
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            bed.get("/status").await.1["pool"]["pending_cleanup"] == 0
        })
        .await,
        "clean-up left pending"
    );

    // The slot is free again.
    let (s, v) = bed.chat(other.clone()).await;
    let calls = tool_calls_of(s, &v);
    let mut messages = other["messages"].as_array().unwrap().clone();
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "sunny"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_0_0=sunny");

    // The late results still get an answer, through a seeded session.
    let before = bed.mock.call_count();
    let (s, v) = bed.chat(tool_body(&late_results, &tools)).await;
    answer_of(s, &v);
    let req = &model_calls_since(bed, before, 1, "late results")[0];
    assert!(
        req["messages"].to_string().contains("too late"),
        "{:#?}",
        turns(req)
    );
}

// ---------------------------------------------------------------------------------------------
// Several gateways
// ---------------------------------------------------------------------------------------------

/// Runs one whole tool loop on `gw`: `[user(prompt)]` → one call of `get_weather` → its result
/// → the model's answer (which it returns).
async fn loop_on(gw: &Gateway, prompt: &str, result: &str) -> Result<String, String> {
    let tools = [weather()];
    let mut messages = vec![user(prompt)];
    let (s, v) = chat_on(gw, &tool_body(&messages, &tools)).await;
    if v["choices"][0]["finish_reason"] != "tool_calls" {
        return Err(format!("expected tool_calls, got {s}: {v}"));
    }
    let calls = tool_calls_of(s, &v);
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, result));
    let (s, v) = chat_on(gw, &tool_body(&messages, &tools)).await;
    if s != StatusCode::OK {
        return Err(format!("the results got {s}: {v}"));
    }
    Ok(content(&v).to_string())
}

/// Two gateways (replicas, or an old and a new process during a rolling restart) in front of
/// one OpenCode each run tool loops, one after the other: each gets its own calls.
/// With fixed slot names (`ptk00`, …) the second one's registration would replace the first
/// one's in OpenCode, and the first gateway's next call would go to the second; each start's
/// slot names carry their own tag.
#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_one_opencode() {
    let bed = Harness::real().start().await;
    let opts = GatewayOptions::default().config("[prompt]\nsession_title = \"replica\"\n");
    let other = Gateway::start_with(&bed.opencode.url(), opts).await;
    let first = loop_on(
        &bed.gateway,
        r#"one [call:get_weather:{"city":"Ulm"}]"#,
        "a",
    )
    .await;
    let second = loop_on(&other, r#"two [call:get_weather:{"city":"Gap"}]"#, "b").await;
    let third = loop_on(
        &bed.gateway,
        r#"three [call:get_weather:{"city":"Aix"}]"#,
        "c",
    )
    .await;
    let expected = |r: &str| Ok(format!("echo tool results: call_0_0={r}"));
    assert_eq!(
        (first, second, third),
        (expected("a"), expected("b"), expected("c")),
        "each gateway's tool loop works while the other also serves tools\nother gateway log:\n{}",
        other
            .logs()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile schemas (issue 19)
// ---------------------------------------------------------------------------------------------

/// The fuzz campaign's schema: `a → b → a`, nothing in between.
fn cyclic_schema() -> Value {
    json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}})
}

/// `anyOf` of two branches that both recurse into `c`: validating `{"c":{"c":…}}` doubles the
/// work at every level, without any cycle.
fn doubling_schema() -> Value {
    json!({"$defs": {"n": {"anyOf": [
        {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}},
        {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}, "required": ["c"]}]}},
        "$ref": "#/$defs/n"})
}

/// A JSON Schema whose `$ref`s form a cycle is a 400 naming where it was given — chat's
/// `response_format`, Responses' `text.format`, a tool's `parameters` — before anything reaches
/// OpenCode; a schema whose validation of the model's answer would be too costly fails that
/// request with a clear 502 at once. The gateway runs with a 512 MiB data limit: before the fix
/// the structured answer made it grow by about 1 GB/s, so a regression now fails its
/// allocations and dies (the last check sees that) instead of exhausting the test machine.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_schemas_get_a_bounded_answer() {
    let bed = Harness::real().start().await;
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().memory_limit(512 << 20),
    )
    .await;
    let before = bed.mock.call_count();
    let structured = r#"[call:StructuredOutput:{"c":{}}]"#;

    let mut body = support::ask(ECHO, structured);
    body["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": cyclic_schema()}});
    let (s, v) = chat_on(&gw, &body).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("response_format.json_schema.schema"),
        "chat",
    );
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cycle"), "{message}");

    let responses = json!({"model": ECHO, "input": structured, "text": {"format":
        {"type": "json_schema", "name": "s", "schema": cyclic_schema()}}});
    let (s, _, v) = send(
        test_client()
            .post(format!("{}/v1/responses", gw.url()))
            .json(&responses),
    )
    .await;
    assert_error(s, &v, 400, None, Some("text.format.schema"), "responses");

    let mut parameters = cyclic_schema();
    parameters["type"] = json!("object");
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": parameters}});
    let mut body = support::ask(ECHO, "[call:f:{}]");
    body["tools"] = json!([tool]);
    let (s, v) = chat_on(&gw, &body).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("tools[0].function.parameters"),
        "tool",
    );
    assert_eq!(
        bed.mock.call_count(),
        before,
        "a refused schema reached the model"
    );

    // Accepted, but the answer is 40 levels deep: 2^40 steps to validate.
    let mut deep = json!({});
    for _ in 0..40 {
        deep = json!({ "c": deep });
    }
    let mut body = support::ask(ECHO, &format!("[call:StructuredOutput:{deep}]"));
    body["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": doubling_schema()}});
    let started = Instant::now();
    let (s, v) = chat_on(&gw, &body).await;
    assert_error(
        s,
        &v,
        502,
        Some("upstream_error"),
        None,
        "too costly to validate",
    );
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not be checked"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let (s, v) = chat_on(&gw, &support::ask(ECHO, "still here?")).await;
    assert_eq!(s, StatusCode::OK, "the gateway is still serving: {v}");
}
