//! OpenCode's tool runs as SSE comments and `mcp_call` items (the steps of `agent_activity`).

use super::*;

// ---------------------------------------------------------------------------------------------
// Agent activity
// ---------------------------------------------------------------------------------------------

/// OpenCode's tools on, and `bash` allowed by OpenCode's defaults: the tool really runs.
/// OpenCode's tools on, and `bash` allowed by OpenCode's defaults: the tool really runs.
pub(super) async fn activity_bed() -> TestBed {
    activity_bed_on(Harness::real()).await
}

/// [`activity_bed`] in front of OpenCode 2.x.
pub(super) async fn activity_bed_v2() -> TestBed {
    activity_bed_on(Harness::real().v2()).await
}

async fn activity_bed_on(harness: support::harness::Real) -> TestBed {
    harness
        .gateway(gateway_config(
            "[prompt]\ntools_enabled = true\ndeadline_secs = 120\n",
        ))
        .start()
        .await
}

/// With `x-opencode-activity: 1`, the `bash` run shows as `: opencode-activity {json}` comment
/// frames (running, then completed with its output) before the answer; the stream is otherwise
/// a conforming OpenAI stream with the same answer as without the header, which shows nothing.
pub(super) async fn chat_stream_shows_tool_runs_as_comments(bed: &TestBed) {
    let body = ask(ECHO, &bash_prompt("activity", "echo activity-ok"));
    let (_, mut reader) = open_stream(bed, None, &[("x-opencode-activity", "1")], &body).await;
    let frames = within(60, "activity stream", reader.rest(FRAME_WAIT)).await;
    let shown = activities(&frames);
    for frame in frames
        .iter()
        .filter(|f| f.raw.starts_with(": opencode-activity"))
    {
        assert!(
            frame.is_comment() && frame.data().is_none(),
            "not a pure comment: {}",
            frame.raw
        );
    }
    let input = json!({"command": "echo activity-ok", "description": "scripted"});
    let statuses: Vec<&str> = shown
        .iter()
        .map(|a| {
            assert_eq!(a["type"], "tool", "{a}");
            let tool = &a["tool"];
            assert_eq!(tool["tool"], bash_tool(bed), "{a}");
            assert_eq!(tool["call_id"], "call_0_0", "{a}");
            assert_eq!(tool["input"], input, "{a}");
            tool["status"].as_str().unwrap()
        })
        .collect();
    assert_eq!(statuses, ["running", "completed"], "{shown:#?}");
    let output = shown[1]["tool"]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("activity-ok"),
        "completed without its output: {}",
        shown[1]
    );
    assert!(shown[1]["tool"].get("error").is_none(), "{}", shown[1]);
    let done_at = frames
        .iter()
        .position(|f| f.raw.contains("\"status\":\"completed\""))
        .unwrap();
    let first_text = frames.iter().position(|f| f.content().is_some()).unwrap();
    assert!(
        done_at < first_text,
        "the tool's activity came after the answer"
    );
    let with = check_ok_stream(frames, ECHO);
    assert_eq!(
        with.content,
        format!("echo tool results: call_0_0={output}")
    );

    let (_, mut reader) = open_stream(bed, None, &[], &body).await;
    let frames = within(60, "plain stream", reader.rest(FRAME_WAIT)).await;
    assert!(
        activities(&frames).is_empty(),
        "activity without the opt-in"
    );
    assert_eq!(check_ok_stream(frames, ECHO).content, with.content);
}

/// openai-node and openai-python read a stream with activity comments without error, and get
/// the same text as from the same stream without them.
pub(super) async fn sdks_parse_streams_with_activity(bed: &TestBed) {
    let check = |sdk: &str, out: &Value| {
        let (with, without) = (&out["with"], &out["without"]);
        for v in [with, without] {
            assert_eq!(v["finish"], "stop", "{sdk}: {out}");
            let text = v["content"].as_str().unwrap_or_default();
            assert!(
                text.starts_with("echo tool results: call_0_0=") && text.contains("sdk-activity"),
                "{sdk}: {out}"
            );
        }
        assert_eq!(with["content"], without["content"], "{sdk}: {out}");
        assert_eq!(
            with["chunks"], without["chunks"],
            "{sdk} saw the comments: {out}"
        );
        with["content"].as_str().unwrap().to_string()
    };
    let url = bed.gateway.url();
    let timeout = Duration::from_secs(120);
    let node = node_sdk::run_script("agent_activity.mjs", &url, None, timeout).await;
    let node_text = check("openai-node", &node);
    if let Some(py) = python_sdk::run_script("agent_activity.py", &url, None, timeout).await {
        assert_eq!(check("openai-python", &py), node_text);
    }
}

/// A `response` valid against OpenAI's Responses schema, its `mcp_call` items' `error` strings
/// tolerated (see [`mcp_call_error_follows_the_responses_schema`]).
#[track_caller]
pub(super) fn assert_response_but_mcp_errors(response: &Value) {
    let mut tolerated = response.clone();
    if let Some(items) = tolerated["output"].as_array_mut() {
        for item in items.iter_mut().filter(|i| i["type"] == "mcp_call") {
            item.as_object_mut().unwrap().remove("error");
        }
    }
    responses_schema::assert_response(&tolerated);
}

/// The `mcp_call` item of a response that ran one of OpenCode's tools.
#[track_caller]
pub(super) fn mcp_call(response: &Value) -> Value {
    let calls: Vec<&Value> = response["output"]
        .as_array()
        .unwrap_or_else(|| panic!("no output: {response}"))
        .iter()
        .filter(|i| i["type"] == "mcp_call")
        .collect();
    assert_eq!(calls.len(), 1, "one mcp_call item: {response:#}");
    let call = calls[0].clone();
    assert_eq!(call["server_label"], "opencode", "{call}");
    assert!(
        call["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{call}"
    );
    call
}

/// A JSON response: an `mcp_call` item (server `opencode`, the tool, its arguments as JSON
/// text, its output, `completed`) before the answer message; the whole response (and the
/// stored copy) valid against the Responses schema.
pub(super) async fn responses_show_tool_runs_as_mcp_calls(bed: &TestBed) {
    let input = bash_prompt("responses activity", "echo mcp-ok");
    let (status, _, response) = within(
        60,
        "response with a tool run",
        post_as(
            bed,
            None,
            "/v1/responses",
            &[],
            &json!({"model": ECHO, "input": input}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    responses_schema::assert_response(&response);
    let call = mcp_call(&response);
    assert_eq!(call["name"], bash_tool(bed), "{call}");
    assert_eq!(call["status"], "completed", "{call}");
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        arguments,
        json!({"command": "echo mcp-ok", "description": "scripted"})
    );
    assert!(
        call["output"]
            .as_str()
            .unwrap_or_default()
            .contains("mcp-ok"),
        "{call}"
    );
    assert!(call["error"].is_null(), "{call}");
    let kinds: Vec<&str> = response["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["mcp_call", "message"], "{response:#}");
    let id = response["id"].as_str().unwrap();
    let (status, stored) = get_as(bed, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{stored}");
    responses_schema::assert_response(&stored);
    assert_eq!(mcp_call(&stored), call, "the stored response");
}

/// Streamed, the tool run is `output_item.added` (`in_progress`), `mcp_call.in_progress`,
/// `mcp_call_arguments.done`, `mcp_call.completed`, `output_item.done`: every event valid
/// against its schema, and the item in `response.completed` equal to the one streamed.
pub(super) async fn streamed_responses_show_tool_runs_as_mcp_calls(bed: &TestBed) {
    let input = bash_prompt("streamed responses activity", "echo streamed-ok");
    let resp = request(bed, None, Method::POST, "/v1/responses", &[])
        .json(&json!({"model": ECHO, "input": input, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let frames = within(
        60,
        "streamed response",
        SseReader::new(resp).rest(FRAME_WAIT),
    )
    .await;
    let events: Vec<Value> = frames.iter().filter_map(Frame::json).collect();
    for (i, e) in events.iter().enumerate() {
        responses_schema::assert_event(e);
        assert_eq!(e["sequence_number"], i, "{e}");
    }
    let mcp: Vec<&str> = events
        .iter()
        .filter(|e| {
            e["item"]["type"] == "mcp_call"
                || e["type"].as_str().is_some_and(|t| t.contains("mcp_call"))
        })
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        mcp,
        [
            "response.output_item.added",
            "response.mcp_call.in_progress",
            "response.mcp_call_arguments.done",
            "response.mcp_call.completed",
            "response.output_item.done"
        ],
        "{events:#?}"
    );
    let added = events
        .iter()
        .find(|e| e["type"] == "response.output_item.added")
        .unwrap();
    assert_eq!(added["item"]["status"], "in_progress", "{added}");
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_item.done" && e["item"]["type"] == "mcp_call")
        .unwrap();
    assert!(done["item"]["output"]
        .as_str()
        .unwrap_or_default()
        .contains("streamed-ok"));
    let completed = events.last().unwrap();
    assert_eq!(completed["type"], "response.completed", "{completed}");
    assert_eq!(mcp_call(&completed["response"]), done["item"]);
}

/// A tool run that fails (`read` of a missing file) is an `mcp_call` item with status `failed`
/// and its error; the model is told, and the response completes.
pub(super) async fn a_failed_tool_run_is_a_failed_mcp_call(bed: &TestBed) {
    let missing = bed.opencode.project_dir().join("missing.txt");
    let args = json!({"filePath": missing});
    let input = format!("read it [call:read:{args}]");
    let (status, _, response) = within(
        60,
        "response with a failing tool",
        post_as(
            bed,
            None,
            "/v1/responses",
            &[],
            &json!({"model": ECHO, "input": input}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["status"], "completed", "{response}");
    assert_response_but_mcp_errors(&response);
    let call = mcp_call(&response);
    assert_eq!(call["name"], "read", "{call}");
    assert_eq!(call["status"], "failed", "{call}");
    assert!(
        !call["error"].is_null(),
        "a failed call without its error: {call}"
    );
    assert!(call["output"].is_null(), "{call}");
}
