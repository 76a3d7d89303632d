//! Client-side helpers for the Responses API (`/v1/responses`): reading a response's text and
//! calls, and reading a typed SSE stream with every event checked (schema, `event:` name,
//! `sequence_number`) and the sequence's structure checked against the final response.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use super::responses_schema;
use super::sse::{is_event_stream, SseReader};

/// The concatenated `output_text` of every `message` item of a response (what the SDKs call
/// `response.output_text`).
pub fn output_text(response: &Value) -> String {
    items(response, "message")
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "output_text")
        .filter_map(|p| p["text"].as_str().map(String::from))
        .collect()
}

/// The output items of `kind` (`message`, `reasoning`, `function_call`).
pub fn items(response: &Value, kind: &str) -> Vec<Value> {
    response["output"]
        .as_array()
        .unwrap_or_else(|| panic!("no output array in {response}"))
        .iter()
        .filter(|i| i["type"] == kind)
        .cloned()
        .collect()
}

/// `(call_id, name, arguments)` of every `function_call` item.
pub fn function_calls(response: &Value) -> Vec<(String, String, String)> {
    items(response, "function_call")
        .iter()
        .map(|c| {
            (
                c["call_id"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
                c["arguments"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// One `event: …` / `data: …` frame of a Responses stream.
#[derive(Debug, Clone)]
pub struct TypedEvent {
    /// The SSE `event:` name.
    pub name: Option<String>,
    /// The `data:` payload.
    pub data: Value,
}

/// A whole Responses stream: HTTP status, whether it was SSE, its events (each already checked
/// against its schema, its `event:` name equal to its `type`, `sequence_number` counting from 0).
#[derive(Debug)]
pub struct ResponseStream {
    pub status: u16,
    pub events: Vec<Value>,
    /// The body when the answer was not a stream (an error before the stream started).
    pub body: Option<Value>,
}

impl ResponseStream {
    /// The event types in order.
    pub fn kinds(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or(""))
            .collect()
    }

    /// The events of type `kind`.
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    /// The response carried by the terminal event (`response.completed`, `.failed`,
    /// `.incomplete`).
    pub fn final_response(&self) -> &Value {
        let last = self.events.last().expect("an empty stream");
        assert!(
            matches!(
                last["type"].as_str(),
                Some("response.completed" | "response.failed" | "response.incomplete")
            ),
            "the stream must end with a terminal response event: {:?}",
            self.kinds()
        );
        &last["response"]
    }

    /// The response id (from `response.created`).
    pub fn id(&self) -> String {
        self.events[0]["response"]["id"]
            .as_str()
            .expect("response.created carries the id")
            .to_string()
    }
}

/// Reads a `/v1/responses` stream to its end (each frame within `wait`), checking every event.
pub async fn read_stream(resp: reqwest::Response, wait: Duration) -> ResponseStream {
    let status = resp.status().as_u16();
    if !is_event_stream(resp.headers()) {
        let text = resp.text().await.unwrap_or_default();
        return ResponseStream {
            status,
            events: Vec::new(),
            body: Some(super::api::body_json(text)),
        };
    }
    let mut reader = SseReader::new(resp);
    let mut events = Vec::new();
    while let Some(frame) = reader.next(wait).await {
        if frame.is_comment() {
            continue;
        }
        let mut name = None;
        for line in frame.raw.lines() {
            if let Some(rest) = line.strip_prefix("event:") {
                name = Some(rest.trim().to_string());
            }
        }
        let data = frame
            .json()
            .unwrap_or_else(|| panic!("a Responses stream frame without JSON data: {}", frame.raw));
        let kind = data["type"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            name.as_deref(),
            Some(kind.as_str()),
            "the SSE event name must be the event's type: {}",
            frame.raw
        );
        assert_eq!(
            data["sequence_number"],
            events.len() as u64,
            "sequence_number must count from 0 without gaps: {data}"
        );
        responses_schema::assert_event(&data);
        events.push(data);
    }
    ResponseStream {
        status,
        events,
        body: None,
    }
}

/// Checks the structure of a finished stream against its final response: created and
/// in_progress first; every item added then done at its index, its deltas adding up to its
/// final text or arguments; the final response's output equal to the items as done; exactly
/// one terminal event, last. Returns the final response.
#[track_caller]
pub fn check_structure(stream: &ResponseStream) -> Value {
    let kinds = stream.kinds();
    assert!(
        kinds.len() >= 3 && kinds[0] == "response.created" && kinds[1] == "response.in_progress",
        "a stream starts with response.created, response.in_progress: {kinds:?}"
    );
    let created = &stream.events[0]["response"];
    assert_eq!(created["status"], "in_progress", "{created}");
    assert_eq!(created["output"], serde_json::json!([]), "{created}");
    let terminal = kinds
        .iter()
        .filter(|k| {
            matches!(
                **k,
                "response.completed" | "response.failed" | "response.incomplete"
            )
        })
        .count();
    assert_eq!(terminal, 1, "exactly one terminal event: {kinds:?}");
    let response = stream.final_response().clone();
    responses_schema::assert_response(&response);
    assert_eq!(response["id"], created["id"], "one id for the whole stream");

    // Items: added → (deltas) → done, at consecutive output indexes.
    let mut done_items: Vec<Value> = Vec::new();
    let mut open: Option<(u64, String, String)> = None; // (index, item id, accumulated text)
    for e in &stream.events {
        let kind = e["type"].as_str().unwrap_or_default();
        match kind {
            "response.output_item.added" => {
                assert!(
                    open.is_none(),
                    "an item opened before the last one closed: {kinds:?}"
                );
                let index = e["output_index"].as_u64().unwrap();
                assert_eq!(index, done_items.len() as u64, "output_index in order: {e}");
                let id = e["item"]["id"].as_str().unwrap_or_default().to_string();
                open = Some((index, id, String::new()));
            }
            "response.output_text.delta"
            | "response.reasoning_summary_text.delta"
            | "response.function_call_arguments.delta" => {
                let (index, id, text) = open.as_mut().expect("a delta outside an item");
                assert_eq!(e["output_index"], *index, "{e}");
                assert_eq!(e["item_id"].as_str(), Some(id.as_str()), "{e}");
                text.push_str(e["delta"].as_str().unwrap_or_default());
            }
            "response.output_text.done" | "response.reasoning_summary_text.done" => {
                let (_, _, text) = open.as_ref().expect("a done outside an item");
                assert_eq!(
                    e["text"].as_str(),
                    Some(text.as_str()),
                    "deltas add up: {e}"
                );
            }
            "response.function_call_arguments.done" => {
                let (_, _, text) = open.as_ref().expect("a done outside an item");
                assert_eq!(
                    e["arguments"].as_str(),
                    Some(text.as_str()),
                    "argument deltas add up: {e}"
                );
            }
            "response.output_item.done" => {
                let (index, id, _) = open.take().expect("an item done that was not added");
                assert_eq!(e["output_index"], index, "{e}");
                assert_eq!(e["item"]["id"].as_str(), Some(id.as_str()), "{e}");
                done_items.push(e["item"].clone());
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "an item was never done: {kinds:?}");
    if response["status"] != "failed" {
        assert_eq!(
            response["output"],
            Value::Array(done_items),
            "the final output is the items as done"
        );
    }
    response
}
