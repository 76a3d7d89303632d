//! Helpers of the agent-mode steps: streams, the model's side of a run, audit lines.

use super::*;

/// Starts a streaming chat as `key` with headers: its session and the reader of its 200 SSE.
pub(super) async fn open_stream(
    bed: &TestBed,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &Value,
) -> (String, SseReader) {
    let resp = request(bed, key, Method::POST, "/v1/chat/completions", headers)
        .json(&streaming(body.clone()))
        .send()
        .await
        .expect("POST /v1/chat/completions");
    assert_eq!(
        resp.status(),
        200,
        "streaming chat answered {}",
        resp.status()
    );
    assert!(
        is_event_stream(resp.headers()),
        "not SSE: {:?}",
        resp.headers()
    );
    let session = session_of(resp.headers());
    (session, SseReader::new(resp))
}

/// Fails (instead of hanging) when `fut` takes longer than `secs`.
pub(super) async fn within<F: std::future::Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still running after {secs} s (a run waiting on nobody?)"),
    }
}

/// SHA-256 in hex, as `key_sha256` wants it (`printf %s KEY | sha256sum`).
pub(super) fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The latest model call whose last user message contains `marker`.
#[track_caller]
pub(super) fn model_call(bed: &TestBed, marker: &str) -> Value {
    bed.mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| last_user_text(r).contains(marker))
        .unwrap_or_else(|| panic!("the model never saw {marker:?}"))
}

/// Every system message of a model call, joined.
pub(super) fn system_prompt(call: &Value) -> String {
    call["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "system")
        .map(|m| content_text(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The project directory OpenCode told the model it works in (`Working directory: …`).
#[track_caller]
pub(super) fn working_directory(call: &Value) -> String {
    let system = system_prompt(call);
    system
        .lines()
        .find_map(|l| l.trim().strip_prefix("Working directory:"))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|| panic!("no `Working directory:` in the system prompt:\n{system}"))
}

/// The `role: tool` results the model received in a call, in order.
pub(super) fn tool_results(call: &Value) -> Vec<String> {
    call["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| content_text(&m["content"]))
        .collect()
}

/// OpenCode's record of a session (`directory`, `agent`, …).
pub(super) async fn upstream_session(bed: &TestBed, id: &str) -> Value {
    if bed.opencode.is_v2() {
        // 2.x: `{data}`, the directory under `location` (1.x's shape here).
        let mut s = bed.opencode.get_json(&format!("/api/session/{id}")).await["data"].take();
        s["directory"] = s["location"]["directory"].clone();
        return s;
    }
    bed.opencode.get_json(&format!("/session/{id}")).await
}

/// The agent OpenCode recorded on the user messages of a session (2.x records it on the
/// answers).
pub(super) async fn agents_recorded(bed: &TestBed, id: &str) -> BTreeSet<String> {
    if bed.opencode.is_v2() {
        return bed
            .opencode
            .messages(id)
            .await
            .iter()
            .filter_map(|m| m["item"]["agent"].as_str().map(String::from))
            .collect();
    }
    bed.opencode
        .messages(id)
        .await
        .iter()
        .filter(|m| m["info"]["role"] == "user")
        .filter_map(|m| m["info"]["agent"].as_str().map(String::from))
        .collect()
}

/// The gateway's audit lines (target `portatek_gateway::audit`).
pub(super) fn audit_lines(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains(" portatek_gateway::audit: "))
        .map(String::from)
        .collect()
}

/// The `: opencode-activity {json}` comments of a stream, parsed.
pub(super) fn activities(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|f| f.raw.strip_prefix(": opencode-activity "))
        .map(|json| {
            serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("activity comment is not JSON ({e}): {json}"))
        })
        .collect()
}

/// A prompt making the mock call OpenCode's `bash` with `command`, tagged with `marker`.
/// Whether the tool result the model got says the permission was rejected (1.18: "The user
/// rejected permission…"; 2.x: a `permission.rejected` error).
pub(super) fn says_rejected(text: &str) -> bool {
    text.contains("rejected permission") || text.contains("permission.rejected")
}

/// OpenCode's shell tool as it names it: `bash` (1.x) or `shell` (2.x).
pub(super) fn bash_tool(bed: &TestBed) -> &'static str {
    if bed.opencode.is_v2() {
        "shell"
    } else {
        "bash"
    }
}

pub(super) fn bash_prompt(marker: &str, command: &str) -> String {
    let args = json!({"command": command, "description": "scripted"});
    format!("{marker} [call:bash:{args}]")
}
