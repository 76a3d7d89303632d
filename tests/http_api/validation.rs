//! Request validation: every malformed or unsupported body is a 400 in OpenAI's error shape
//! naming the parameter at fault, and nothing reaches OpenCode.

use serde_json::{json, Value};

use crate::support::api::request_id;
use crate::support::in_process::Settings;
use crate::support::Harness;
use crate::support::{ask, assistant, chat_body, user, ECHO, THINKER, VISION};

/// A 1x1 transparent PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// Asserts that `body` is refused with a 400 naming `param`, before anything reaches OpenCode.
async fn assert_rejected(body: Value, param: &str) {
    let app = Harness::in_process().start().await;
    let r = app.chat(&body).await;
    r.assert_error(400, None, Some(param), &body.to_string());
    app.fake.assert_untouched("a rejected request");
}

/// No `model`: 400 naming `model`.
#[tokio::test]
async fn missing_model_is_400() {
    assert_rejected(json!({"messages": [user("hi")]}), "model").await;
}

/// No messages: 400 naming `messages`.
#[tokio::test]
async fn empty_messages_is_400() {
    assert_rejected(chat_body(ECHO, vec![]), "messages").await;
}

/// The last message must be the user's: 400 naming its role.
#[tokio::test]
async fn last_message_not_from_the_user_is_400() {
    let body = chat_body(ECHO, vec![user("hi"), assistant("hello")]);
    assert_rejected(body, "messages[1].role").await;
}

/// An unknown role: 400 naming that message's role.
#[tokio::test]
async fn unknown_role_is_400() {
    let body = chat_body(
        ECHO,
        vec![json!({"role": "wizard", "content": "hi"}), user("hi")],
    );
    assert_rejected(body, "messages[0].role").await;
}

/// Images must be inline `data:` URLs: an `http` URL is a 400 naming it.
#[tokio::test]
async fn image_url_over_http_is_400() {
    let body = chat_body(
        VISION,
        vec![json!({"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}
        ]})],
    );
    assert_rejected(body, "messages[0].content[1].image_url.url").await;
}

/// Several choices are not supported: `n = 2` is a 400 naming `n`.
#[tokio::test]
async fn n_above_one_is_400() {
    let mut body = ask(ECHO, "hi");
    body["n"] = json!(2);
    assert_rejected(body, "n").await;
}

/// A tool without a name: 400 naming it.
#[tokio::test]
async fn tool_without_a_name_is_400() {
    let mut body = ask(ECHO, "hi");
    body["tools"] = json!([{"type": "function", "function": {"parameters": {"type": "object"}}}]);
    assert_rejected(body, "tools[0].function.name").await;
}

/// Tool `parameters` that are not an object schema: 400 naming them.
#[tokio::test]
async fn tool_parameters_that_are_not_an_object_schema_are_400() {
    let mut body = ask(ECHO, "hi");
    body["tools"] =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]);
    assert_rejected(body, "tools[0].function.parameters").await;
}

/// `tool_choice` naming a function that is not in `tools`: 400 naming `tool_choice`.
#[tokio::test]
async fn tool_choice_naming_an_unknown_tool_is_400() {
    let mut body = ask(ECHO, "hi");
    body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "g"}});
    assert_rejected(body, "tool_choice").await;
}

/// A `tool` message answering no earlier call: 400 naming its `tool_call_id`.
#[tokio::test]
async fn tool_result_for_no_call_is_400() {
    let body = chat_body(
        ECHO,
        vec![
            user("hi"),
            json!({"role": "tool", "tool_call_id": "call_nowhere", "content": "42"}),
        ],
    );
    assert_rejected(body, "messages[1].tool_call_id").await;
}

/// A `response_format` schema that does not compile: 400 naming it.
#[tokio::test]
async fn invalid_response_format_schema_is_400() {
    let mut body = ask(ECHO, "hi");
    body["response_format"] = json!({"type": "json_schema",
        "json_schema": {"name": "s", "schema": {"type": "no-such-type"}}});
    assert_rejected(body, "response_format.json_schema.schema").await;
}

/// A malformed image data URL (a space after the comma) is refused up front, not after a
/// failed upstream call: 400 naming it.
#[tokio::test]
async fn malformed_image_data_url_is_400() {
    let body = chat_body(
        VISION,
        vec![json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64, {PNG_B64}")}}
        ]})],
    );
    assert_rejected(body, "messages[0].content[0].image_url.url").await;
}

/// `stream` must be a boolean: `"yes"` is a 400 naming `stream`.
#[tokio::test]
async fn non_boolean_stream_is_400() {
    let mut body = ask(ECHO, "hi");
    body["stream"] = json!("yes");
    assert_rejected(body, "stream").await;
}

/// A body that is not JSON: 400 in error shape (no parameter to name), with a request id, and
/// nothing reaches OpenCode.
#[tokio::test]
async fn invalid_json_is_400() {
    let app = Harness::in_process().start().await;
    let r = app
        .post_raw(
            "/v1/chat/completions",
            "{\"model\": \"mock/echo\", \"messages\": [".into(),
            &[],
        )
        .await;
    r.assert_error(400, None, None, "invalid JSON");
    assert!(request_id(&r.headers).is_some(), "no x-request-id on a 400");
    app.fake.assert_untouched("invalid JSON");
}

/// A body over `limits.max_body_bytes` is a 413 in error shape, with a request id, and nothing
/// reaches OpenCode.
#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = Harness::in_process()
        .settings(Settings::default().config("[limits]\nmax_body_bytes = 1000\n"))
        .start()
        .await;
    let body = chat_body(ECHO, vec![user(&"a".repeat(2000))]).to_string();
    assert!(body.len() >= 2000);
    let r = app.post_raw("/v1/chat/completions", body, &[]).await;
    r.assert_error(413, Some("request_too_large"), None, "2000-byte body");
    assert!(request_id(&r.headers).is_some(), "no x-request-id on 413");
    app.fake.assert_untouched("an oversized body");
}

/// A model not in the catalog (whatever the form of the id) is a 404 `model_not_found` naming
/// `model`, and nothing reaches OpenCode.
#[tokio::test]
async fn unknown_model_is_404() {
    let app = Harness::in_process().start().await;
    for model in ["mock/unknown", "nosuchprovider/echo", "echo"] {
        let r = app.chat(&ask(model, "hello?")).await;
        r.assert_error(404, Some("model_not_found"), Some("model"), model);
    }
    app.fake.assert_untouched("an unknown model");
}

/// An image for a model without image input is a 400 naming the message's content, and nothing
/// reaches OpenCode.
#[tokio::test]
async fn image_to_a_text_only_model_is_400() {
    let app = Harness::in_process().start().await;
    let image = json!({"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG_B64}")}}
    ]});
    let r = app.chat(&chat_body(ECHO, vec![image])).await;
    r.assert_error(400, None, None, "image to mock/echo");
    assert!(
        r.body["error"]["param"]
            .as_str()
            .is_some_and(|p| p.starts_with("messages[0].content")),
        "param should name the message content: {}",
        r.body
    );
    app.fake.assert_untouched("an image to a text-only model");
}

/// `reasoning_effort` must be one of the model's variants: another value is a 400 naming the
/// parameter and listing the variants; a model without variants refuses any; nothing reaches
/// OpenCode.
#[tokio::test]
async fn reasoning_effort_outside_the_models_variants_is_400() {
    let app = Harness::in_process().start().await;
    let with_effort = |model: &str, effort: &str| {
        let mut body = ask(model, "effort");
        body["reasoning_effort"] = json!(effort);
        body
    };
    let r = app.chat(&with_effort(THINKER, "extreme")).await;
    r.assert_error(400, None, Some("reasoning_effort"), "extreme");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("high"), "{}", r.body);
    let r = app.chat(&with_effort(ECHO, "high")).await;
    r.assert_error(
        400,
        None,
        Some("reasoning_effort"),
        "a model without variants",
    );
    app.fake.assert_untouched("an unsupported reasoning_effort");
}
