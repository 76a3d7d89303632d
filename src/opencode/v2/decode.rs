//! OpenCode 2.x's events of one run, decoded into the gateway's [`RunEvent`]s.
//!
//! 2.x says what 1.18 made the reader infer: an execution starts and ends with its own events
//! (`session.execution.started` … `succeeded` / `failed` / `interrupted`), every step is an
//! assistant message with `session.step.started` / `ended` (its finish and tokens), answer and
//! reasoning text have their own delta events, and a tool call reports each stage. What is
//! left to decide here:
//! - a run is this one from its `execution.started` on (or its first step): anything before
//!   is a late event of an earlier execution on the session;
//! - the run's user message is the inbox item its prompt created (`session.inbox.enqueued`);
//! - a tool's name arrives only with its first event, so it is remembered per call;
//! - a retry's `attempt` counts model calls (2 is the first retry), the gateway counts retries.
//!
//! No I/O happens here: unit-tested below on 2.1.2's recorded event shapes.

use std::collections::HashMap;

use serde_json::Value;

use super::super::decode::{finish, tokens};
use super::super::events::{
    Ask, AskKind, FailureKind, Finish, RunEvent, RunFailure, Step, ToolStatus, ToolUpdate,
};
use super::super::{error_message, Event};

/// Per-run decoding state.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    user_message: Option<String>,
    last_assistant: Option<String>,
    /// Tool name and input per call id.
    tools: HashMap<String, (String, Value)>,
    /// The run is over for the client while OpenCode goes on (see [`Decoder::cut_short`]).
    cut: bool,
}

impl Decoder {
    /// The id of this run's user message, once known.
    pub fn user_message_id(&self) -> Option<&str> {
        self.user_message.as_deref().filter(|_| self.started)
    }

    /// The id of this run's newest assistant message.
    pub fn last_assistant_id(&self) -> Option<&str> {
        self.last_assistant.as_deref()
    }

    /// Whether the run ended for the client while OpenCode's execution goes on, so that it
    /// must be interrupted: 2.x answers a step cut by the output-token limit by prompting the
    /// model to go on, where an OpenAI client expects the answer to end there (`length`).
    pub fn cut_short(&self) -> bool {
        self.cut
    }

    /// Decodes one event of the run's session.
    pub fn feed(&mut self, event: &Event) -> Vec<RunEvent> {
        if self.cut {
            return Vec::new();
        }
        let d = &event.properties;
        let kind = event.kind.as_str();
        match kind {
            "permission.asked" => {
                return permission(event).map(RunEvent::Asked).into_iter().collect()
            }
            "form.created" => return form(event).map(RunEvent::Asked).into_iter().collect(),
            "permission.replied" | "form.replied" | "form.cancelled" => {
                return d["requestID"]
                    .as_str()
                    .or_else(|| d["formID"].as_str())
                    .or_else(|| d.pointer("/form/id").and_then(Value::as_str))
                    .or_else(|| d["id"].as_str())
                    .map(|id| RunEvent::Answered { id: id.to_string() })
                    .into_iter()
                    .collect();
            }
            "session.inbox.enqueued" => {
                if let Some(id) = d["inboxID"].as_str() {
                    self.user_message = Some(id.to_string());
                }
                return Vec::new();
            }
            "session.execution.started" => {
                self.started = true;
                return Vec::new();
            }
            // A prompt sent while an execution still ran (one being interrupted, say) is
            // delivered into it, with no execution of its own: the run starts there.
            "session.inbox.delivered"
                if self.user_message.is_some()
                    && d["inboxID"].as_str() == self.user_message.as_deref() =>
            {
                self.started = true;
                return Vec::new();
            }
            "session.step.started" => self.started = true,
            _ => {}
        }
        if !self.started {
            return Vec::new();
        }
        let message = d["assistantMessageID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match kind {
            "session.step.started" => {
                self.last_assistant = Some(message.clone());
                vec![RunEvent::Step(Step {
                    message,
                    ..Step::default()
                })]
            }
            "session.step.ended" => {
                let finish = d["finish"].as_str().map(finish);
                let step = RunEvent::Step(Step {
                    message,
                    completed: true,
                    finish,
                    tokens: d.get("tokens").map(tokens),
                });
                if finish == Some(Finish::Length) {
                    self.cut = true;
                    return vec![step, RunEvent::Idle];
                }
                vec![step]
            }
            // A step that failed (interrupted, say) still cost its tokens.
            "session.step.failed" => vec![RunEvent::Step(Step {
                message,
                completed: true,
                finish: None,
                tokens: d.get("tokens").map(tokens),
            })],
            "session.text.delta" => delta(d, |text| RunEvent::Text { message, text }),
            "session.reasoning.delta" => delta(d, |text| RunEvent::Reasoning { message, text }),
            "session.tool.input.started"
            | "session.tool.called"
            | "session.tool.success"
            | "session.tool.failed" => self.tool(kind, d, message).into_iter().collect(),
            "session.retry.scheduled" => {
                let attempt = d["attempt"].as_u64().unwrap_or(2).saturating_sub(1).max(1);
                let message = d
                    .get("error")
                    .and_then(error_message)
                    .unwrap_or_else(|| "the model provider failed".into());
                vec![RunEvent::Retrying { attempt, message }]
            }
            "session.execution.succeeded" => vec![RunEvent::Idle],
            "session.execution.failed" => {
                let message = d
                    .get("error")
                    .and_then(error_message)
                    .unwrap_or_else(|| "unknown error".into());
                vec![RunEvent::Failed(RunFailure {
                    kind: FailureKind::Provider,
                    message,
                })]
            }
            "session.execution.interrupted" => vec![RunEvent::Failed(RunFailure {
                kind: FailureKind::Interrupted,
                message: format!(
                    "The run was interrupted ({}).",
                    d["reason"].as_str().unwrap_or("unknown reason")
                ),
            })],
            _ if !message.is_empty() => vec![RunEvent::Progress { message }],
            _ => Vec::new(),
        }
    }

    fn tool(&mut self, kind: &str, d: &Value, message: String) -> Option<RunEvent> {
        let call_id = d["id"].as_str()?.to_string();
        let entry = self
            .tools
            .entry(call_id.clone())
            .or_insert_with(|| (String::new(), Value::Null));
        if let Some(name) = d["name"].as_str() {
            entry.0 = name.to_string();
        }
        if let Some(input) = d.get("input").filter(|i| !i.is_null()) {
            entry.1 = input.clone();
        }
        let (status, output, error) = match kind {
            "session.tool.input.started" => (ToolStatus::Pending, None, None),
            "session.tool.called" => (ToolStatus::Running, None, None),
            "session.tool.success" => (
                ToolStatus::Completed,
                Some(content_text(&d["content"])),
                None,
            ),
            _ => (
                ToolStatus::Error,
                None,
                Some(
                    d.get("error")
                        .and_then(error_message)
                        .unwrap_or_else(|| "the tool failed".into()),
                ),
            ),
        };
        Some(RunEvent::Tool(ToolUpdate {
            message,
            call_id,
            tool: entry.0.clone(),
            status,
            input: entry.1.clone(),
            output,
            error,
        }))
    }
}

fn delta(d: &Value, make: impl FnOnce(String) -> RunEvent) -> Vec<RunEvent> {
    match d["delta"].as_str() {
        Some(text) if !text.is_empty() => vec![make(text.to_string())],
        _ => Vec::new(),
    }
}

/// A tool result's `content` (`[{type:"text", text}]`) as text.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `permission.asked {id, sessionID, action, resources, save, source}`.
fn permission(event: &Event) -> Option<Ask> {
    let d = &event.properties;
    let action = d["action"].as_str().unwrap_or_default();
    Some(Ask {
        id: d["id"].as_str()?.to_string(),
        kind: AskKind::Permission,
        session_id: d["sessionID"].as_str().unwrap_or_default().to_string(),
        // The gateway's policy speaks 1.18's names.
        permission: match action {
            "shell" => "bash",
            "subagent" => "task",
            other => other,
        }
        .to_string(),
        patterns: strings(&d["resources"]),
        always: strings(&d["save"]),
        details: d.get("source").cloned().unwrap_or(Value::Null),
        directory: event.directory.clone(),
    })
}

/// `form.created {form {id, sessionID, fields[{key, title, options}]}}` as a question.
fn form(event: &Event) -> Option<Ask> {
    let f = event.properties.get("form")?;
    let questions: Vec<Value> = f["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|field| {
            serde_json::json!({
                "question": field["title"],
                "header": field["key"],
                "options": field["options"].as_array().into_iter().flatten().map(|o| serde_json::json!({
                    "label": o.get("label").or_else(|| o.get("value")).cloned().unwrap_or(Value::Null),
                    "description": o.get("description").cloned().unwrap_or(Value::Null),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Some(Ask {
        id: f["id"].as_str()?.to_string(),
        kind: AskKind::Question,
        session_id: f["sessionID"].as_str().unwrap_or_default().to_string(),
        permission: "question".into(),
        patterns: Vec::new(),
        always: Vec::new(),
        details: serde_json::json!({ "questions": questions }),
        directory: event.directory.clone(),
    })
}

#[cfg(test)]
mod tests;
