//! Helpers of the client-tools steps: tools and results, the model's turns, calls of a
//! completion or a stream.

use super::*;

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
pub(super) const TRANSCRIPT_MARK: &str = "The conversation so far";
/// The text that introduces tool results written out in a prompt (rather than given to the
/// model as tool results).
pub(super) const WRITTEN_RESULTS_MARK: &str = "The results of the tool calls you made";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A function tool taking `{"city": string}`.
pub(super) fn city_tool(name: &str) -> Value {
    json!({"type": "function", "function": {
        "name": name,
        "description": format!("{name} for a city"),
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": false},
        "strict": true,
    }})
}

pub(super) fn weather() -> Value {
    city_tool("get_weather")
}

pub(super) fn time() -> Value {
    city_tool("get_time")
}

/// A chat body for `messages` offering `tools`.
pub(super) fn tool_body(messages: &[Value], tools: &[Value]) -> Value {
    json!({"model": ECHO, "messages": messages, "tools": tools})
}

/// `role: tool` message answering `id`.
pub(super) fn tool_result(id: &str, content: &str) -> Value {
    json!({"role": "tool", "tool_call_id": id, "content": content})
}

/// The slot prefix `ptk<tag>NN_` (six hex digits of per-start tag, two of index) of a tool name
/// as OpenCode shows it to the model, if it has one.
pub(super) fn slot_prefix(name: &str) -> Option<&str> {
    let id = name.strip_prefix("ptk")?.get(..8)?;
    (id.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && name.as_bytes().get(11) == Some(&b'_'))
    .then(|| &name[..12])
}

/// The name the client gave a tool the model knows as `name` (the slot prefix removed).
pub(super) fn client_name(name: &str) -> &str {
    match slot_prefix(name) {
        Some(p) => &name[p.len()..],
        None => name,
    }
}

/// Names of the tools offered to the model in one request.
pub(super) fn offered(req: &Value) -> Vec<String> {
    req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(String::from))
        .collect()
}

/// The client tools offered to the model (slot-prefixed names, as the client named them),
/// checking that all of them sit on one slot.
pub(super) fn offered_client_tools(req: &Value) -> BTreeSet<String> {
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
pub(super) fn turns(req: &Value) -> Vec<Value> {
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
pub(super) fn system_text(req: &Value) -> String {
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
pub(super) fn model_calls_since(bed: &TestBed, before: usize, n: usize, what: &str) -> Vec<Value> {
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
pub(super) fn assert_no_replay(bed: &TestBed, before: usize, what: &str) {
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
pub(super) type Call = (String, String, Value);

/// The tool calls of a JSON chat completion that ended with `tool_calls`, checked for OpenAI's
/// shape (schema, `finish_reason`, ids, `type`, names without the slot prefix, arguments a JSON
/// string).
#[track_caller]
pub(super) fn tool_calls_of(status: StatusCode, v: &Value) -> Vec<Call> {
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
pub(super) fn call_shape(c: &Value, whole: &Value) -> Call {
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
pub(super) fn named(calls: &[Call]) -> Vec<(String, Value)> {
    calls
        .iter()
        .map(|(_, n, a)| (n.clone(), a.clone()))
        .collect()
}

/// The text answer of a JSON chat completion that finished with `stop`.
#[track_caller]
pub(super) fn answer_of(status: StatusCode, v: &Value) -> String {
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
pub(super) fn streamed_calls(s: &Streamed) -> Vec<Call> {
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
pub(super) fn assistant_calls(content: Value, calls: &[Call]) -> Value {
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
pub(super) async fn many_parallel_calls_all_come_back(bed: &TestBed) {
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
pub(super) async fn finish_loop(
    bed: &TestBed,
    mut messages: Vec<Value>,
    tools: &[Value],
    mut v: Value,
) {
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
pub(super) async fn sessions(bed: &TestBed) -> BTreeSet<String> {
    bed.opencode.session_ids().await
}

/// `POST /v1/chat/completions` on `gw` (not necessarily the bed's) → (status, JSON body).
pub(super) async fn chat_on(gw: &Gateway, body: &Value) -> (StatusCode, Value) {
    let (s, _, v) = send(
        test_client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(body),
    )
    .await;
    (s, v)
}

// ---------------------------------------------------------------------------------------------
// Hostile schemas (issue 19)
// ---------------------------------------------------------------------------------------------

/// The fuzz campaign's schema: `a → b → a`, nothing in between.
pub(super) fn cyclic_schema() -> Value {
    json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}})
}

/// `anyOf` of two branches that both recurse into `c`: validating `{"c":{"c":…}}` doubles the
/// work at every level, without any cycle.
pub(super) fn doubling_schema() -> Value {
    json!({"$defs": {"n": {"anyOf": [
        {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}},
        {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}, "required": ["c"]}]}},
        "$ref": "#/$defs/n"})
}
