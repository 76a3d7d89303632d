//! The SSE parser, the mock model and the schema validator.

use super::*;

/// The SSE `data:` parser: comments and other fields ignored, multi-line data joined, CRLF and a
/// trailing frame without a blank line handled.
#[test]
pub(super) fn sse_parser() {
    let v = support::parse_sse_data(
        "data: a\n\n: comment\n\ndata:b\r\n\r\nevent: x\ndata: {\"x\":1}\ndata: y\n\ndata: [DONE]",
    );
    assert_eq!(v, vec!["a", "b", "{\"x\":1}\ny", "[DONE]"]);
}

/// The mock model's chunking loses nothing and makes the asked number of chunks.
#[test]
pub(super) fn chunk_splitting_is_lossless() {
    for text in [
        "echo: hello",
        "echo: a b c d e f g",
        "x",
        "echo: héllo wörld [chunks:4]",
    ] {
        for n in [None, Some(1), Some(2), Some(5), Some(100)] {
            let parts = mock_model::split_chunks(text, n);
            assert_eq!(parts.concat(), text);
            if let Some(n) = n {
                assert_eq!(parts.len(), n.min(text.chars().count()));
            }
        }
    }
    assert_eq!(mock_model::split_chunks("echo: a b c d", None).len(), 3);
}

/// The mock model without streaming: a schema-valid echo of the last user message with fixed
/// usage, the `[count]` and `[length]` markers, request recording, and its model list.
#[tokio::test]
pub(super) async fn mock_model_non_streaming() {
    let mock = MockModel::start().await;
    let (status, text) = mock_chat(
        &mock,
        json!({"model": "vision", "messages": [{"role": "system", "content": "sys"}, user("first"),
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}]}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    schema::assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(v["model"], "vision");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
    assert_eq!(mock.call_count(), 1);
    assert_eq!(mock.requests()[0]["model"], "vision");

    // [count] and [length]
    let (_, text) = mock_chat(
        &mock,
        json!({"model": "echo", "messages": [user("a"), {"role":"assistant","content":"b"}, user("c [count] [length]")]}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo: c [count] [length] (messages: 3)"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert!(mock.wait_for_calls(2, Duration::from_secs(1)).await);
    assert!(!mock.wait_for_calls(3, Duration::from_millis(50)).await);

    let (_, models) = (
        (),
        client()
            .get(format!("{}/models", mock.base_url()))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
    );
    schema::assert_valid("ListModelsResponse", &models);
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
}

/// Dropping the mock model closes its keep-alive connections too: "down" really means down.
#[tokio::test]
pub(super) async fn mock_model_drop_closes_keepalive_connections() {
    let mock = MockModel::start().await;
    let c = client();
    let url = format!("{}/models", mock.base_url());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    drop(mock);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // the pooled keep-alive connection is gone too, and nothing listens any more
    assert!(c.get(&url).send().await.is_err());
}

/// The mock model's streams: plain, with reasoning/chunks/slow/length markers, `[fail]` (500)
/// and `[hang]` (headers, then nothing).
#[tokio::test]
pub(super) async fn mock_model_streaming_modes() {
    let mock = MockModel::start().await;
    // plain
    let (status, text) = mock_chat(
        &mock,
        json!({"model": "echo", "stream": true, "messages": [user("hello there big world")]}),
    )
    .await;
    assert_eq!(status, 200);
    let payloads = support::parse_sse_data(&text);
    let (reasoning, content, finish, usage) = assemble(&payloads);
    assert_eq!(reasoning, "");
    assert_eq!(content, "echo: hello there big world");
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(usage.unwrap()["total_tokens"], 18);
    // role chunk + 3 content chunks + finish chunk + usage chunk + [DONE]
    assert_eq!(payloads.len(), 7, "{payloads:#?}");
    let usage_chunk: Value = serde_json::from_str(&payloads[5]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));

    // reasoning + chunks + slow + length
    let started = std::time::Instant::now();
    let (_, text) = mock_chat(
        &mock,
        json!({"model": "thinker", "stream": true,
               "messages": [user("q [reasoning] [chunks:4] [slow:50] [length]")]}),
    )
    .await;
    let payloads = support::parse_sse_data(&text);
    let (reasoning, content, finish, _) = assemble(&payloads);
    assert_eq!(
        reasoning,
        "thinking about q [reasoning] [chunks:4] [slow:50] [length]"
    );
    assert_eq!(content, "echo: q [reasoning] [chunks:4] [slow:50] [length]");
    assert_eq!(finish.as_deref(), Some("length"));
    assert!(started.elapsed() >= Duration::from_millis(150));
    let reasoning_chunks = payloads
        .iter()
        .filter(|p| p.contains("reasoning_content"))
        .count();
    let content_chunks = payloads
        .iter()
        .filter(|p| p.contains("\"content\":\"") && !p.contains("\"content\":\"\""))
        .count();
    assert!(reasoning_chunks >= 2);
    assert_eq!(content_chunks, 4);

    // [fail]
    let (status, text) = mock_chat(
        &mock,
        json!({"model": "echo", "stream": true, "messages": [user("x [fail]")]}),
    )
    .await;
    assert_eq!(status, 500);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "scripted model failure", "type": "server_error"}})
    );

    // [hang]: headers arrive, the body does not
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&json!({"model": "echo", "stream": true, "messages": [user("x [hang]")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    use futures::StreamExt;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), body.next())
            .await
            .is_err(),
        "[hang] must not send any body"
    );
    assert_eq!(mock.call_count(), 4);
}

/// The OpenAI schema check accepts valid chunks, completions, model lists and errors, and
/// rejects broken ones.
#[test]
pub(super) fn schema_accepts_good_and_rejects_bad() {
    let good_chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mock/echo",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": null}]
    });
    schema::assert_valid("CreateChatCompletionStreamResponse", &good_chunk);
    let mut with_logprobs_null = good_chunk.clone();
    with_logprobs_null["choices"][0]["logprobs"] = Value::Null;
    schema::assert_valid("CreateChatCompletionStreamResponse", &with_logprobs_null);
    let usage_chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mock/echo",
        "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    });
    schema::assert_valid("CreateChatCompletionStreamResponse", &usage_chunk);
    let mut null_usage = good_chunk.clone();
    null_usage["usage"] = Value::Null;
    schema::assert_valid("CreateChatCompletionStreamResponse", &null_usage);

    let mut missing_id = good_chunk.clone();
    missing_id.as_object_mut().unwrap().remove("id");
    assert!(!schema::is_valid(
        "CreateChatCompletionStreamResponse",
        &missing_id
    ));
    let mut bad_finish = good_chunk.clone();
    bad_finish["choices"][0]["finish_reason"] = json!("done");
    assert!(!schema::is_valid(
        "CreateChatCompletionStreamResponse",
        &bad_finish
    ));
    let mut bad_object = good_chunk.clone();
    bad_object["object"] = json!("chat.completion");
    assert!(!schema::is_valid(
        "CreateChatCompletionStreamResponse",
        &bad_object
    ));
    let r = std::panic::catch_unwind(|| {
        schema::assert_valid("CreateChatCompletionStreamResponse", &missing_id)
    });
    assert!(r.is_err());

    let good_response = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "mock/echo",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                     "message": {"role": "assistant", "content": "hi", "refusal": null}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    });
    schema::assert_valid("CreateChatCompletionResponse", &good_response);
    let mut no_choices = good_response.clone();
    no_choices.as_object_mut().unwrap().remove("choices");
    assert!(!schema::is_valid(
        "CreateChatCompletionResponse",
        &no_choices
    ));

    schema::assert_valid(
        "ListModelsResponse",
        &json!({"object": "list", "data": [{"id": "mock/echo", "object": "model", "created": 0, "owned_by": "opencode"}]}),
    );
    assert!(!schema::is_valid(
        "Model",
        &json!({"id": "mock/echo", "object": "model"})
    ));
    schema::assert_valid(
        "ErrorResponse",
        &json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}}),
    );
    assert!(!schema::is_valid(
        "ErrorResponse",
        &json!({"error": {"message": "bad"}})
    ));
}
