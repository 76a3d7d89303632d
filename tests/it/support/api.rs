//! Client-side helpers for the gateway's OpenAI-shaped API: message and request builders, answer
//! readers, the error-shape assertion, request ids, and one request sent with reqwest.
#![allow(dead_code)]

use std::fmt::Display;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::schema;

/// `{"role": "user", "content": text}`
pub fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// `{"role": "assistant", "content": text}`
pub fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

/// `{"role": "system", "content": text}`
pub fn system(text: &str) -> Value {
    json!({"role": "system", "content": text})
}

/// A `POST /v1/chat/completions` body: `{"model", "messages"}` (add fields with `body["…"] = …`
/// or [`streaming`]).
pub fn chat_body(model: &str, messages: Vec<Value>) -> Value {
    json!({"model": model, "messages": messages})
}

/// A one-message body: `text` from the user to `model`.
pub fn ask(model: &str, text: &str) -> Value {
    chat_body(model, vec![user(text)])
}

/// The same body with `"stream": true`.
pub fn streaming(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// The `choices[0].message.content` of a chat completion (panics with the body otherwise).
#[track_caller]
pub fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no choices[0].message.content in {v}"))
}

/// The answer text of a chat completion that must have succeeded (200).
#[track_caller]
pub fn reply_of(status: StatusCode, v: &Value) -> String {
    assert_eq!(status, StatusCode::OK, "chat completion failed: {v}");
    content(v).to_string()
}

/// Asserts an OpenAI-shaped error: HTTP `status`, a body valid against the `ErrorResponse`
/// schema (`{"error":{message,type,param,code}}`) with a non-empty message, and (when given)
/// that `error.code` / `error.param`. `what` names the case in the failure message.
#[track_caller]
pub fn assert_error(
    got: StatusCode,
    body: &Value,
    status: u16,
    code: Option<&str>,
    param: Option<&str>,
    what: impl Display,
) {
    assert_eq!(got.as_u16(), status, "{what}: status (body {body})");
    schema::assert_valid("ErrorResponse", body);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: error.message: {body}"
    );
    if let Some(code) = code {
        assert_eq!(body["error"]["code"], code, "{what}: error.code: {body}");
    }
    if let Some(param) = param {
        assert_eq!(body["error"]["param"], param, "{what}: error.param: {body}");
    }
}

/// The `x-request-id` of a response, when present and non-empty.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// A response body as JSON: a JSON string for a non-JSON body, `null` when empty.
pub fn body_json(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// Status and body of a response (see [`body_json`]).
pub async fn read_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, body_json(text))
}

/// Sends a request → (status, headers, body as in [`read_json`]).
pub async fn send(rb: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let resp = rb.send().await.expect("request to the gateway");
    let headers = resp.headers().clone();
    let (status, body) = read_json(resp).await;
    (status, headers, body)
}
