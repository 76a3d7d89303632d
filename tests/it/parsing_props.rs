//! Property-based tests of the request parsers, through the whole router (in-process, in front
//! of the fake OpenCode): whatever is POSTed to `/v1/chat/completions` or `/v1/responses` —
//! any bytes, any JSON value, or a valid request with fields dropped or replaced by random
//! JSON — the answer is a 4xx in OpenAI's error shape or a success, never a panic, a hang or a
//! 5xx.
//!
//! The fake serves what a valid request needs (catalog, sessions, prompts, events), so random
//! requests that happen to be valid run to a real answer. One kind of valid request ends in a
//! 5xx for a reason outside the parsers, and is excused (see [`fake_cannot_serve`]): a request
//! offering client tools — the in-process router starts no MCP endpoint (the server does), so
//! client tools are off and such a request is a 503 `upstream_unavailable` by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

use support::in_process::{request, App, Reply};
use support::{ECHO, THINKER, VISION};

const CHAT: &str = "/v1/chat/completions";
const RESPONSES: &str = "/v1/responses";

/// Cases per property: the properties take a few seconds together.
const CASES: u32 = 256;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// One router and fake shared by every case (a cold start per case would dominate the time).
fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| runtime().block_on(Harness::in_process().start()))
}

/// POSTs `body` to `path` as JSON; a hang (10 s) fails the case.
fn post(path: &str, body: Vec<u8>) -> Reply {
    let req = request(
        "POST",
        path,
        &[("content-type", "application/json")],
        Body::from(body),
    );
    let app = app();
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), app.send(req))
            .await
            .unwrap_or_else(|_| panic!("POST {path} hung"))
    })
}

/// Valid requests the in-process router cannot bring to a success (see the module doc): those
/// offering tools, and those asking for a JSON schema (the fake answers the smallest value it
/// can make up, which an intricate or unsatisfiable schema refuses: the gateway's checked 502).
fn fake_cannot_serve(body: &Value) -> bool {
    let schema_format = body.pointer("/response_format/type") == Some(&json!("json_schema"))
        || body.pointer("/text/format/type") == Some(&json!("json_schema"));
    schema_format
        || body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|tools| !tools.is_empty())
}

/// The property: a 4xx in OpenAI's shape, or a 2xx (a JSON object, or an SSE stream ending in
/// `[DONE]` or an error event). A 5xx is allowed only for what [`fake_cannot_serve`].
fn check(path: &str, sent: &[u8], r: &Reply) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(sent);
    let status = r.status.as_u16();
    let parsed: Option<Value> = serde_json::from_slice(sent).ok();
    if status >= 500 {
        let excused = parsed.as_ref().is_some_and(fake_cannot_serve);
        prop_assert!(excused, "POST {path} {shown} → {status} {}", r.body);
    }
    if status >= 400 {
        let errors = support::schema::validation_errors("ErrorResponse", &r.body);
        prop_assert!(
            errors.is_empty(),
            "POST {path} {shown} → {status}, not an OpenAI error: {} {errors:?}",
            r.body
        );
        prop_assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no message: {}",
            r.body
        );
        return Ok(());
    }
    prop_assert!(status == 200, "POST {path} {shown} → {status} {}", r.body);
    match &r.body {
        Value::Object(o) => {
            let object = o.get("object").and_then(Value::as_str).unwrap_or("");
            prop_assert!(
                matches!(object, "chat.completion" | "response"),
                "POST {path} {shown} → 200 {}",
                r.body
            );
        }
        Value::String(sse) => {
            let payloads = support::parse_sse_data(sse);
            let last = payloads.last().map(String::as_str).unwrap_or("");
            let ends_well = last == "[DONE]"
                || serde_json::from_str::<Value>(last)
                    .is_ok_and(|v| v.get("error").is_some() || v.get("type").is_some());
            prop_assert!(ends_well, "POST {path} {shown} → stream {payloads:?}");
        }
        other => prop_assert!(false, "POST {path} {shown} → 200 {other}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Field names the parsers know (so random objects hit their branches), or any short name.
fn key() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "image_url",
        "url",
        "stream",
        "stream_options",
        "include_usage",
        "n",
        "tools",
        "function",
        "name",
        "parameters",
        "tool_choice",
        "tool_calls",
        "tool_call_id",
        "response_format",
        "json_schema",
        "schema",
        "reasoning_effort",
        "input",
        "instructions",
        "previous_response_id",
        "store",
        "metadata",
        "reasoning",
        "effort",
        "background",
        "max_output_tokens",
        "truncation",
        "input_text",
        "input_image",
        "image",
        "arguments",
        "call_id",
        "output",
    ])
    .prop_map(String::from);
    prop_oneof![3 => known, 1 => "[a-z_]{0,8}"]
}

/// Scalars, with strings the parsers look for (roles, types, model ids, data URLs).
fn leaf() -> impl Strategy<Value = Value> {
    let words = prop::sample::select(vec![
        "user",
        "system",
        "developer",
        "assistant",
        "tool",
        "function",
        "text",
        "image_url",
        "input_text",
        "json_object",
        "json_schema",
        "auto",
        "none",
        "required",
        "high",
        "low",
        ECHO,
        VISION,
        THINKER,
        "mock/unknown",
        "",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/png;base64, iVBORw0KGgo=",
        "http://127.0.0.1:9/x.png",
    ])
    .prop_map(|s| Value::String(s.to_string()));
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        words,
    ]
}

/// Any JSON value, nested up to 4 deep.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Valid chat requests of several shapes.
fn valid_chat() -> Vec<Value> {
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    vec![
        json!({"model": ECHO, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}]}),
        json!({"model": ECHO, "stream": true, "stream_options": {"include_usage": true},
               "temperature": 0.5, "messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": [{"type": "text", "text": "three"}]}]}),
        json!({"model": VISION, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": png}}]}]}),
        json!({"model": THINKER, "reasoning_effort": "high",
               "response_format": {"type": "json_object"},
               "messages": [{"role": "developer", "content": "json"}, {"role": "user", "content": "go"}]}),
    ]
}

/// Valid Responses requests of several shapes.
fn valid_responses() -> Vec<Value> {
    vec![
        json!({"model": ECHO, "input": "hello", "instructions": "be brief"}),
        json!({"model": ECHO, "stream": true, "store": false, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}),
        json!({"model": THINKER, "reasoning": {"effort": "low"}, "metadata": {"a": "b"},
               "input": [{"type": "message", "role": "user", "content": "think"}]}),
    ]
}

/// Every JSON pointer into `v` (objects' keys and arrays' items, recursively).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

/// One change to a valid body: drop the field at a pointer, replace it with random JSON, or
/// add a random field to an object.
#[derive(Debug, Clone)]
enum Mutation {
    Drop(prop::sample::Index),
    Replace(prop::sample::Index, Value),
    Add(prop::sample::Index, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Drop),
        (any::<prop::sample::Index>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        (any::<prop::sample::Index>(), key(), json_value())
            .prop_map(|(i, k, v)| Mutation::Add(i, k, v)),
    ]
}

fn apply(body: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    pointers(body, String::new(), &mut all);
    match m {
        Mutation::Drop(i) | Mutation::Replace(i, _) if !all.is_empty() => {
            let p = &all[i.index(all.len())];
            let (parent, last) = p.rsplit_once('/').unwrap();
            if let Mutation::Replace(_, v) = m {
                *body.pointer_mut(p).unwrap() = v.clone();
                return;
            }
            match body.pointer_mut(parent).unwrap() {
                Value::Object(o) => {
                    o.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(a) => {
                    a.remove(last.parse::<usize>().unwrap());
                }
                _ => {}
            }
        }
        Mutation::Add(i, k, v) => {
            all.push(String::new());
            let objects: Vec<&String> = all
                .iter()
                .filter(|p| body.pointer(p).is_some_and(Value::is_object))
                .collect();
            let p = objects[i.index(objects.len())].clone();
            if let Some(Value::Object(o)) = body.pointer_mut(&p) {
                o.insert(k.clone(), v.clone());
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A schema of generated `$defs` whose `$ref`s form any graph (cycles in place included) with
/// `allOf`/`anyOf`, `properties` and `items` between them (issue 19).
fn ref_graph_schema() -> impl Strategy<Value = Value> {
    (1usize..7).prop_flat_map(|n| {
        let def = prop_oneof![
            (0..n).prop_map(|t| json!({"$ref": format!("#/$defs/d{t}")})),
            prop::collection::vec(0..n, 1..3).prop_map(|ts| json!({"anyOf": ts.iter()
                .map(|t| json!({"$ref": format!("#/$defs/d{t}")})).collect::<Vec<_>>()})),
            prop::collection::vec(0..n, 1..3).prop_map(|ts| json!({"allOf": ts.iter()
                .map(|t| json!({"$ref": format!("#/$defs/d{t}")})).collect::<Vec<_>>()})),
            (0..n).prop_map(|t| json!({"type": "object",
                "properties": {"x": {"$ref": format!("#/$defs/d{t}")}}})),
            (0..n)
                .prop_map(|t| json!({"type": "array", "items": {"$ref": format!("#/$defs/d{t}")}})),
            Just(json!({"type": "string"})),
        ];
        prop::collection::vec(def, n).prop_map(|defs| {
            let defs: Map<String, Value> = defs
                .into_iter()
                .enumerate()
                .map(|(i, d)| (format!("d{i}"), d))
                .collect();
            json!({"$defs": defs, "$ref": "#/$defs/d0"})
        })
    })
}

proptest! {
    #![proptest_config(Config { cases: CASES, failure_persistence: None, ..Config::default() })]

    /// Generated `$ref` graphs in `response_format`, `text.format` or a tool's `parameters`:
    /// every request gets its answer at once (a 400 naming the schema's field, or the run),
    /// never a hang or a 5xx.
    #[test]
    fn ref_graphs_get_a_bounded_answer(schema in ref_graph_schema(), place in 0u8..3) {
        let (path, body, param) = match place {
            0 => (CHAT, json!({"model": ECHO, "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": "s", "schema": schema}}}),
                "response_format.json_schema.schema"),
            1 => (RESPONSES, json!({"model": ECHO, "input": "x",
                "text": {"format": {"type": "json_schema", "name": "s", "schema": schema}}}),
                "text.format.schema"),
            _ => {
                let mut parameters = schema;
                parameters["type"] = json!("object");
                (CHAT, json!({"model": ECHO, "messages": [{"role": "user", "content": "x"}],
                    "tools": [{"type": "function", "function": {"name": "f",
                        "parameters": parameters}}]}),
                    "tools[0].function.parameters")
            }
        };
        let sent = serde_json::to_vec(&body).unwrap();
        let r = post(path, sent.clone());
        check(path, &sent, &r)?;
        if r.status.as_u16() == 400 {
            prop_assert_eq!(r.body["error"]["param"].as_str(), Some(param), "{}", r.body);
        }
    }

    /// Any bytes at all → a 4xx in OpenAI's shape (or, by chance, a success), never a 5xx.
    #[test]
    fn any_bytes_get_an_openai_answer(bytes in prop::collection::vec(any::<u8>(), 0..256), responses in any::<bool>()) {
        let path = if responses { RESPONSES } else { CHAT };
        let r = post(path, bytes.clone());
        check(path, &bytes, &r)?;
    }

    /// Any JSON value (nested, with the parsers' own field names and words) → an OpenAI answer.
    #[test]
    fn any_json_gets_an_openai_answer(v in json_value(), responses in any::<bool>()) {
        let path = if responses { RESPONSES } else { CHAT };
        let sent = v.to_string().into_bytes();
        let r = post(path, sent.clone());
        check(path, &sent, &r)?;
    }

    /// A valid chat request with one to three fields dropped, replaced or added → an OpenAI
    /// answer (a success when the change left it valid).
    #[test]
    fn mutated_chat_requests_get_an_openai_answer(
        base in prop::sample::select(valid_chat()),
        changes in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut body = base;
        for m in &changes {
            apply(&mut body, m);
        }
        let sent = body.to_string().into_bytes();
        let r = post(CHAT, sent.clone());
        check(CHAT, &sent, &r)?;
    }

    /// The same for Responses API requests.
    #[test]
    fn mutated_responses_requests_get_an_openai_answer(
        base in prop::sample::select(valid_responses()),
        changes in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut body = base;
        for m in &changes {
            apply(&mut body, m);
        }
        let sent = body.to_string().into_bytes();
        let r = post(RESPONSES, sent.clone());
        check(RESPONSES, &sent, &r)?;
    }
}

/// The unmutated valid requests succeed (so the mutation properties start from requests that
/// reach the success path, and the fake serves them).
#[test]
fn the_valid_requests_succeed() {
    for body in valid_chat() {
        let r = post(CHAT, body.to_string().into_bytes());
        assert_eq!(r.status, 200, "{body} → {}", r.body);
    }
    for body in valid_responses() {
        let r = post(RESPONSES, body.to_string().into_bytes());
        assert_eq!(r.status, 200, "{body} → {}", r.body);
    }
}
