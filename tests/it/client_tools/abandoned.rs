//! A client that never brings its results, and tool loops on several gateways.

use super::*;

/// The parked run holds the only slot: another tool run is a 429 `too_many_tool_runs` (with
/// `Retry-After`), a plain chat still runs. After the 2 s timeout the held call is answered
/// with an error while the run is aborted (the model is not called again), OpenCode's session
/// is idle and deleted, the gateway's `/status` is clean, and the next tool run gets the slot.
/// The late results are then answered through a seeded session.
pub(super) async fn a_client_that_never_returns_frees_everything(bed: &TestBed) {
    let tools = [weather()];
    let before_sessions = sessions(bed).await;
    let mut events = bed.opencode.subscribe_events().await;
    let prompt = r#"never answered [call:get_weather:{"city":"Faro"}]"#;
    let (s, v) = bed.chat(tool_body(&[user(prompt)], &tools)).await;
    let parked_at = Instant::now();
    let calls = tool_calls_of(s, &v);
    let late_results = vec![
        user(prompt),
        v["choices"][0]["message"].clone(),
        tool_result(&calls[0].0, "too late"),
    ];
    let model_calls = bed.mock.call_count();
    let new: Vec<String> = sessions(bed)
        .await
        .difference(&before_sessions)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let session = new[0].clone();
    assert!(
        bed.opencode
            .busy_sessions()
            .await
            .iter()
            .any(|(id, _)| *id == session),
        "while parked, OpenCode's run waits on the held call"
    );

    // The only slot is taken: another tool run is refused, a plain chat is not.
    let other = tool_body(
        &[user(r#"second [call:get_weather:{"city":"Pau"}]"#)],
        &tools,
    );
    let (s, headers, v) = send(
        bed.client
            .post(bed.url("/v1/chat/completions"))
            .json(&other),
    )
    .await;
    assert_error(
        s,
        &v,
        429,
        Some("too_many_tool_runs"),
        None,
        "second tool run",
    );
    assert!(
        headers.get("retry-after").is_some(),
        "a 429 says when to retry: {headers:?}"
    );
    let (s, v) = bed.chat(support::ask(ECHO, "no tools, no slot")).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The timeout: the held call errors, the run stops, the session goes.
    let gone = support::eventually(Duration::from_secs(10), || async {
        !sessions(bed).await.contains(&session)
    })
    .await;
    let waited = parked_at.elapsed();
    assert!(
        gone,
        "the abandoned run's session was not deleted within 10 s"
    );
    assert!(
        waited >= Duration::from_millis(1900),
        "abandoned before the 2 s result timeout: {waited:?}"
    );
    let seen = events
        .collect_until(Duration::from_secs(3), |ev| {
            ev["type"] == "session.deleted" && event_session_id(ev) == Some(session.as_str())
        })
        .await;
    let tool_states: Vec<&Value> = seen
        .iter()
        .filter(|ev| event_session_id(ev) == Some(session.as_str()))
        .filter(|ev| ev["properties"]["part"]["type"] == "tool")
        .map(|ev| &ev["properties"]["part"]["state"])
        .collect();
    assert!(
        tool_states.iter().any(|st| st["status"] == "error"),
        "the held call ends in an error: {tool_states:#?}"
    );
    assert!(
        bed.opencode
            .wait_not_busy(Duration::from_secs(2))
            .await
            .is_ok(),
        "OpenCode still runs something after the abandoned run"
    );
    assert_eq!(
        bed.mock.call_count(),
        model_calls + 1,
        "after the timeout the model is not called again (only the plain chat was)"
    );
    let (s, status) = bed.get("/status").await;
    assert_eq!(s, StatusCode::OK, "{status}");
    assert_eq!(status["events"]["connected"], true, "{status}");
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            bed.get("/status").await.1["pool"]["pending_cleanup"] == 0
        })
        .await,
        "clean-up left pending"
    );

    // The slot is free again.
    let (s, v) = bed.chat(other.clone()).await;
    let calls = tool_calls_of(s, &v);
    let mut messages = other["messages"].as_array().unwrap().clone();
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, "sunny"));
    let (s, v) = bed.chat(tool_body(&messages, &tools)).await;
    assert_eq!(answer_of(s, &v), "echo tool results: call_0_0=sunny");

    // The late results still get an answer, through a seeded session.
    let before = bed.mock.call_count();
    let (s, v) = bed.chat(tool_body(&late_results, &tools)).await;
    answer_of(s, &v);
    let req = &model_calls_since(bed, before, 1, "late results")[0];
    assert!(
        req["messages"].to_string().contains("too late"),
        "{:#?}",
        turns(req)
    );
}

// ---------------------------------------------------------------------------------------------
// Several gateways
// ---------------------------------------------------------------------------------------------

/// Runs one whole tool loop on `gw`: `[user(prompt)]` → one call of `get_weather` → its result
/// → the model's answer (which it returns).
pub(super) async fn loop_on(gw: &Gateway, prompt: &str, result: &str) -> Result<String, String> {
    let tools = [weather()];
    let mut messages = vec![user(prompt)];
    let (s, v) = chat_on(gw, &tool_body(&messages, &tools)).await;
    if v["choices"][0]["finish_reason"] != "tool_calls" {
        return Err(format!("expected tool_calls, got {s}: {v}"));
    }
    let calls = tool_calls_of(s, &v);
    messages.push(v["choices"][0]["message"].clone());
    messages.push(tool_result(&calls[0].0, result));
    let (s, v) = chat_on(gw, &tool_body(&messages, &tools)).await;
    if s != StatusCode::OK {
        return Err(format!("the results got {s}: {v}"));
    }
    Ok(content(&v).to_string())
}
