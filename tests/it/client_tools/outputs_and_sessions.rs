//! Structured outputs, bad tool requests, explicit sessions, seeded histories, the openai-node
//! SDK and `prompt.tools_enabled` (the steps of `tool_loop`).

use super::*;

/// `response_format`: `json_schema` (strict) returns the structured result as the message
/// content, a JSON string valid against the schema (JSON and streamed); `json_object` a JSON
/// object; output that violates the schema is a clear 502 at once, not a hang.
pub(super) async fn structured_outputs(bed: &TestBed) {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"},
        "n": {"type": "integer"}}, "required": ["answer", "n"], "additionalProperties": false});
    let format = json!({"type": "json_schema", "json_schema": {"name": "verdict", "strict": true,
        "schema": schema}});
    let validator = jsonschema::validator_for(&schema).unwrap();

    let before = bed.mock.call_count();
    let mut body = support::ask(ECHO, r#"[call:StructuredOutput:{"answer":"yes","n":3}]"#);
    body["response_format"] = format.clone();
    let (s, v) = bed.chat(body.clone()).await;
    let text = answer_of(s, &v);
    let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(validator.is_valid(&parsed), "{parsed}");
    assert_eq!(parsed, json!({"answer": "yes", "n": 3}));
    let req = &model_calls_since(bed, before, 1, "structured output")[0];
    // OpenCode 1.18's own tool, or (2.x) the gateway's on the run's slot.
    assert!(
        offered(req)
            .iter()
            .any(|t| t == "StructuredOutput" || t.ends_with("_StructuredOutput")),
        "{:?}",
        offered(req)
    );

    let streamed = bed.read_ok_stream(support::streaming(body)).await;
    assert_eq!(streamed.finish_reason, "stop");
    let parsed: Value = serde_json::from_str(&streamed.content).unwrap();
    assert_eq!(parsed, json!({"answer": "yes", "n": 3}));

    let mut body = support::ask(ECHO, r#"[call:StructuredOutput:{"any":["thing",1]}]"#);
    body["response_format"] = json!({"type": "json_object"});
    let (s, v) = bed.chat(body).await;
    let parsed: Value = serde_json::from_str(&answer_of(s, &v)).unwrap();
    assert_eq!(parsed, json!({"any": ["thing", 1]}));

    let mut body = support::ask(ECHO, r#"[call:StructuredOutput:{"answer":5}]"#);
    body["response_format"] = format;
    let started = Instant::now();
    let (s, v) = bed.chat(body).await;
    assert_error(s, &v, 502, Some("upstream_error"), None, "schema violation");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("schema"),
        "the error says the output broke the schema: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a schema violation is answered at once, not after a deadline: {:?}",
        started.elapsed()
    );
}

/// Malformed tool requests are refused by the real binary too, naming the field (the full set
/// is in `tests/http_api/validation.rs`), before anything reaches the model; results that leave
/// one of a parked run's calls unanswered are a 400 and the run keeps waiting for them.
pub(super) async fn bad_tool_requests_are_400(bed: &TestBed) {
    let before = bed.mock.call_count();
    let nameless = json!([{"type": "function", "function": {"parameters": {"type": "object"}}}]);
    let (s, v) = bed
        .chat(tool_body(&[user("hi")], nameless.as_array().unwrap()))
        .await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("tools[0].function.name"),
        "nameless tool",
    );
    let mut body = tool_body(&[user("hi")], &[weather()]);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let (s, v) = bed.chat(body).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("tool_choice"),
        "tool_choice naming no tool",
    );
    assert_eq!(bed.mock.call_count(), before, "a 400 reaches no model");

    let tools = [weather(), time()];
    let prompt =
        r#"two at once [call:get_weather:{"city":"Bari"}] [call:get_time:{"city":"Bari"}]"#;
    let mut messages = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(calls.len(), 2);
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "hot"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_error(s, &v, 400, None, Some("messages"), "one of two results");
    let mut stray = messages.clone();
    stray.push(tool_result(&calls[1].0, "late"));
    stray.push(tool_result("call_nobody_made", "?"));
    let (s, v) = bed.chat(tool_body(&stray, &tools)).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("messages[4].tool_call_id"),
        "a result for no call",
    );
    messages.push(tool_result(&calls[1].0, "late"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(
        answer_of(s, &v),
        "echo tool results: call_0_0=hot; call_0_1=late",
        "after the 400s the run still waits for its results"
    );
    model_calls_since(bed, before, 2, "the call and the results");
}

/// An explicit session (`x-session-id`): the call, the results (only they are sent; the session
/// holds the rest) and a later turn all run in that session, the model getting real tool
/// results.
pub(super) async fn explicit_session_runs_the_loop(bed: &TestBed) {
    let (s, created) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let pinned = |body: &Value| {
        send(
            bed.client
                .post(bed.url("/v1/chat/completions"))
                .header("x-session-id", &id)
                .json(body),
        )
    };
    let before = bed.mock.call_count();
    let tools = [weather()];
    let prompt = r#"pinned weather [call:get_weather:{"city":"Bern"}]"#;
    let (s, _, v) = pinned(&tool_body(&[user(prompt)], &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(calls[0].1, "get_weather");

    let results = vec![
        user(prompt),
        v["choices"][0]["message"].clone(),
        tool_result(&calls[0].0, "foggy"),
    ];
    let (s, _, v) = pinned(&tool_body(&results, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_0_0=foggy");
    let (s, _, v) = pinned(&tool_body(&[user("pinned next")], &tools)).await;
    assert_eq!(answer_of(s, &v), "echo: pinned next");
    let last = &model_calls_since(bed, before, 3, "pinned loop")[2];
    assert_eq!(
        turns(last),
        vec![
            json!({"user": prompt}),
            json!({"assistant": "", "calls": [["get_weather", {"city": "Bern"}]]}),
            json!({"tool": ["call_0_0", "foggy"]}),
            json!({"assistant": "echo tool results: call_0_0=foggy"}),
            json!({"user": "pinned next"}),
        ]
    );
    assert_no_replay(bed, before, "explicit session");
    let (s, v) = bed.get(&format!("/v1/sessions/{id}/messages")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A history with tool calls the gateway never produced (another client's, or from before a
/// restart) cannot resume a run: a new session is seeded with the calls and results written
/// out, in one model call, and the client gets an answer.
pub(super) async fn unseen_history_is_seeded_with_calls_and_results(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let tools = [weather()];
    let messages = vec![
        user("what is the weather in Paris?"),
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_elsewhere_1",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
        tool_result("call_elsewhere_1", "rainy, 12 C"),
    ];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let answer = answer_of(s, &v);
    assert!(answer.starts_with("echo: "), "{answer}");
    let req = &model_calls_since(bed, before, 1, "a seeded history")[0];
    let t = turns(req);
    assert_eq!(t.len(), 1, "a seeded session gets one user message: {t:#?}");
    let text = t[0]["user"].as_str().unwrap();
    for expected in [
        TRANSCRIPT_MARK,
        "what is the weather in Paris?",
        r#"<tool_call id="call_elsewhere_1" name="get_weather">{"city":"Paris"}</tool_call>"#,
        "<tool_result id=\"call_elsewhere_1\">\nrainy, 12 C\n</tool_result>",
    ] {
        assert!(
            text.contains(expected),
            "the seeded prompt lacks {expected:?}: {text}"
        );
    }
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        1,
        "one new session"
    );
}

/// The official openai-node SDK runs the loop itself: by hand with JSON answers, with its
/// stream helper (parallel calls), and with its `runTools` runner over two rounds. Every resent
/// history resumed its run (no replay, one session per loop).
pub(super) async fn sdk_runs_the_loop(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let out = support::node_sdk::run_script(
        "chat_tools.mjs",
        &bed.gateway.url(),
        None,
        Duration::from_secs(90),
    )
    .await;
    eprintln!("[sdk] {out}");
    let manual = &out["manual"];
    assert_eq!(manual["finish1"], "tool_calls", "{out}");
    assert_eq!(manual["calls"][0]["name"], "get_weather");
    assert_eq!(manual["calls"][0]["type"], "function");
    assert_eq!(manual["calls"][0]["arguments"], json!({"city": "Paris"}));
    assert_eq!(manual["finish2"], "stop");
    assert_eq!(
        manual["content"],
        "echo tool results: call_0_0=sunny in Paris"
    );

    let streamed = &out["streamed"];
    assert_eq!(streamed["finish1"], "tool_calls", "{out}");
    let names: Vec<&str> = streamed["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(
        streamed["argumentsDone"],
        json!([{"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}},
               {"index": 1, "name": "get_time", "arguments": {"city": "Lima"}}])
    );
    assert_eq!(streamed["finish2"], "stop");
    assert_eq!(
        streamed["content"],
        "echo tool results: call_0_0=sunny in Oslo; call_0_1=noon in Lima"
    );
    assert!(streamed["deltas"].as_u64().unwrap() >= 1);

    let runner = &out["runner"];
    assert_eq!(
        runner["content"], "echo tool results: call_1_0=sunny in Rome",
        "{out}"
    );
    assert_eq!(
        runner["toolCalls"],
        json!([{"city": "Rome"}, {"city": "Rome"}])
    );
    assert_eq!(
        runner["roles"],
        json!([
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant"
        ])
    );

    // 2 + 2 + 3 model calls in three sessions: every resent history resumed its run.
    model_calls_since(bed, before, 7, "the SDK's three loops");
    assert_no_replay(bed, before, "the SDK's loops");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        3,
        "one session per loop"
    );
}

/// A gateway restarted over the same OpenCode has seen nothing: a follow-up of a finished tool
/// loop, and results for a run the old process held, are both answered through a seeded
/// session (calls and results written out).
pub(super) async fn restarted_gateway_seeds_what_it_never_saw(bed: &mut TestBed) {
    let tools = [weather()];
    let prompt = r#"before restart [call:get_weather:{"city":"Nice"}]"#;
    let mut done = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&done, &tools)).await;
    let calls = tool_calls_of(s, &v);
    done.push(v["choices"][0]["message"].clone());
    done.push(tool_result(&calls[0].0, "mild"));
    let (s, v) = bed.chat(tool_body(&done, &tools)).await;
    done.push(json!({"role": "assistant", "content": answer_of(s, &v)}));
    done.push(user("after restart"));

    let held_prompt = r#"held across restart [call:get_weather:{"city":"Metz"}]"#;
    let (s, v) = bed.chat(tool_body(&[user(held_prompt)], &tools)).await;
    let held = tool_calls_of(s, &v);
    let held_results = vec![
        user(held_prompt),
        v["choices"][0]["message"].clone(),
        tool_result(&held[0].0, "windy"),
    ];

    bed.gateway.kill().await;
    // The old process's held call broke with it; OpenCode finishes that run on its own.
    let _ = bed.opencode.wait_not_busy(Duration::from_secs(10)).await;
    bed.gateway = Gateway::start(&bed.opencode.url()).await;

    let before = bed.mock.call_count();
    let (s, v) = bed.chat(tool_body(&done, &tools)).await;
    let answer = answer_of(s, &v);
    assert!(answer.ends_with("after restart"), "{answer}");
    let req = &model_calls_since(bed, before, 1, "follow-up after restart")[0];
    let text = turns(req)[0]["user"].as_str().unwrap().to_string();
    assert!(
        text.contains(TRANSCRIPT_MARK)
            && text.contains(&format!(
                r#"<tool_call id="{}" name="get_weather">{{"city":"Nice"}}</tool_call>"#,
                calls[0].0
            ))
            && text.contains(&format!(
                "<tool_result id=\"{}\">\nmild\n</tool_result>",
                calls[0].0
            )),
        "the seeded prompt carries the earlier call and result: {text}"
    );

    let before = bed.mock.call_count();
    let (s, v) = bed.chat(tool_body(&held_results, &tools)).await;
    answer_of(s, &v);
    let req = &model_calls_since(bed, before, 1, "results after restart")[0];
    let text = req["messages"].to_string();
    assert!(
        text.contains("windy") && text.contains(WRITTEN_RESULTS_MARK),
        "results for a run the old process held are written into a seeded prompt: {:#?}",
        turns(req)
    );
}

/// `prompt.tools_enabled = true` gives the model OpenCode's own tools as well; client tools work
/// the same beside them (and the default, checked above, offers only the client's).
pub(super) async fn opencode_tools_on_leave_client_tools_alone(bed: &mut TestBed) {
    bed.gateway.kill().await;
    let opts = GatewayOptions::default().config("[prompt]\ntools_enabled = true\n");
    bed.gateway = Gateway::start_with(&bed.opencode.url(), opts).await;
    let before = bed.mock.call_count();
    let tools = [weather()];
    let prompt = r#"with opencode tools [call:get_weather:{"city":"Graz"}]"#;
    let mut messages = vec![user(prompt)];
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    let calls = tool_calls_of(s, &v);
    assert_eq!(calls[0].1, "get_weather");
    let req = &model_calls_since(bed, before, 1, "tools enabled")[0];
    let names = offered(req);
    assert!(
        names.iter().any(|n| n == "read" || n == "bash"),
        "OpenCode's own tools are offered when enabled: {names:?}"
    );
    assert_eq!(
        offered_client_tools(req),
        BTreeSet::from(["get_weather".to_string()])
    );
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "clear"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_0_0=clear");
}
