//! A session's stored messages, read from OpenCode 1.18's `{info, parts}` form into what the
//! gateway shows of them (chat form, a shell run's output, a failed summary, a revert point),
//! so that no route reads OpenCode's message JSON itself.

use serde_json::Value;

use super::error_message;

/// One stored message, as the gateway shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryMessage {
    /// The message id.
    pub id: Value,
    /// `user` or `assistant`.
    pub role: String,
    /// Its answer text (text parts, joined).
    pub text: String,
    /// Its reasoning text.
    pub reasoning: String,
    /// When it was created, in Unix seconds.
    pub created_secs: Option<u64>,
    /// What its tools printed (their output, or their error), joined.
    pub tool_output: String,
    /// For a summary message that failed: why.
    pub summary_error: Option<String>,
    /// The message's parts as OpenCode keeps them (shown verbatim where the API promises
    /// OpenCode's detail).
    pub parts: Value,
}

impl HistoryMessage {
    /// Reads one message; `None` for anything that is not one.
    pub fn read(m: &Value) -> Option<HistoryMessage> {
        let info = m.get("info")?;
        let role = info.get("role")?.as_str()?.to_string();
        let (mut text, mut reasoning, mut tool_output) =
            (String::new(), String::new(), String::new());
        let parts = m.get("parts").and_then(Value::as_array);
        for part in parts.into_iter().flatten() {
            let t = part.get("text").and_then(Value::as_str).unwrap_or("");
            match part.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(t),
                Some("reasoning") => reasoning.push_str(t),
                Some("tool") => {
                    let state = &part["state"];
                    if let Some(out) = state["output"].as_str().or_else(|| state["error"].as_str())
                    {
                        tool_output.push_str(out);
                    }
                }
                _ => {}
            }
        }
        let summary_error = (info.get("summary") == Some(&Value::Bool(true)))
            .then(|| info.get("error").filter(|e| !e.is_null()))
            .flatten()
            .map(|e| error_message(e).unwrap_or_else(|| "unknown error".into()));
        Some(HistoryMessage {
            id: info.get("id").cloned().unwrap_or(Value::Null),
            role,
            text,
            reasoning,
            created_secs: info
                .pointer("/time/created")
                .and_then(Value::as_u64)
                .map(|ms| ms / 1000),
            tool_output,
            summary_error,
            parts: m.get("parts").cloned().unwrap_or(Value::Null),
        })
    }
}

/// Where a session is reverted to, if it is: (message id, part id).
pub fn revert_point(session: &Value) -> Option<(Value, Option<Value>)> {
    let revert = session.get("revert").filter(|r| !r.is_null())?;
    Some((revert["messageID"].clone(), revert.get("partID").cloned()))
}
