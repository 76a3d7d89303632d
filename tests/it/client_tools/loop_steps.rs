//! Calls and results, rounds, `parallel_tool_calls`, `tool_choice`, names colliding with
//! OpenCode's tools (the steps of `tool_loop`).

use super::*;

/// One call, JSON: the client gets `finish_reason: "tool_calls"` and the call under its own
/// name (the model was offered exactly the client's tools, slot-prefixed, nothing of
/// OpenCode's); the results come back as a `tool` message and reach the model *as a tool
/// result* in the same run (one session, two model calls, no transcript). A follow-up turn then
/// continues that session without replay, like any follow-up.
pub(super) async fn results_reach_the_model_as_tool_results(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = [weather(), time()];
    let mut messages = vec![user(r#"weather? [call:get_weather:{"city":"Paris"}]"#)];

    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(
        named(&calls),
        vec![("get_weather".to_string(), json!({"city": "Paris"}))]
    );
    assert!(
        v["choices"][0]["message"]["content"].is_null(),
        "a tool-call-only message has null content: {v}"
    );
    let first = &model_calls_since(bed, before, 1, "the call")[0];
    assert_eq!(
        offered_client_tools(first),
        BTreeSet::from(["get_weather".to_string(), "get_time".to_string()])
    );
    assert_eq!(
        offered(first).len(),
        2,
        "only the client's tools are offered (OpenCode's own are off): {:?}",
        offered(first)
    );

    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "sunny, 21 C"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let answer = answer_of(s, &v);
    assert_eq!(answer, "echo tool results: call_0_0=sunny, 21 C");
    let second = &model_calls_since(bed, before, 2, "the results")[1];
    assert_eq!(
        turns(second),
        vec![
            json!({"user": r#"weather? [call:get_weather:{"city":"Paris"}]"#}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Paris"}]]}),
            json!({"tool": ["call_0_0", "sunny, 21 C"]}),
        ],
        "the results reach the model as a tool result of its own call"
    );
    let after = sessions(bed).await;
    let new: Vec<&String> = after.difference(&before_sessions).collect();
    assert_eq!(new.len(), 1, "one session for the whole loop: {new:?}");
    let session = new[0].clone();

    // A follow-up continues the session, sending only the new message.
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(user("and tomorrow?"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo: and tomorrow?");
    let third = &model_calls_since(bed, before, 3, "the follow-up")[2];
    assert_eq!(
        turns(third),
        vec![
            json!({"user": r#"weather? [call:get_weather:{"city":"Paris"}]"#}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Paris"}]]}),
            json!({"tool": ["call_0_0", "sunny, 21 C"]}),
            json!({"assistant": "echo tool results: call_0_0=sunny, 21 C"}),
            json!({"user": "and tomorrow?"}),
        ],
        "the follow-up sees every turn once, as real messages"
    );
    assert_no_replay(bed, before, "tool loop and follow-up");
    assert_eq!(
        sessions(bed).await,
        after,
        "the follow-up reuses the loop's session"
    );
    let upstream = bed.opencode.messages(&session).await;
    assert_eq!(
        upstream
            .iter()
            .filter(|m| m["info"]["role"] == "user")
            .count(),
        2,
        "the session holds the two user turns, not a replay"
    );
}

/// Streaming, two calls in one step: schema-valid chunks whose `delta.tool_calls` announce each
/// call (index, id, type, name) before its arguments, `finish_reason: "tool_calls"`. The
/// client answers in the other order, streaming: the model gets both results as tool messages
/// in call order, in the same run.
pub(super) async fn streamed_parallel_calls(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = [weather(), time()];
    let prompt = r#"both [call:get_weather:{"city":"Oslo"}] [call:get_time:{"city":"Lima"}]"#;
    let mut messages = vec![user(prompt)];
    let mut body = tool_body(&messages, &tools);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let streamed = bed.read_ok_stream(body).await;
    let calls = streamed_calls(&streamed);
    assert_eq!(
        named(&calls),
        vec![
            ("get_weather".to_string(), json!({"city": "Oslo"})),
            ("get_time".to_string(), json!({"city": "Lima"})),
        ]
    );
    assert_ne!(calls[0].0, calls[1].0, "each call has its own id");
    assert_eq!(
        streamed.usage_chunks.len(),
        1,
        "the usage chunk was asked for"
    );
    model_calls_since(bed, before, 1, "both calls in one step");

    // The client accumulated `content: ""` from the first chunk, as SDKs do.
    messages.push(assistant_calls(json!(""), &calls));
    messages.push(tool_result(&calls[1].0, "noon"));
    messages.push(tool_result(&calls[0].0, "snow"));
    let mut body = tool_body(&messages, &tools);
    body["stream"] = json!(true);
    let answered = bed.read_ok_stream(body).await;
    assert_eq!(answered.finish_reason, "stop");
    assert_eq!(
        answered.content,
        "echo tool results: call_0_0=snow; call_0_1=noon"
    );
    let second = &model_calls_since(bed, before, 2, "the results")[1];
    assert_eq!(
        turns(second)[1..],
        [
            json!({"assistant": "", "calls": [["get_weather", {"city": "Oslo"}], ["get_time", {"city": "Lima"}]]}),
            json!({"tool": ["call_0_0", "snow"]}),
            json!({"tool": ["call_0_1", "noon"]}),
        ]
    );
    assert_no_replay(bed, before, "streamed parallel calls");
}

/// `[sticky:2]`: call → result → call → result → answer, three responses of one run: each
/// round gets fresh ids, every result reaches the model as a tool result, one session.
pub(super) async fn several_rounds_in_one_run(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = [weather()];
    let prompt = r#"keep asking [sticky:2] [call:get_weather:{"city":"Rome"}]"#;
    let mut messages = vec![user(prompt)];
    let mut ids = BTreeSet::new();
    for (round, result) in ["warm", "warmer"].into_iter().enumerate() {
        let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
        let calls = tool_calls_of(s, &v);
        assert_eq!(
            named(&calls),
            vec![("get_weather".to_string(), json!({"city": "Rome"}))],
            "round {round}"
        );
        assert!(ids.insert(calls[0].0.clone()), "round {round} reused an id");
        messages.push(v["choices"][0]["message"].clone());
        messages.push(tool_result(&calls[0].0, result));
    }
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_1_0=warmer");
    let last = &model_calls_since(bed, before, 3, "two rounds and the answer")[2];
    assert_eq!(
        turns(last),
        vec![
            json!({"user": prompt}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Rome"}]]}),
            json!({"tool": ["call_0_0", "warm"]}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Rome"}]]}),
            json!({"tool": ["call_1_0", "warmer"]}),
        ]
    );
    assert_no_replay(bed, before, "several rounds");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        1,
        "one session for all rounds"
    );
}

/// `parallel_tool_calls: false` with a model that makes two calls in one step: the client gets
/// them in two responses of one call each (the second without another model call), and the
/// model then gets both results together.
pub(super) async fn one_call_per_response_without_parallel_tool_calls(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = [weather(), time()];
    let prompt =
        r#"one by one [call:get_weather:{"city":"Kyiv"}] [call:get_time:{"city":"Quito"}]"#;
    let mut messages = vec![user(prompt)];
    let mut got = Vec::new();
    for result in ["cold", "dawn"] {
        let mut body = tool_body(&messages, &tools);
        body["parallel_tool_calls"] = json!(false);
        let (s, v) = bed.chat(body).await;
        let calls = tool_calls_of(s, &v);
        assert_eq!(calls.len(), 1, "one call per response: {v}");
        got.extend(named(&calls));
        messages.push(v["choices"][0]["message"].clone());
        messages.push(tool_result(&calls[0].0, result));
    }
    assert_eq!(
        got,
        vec![
            ("get_weather".to_string(), json!({"city": "Kyiv"})),
            ("get_time".to_string(), json!({"city": "Quito"})),
        ]
    );
    model_calls_since(bed, before, 1, "both calls come from one model step");
    let mut body = tool_body(&messages, &tools);
    body["parallel_tool_calls"] = json!(false);
    let (s, v) = bed.chat(body).await;
    assert_eq!(
        answer_of(s, &v),
        "echo tool results: call_0_0=cold; call_0_1=dawn"
    );
    model_calls_since(bed, before, 2, "then the answer");
    assert_no_replay(bed, before, "one call per response");
}

/// `tool_choice`: `none` offers the model no client tool; `required` offers them all and tells
/// the model it must call one; a named function is the only one offered, and the model is told
/// to call it.
pub(super) async fn tool_choice_decides_what_the_model_is_offered(bed: &TestBed) {
    let tools = [weather(), time()];

    let before = bed.mock.call_count();
    let mut body = tool_body(&[user("no tools now")], &tools);
    body["tool_choice"] = json!("none");
    let (s, v) = bed.chat(body).await;
    assert_eq!(answer_of(s, &v), "echo: no tools now");
    let req = &model_calls_since(bed, before, 1, "tool_choice none")[0];
    assert!(
        offered_client_tools(req).is_empty(),
        "tool_choice none offers no client tool: {:?}",
        offered(req)
    );

    let before = bed.mock.call_count();
    let messages = vec![user(r#"must [call:get_time:{"city":"Baku"}]"#)];
    let mut body = tool_body(&messages, &tools);
    body["tool_choice"] = json!("required");
    let (s, v) = bed.chat(body).await;
    assert_eq!(tool_calls_of(s, &v)[0].1, "get_time");
    let req = &model_calls_since(bed, before, 1, "tool_choice required")[0];
    assert_eq!(
        offered_client_tools(req),
        BTreeSet::from(["get_weather".to_string(), "get_time".to_string()])
    );
    assert!(
        system_text(req).contains("must call at least one"),
        "required: the model is told to call a tool"
    );
    finish_loop(bed, messages, &tools, v).await;

    let before = bed.mock.call_count();
    let messages = vec![user(r#"named [call:get_time:{"city":"Cairo"}]"#)];
    let mut body = tool_body(&messages, &tools);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let (s, v) = bed.chat(body).await;
    assert_eq!(tool_calls_of(s, &v)[0].1, "get_time");
    let req = &model_calls_since(bed, before, 1, "tool_choice named")[0];
    assert_eq!(
        offered_client_tools(req),
        BTreeSet::from(["get_time".to_string()]),
        "a named choice offers only that function"
    );
    let visible = offered(req)[0].clone();
    assert!(
        system_text(req).contains(&format!("must call the tool `{visible}`")),
        "named: the model is told which tool to call"
    );
    finish_loop(bed, messages, &tools, v).await;
}

/// Client tools named like OpenCode's own (`bash`, `read`) are the client's: the calls reach
/// the client under those names and OpenCode runs nothing itself.
pub(super) async fn names_of_opencode_tools_reach_the_client(bed: &TestBed) {
    let before = bed.mock.call_count();
    let tools = [
        json!({"type": "function", "function": {"name": "bash", "parameters": {"type": "object",
            "properties": {"command": {"type": "string"}}}}}),
        json!({"type": "function", "function": {"name": "read", "parameters": {"type": "object",
            "properties": {"path": {"type": "string"}}}}}),
    ];
    let prompt = r#"collide [call:bash:{"command":"rm -rf /"}] [call:read:{"path":"/etc/passwd"}]"#;
    let mut messages = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(
        named(&calls),
        vec![
            ("bash".to_string(), json!({"command": "rm -rf /"})),
            ("read".to_string(), json!({"path": "/etc/passwd"})),
        ]
    );
    let req = &model_calls_since(bed, before, 1, "colliding names")[0];
    assert!(
        offered(req).iter().all(|n| slot_prefix(n).is_some()),
        "only the client's (slot-prefixed) tools are offered: {:?}",
        offered(req)
    );
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "client ran bash"));
    messages.push(tool_result(&calls[1].0, "client read it"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(
        answer_of(s, &v),
        "echo tool results: call_0_0=client ran bash; call_0_1=client read it"
    );
}
