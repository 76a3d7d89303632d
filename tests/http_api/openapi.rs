//! The OpenAPI description (`GET /openapi.json`) against the router: every routed path and
//! method is documented, every documented operation is routed, the document is OpenAPI 3.1
//! and served without a key.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::in_process::Settings;
use crate::support::Harness;

/// `(METHOD, /path)` of every `.route("…", get(…).post(…))` in `src/app/mod.rs`, the one table
/// the router is built from; axum's `{*id}` is OpenAPI's `{id}`.
fn routed() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/app/mod.rs"))
        .expect("read src/app/mod.rs");
    let mut out = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let after = &rest[open + 1..];
        let close = after.find('"').expect("closing quote");
        let path = after[..close].replace("{*", "{");
        // The handlers: up to the `)` that closes `.route(`.
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in after[close..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = close + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let handlers = &after[close..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = handlers.match_indices(method).any(|(i, _)| {
                let before = handlers[..i].chars().last();
                let next = handlers[i + method.len()..].chars().next();
                matches!(before, Some(' ' | '.' | ',' | '\n')) && next == Some('(')
            });
            if called {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// Every routed path and method is in the description, and nothing else is.
#[tokio::test]
async fn the_description_matches_the_router() {
    let app = Harness::in_process().start().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let routed = routed();
    assert!(routed.len() > 40, "parsed too few routes: {routed:?}");
    assert!(routed.contains(&("GET".into(), "/v1/models/{id}".into())));
    let documented = documented(&r.body);
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routed but not in /openapi.json: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        extra.is_empty(),
        "in /openapi.json but not routed: {extra:?}"
    );
}

/// Each documented operation reaches a handler: not the 404 `unknown_url` or 405 fallbacks.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = Harness::in_process().start().await;
    let doc = app.get("/openapi.json").await.body;
    for (method, path) in documented(&doc) {
        if path == "/v1/events" {
            continue; // an endless SSE stream (`tests/it/agent_mode.rs` covers it)
        }
        let concrete = path
            .replace("{id}", "ses_doesnotexist000")
            .replace("{permission_id}", "per_x")
            .replace("{message_id}", "msg_x")
            .replace("{name}", "fixture");
        let r = app.call(&method, &concrete, &[]).await;
        assert_ne!(r.status, 405, "{method} {concrete}: {}", r.body);
        assert!(
            r.body["error"]["code"] != "unknown_url",
            "{method} {concrete} is documented but not routed: {}",
            r.body
        );
    }
}

/// The description is OpenAPI 3.1, needs no key even when keys are configured, and says
/// which operations do.
#[tokio::test]
async fn served_without_a_key_and_declares_the_key() {
    let app = Harness::in_process()
        .settings(Settings::default().env("PORTATEK_API_KEYS", "k1"))
        .start()
        .await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["openapi"], "3.1.0");
    assert_eq!(
        r.body["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert_eq!(r.body["security"][0]["api_key"], serde_json::json!([]));
    assert_eq!(
        r.body["paths"]["/health"]["get"]["security"],
        serde_json::json!([{}])
    );
    // The OpenAI-compatible bodies are OpenAI's own schemas.
    let chat = &r.body["paths"]["/v1/chat/completions"]["post"];
    assert_eq!(
        chat["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateChatCompletionRequest"
    );
    assert!(r.body["components"]["schemas"]["CreateResponse"].is_object());
    // Other routes stay keyed.
    assert_eq!(app.get("/v1/models").await.status, 401);
}
