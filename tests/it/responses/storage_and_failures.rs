//! `store: false`, failures, deletion, other keys, the openai-node SDK (the steps of
//! `responses_api`).

use super::*;

/// `store: false`: answered, but nothing is retrievable (GET and input_items 404) and it cannot
/// be continued by id (400 naming `store`). It is stateless: the client sends the whole history,
/// `function_call` items included — a history the gateway produced resumes its run (the model
/// gets a real tool result, no replay), one it never saw is seeded with the calls written out.
pub(super) async fn store_false_is_stateless(bed: &TestBed) {
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "forget me", "store": false}),
    )
    .await;
    let r = completed(s, &v);
    assert_eq!(r["store"], false);
    let id = id_of(&r);
    let (s, v) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_not_found(s, &v, "GET of an unstored response");
    let (s, v) = bed.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_not_found(s, &v, "input_items of an unstored response");
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "x", "store": false, "previous_response_id": id}),
    )
    .await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("store"),
        "store false with previous_response_id",
    );

    // A stateless tool loop: the second request carries the whole history.
    let before = bed.mock.call_count();
    let tools = json!([city_tool("get_weather")]);
    let prompt = r#"stateless [call:get_weather:{"city":"Riga"}]"#;
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools, "store": false}),
    )
    .await;
    let r1 = completed(s, &v);
    let (call_id, name, arguments) = function_calls(&r1).remove(0);
    let history = json!([
        {"role": "user", "content": prompt},
        {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments},
        call_output(&call_id, "hail"),
    ]);
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": history, "tools": tools, "store": false}),
    )
    .await;
    assert_eq!(
        output_text(&completed(s, &v)),
        "echo tool results: call_0_0=hail"
    );
    let req = &model_calls_since(bed, before, 2, "a stateless loop")[1];
    assert_eq!(
        turns(req)[2],
        json!({"tool": ["call_0_0", "hail"]}),
        "the output reaches the model as a tool result"
    );
    assert_no_replay(bed, before, "stateless loop");

    // A history the gateway never produced.
    let before = bed.mock.call_count();
    let history = json!([
        {"role": "user", "content": "weather in Bonn?"},
        {"type": "function_call", "call_id": "call_from_elsewhere", "name": "get_weather",
         "arguments": "{\"city\":\"Bonn\"}"},
        call_output("call_from_elsewhere", "drizzle"),
    ]);
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": history, "tools": tools, "store": false}),
    )
    .await;
    completed(s, &v);
    let req = &model_calls_since(bed, before, 1, "an unseen stateless history")[0];
    let seen = req["messages"].to_string();
    assert!(
        seen.contains(TRANSCRIPT_MARK)
            && seen.contains("call_from_elsewhere")
            && seen.contains("drizzle"),
        "an unseen history is seeded with its calls and outputs: {:#?}",
        turns(req)
    );
}

/// A model that fails (`max_model_retries = 0`): JSON gets a 502 at once; a stream gets
/// `response.created`, then an `error` event and `response.failed` (with `error` set), and the
/// stored response says `failed`.
pub(super) async fn failures_are_reported(bed: &TestBed) {
    let started = Instant::now();
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "break [fail]"})).await;
    assert_error(s, &v, 502, Some("upstream_error"), None, "a failing model");
    assert_valid("ErrorResponse", &v);

    let stream = create_stream(bed, &json!({"model": ECHO, "input": "break again [fail]"})).await;
    let r = check_structure(&stream);
    let kinds = stream.kinds();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["error", "response.failed"],
        "{kinds:?}"
    );
    assert_eq!(r["status"], "failed");
    assert!(r["error"]["message"].is_string(), "{r}");
    let error = stream.of("error")[0];
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("scripted model failure")),
        "the provider's message is passed on: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let (s, got) = bed.get(&format!("/v1/responses/{}", stream.id())).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_response(&got);
    assert_eq!(got["status"], "failed", "{got}");
}

/// `DELETE`: `{"id", "object": "response.deleted", "deleted": true}`; then the response is a 404
/// everywhere (GET, input_items, DELETE, continuing it), and its session — it held no other
/// response — is deleted upstream.
pub(super) async fn delete_removes_it(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "short-lived"})).await;
    let id = id_of(&completed(s, &v));
    let session: Vec<String> = sessions(bed)
        .await
        .difference(&before_sessions)
        .cloned()
        .collect();
    let (s, v) = call(
        bed,
        None,
        Method::DELETE,
        &format!("/v1/responses/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    for (method, path) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let (s, v) = call(bed, None, method.clone(), &path, None).await;
        assert_not_found(s, &v, &format!("{method} {path} after DELETE"));
    }
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "again", "previous_response_id": id}),
    )
    .await;
    assert_not_found(s, &v, "continuing a deleted response");
    let after = sessions(bed).await;
    assert!(
        session.iter().all(|s| !after.contains(s)),
        "the deleted response's session is gone upstream"
    );
}

/// Responses belong to their key: another key gets 404 for everything about one (GET, DELETE,
/// input_items, cancel, continuing it) and reaches no model; unknown and malformed ids are 404
/// in OpenAI's shape (`response_not_found`). The owner's response is untouched.
pub(super) async fn other_keys_and_unknown_ids_get_404(bed: &TestBed) {
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "mine"})).await;
    let mine = completed(s, &v);
    let id = id_of(&mine);
    let session_part = id
        .strip_prefix("resp_")
        .and_then(|r| r.rsplit_once('_'))
        .map(|(s, _)| s.to_string())
        .unwrap();
    let before = bed.mock.call_count();
    let unknown = [
        "resp_nope".to_string(),
        "resp_de1b5e886ffepPpVYB0d7o3k6l_0123456789abcdef".to_string(),
        format!("resp_{session_part}_0123456789abcdef"),
    ];
    let cases = std::iter::once((K2, id.clone())).chain(unknown.iter().map(|u| (K1, u.clone())));
    for (key, rid) in cases {
        for (method, path) in [
            (Method::GET, format!("/v1/responses/{rid}")),
            (Method::GET, format!("/v1/responses/{rid}/input_items")),
            (Method::POST, format!("/v1/responses/{rid}/cancel")),
            (Method::DELETE, format!("/v1/responses/{rid}")),
        ] {
            let (s, v) = call(bed, Some(key), method.clone(), &path, None).await;
            assert_not_found(s, &v, &format!("{key} {method} {path}"));
        }
        let body = json!({"model": ECHO, "input": "intrude", "previous_response_id": rid});
        let (s, v) = call(bed, Some(key), Method::POST, "/v1/responses", Some(&body)).await;
        assert_not_found(s, &v, &format!("{key} continuing {rid}"));
    }
    assert_eq!(bed.mock.call_count(), before, "no 404 reached the model");
    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, mine, "the owner's response is untouched");
}

/// The official openai-node SDK: `responses.create` (and its `output_text`), the stream helper
/// continuing with `previous_response_id`, a function tool loop JSON and streamed, retrieve,
/// input items, delete (then a 404 the SDK reports as such).
pub(super) async fn sdk_drives_responses(bed: &TestBed) {
    let out = support::node_sdk::run_script(
        "responses.mjs",
        &bed.gateway.url(),
        Some(K1),
        Duration::from_secs(90),
    )
    .await;
    eprintln!("[sdk] {out}");
    let create = &out["create"];
    assert_eq!(create["status"], "completed", "{out}");
    assert_eq!(create["output_text"], "echo: sdk hello");
    assert_eq!(create["metadata"], json!({"suite": "sdk"}));
    let stream = &out["stream"];
    // OpenCode 2.x hands the model its instruction updates as one more message.
    let messages = if bed.opencode.is_v2() { 5 } else { 4 };
    assert_eq!(
        stream["output_text"],
        format!("echo: sdk again [count] (messages: {messages})")
    );
    assert_eq!(stream["deltas"], stream["output_text"]);
    assert_eq!(stream["previous_response_id"], create["id"]);
    let types: Vec<&str> = stream["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    assert_eq!(
        out["tools"],
        json!({"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
               "output_text": "echo tool results: call_0_0=sunny in Paris", "status": "completed"})
    );
    assert_eq!(
        out["streamedTools"],
        json!({"calls": [{"name": "get_weather", "arguments": {"city": "Lima"}}],
               "argumentDeltas": "{\"city\":\"Lima\"}",
               "output_text": "echo tool results: call_0_0=sunny in Lima"})
    );
    let lifecycle = &out["lifecycle"];
    assert_eq!(lifecycle["retrieved_text"], "echo: sdk hello", "{out}");
    assert_eq!(
        lifecycle["items"],
        json!([{"type": "message", "role": "user", "text": "sdk hello"}])
    );
    assert_eq!(lifecycle["afterDelete"]["status"], 404, "{out}");
}
