//! Unit tests of Chat Completions request parsing: a full conversation, and rejections naming
//! the param.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<ChatRequest, ApiError> {
    ChatRequest::parse(v.to_string().as_bytes())
}

fn param_of(v: Value) -> String {
    match parse(v).unwrap_err() {
        ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn parses_a_full_conversation() {
    let r = parse(json!({
        "model": "mock/echo",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}
            ]}
        ]
    }))
    .unwrap();
    assert!(r.stream && r.include_usage);
    assert_eq!(r.system_prompt().unwrap(), "be brief\n\nand kind");
    assert_eq!(r.turns().count(), 3);
    assert!(r.messages[4].has_image());
}

#[test]
fn rejections_name_the_param() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"messages": []}), "model"),
        (json!({"model": "m"}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
            "messages[1].role",
        ),
        (
            json!({"model": "m", "stream": "yes", "messages": user}),
            "stream",
        ),
        (json!({"model": "m", "n": 2, "messages": user}), "n"),
        (
            json!({"model": "m", "tools": [{"type": "function"}], "messages": user}),
            "tools[0].function",
        ),
        (
            json!({"model": "m", "functions": [{"name": "f"}], "messages": user}),
            "functions",
        ),
        (
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_1", "content": "r"}]}),
            "messages[1].tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "content": "r"}]}),
            "messages[2].tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "r"}]}),
            "messages[1].tool_calls[0].id",
        ),
        (
            json!({"model": "m", "stream_options": {"include_usage": true}, "messages": user}),
            "stream_options",
        ),
        (
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": 1},
                   "messages": user}),
            "stream_options.include_usage",
        ),
        (
            json!({"model": "m", "temperature": "hot", "messages": user}),
            "temperature",
        ),
        (
            json!({"model": "m", "max_tokens": 0, "messages": user}),
            "max_tokens",
        ),
    ];
    for (body, param) in cases {
        assert_eq!(param_of(body.clone()), param, "{body}");
    }
    let loop_back = parse(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{ \"b\": 1, \"a\": 2 }"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "r"}]}]}))
    .unwrap();
    assert_eq!(
        loop_back.messages[1].tool_calls[0].arguments,
        r#"{"a":2,"b":1}"#
    );
    assert!(loop_back.messages[1].parts.is_empty());
    assert_eq!(loop_back.turns().count(), 3);
    assert!(matches!(
        ChatRequest::parse(b"{not json"),
        Err(ApiError::InvalidRequest { .. })
    ));
    assert!(matches!(
        ChatRequest::parse(b"[1]"),
        Err(ApiError::InvalidRequest { .. })
    ));
}
