//! Settings that reach OpenCode, and a failing model cut off by the retry budget.

use super::*;

// ---------------------------------------------------------------------------------------------
// Settings that reach OpenCode
// ---------------------------------------------------------------------------------------------

/// `reasoning_effort` must be one of the model's OpenCode variants (then it is forwarded as
/// `variant` and reaches the model); anything else is a 400 naming the parameter, before
/// anything is sent upstream.
pub(super) async fn reasoning_effort(bed: &TestBed) {
    let with_effort = |model: &str, effort: &str| {
        let mut body = ask(model, "effort");
        body["reasoning_effort"] = json!(effort);
        body
    };
    let (s, v) = bed.chat(with_effort(THINKER, "high")).await;
    assert_eq!(s, StatusCode::OK, "a declared variant is accepted: {v}");
    let sent = bed.mock.last_request().expect("model call");
    assert_eq!(
        sent["reasoning_effort"], "high",
        "the variant reaches the model: {sent}"
    );
    let calls = bed.mock.call_count();
    let (s, v) = bed.chat(with_effort(THINKER, "extreme")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "reasoning_effort", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("high"),
        "{v}"
    );
    let (s, v) = bed.chat(with_effort(ECHO, "high")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a model without variants: {v}");
    assert_eq!(v["error"]["param"], "reasoning_effort", "{v}");
    assert_eq!(
        bed.mock.call_count(),
        calls,
        "rejected before any model call"
    );
}

/// `prompt.agent` picks the OpenCode agent (its prompt reaches the model), and its tools stay
/// off while `prompt.tools_enabled` is not set.
pub(super) async fn agent_without_tools(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nagent = \"chatty\"\n"),
    )
    .await;
    let (s, v) = chat_via(&gw, &ask(ECHO, "agent one")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let req = bed.mock.last_request().expect("model call");
    assert!(
        req.to_string().contains("You are the chatty test agent."),
        "the agent's prompt must reach the model: {req}"
    );
    assert!(
        req.get("tools")
            .is_none_or(|t| t.as_array().is_some_and(|a| a.is_empty())),
        "an agent with tools must not get them while tools are disabled: {}",
        req["tools"]
    );
}

/// With `prompt.tools_enabled = true` the agent's tools reach the model.
pub(super) async fn agent_with_tools(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nagent = \"chatty\"\ntools_enabled = true\n"),
    )
    .await;
    let (s, v) = chat_via(&gw, &ask(ECHO, "agent two")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let req = bed.mock.last_request().expect("model call");
    let tools = req["tools"].to_string();
    assert!(
        tools.contains("bash"),
        "with tools enabled the agent's bash tool is offered: {tools}"
    );
}

/// `opencode.directory` runs everything in that project directory upstream: sessions are
/// created there and the shared event subscription follows it (a chat completes).
pub(super) async fn opencode_directory(bed: &TestBed) {
    let dir = bed.opencode.project_dir().join("sub");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config(format!(
            "[opencode]\ndirectory = {:?}\n",
            dir.to_str().unwrap()
        )),
    )
    .await;
    let (status, v) = chat_via(&gw, &ask(ECHO, "in sub")).await;
    assert_eq!(status, StatusCode::OK, "{v}\n{}", gw.logs());
    assert_eq!(content(&v), "echo: in sub");
    let url = reqwest::Url::parse_with_params(
        &format!("{}/session", bed.opencode.url()),
        &[("directory", dir.to_str().unwrap())],
    )
    .unwrap();
    let sessions: Value = bed
        .opencode
        .client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dirs: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["directory"].as_str())
        .collect();
    assert_eq!(dirs, vec![dir.to_str().unwrap()], "{sessions}");
}

/// A failing model provider and `prompt.max_model_retries = 1` (its own gateway): OpenCode
/// retries after ~2 s and the gateway gives up at that retry, well within the deadline, with a
/// 502 carrying the provider's message; OpenCode's run is stopped and retries no more.
pub(super) async fn model_failure_retry_budget(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nmax_model_retries = 1\ndeadline_secs = 20\n"),
    )
    .await;
    // Warm up OpenCode (provider load, first model call) so the timing below measures the
    // gateway's retry budget, not OpenCode's cold start.
    let (status, v) = chat_via(&gw, &ask(ECHO, "warm up")).await;
    assert_eq!(status, 200, "{v}");

    let calls_before = bed.mock.call_count();
    let t = Instant::now();
    let (status, e) = chat_via(&gw, &ask(ECHO, "please [fail]")).await;
    let took = t.elapsed();
    eprintln!("retry-budget failure answered after {took:?}");
    assert_error(status, &e, 502, None, None, "model failure (retry budget)");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(FAILURE_MESSAGE),
        "502 should carry the provider's message: {e}"
    );
    assert!(
        took < Duration::from_secs(12),
        "retry budget 1 should fail well within the 20 s deadline, took {took:?}"
    );
    assert!(
        bed.mock.call_count() > calls_before,
        "the model was never called"
    );
    assert_quiet_upstream(bed, "the retry budget").await;
    let calls_after = bed.mock.call_count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bed.mock.call_count(),
        calls_after,
        "OpenCode kept retrying after the gateway gave up"
    );
}
