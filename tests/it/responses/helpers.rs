//! Helpers of the Responses steps: requests, the model's turns, tools and sessions.

use super::*;

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
pub(super) const TRANSCRIPT_MARK: &str = "The conversation so far";
/// A 1x1 transparent PNG.
pub(super) const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
pub(super) const K1: &str = "k1";
pub(super) const K2: &str = "k2";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One request as `key` (none: the bed's own) → (status, JSON body).
pub(super) async fn call(
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
pub(super) async fn create(bed: &TestBed, body: &Value) -> (StatusCode, Value) {
    call(bed, None, Method::POST, "/v1/responses", Some(body)).await
}

/// `POST /v1/responses` with `stream: true`, read to its end with every event checked.
pub(super) async fn create_stream(bed: &TestBed, body: &Value) -> ResponseStream {
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
pub(super) fn completed(status: StatusCode, v: &Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_response(v);
    assert_eq!(v["object"], "response", "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    assert!(v["error"].is_null(), "{v}");
    v.clone()
}

/// A 404 `response_not_found` in OpenAI's error shape.
#[track_caller]
pub(super) fn assert_not_found(status: StatusCode, v: &Value, what: &str) {
    assert_error(status, v, 404, Some("response_not_found"), None, what);
    assert_valid("ErrorResponse", v);
}

/// The id of a response.
pub(super) fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_string()
}

/// Every non-system message of a model request, compactly: `{"user": text}`,
/// `{"assistant": text, "calls": [[name without the slot prefix, args]]}`, `{"tool": [id, text]}`.
pub(super) fn turns(req: &Value) -> Vec<Value> {
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
pub(super) fn model_calls_since(bed: &TestBed, before: usize, n: usize, what: &str) -> Vec<Value> {
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
pub(super) fn assert_no_replay(bed: &TestBed, before: usize, what: &str) {
    for req in &bed.mock.requests()[before..] {
        assert!(
            !req["messages"].to_string().contains(TRANSCRIPT_MARK),
            "{what}: the model got a replayed transcript: {:#?}",
            turns(req)
        );
    }
}

/// A flat (Responses-shaped) function tool taking `{"city": string}`.
pub(super) fn city_tool(name: &str) -> Value {
    json!({"type": "function", "name": name, "description": format!("{name} for a city"),
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": false},
           "strict": true})
}

/// A `function_call_output` input item.
pub(super) fn call_output(call_id: &str, output: &str) -> Value {
    json!({"type": "function_call_output", "call_id": call_id, "output": output})
}

/// Upstream session ids.
pub(super) async fn sessions(bed: &TestBed) -> BTreeSet<String> {
    bed.opencode.session_ids().await
}
