//! Client tools (OpenAI function calling) end to end, against the real OpenCode.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::TestBed;

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn single_call_round_trip() {
    let bed = TestBed::start().await;
    let user =
        json!({"role": "user", "content": "weather? [call:get_weather:{\"city\":\"Paris\"}]"});
    let (status, v) = bed
        .chat(json!({"model": "mock/echo", "tools": [weather_tool()], "messages": [user.clone()]}))
        .await;
    assert_eq!(status, 200, "{v}");
    eprintln!("first: {v:#}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let id = call["id"].as_str().unwrap().to_string();
    let assistant = v["choices"][0]["message"].clone();
    let (status, v2) = bed
        .chat(
            json!({"model": "mock/echo", "tools": [weather_tool()], "messages": [
            user, assistant, {"role": "tool", "tool_call_id": id, "content": "sunny, 21 C"}]}),
        )
        .await;
    eprintln!("second: {v2:#}");
    assert_eq!(status, 200, "{v2}");
    let last = bed.mock.last_request().unwrap();
    eprintln!("model saw: {:#}", last["messages"]);
    assert_eq!(v2["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_streaming_and_structured() {
    let bed = TestBed::start().await;
    let time_tool = json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let user = json!({"role": "user", "content": "both [call:get_weather:{\"city\":\"Paris\"}] [call:get_time:{\"city\":\"Tokyo\"}]"});
    let (status, frames) = bed
        .chat_stream(json!({"model": "mock/echo", "stream": true, "tools": [weather_tool(), time_tool.clone()], "messages": [user.clone()]}))
        .await;
    eprintln!("{status} {frames:#?}");
    let (status, frames) = bed
        .chat_stream(json!({"model": "mock/echo", "stream": true, "parallel_tool_calls": false, "tools": [weather_tool(), time_tool], "messages": [user]}))
        .await;
    eprintln!("{status} {frames:#?}");
    let (status, v) = bed
        .chat(json!({"model": "mock/echo", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
            "messages": [{"role": "user", "content": "[call:StructuredOutput:{\"answer\":\"yes\"}]"}]}))
        .await;
    eprintln!("{status} {v:#}");
    let (status, v) = bed
        .chat(json!({"model": "mock/echo", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
            "messages": [{"role": "user", "content": "[call:StructuredOutput:{\"answer\":5}]"}]}))
        .await;
    eprintln!("{status} {v:#}");
}
