//! 2.x's stored messages (`GET /api/session/:id/message`, cursor pages of typed items) read
//! into 1.18's `{info, parts}` form, so that [`crate::opencode::history`] reads both.
//!
//! `user {id, time, text, files?}` becomes a user message with one text part (and a file part
//! per file); `assistant {id, time, content[], finish, tokens, error?}` an assistant message
//! whose parts are its text, reasoning and tool items; the other items (system updates,
//! switches, idle markers…) are 2.x's bookkeeping, not conversation, and are left out.

use reqwest::Method;
use serde_json::{json, Value};

use super::super::{OpenCodeClient, UpstreamError};

/// Most pages one history read takes (a page is 100 items).
const MAX_PAGES: usize = 50;

impl OpenCodeClient {
    /// Every message of a session, oldest first, in 1.18's `{info, parts}` form.
    pub(crate) async fn v2_messages(&self, id: &str) -> Result<Vec<Value>, UpstreamError> {
        let path = format!("api/session/{id}/message");
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            // The cursor carries the order (2.x refuses both together).
            let mut query = vec![("limit", "100".to_string())];
            match &cursor {
                Some(c) => query.push(("cursor", c.clone())),
                None => query.push(("order", "asc".to_string())),
            }
            let page: Value = self
                .retrying("list messages", || {
                    self.json(
                        "list messages",
                        self.request(Method::GET, &path).query(&query),
                        self.timeout,
                    )
                })
                .await?;
            let items = page["data"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            out.extend(items.iter().filter_map(|m| as_v1(id, m)));
            cursor = page
                .pointer("/cursor/next")
                .and_then(Value::as_str)
                .map(String::from);
            if cursor.is_none() || items.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// The id of a session's newest message, whatever its kind.
    pub(crate) async fn v2_newest_message_id(
        &self,
        id: &str,
    ) -> Result<Option<String>, UpstreamError> {
        let query = [("order", "desc".to_string()), ("limit", "1".to_string())];
        let items: Vec<Value> = self
            .v2_read(
                "list messages",
                &format!("api/session/{id}/message"),
                &query,
            )
            .await?;
        Ok(items
            .first()
            .and_then(|m| m["id"].as_str())
            .map(String::from))
    }
}

/// One 2.x item as a 1.18 message; `None` for items that are not conversation.
pub(super) fn as_v1(session: &str, m: &Value) -> Option<Value> {
    let id = m.get("id")?.clone();
    let time = json!({
        "created": m.pointer("/time/created").cloned().unwrap_or(Value::Null),
        "completed": m.pointer("/time/completed").cloned().unwrap_or(Value::Null),
    });
    match m.get("type")?.as_str()? {
        "user" => {
            let mut parts = vec![json!({
                "type": "text",
                "text": m.get("text").or_else(|| m.pointer("/payload/text")).cloned().unwrap_or(json!("")),
            })];
            for f in m["files"].as_array().into_iter().flatten() {
                parts.push(json!({
                    "type": "file",
                    "mime": f.get("mime").cloned().unwrap_or(Value::Null),
                    "filename": f.get("name").cloned().unwrap_or(Value::Null),
                }));
            }
            Some(json!({
                "info": { "id": id, "sessionID": session, "role": "user", "time": time },
                "parts": parts,
            }))
        }
        "assistant" => {
            let parts: Vec<Value> = m["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(content_part)
                .collect();
            Some(json!({
                "info": {
                    "id": id,
                    "sessionID": session,
                    "role": "assistant",
                    "time": time,
                    "finish": m.get("finish").cloned().unwrap_or(Value::Null),
                    "tokens": m.get("tokens").cloned().unwrap_or(Value::Null),
                    "cost": m.get("cost").cloned().unwrap_or(Value::Null),
                    "error": m.get("error").cloned().unwrap_or(Value::Null),
                },
                "parts": parts,
            }))
        }
        _ => None,
    }
}

/// An assistant content item as a 1.18 part.
fn content_part(c: &Value) -> Option<Value> {
    match c.get("type")?.as_str()? {
        kind @ ("text" | "reasoning") => Some(json!({ "type": kind, "text": c["text"] })),
        "tool" => {
            let state = &c["state"];
            let text = |v: &Value| -> Option<String> {
                match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(items) => Some(
                        items
                            .iter()
                            .filter_map(|i| i["text"].as_str())
                            .collect::<Vec<_>>()
                            .join(""),
                    ),
                    _ => None,
                }
            };
            let status = state["status"].as_str().unwrap_or("completed");
            let mut v1 = json!({
                "status": match status { "success" => "completed", "failed" => "error", s => s },
                "input": state.get("input").cloned().unwrap_or(Value::Null),
            });
            if let Some(out) = text(&state["content"]) {
                v1["output"] = Value::String(out);
            }
            if let Some(err) = state
                .pointer("/error/message")
                .or_else(|| state.get("error"))
                .and_then(Value::as_str)
            {
                v1["error"] = Value::String(err.to_string());
            }
            Some(json!({
                "type": "tool",
                "callID": c["id"],
                "tool": c["name"],
                "state": v1,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_assistant_items_read_as_1_18_messages() {
        let user = json!({"id": "msg_1", "type": "user", "time": {"created": 5000}, "text": "hi"});
        let v1 = as_v1("ses_1", &user).expect("a user message");
        assert_eq!(v1["info"]["role"], "user");
        assert_eq!(v1["parts"][0]["text"], "hi");
        let assistant = json!({
            "id": "msg_2", "type": "assistant", "time": {"created": 6000, "completed": 7000},
            "content": [
                {"type": "reasoning", "text": "think"},
                {"type": "text", "text": "answer"},
                {"type": "tool", "id": "call_1", "name": "read", "state": {"status": "success", "input": {"p": 1}, "content": [{"type": "text", "text": "out"}]}}
            ],
            "finish": "stop", "tokens": {"input": 1, "output": 2}
        });
        let v1 = as_v1("ses_1", &assistant).expect("an assistant message");
        assert_eq!(v1["info"]["role"], "assistant");
        assert_eq!(
            v1["parts"][0],
            json!({"type": "reasoning", "text": "think"})
        );
        assert_eq!(v1["parts"][1], json!({"type": "text", "text": "answer"}));
        assert_eq!(v1["parts"][2]["state"]["output"], "out");
        assert_eq!(v1["parts"][2]["state"]["status"], "completed");
        assert!(as_v1("ses_1", &json!({"id": "msg_3", "type": "idle"})).is_none());
    }
}
