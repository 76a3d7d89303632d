//! Validation against OpenAI's chat-completions schemas (`src/openapi/openai-chat-completions.schema.json`).
//!
//! The document is OpenAPI-3.0 flavoured (`"nullable": true`, which JSON Schema 2020-12 ignores),
//! so it is preprocessed once: every object with `nullable: true` becomes
//! `{"anyOf": [<original validation keywords>, {"type": "null"}], <annotations>}`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

const SCHEMA_TEXT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/openapi/openai-chat-completions.schema.json"
));

/// Keywords that do not validate and stay on the outer (wrapping) object.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "x-oaiTypeLabel",
    "x-oaiExpandable",
    "x-oaiMeta",
];

/// Rewrite OpenAPI `nullable: true` into JSON Schema (recursively, children first).
pub fn rewrite_nullable(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(rewrite_nullable),
        Value::Object(obj) => {
            for (_, child) in obj.iter_mut() {
                rewrite_nullable(child);
            }
            if obj.get("nullable") == Some(&Value::Bool(true)) {
                obj.remove("nullable");
                let mut inner = Map::new();
                let mut outer = Map::new();
                for (k, val) in std::mem::take(obj) {
                    if ANNOTATIONS.contains(&k.as_str()) {
                        outer.insert(k, val);
                    } else {
                        inner.insert(k, val);
                    }
                }
                // Also make the null explicit in `type` / `enum`, so either branch reads right.
                if let Some(t) = inner.get_mut("type") {
                    match t {
                        Value::String(s) => *t = json!([s.clone(), "null"]),
                        Value::Array(a) if !a.contains(&json!("null")) => a.push(json!("null")),
                        _ => {}
                    }
                }
                if let Some(Value::Array(e)) = inner.get_mut("enum") {
                    if !e.contains(&Value::Null) {
                        e.push(Value::Null);
                    }
                }
                outer.insert(
                    "anyOf".into(),
                    json!([Value::Object(inner), {"type": "null"}]),
                );
                *obj = outer;
            } else if obj.get("nullable") == Some(&Value::Bool(false)) {
                obj.remove("nullable");
            }
        }
        _ => {}
    }
}

/// The preprocessed schema document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(SCHEMA_TEXT).expect("schema fixture is JSON");
        rewrite_nullable(&mut doc);
        doc
    })
}

fn validator(schema_name: &str) -> Arc<jsonschema::Validator> {
    component_validator("OpenAI", document(), schema_name)
}

/// The compiled validator of `#/components/schemas/<schema_name>` in `doc` (an OpenAPI document
/// named `label` in messages), compiled once per document and schema.
pub fn component_validator(
    label: &str,
    doc: &'static Value,
    schema_name: &str,
) -> Arc<jsonschema::Validator> {
    type Cache = Mutex<HashMap<(usize, String), Arc<jsonschema::Validator>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (doc as *const Value as usize, schema_name.to_string());
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    assert!(
        doc["components"]["schemas"].get(schema_name).is_some(),
        "unknown {label} schema {schema_name:?}"
    );
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#/components/schemas/{schema_name}"));
    let v = Arc::new(
        jsonschema::draft202012::options()
            .build(&root)
            .unwrap_or_else(|e| panic!("compile {label} schema {schema_name}: {e}")),
    );
    cache.lock().unwrap().insert(key, v.clone());
    v
}

/// All validation errors of `value` against `#/components/schemas/<schema_name>` (empty = valid).
pub fn validation_errors(schema_name: &str, value: &Value) -> Vec<String> {
    let v = validator(schema_name);
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| {
            format!(
                "at {}: {} (schema path {})",
                e.instance_path(),
                e,
                e.schema_path()
            )
        })
        .collect();
    errors
}

pub fn is_valid(schema_name: &str, value: &Value) -> bool {
    validation_errors(schema_name, value).is_empty()
}

/// Panic with every error unless `value` is a valid `schema_name`
/// (e.g. `CreateChatCompletionResponse`, `CreateChatCompletionStreamResponse`,
/// `ListModelsResponse`, `Model`, `ErrorResponse`).
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
