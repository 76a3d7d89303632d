//! OpenCode 1.18's events of one run, decoded into the gateway's [`RunEvent`]s.
//!
//! 1.18 reports a run as changes to its session's messages: `message.updated` (a message's
//! info: role, parent, finish, tokens, error, structured answer), `message.part.updated` (a
//! part whole: text, reasoning, tool, step markers) and `message.part.delta` (an increment of a
//! part's field), plus `session.status` (busy, retry, idle), `session.idle`, `session.error`,
//! and the permission and question requests. What is this run's:
//! - only messages newer than the `history end` (message ids ascend; a fork's copied history is at or
//!   below it) and, of assistant messages, only those answering this run's user message — the
//!   newest user message seen — so late events of an earlier run on the same session are not
//!   taken for this one;
//! - a part's type is learned from `message.part.updated` (reasoning and text deltas both say
//!   `field:"text"`), and the user's own part is never echoed;
//! - a `session.error` before the run's user message fails the run only on a session created
//!   for it (on a reused one it may be a late error of the previous run).
//!
//! No I/O happens here: it is unit-tested on recorded event sequences (with the adapter, in
//! `crate::adapter`'s tests and `tests/it/adapter_fixtures.rs`).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::events::{
    Ask, AskKind, FailureKind, Finish, RunEvent, RunFailure, Step, Tokens, ToolStatus, ToolUpdate,
};
use super::{error_message, public_message, Event};

/// Which stream a part's text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Reasoning,
    Other,
}

#[derive(Debug, Default)]
struct Part {
    kind: Option<PartKind>,
    /// Text already passed on.
    sent: String,
}

/// A run's decoder, for the API its upstream speaks.
#[derive(Debug)]
pub enum RunDecoder {
    /// OpenCode 1.x.
    V1(V1Decoder),
    /// OpenCode 2.x.
    V2(super::v2::decode::Decoder),
}

impl RunDecoder {
    /// A 1.x decoder (see [`V1Decoder::new`]).
    pub fn new(history_end: Option<String>, fresh: bool) -> RunDecoder {
        RunDecoder::V1(V1Decoder::new(history_end, fresh))
    }

    /// A 2.x decoder.
    pub fn v2() -> RunDecoder {
        RunDecoder::V2(Default::default())
    }

    /// The id of this run's user message, once the run is under way.
    pub fn user_message_id(&self) -> Option<&str> {
        match self {
            RunDecoder::V1(d) => d.user_message_id(),
            RunDecoder::V2(d) => d.user_message_id(),
        }
    }

    /// The id of this run's newest assistant message.
    pub fn last_assistant_id(&self) -> Option<&str> {
        match self {
            RunDecoder::V1(d) => d.last_assistant_id(),
            RunDecoder::V2(d) => d.last_assistant_id(),
        }
    }

    /// Whether OpenCode still runs after the run ended for the client (2.x goes on after a
    /// step cut by the token limit): the run then interrupts it.
    pub fn upstream_goes_on(&self) -> bool {
        match self {
            RunDecoder::V1(_) => false,
            RunDecoder::V2(d) => d.cut_short(),
        }
    }

    /// Decodes one event of the run's session.
    pub fn feed(&mut self, event: &Event) -> Vec<RunEvent> {
        match self {
            RunDecoder::V1(d) => d.feed(event),
            RunDecoder::V2(d) => d.feed(event),
        }
    }
}

/// Per-run decoding state of a 1.x run.
#[derive(Debug)]
pub struct V1Decoder {
    history_end: Option<String>,
    fresh: bool,
    user_message: Option<String>,
    assistants: HashSet<String>,
    last_assistant: Option<String>,
    parts: HashMap<String, Part>,
    started: bool,
}

impl V1Decoder {
    /// A decoder for a run whose messages are newer than `history end`, on a session created for it
    /// (`fresh`) or reused.
    pub fn new(history_end: Option<String>, fresh: bool) -> V1Decoder {
        V1Decoder {
            history_end,
            fresh,
            user_message: None,
            assistants: HashSet::new(),
            last_assistant: None,
            parts: HashMap::new(),
            started: false,
        }
    }

    /// The id of this run's user message, once the run is under way (so that a late update of
    /// an earlier run's user message is not mistaken for it).
    pub fn user_message_id(&self) -> Option<&str> {
        self.user_message.as_deref().filter(|_| self.started)
    }

    /// The id of this run's newest assistant message.
    pub fn last_assistant_id(&self) -> Option<&str> {
        self.last_assistant.as_deref()
    }

    /// Decodes one event of the run's session.
    pub fn feed(&mut self, event: &Event) -> Vec<RunEvent> {
        let p = &event.properties;
        match event.kind.as_str() {
            "permission.asked" | "question.asked" => {
                return ask(event).map(RunEvent::Asked).into_iter().collect()
            }
            "permission.replied" | "question.replied" | "question.rejected" => {
                return p["requestID"]
                    .as_str()
                    .map(|id| RunEvent::Answered { id: id.to_string() })
                    .into_iter()
                    .collect();
            }
            "message.updated" => return self.on_message(p.get("info").unwrap_or(&Value::Null)),
            _ => {}
        }
        // Until this run's user message shows up, anything else is a late event of an earlier
        // run on the same session (OpenCode keeps emitting a few after `session.idle`) — except
        // a failure that is not a late abort: a prompt OpenCode rejects (unknown agent, say)
        // may fail before any message exists, and must not wait for the deadline.
        if self.user_message.is_none() {
            let err = p.get("error").unwrap_or(&Value::Null);
            let late_abort = err.get("name").and_then(Value::as_str) == Some("MessageAbortedError");
            if event.kind == "session.error" && self.fresh && !late_abort {
                return vec![RunEvent::Failed(failure(err))];
            }
            return Vec::new();
        }
        match event.kind.as_str() {
            "message.part.updated" => {
                self.on_part(p.get("part").unwrap_or(&Value::Null), p.get("delta"))
            }
            "message.part.delta" => self.on_delta(p),
            "session.status" => self.on_status(p.get("status").unwrap_or(&Value::Null)),
            "session.error" => {
                let err = p.get("error").unwrap_or(&Value::Null);
                vec![RunEvent::Failed(failure(err))]
            }
            "session.idle" => self.on_idle(),
            _ => Vec::new(),
        }
    }

    fn on_message(&mut self, info: &Value) -> Vec<RunEvent> {
        let Some(id) = info.get("id").and_then(Value::as_str) else {
            return Vec::new();
        };
        match info.get("role").and_then(Value::as_str) {
            Some("user") if self.history_end.as_deref().is_some_and(|f| id <= f) => Vec::new(),
            Some("user") => {
                // Message ids ascend: the newest user message is this run's (a late update of an
                // earlier one must not take its place).
                if self.user_message.as_deref().is_none_or(|u| id > u) {
                    self.user_message = Some(id.to_string());
                }
                Vec::new()
            }
            Some("assistant") => {
                let parent = info.get("parentID").and_then(Value::as_str);
                if self.user_message.is_none() || parent != self.user_message.as_deref() {
                    return Vec::new();
                }
                self.started = true;
                self.assistants.insert(id.to_string());
                self.last_assistant = Some(id.to_string());
                let mut out = vec![RunEvent::Step(Step {
                    message: id.to_string(),
                    completed: info
                        .get("time")
                        .and_then(|t| t.get("completed"))
                        .is_some_and(|c| !c.is_null()),
                    finish: info.get("finish").and_then(Value::as_str).map(finish),
                    tokens: info.get("tokens").map(tokens),
                })];
                match (info.get("error"), info.get("structured")) {
                    (Some(err), _) if !err.is_null() => out.push(RunEvent::Failed(failure(err))),
                    (_, Some(value)) if !value.is_null() => {
                        out.push(RunEvent::Structured(value.clone()))
                    }
                    _ => {}
                }
                out
            }
            _ => Vec::new(),
        }
    }

    fn on_part(&mut self, part: &Value, delta: Option<&Value>) -> Vec<RunEvent> {
        let (Some(id), Some(message)) = (
            part.get("id").and_then(Value::as_str),
            part.get("messageID").and_then(Value::as_str),
        ) else {
            return Vec::new();
        };
        if !self.assistants.contains(message) {
            return Vec::new();
        }
        let kind = match part.get("type").and_then(Value::as_str) {
            Some("text") => PartKind::Text,
            Some("reasoning") => PartKind::Reasoning,
            _ => PartKind::Other,
        };
        let state = self.parts.entry(id.to_string()).or_default();
        state.kind = Some(kind);
        let progress = || {
            vec![RunEvent::Progress {
                message: message.to_string(),
            }]
        };
        if kind == PartKind::Other {
            return match tool_update(part, message) {
                Some(update) => vec![RunEvent::Tool(update)],
                None => progress(),
            };
        }
        // Older servers put the increment on the update itself.
        if let Some(Value::String(d)) = delta {
            if !d.is_empty() {
                state.sent.push_str(d);
                return vec![text(kind, message, d.clone())];
            }
        }
        // The full text so far: pass on whatever the deltas have not carried yet.
        let Some(whole) = part.get("text").and_then(Value::as_str) else {
            return progress();
        };
        match whole.strip_prefix(state.sent.as_str()) {
            Some(rest) if !rest.is_empty() => {
                let rest = rest.to_string();
                state.sent.push_str(&rest);
                vec![text(kind, message, rest)]
            }
            _ => progress(),
        }
    }

    fn on_delta(&mut self, p: &Value) -> Vec<RunEvent> {
        let (Some(part), Some(message), Some(delta)) = (
            p.get("partID").and_then(Value::as_str),
            p.get("messageID").and_then(Value::as_str),
            p.get("delta").and_then(Value::as_str),
        ) else {
            return Vec::new();
        };
        if !self.assistants.contains(message) {
            return Vec::new();
        }
        let progress = vec![RunEvent::Progress {
            message: message.to_string(),
        }];
        if p.get("field")
            .and_then(Value::as_str)
            .is_some_and(|f| f != "text")
            || delta.is_empty()
        {
            return progress;
        }
        let Some(state) = self.parts.get_mut(part) else {
            return progress;
        };
        match state.kind {
            Some(kind @ (PartKind::Text | PartKind::Reasoning)) => {
                state.sent.push_str(delta);
                vec![text(kind, message, delta.to_string())]
            }
            _ => progress,
        }
    }

    fn on_status(&mut self, status: &Value) -> Vec<RunEvent> {
        match status.get("type").and_then(Value::as_str) {
            Some("busy") => {
                self.started = true;
                Vec::new()
            }
            Some("retry") => {
                self.started = true;
                let attempt = status.get("attempt").and_then(Value::as_u64).unwrap_or(1);
                let message = status
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| "the model provider failed".into(), public_message);
                vec![RunEvent::Retrying { attempt, message }]
            }
            Some("idle") => self.on_idle(),
            _ => Vec::new(),
        }
    }

    fn on_idle(&mut self) -> Vec<RunEvent> {
        match self.started {
            true => vec![RunEvent::Idle],
            false => Vec::new(),
        }
    }
}

fn text(kind: PartKind, message: &str, text: String) -> RunEvent {
    let message = message.to_string();
    match kind {
        PartKind::Reasoning => RunEvent::Reasoning { message, text },
        _ => RunEvent::Text { message, text },
    }
}

/// A tool part's state (not the structured-output tool, whose answer arrives as the message's
/// `structured`).
fn tool_update(part: &Value, message: &str) -> Option<ToolUpdate> {
    if part.get("type").and_then(Value::as_str) != Some("tool") {
        return None;
    }
    let tool = part.get("tool").and_then(Value::as_str)?;
    if tool == "StructuredOutput" {
        return None;
    }
    let state = part.get("state")?;
    let status = match state.get("status").and_then(Value::as_str)? {
        "pending" => ToolStatus::Pending,
        "running" => ToolStatus::Running,
        "completed" => ToolStatus::Completed,
        "error" => ToolStatus::Error,
        _ => return None,
    };
    Some(ToolUpdate {
        message: message.to_string(),
        call_id: part
            .get("callID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        tool: tool.to_string(),
        status,
        input: state.get("input").cloned().unwrap_or(Value::Null),
        output: state
            .get("output")
            .and_then(Value::as_str)
            .map(String::from),
        error: state
            .get("error")
            .and_then(Value::as_str)
            .map(public_message),
    })
}

fn failure(err: &Value) -> RunFailure {
    let name = err.get("name").and_then(Value::as_str).unwrap_or("");
    let message = error_message(err).unwrap_or_else(|| "unknown error".into());
    let kind = match name {
        "MessageAbortedError" => FailureKind::Interrupted,
        "StructuredOutputError" => FailureKind::StructuredOutput,
        _ => FailureKind::Provider,
    };
    RunFailure { kind, message }
}

pub(super) fn finish(f: &str) -> Finish {
    match f {
        "stop" => Finish::Stop,
        "length" => Finish::Length,
        "content-filter" | "content_filter" => Finish::ContentFilter,
        "tool-calls" => Finish::ToolCalls,
        _ => Finish::Other,
    }
}

/// 1.18's `tokens {input, output, reasoning, cache{read, write}}` (2.x's have the same shape).
pub(super) fn tokens(t: &Value) -> Tokens {
    let n = |ptr: &str| t.pointer(ptr).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        input: n("/input"),
        output: n("/output"),
        reasoning: n("/reasoning"),
        cache_read: n("/cache/read"),
        cache_write: n("/cache/write"),
    }
}

/// A permission or question request.
fn ask(event: &Event) -> Option<Ask> {
    let p = &event.properties;
    let question = event.kind == "question.asked";
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Ask {
        id: p["id"].as_str()?.to_string(),
        kind: match question {
            true => AskKind::Question,
            false => AskKind::Permission,
        },
        session_id: p["sessionID"].as_str().unwrap_or_default().to_string(),
        permission: match question {
            true => "question".into(),
            false => p["permission"].as_str().unwrap_or_default().to_string(),
        },
        patterns: strings(&p["patterns"]),
        always: strings(&p["always"]),
        details: match question {
            true => serde_json::json!({ "questions": p["questions"] }),
            false => p["metadata"].clone(),
        },
        directory: event.directory.clone(),
    })
}
