//! Function tools, `tool_choice`, output limits, text formats (the steps of `responses_api`).

use super::*;

/// Function tools (flat shape): the response ends with a `function_call` item (call id, the
/// client's name, arguments as JSON text); `function_call_output` sent with
/// `previous_response_id` reaches the model as the tool result of the same run, and the chain
/// goes on from there.
pub(super) async fn function_tool_loop(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = json!([city_tool("get_weather"), city_tool("get_time")]);
    let prompt = r#"weather? [call:get_weather:{"city":"Paris"}]"#;
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools}),
    )
    .await;
    let r1 = completed(s, &v);
    assert_eq!(r1["tools"], tools, "tools are echoed");
    let calls = items(&r1, "function_call");
    assert_eq!(calls.len(), 1, "{r1}");
    let call = &calls[0];
    assert_eq!(call["name"], "get_weather", "the client's own name: {call}");
    assert_eq!(call["status"], "completed");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"), "{call}");
    let call_id = call["call_id"].as_str().unwrap().to_string();
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(output_text(&r1), "", "no text with the call");

    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "previous_response_id": r1["id"], "tools": tools,
                "input": [call_output(&call_id, "sunny, 21 C")]}),
    )
    .await;
    let r2 = completed(s, &v);
    assert_eq!(output_text(&r2), "echo tool results: call_0_0=sunny, 21 C");
    assert_eq!(r2["previous_response_id"], r1["id"]);
    let req = &model_calls_since(bed, before, 2, "call and result")[1];
    assert_eq!(
        turns(req),
        vec![
            json!({"user": prompt}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Paris"}]]}),
            json!({"tool": ["call_0_0", "sunny, 21 C"]}),
        ],
        "the output reaches the model as the result of its own call"
    );
    let (s, page) = bed
        .get(&format!("/v1/responses/{}/input_items", id_of(&r2)))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);
    assert_eq!(page["data"][0]["type"], "function_call_output", "{page}");

    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "previous_response_id": r2["id"], "input": "thanks"}),
    )
    .await;
    completed(s, &v);
    let req = &model_calls_since(bed, before, 3, "then a follow-up")[2];
    assert_eq!(turns(req).len(), 5, "{:#?}", turns(req));
    assert_no_replay(bed, before, "tool loop");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        1,
        "one session for the loop and its follow-up"
    );
}

/// `tool_choice` naming one function (Responses shape `{"type":"function","name"}`) offers the
/// model only that one; `parallel_tool_calls: false` gives one call per response (the second
/// in the response continuing the first, without another model call); both are echoed.
pub(super) async fn tool_choice_and_parallel_calls(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = json!([city_tool("get_weather"), city_tool("get_time")]);
    let choice = json!({"type": "function", "name": "get_time"});
    let prompt = r#"named [call:get_time:{"city":"Bonn"}] [call:get_time:{"city":"Linz"}]"#;
    let body = json!({"model": ECHO, "input": prompt, "tools": tools, "tool_choice": choice,
                      "parallel_tool_calls": false});
    let (s, v) = create(bed, &body).await;
    let r1 = completed(s, &v);
    assert_eq!(r1["tool_choice"], choice);
    assert_eq!(r1["parallel_tool_calls"], false);
    let first = function_calls(&r1);
    assert_eq!(first.len(), 1, "one call per response: {r1}");
    let req = &model_calls_since(bed, before, 1, "named tool_choice")[0];
    let offered: Vec<&str> = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(
        offered.len() == 1 && offered[0].ends_with("_get_time"),
        "only the named function is offered: {offered:?}"
    );
    let next = json!({"model": ECHO, "previous_response_id": r1["id"], "tools": tools,
                      "tool_choice": choice, "parallel_tool_calls": false,
                      "input": [call_output(&first[0].0, "ten")]});
    let (s, v) = create(bed, &next).await;
    let r2 = completed(s, &v);
    let second = function_calls(&r2);
    assert_eq!(second.len(), 1, "the second call in its own response: {r2}");
    assert_eq!(second[0].2, r#"{"city":"Linz"}"#);
    model_calls_since(bed, before, 1, "both calls came from one model step");
    // Answering the second call (previous_response_id = r2) is the ignored bug test
    // `function_calls_continue_from_the_latest_response`; this run waits until the bed ends.
}

/// A model that stops at its output limit: `status: incomplete` with
/// `incomplete_details.reason = max_output_tokens` (JSON), and `response.incomplete` as the
/// stream's terminal event.
pub(super) async fn output_limit_is_incomplete(bed: &TestBed) {
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "cut short [length]"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_response(&v);
    assert_eq!(v["status"], "incomplete", "{v}");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(output_text(&v), "echo: cut short [length]");
    let stream = create_stream(bed, &json!({"model": ECHO, "input": "cut short [length]"})).await;
    let r = check_structure(&stream);
    assert_eq!(stream.kinds().last(), Some(&"response.incomplete"));
    assert_eq!(r["status"], "incomplete");
}

/// The same loop streamed: the call as `output_item.added` (arguments empty),
/// `function_call_arguments.delta`/`.done`, `output_item.done`, `response.completed`; then the
/// outputs streamed back produce the text events.
pub(super) async fn streamed_function_tool_loop(bed: &TestBed) {
    let tools = json!([city_tool("get_weather")]);
    let prompt = r#"stream weather [call:get_weather:{"city":"Oslo"}]"#;
    let stream = create_stream(
        bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools}),
    )
    .await;
    let r1 = check_structure(&stream);
    assert_eq!(
        stream.kinds(),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let added = stream.of("response.output_item.added")[0];
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["name"], "get_weather");
    let done = stream.of("response.function_call_arguments.done")[0];
    let args: Value = serde_json::from_str(done["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Oslo"}));
    let (call_id, name, _) = function_calls(&r1).remove(0);
    assert_eq!(name, "get_weather");

    let body = json!({"model": ECHO, "previous_response_id": r1["id"], "tools": tools,
                      "input": [call_output(&call_id, "snow")]});
    let stream = create_stream(bed, &body).await;
    let r2 = check_structure(&stream);
    assert_eq!(output_text(&r2), "echo tool results: call_0_0=snow");
}

/// `text.format`: `json_schema` (strict) makes the output text a JSON document valid against
/// the schema, `json_object` a JSON object, `text` plain text; output that breaks the schema is
/// a 502 (JSON) or an `error` event and `response.failed` (streamed), at once.
pub(super) async fn text_formats(bed: &TestBed) {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"},
        "n": {"type": "integer"}}, "required": ["answer", "n"], "additionalProperties": false});
    let format = json!({"format": {"type": "json_schema", "name": "verdict", "strict": true,
        "schema": schema}});
    let body = json!({"model": ECHO, "input": r#"[call:StructuredOutput:{"answer":"yes","n":2}]"#,
                      "text": format});
    let (s, v) = create(bed, &body).await;
    let r = completed(s, &v);
    let parsed: Value = serde_json::from_str(&output_text(&r)).unwrap();
    assert!(jsonschema::validator_for(&schema)
        .unwrap()
        .is_valid(&parsed));
    assert_eq!(parsed, json!({"answer": "yes", "n": 2}));
    assert_eq!(r["text"], format, "text.format is echoed");
    assert!(
        items(&r, "function_call").is_empty(),
        "the structured result is the text: {r}"
    );

    let body = json!({"model": ECHO, "input": r#"[call:StructuredOutput:{"k":[1]}]"#,
                      "text": {"format": {"type": "json_object"}}});
    let (s, v) = create(bed, &body).await;
    let parsed: Value = serde_json::from_str(&output_text(&completed(s, &v))).unwrap();
    assert_eq!(parsed, json!({"k": [1]}));

    let body = json!({"model": ECHO, "input": "plain", "text": {"format": {"type": "text"}}});
    let (s, v) = create(bed, &body).await;
    assert_eq!(output_text(&completed(s, &v)), "echo: plain");

    let bad = json!({"model": ECHO, "input": r#"[call:StructuredOutput:{"answer":7}]"#,
                     "text": format});
    let started = Instant::now();
    let (s, v) = create(bed, &bad).await;
    assert_error(s, &v, 502, Some("upstream_error"), None, "schema violation");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("schema"),
        "{v}"
    );
    let stream = create_stream(bed, &bad).await;
    let r = check_structure(&stream);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(!stream.of("error").is_empty(), "{:?}", stream.kinds());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
