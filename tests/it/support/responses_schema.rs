//! Validation against OpenAI's Responses API schemas
//! (`src/openapi/openai-responses.schema.json`: `Response`, every `Response…Event`,
//! `ResponseItemList`, `ErrorResponse` and what they reference, under `#/components/schemas/`).
//!
//! The document is prepared like the chat one ([`super::schema`]): OpenAPI's `nullable: true` is
//! rewritten into JSON Schema (this subset already spells nulls as `anyOf […, {"type":"null"}]`,
//! so the rewrite is a safeguard). A stream event is validated against the schema its `type`
//! names (found by the event schemas' `type` enums), which gives far clearer errors than the
//! `ResponseStreamEvent` union, and against the union too.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use super::schema::rewrite_nullable;

const SCHEMA_TEXT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/openapi/openai-responses.schema.json"
));

/// The preprocessed schema document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc: Value =
            serde_json::from_str(SCHEMA_TEXT).expect("responses schema fixture is JSON");
        rewrite_nullable(&mut doc);
        doc
    })
}

fn validator(schema_name: &str) -> Arc<jsonschema::Validator> {
    super::schema::component_validator("Responses", document(), schema_name)
}

/// All validation errors of `value` against `#/components/schemas/<schema_name>`.
pub fn validation_errors(schema_name: &str, value: &Value) -> Vec<String> {
    validator(schema_name)
        .iter_errors(value)
        .map(|e| {
            format!(
                "at {}: {} (schema path {})",
                e.instance_path(),
                e,
                e.schema_path()
            )
        })
        .collect()
}

/// Panics with every error unless `value` is a valid `schema_name` (e.g. `Response`,
/// `ResponseItemList`, `ErrorResponse`, `ResponseTextDeltaEvent`).
#[track_caller]
pub fn assert_valid(schema_name: &str, value: &Value) {
    let errors = validation_errors(schema_name, value);
    if !errors.is_empty() {
        panic!(
            "not a valid {schema_name}:\n  {}\nvalue: {}",
            errors.join("\n  "),
            serde_json::to_string_pretty(value).unwrap()
        );
    }
}

/// A `response` object, strictly.
#[track_caller]
pub fn assert_response(value: &Value) {
    assert_valid("Response", value);
}

/// The event schema for each event `type` (`response.output_text.delta` →
/// `ResponseTextDeltaEvent`, `error` → `ResponseErrorEvent`, …).
pub fn event_schemas() -> &'static HashMap<String, String> {
    static MAP: OnceLock<HashMap<String, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        let schemas = document()["components"]["schemas"]
            .as_object()
            .expect("components.schemas");
        for (name, schema) in schemas {
            if !name.ends_with("Event") {
                continue;
            }
            if let Some([Value::String(kind)]) = schema["properties"]["type"]["enum"]
                .as_array()
                .map(Vec::as_slice)
            {
                map.insert(kind.clone(), name.clone());
            }
        }
        map
    })
}

/// One stream event: valid against the schema its `type` names, and against the
/// `ResponseStreamEvent` union.
#[track_caller]
pub fn assert_event(event: &Value) {
    let kind = event["type"]
        .as_str()
        .unwrap_or_else(|| panic!("stream event without a type: {event}"));
    let schema = event_schemas()
        .get(kind)
        .unwrap_or_else(|| panic!("no Responses schema defines the event type {kind:?}: {event}"));
    assert_valid(schema, event);
    assert_valid("ResponseStreamEvent", event);
}
