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

use super::super::events::{
    Ask, AskKind, FailureKind, Finish, RunEvent, RunFailure, Step, Tokens, ToolStatus, ToolUpdate,
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

fn finish(f: &str) -> Finish {
    match f {
        "stop" => Finish::Stop,
        "length" => Finish::Length,
        "content-filter" | "content_filter" => Finish::ContentFilter,
        "tool-calls" => Finish::ToolCalls,
        _ => Finish::Other,
    }
}

/// 2.x's `tokens {input, output, reasoning, cache{read, write}}` (1.18's shape).
fn tokens(t: &Value) -> Tokens {
    let n = |ptr: &str| t.pointer(ptr).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        input: n("/input"),
        output: n("/output"),
        reasoning: n("/reasoning"),
        cache_read: n("/cache/read"),
        cache_write: n("/cache/write"),
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
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, data: Value) -> Event {
        Event {
            kind: kind.into(),
            properties: data,
            directory: None,
        }
    }

    #[test]
    fn a_text_run_decodes_in_order() {
        let mut d = Decoder::default();
        assert!(
            d.feed(&ev(
                "session.step.ended",
                json!({"assistantMessageID": "msg_old", "finish": "stop"})
            ))
            .is_empty(),
            "a late event of an earlier run"
        );
        d.feed(&ev(
            "session.inbox.enqueued",
            json!({"sessionID": "ses_1", "inboxID": "msg_u"}),
        ));
        d.feed(&ev(
            "session.execution.started",
            json!({"sessionID": "ses_1"}),
        ));
        assert_eq!(d.user_message_id(), Some("msg_u"));
        let step = d.feed(&ev(
            "session.step.started",
            json!({"assistantMessageID": "msg_a"}),
        ));
        assert!(matches!(&step[..], [RunEvent::Step(s)] if s.message == "msg_a" && !s.completed));
        assert_eq!(
            d.feed(&ev(
                "session.reasoning.delta",
                json!({"assistantMessageID": "msg_a", "delta": "hm"})
            )),
            vec![RunEvent::Reasoning {
                message: "msg_a".into(),
                text: "hm".into()
            }]
        );
        assert_eq!(
            d.feed(&ev(
                "session.text.delta",
                json!({"assistantMessageID": "msg_a", "delta": "hi"})
            )),
            vec![RunEvent::Text {
                message: "msg_a".into(),
                text: "hi".into()
            }]
        );
        let ended = d.feed(&ev("session.step.ended", json!({
            "assistantMessageID": "msg_a", "finish": "stop",
            "tokens": {"input": 10, "output": 2, "reasoning": 1, "cache": {"read": 3, "write": 0}}
        })));
        let [RunEvent::Step(s)] = &ended[..] else {
            panic!("{ended:?}")
        };
        assert_eq!(s.finish, Some(Finish::Stop));
        assert_eq!(
            s.tokens
                .map(|t| (t.input, t.output, t.reasoning, t.cache_read)),
            Some((10, 2, 1, 3))
        );
        assert_eq!(d.last_assistant_id(), Some("msg_a"));
        assert_eq!(
            d.feed(&ev("session.execution.succeeded", json!({}))),
            vec![RunEvent::Idle]
        );
    }

    #[test]
    fn a_prompt_delivered_into_a_running_execution_starts_the_run() {
        let mut d = Decoder::default();
        d.feed(&ev("session.inbox.enqueued", json!({"inboxID": "msg_u"})));
        assert!(d
            .feed(&ev(
                "session.step.ended",
                json!({"assistantMessageID": "old"})
            ))
            .is_empty());
        d.feed(&ev(
            "session.inbox.delivered",
            json!({"inboxID": "msg_other"}),
        ));
        assert_eq!(d.user_message_id(), None, "someone else's input");
        d.feed(&ev("session.inbox.delivered", json!({"inboxID": "msg_u"})));
        assert_eq!(d.user_message_id(), Some("msg_u"));
        let text = d.feed(&ev(
            "session.text.delta",
            json!({"assistantMessageID": "m", "delta": "x"}),
        ));
        assert_eq!(
            text,
            vec![RunEvent::Text {
                message: "m".into(),
                text: "x".into()
            }]
        );
    }

    #[test]
    fn a_step_cut_by_the_token_limit_ends_the_run_there() {
        let mut d = Decoder::default();
        d.feed(&ev("session.execution.started", json!({})));
        d.feed(&ev(
            "session.step.started",
            json!({"assistantMessageID": "m1"}),
        ));
        let out = d.feed(&ev(
            "session.step.ended",
            json!({"assistantMessageID": "m1", "finish": "length"}),
        ));
        assert!(
            matches!(&out[..], [RunEvent::Step(s), RunEvent::Idle] if s.finish == Some(Finish::Length)),
            "{out:?}"
        );
        assert!(d.cut_short(), "OpenCode goes on: the run must interrupt it");
        assert!(d
            .feed(&ev(
                "session.step.started",
                json!({"assistantMessageID": "m2"})
            ))
            .is_empty());
    }

    #[test]
    fn tools_retries_failures_and_asks() {
        let mut d = Decoder::default();
        d.feed(&ev("session.execution.started", json!({})));
        d.feed(&ev(
            "session.tool.input.started",
            json!({"assistantMessageID": "m", "id": "c1", "name": "ptk01_get"}),
        ));
        let called = d.feed(&ev(
            "session.tool.called",
            json!({"assistantMessageID": "m", "id": "c1", "input": {"q": 1}}),
        ));
        let [RunEvent::Tool(t)] = &called[..] else {
            panic!("{called:?}")
        };
        assert_eq!(
            (t.tool.as_str(), t.status, &t.input),
            ("ptk01_get", ToolStatus::Running, &json!({"q": 1}))
        );
        let done = d.feed(&ev("session.tool.success", json!({"assistantMessageID": "m", "id": "c1", "content": [{"type": "text", "text": "ok"}]})));
        let [RunEvent::Tool(t)] = &done[..] else {
            panic!("{done:?}")
        };
        assert_eq!(
            (t.status, t.output.as_deref()),
            (ToolStatus::Completed, Some("ok"))
        );
        let retry = d.feed(&ev("session.retry.scheduled", json!({"attempt": 2, "error": {"type": "provider.internal", "message": "mock failure"}})));
        assert_eq!(
            retry,
            vec![RunEvent::Retrying {
                attempt: 1,
                message: "mock failure".into()
            }]
        );
        let failed = d.feed(&ev(
            "session.execution.failed",
            json!({"error": {"type": "provider.no-route", "message": "Model unavailable: x/y"}}),
        ));
        assert!(
            matches!(&failed[..], [RunEvent::Failed(f)] if f.kind == FailureKind::Provider && f.message.contains("Model unavailable"))
        );
        let stopped = d.feed(&ev(
            "session.execution.interrupted",
            json!({"reason": "user"}),
        ));
        assert!(
            matches!(&stopped[..], [RunEvent::Failed(f)] if f.kind == FailureKind::Interrupted)
        );
        let asked = d.feed(&ev("permission.asked", json!({"id": "per_1", "sessionID": "ses_1", "action": "shell", "resources": ["ls"], "save": ["ls *"]})));
        let [RunEvent::Asked(a)] = &asked[..] else {
            panic!("{asked:?}")
        };
        assert_eq!(
            (a.permission.as_str(), a.patterns.clone(), a.kind),
            ("bash", vec!["ls".to_string()], AskKind::Permission)
        );
        let form = d.feed(&ev("form.created", json!({"form": {"id": "frm_1", "sessionID": "ses_1", "fields": [{"key": "q0", "title": "Pick", "options": [{"value": "A", "label": "A"}]}]}})));
        let [RunEvent::Asked(q)] = &form[..] else {
            panic!("{form:?}")
        };
        assert_eq!(
            (q.id.as_str(), q.kind, q.session_id.as_str()),
            ("frm_1", AskKind::Question, "ses_1")
        );
        assert_eq!(q.details["questions"][0]["question"], "Pick");
        assert_eq!(
            d.feed(&ev(
                "permission.replied",
                json!({"requestID": "per_1", "reply": "once"})
            )),
            vec![RunEvent::Answered { id: "per_1".into() }]
        );
    }
}
