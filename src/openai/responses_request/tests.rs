//! Unit tests of Responses request parsing: string and item inputs, and rejections naming the
//! field.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<ResponsesRequest, ApiError> {
    ResponsesRequest::parse(v.to_string().as_bytes())
}

fn param(v: Value) -> String {
    match parse(v).unwrap_err() {
        ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
        e => panic!("{e:?}"),
    }
}

#[test]
fn string_and_item_inputs() {
    let r = parse(json!({"model": "m", "input": "hi", "instructions": "be brief"})).unwrap();
    assert_eq!(r.turns.len(), 1);
    assert_eq!(r.system.as_deref(), Some("be brief"));
    assert!(r.store);
    let r = parse(json!({"model": "m", "input": [
        {"role": "developer", "content": "dev"},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,aGVsbG8="}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{ }"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    ]}))
    .unwrap();
    assert_eq!(r.system.as_deref(), Some("dev"));
    assert_eq!(r.turns.len(), 3);
    assert_eq!(r.turns[1].tool_calls[0].arguments, "{}");
    assert_eq!(r.turns[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(r.first_image.as_deref(), Some("input[1].content[1]"));
    assert_eq!(r.input_items.len(), 4);
}

#[test]
fn bad_inputs_name_the_field() {
    for (body, at) in [
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (
            json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "web_search_call"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
            "input[0].content[0].image_url",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}),
            "text.format.name",
        ),
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": "x", "metadata": {"k": 5}}),
            "metadata.k",
        ),
        (
            json!({"model": "m", "input": "x", "truncation": "sometimes"}),
            "truncation",
        ),
        (
            json!({"model": "m", "input": [{"role": "assistant", "content": "x"}]}),
            "input[0]",
        ),
    ] {
        assert_eq!(param(body.clone()), at, "{body}");
    }
}
