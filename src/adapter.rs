//! The stream adapter: a pure translation of one run's OpenCode events into the run's
//! [`Output`]s.
//!
//! It learns each part's type from `message.part.updated` (reasoning and text deltas both say
//! `field:"text"`), only speaks for parts of this run's assistant messages (never echoing the
//! user's own part), ends at `session.idle`, and turns retries beyond the budget, `session.error`
//! and assistant `info.error` into failures. A structured answer (`info.structured`, OpenCode's
//! `StructuredOutput` tool) is checked against the client's schema and becomes the content.
//! No I/O happens here, so it is unit-tested on recorded event sequences.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;
use crate::openai::schema::{Rejected, VALIDATION_BUDGET};
use crate::openai::{CompletionTokensDetails, PromptTokensDetails, Usage};
use crate::opencode::{error_message, public_message, Event};

/// Which stream a piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// The answer.
    Text,
    /// The model's reasoning.
    Reasoning,
    /// Anything else (tools, step markers, files…): not forwarded.
    Other,
}

/// What a run produces, in order. The adapter makes all of these but [`Output::ToolCall`],
/// which the run makes from the calls OpenCode sends the gateway's MCP endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// New answer text.
    Content(String),
    /// New reasoning text.
    Reasoning(String),
    /// The model calls one of the client's tools (the response then finishes with
    /// `tool_calls`).
    ToolCall(ToolCallOutput),
    /// What OpenCode's agent does meanwhile: its own tools running, a request for the caller.
    Activity(Activity),
    /// The run ended normally.
    Finished {
        /// OpenAI `finish_reason`.
        finish_reason: &'static str,
        /// Tokens of every assistant message of the run.
        usage: Usage,
    },
    /// The run failed.
    Failed(ApiError),
}

impl Output {
    /// Whether nothing follows this output in its response.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Output::Finished { .. } | Output::Failed(_))
    }
}

/// Something OpenCode's agent does during a run that the caller may want to see.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// One of OpenCode's own tools, as its state changes.
    Tool(ToolActivity),
    /// A permission request or question waiting for the caller (policy `client`).
    Permission(crate::permissions::Pending),
}

/// One of OpenCode's own tools at work.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolActivity {
    /// OpenCode's call id.
    pub call_id: String,
    /// The tool (`bash`, `read`, …).
    pub tool: String,
    /// `running`, `completed` or `error`.
    pub status: String,
    /// Its arguments.
    pub input: Value,
    /// What it returned, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A tool call as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallOutput {
    /// Position among this response's calls.
    pub index: usize,
    /// `call_…`, made by the gateway (providers' own ids repeat across runs).
    pub id: String,
    /// The client's function name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

#[derive(Debug, Default)]
struct Part {
    kind: Option<PartKind>,
    /// Bytes of text already forwarded.
    sent: String,
    /// A tool part's last state reported.
    status: String,
}

#[derive(Debug, Default, Clone)]
struct Assistant {
    finish: Option<String>,
    usage: Usage,
}

/// Per-run translation state.
pub struct Adapter {
    max_retries: u32,
    floor: Option<String>,
    fresh: bool,
    user_message: Option<String>,
    assistants: HashMap<String, Assistant>,
    last_assistant: Option<String>,
    parts: HashMap<String, Part>,
    started: bool,
    done: bool,
    last_retry: Option<String>,
    /// The client's schema for a structured answer, and whether it was sent.
    structured: Option<(crate::openai::schema::Checked, bool)>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("user_message", &self.user_message)
            .field("last_assistant", &self.last_assistant)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Adapter {
    /// An adapter that tolerates `max_retries` model retries before failing. Messages with ids
    /// up to `floor` predate the run (message ids ascend): their events are ignored. A
    /// `session.error` before the run's user message fails the run only on a session created
    /// for it: on a reused one it may be a late error of the previous run.
    pub fn new(max_retries: u32, floor: Option<String>) -> Adapter {
        Adapter {
            max_retries,
            floor,
            fresh: false,
            user_message: None,
            assistants: HashMap::new(),
            last_assistant: None,
            parts: HashMap::new(),
            started: false,
            done: false,
            last_retry: None,
            structured: None,
        }
    }

    /// Expects a structured answer following `schema` (checked before it is passed on).
    pub fn structured(mut self, schema: crate::openai::schema::Checked) -> Adapter {
        self.structured = Some((schema, false));
        self
    }

    /// Tokens of every assistant message of the run so far.
    pub fn usage(&self) -> Usage {
        self.assistants
            .values()
            .fold(Usage::default(), |a, b| a + b.usage)
    }

    /// The provider's message from the latest retry, if OpenCode is retrying.
    pub fn last_retry_message(&self) -> Option<&str> {
        self.last_retry.as_deref()
    }

    /// Marks the session as created for this run (see [`Adapter::new`]).
    pub fn fresh_session(mut self) -> Adapter {
        self.fresh = true;
        self
    }

    /// The id of this run's newest assistant message.
    pub fn last_assistant_id(&self) -> Option<&str> {
        self.last_assistant.as_deref()
    }

    /// The id of this run's user message, once the run is under way (so that a late update of
    /// an earlier run's user message is not mistaken for it).
    pub fn user_message_id(&self) -> Option<&str> {
        self.user_message.as_deref().filter(|_| self.started)
    }

    /// Whether a terminal output ([`Output::Finished`] or [`Output::Failed`]) was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one event of the run's session; returns what to tell the client.
    pub fn feed(&mut self, event: &Event) -> Vec<Output> {
        if self.done {
            return Vec::new();
        }
        let out = self.translate(event);
        if out.iter().any(Output::is_terminal) {
            self.done = true;
        }
        out
    }

    fn translate(&mut self, event: &Event) -> Vec<Output> {
        let p = &event.properties;
        if event.kind == "message.updated" {
            return self.on_message(p.get("info").unwrap_or(&Value::Null));
        }
        // Until this run's user message shows up, anything else is a late event of an earlier
        // run on the same session (OpenCode keeps emitting a few after `session.idle`) — except
        // a failure that is not a late abort: a prompt OpenCode rejects (unknown agent, say)
        // may fail before any message exists, and must not wait for the deadline.
        if self.user_message.is_none() {
            let err = p.get("error").unwrap_or(&Value::Null);
            let late_abort = err.get("name").and_then(Value::as_str) == Some("MessageAbortedError");
            if event.kind == "session.error" && self.fresh && !late_abort {
                return vec![Output::Failed(failure(err))];
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
                vec![Output::Failed(failure(err))]
            }
            "session.idle" => self.on_idle(),
            _ => Vec::new(),
        }
    }

    fn on_message(&mut self, info: &Value) -> Vec<Output> {
        let Some(id) = info.get("id").and_then(Value::as_str) else {
            return Vec::new();
        };
        match info.get("role").and_then(Value::as_str) {
            Some("user") if self.floor.as_deref().is_some_and(|f| id <= f) => Vec::new(),
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
                let entry = self.assistants.entry(id.to_string()).or_default();
                self.last_assistant = Some(id.to_string());
                if let Some(f) = info.get("finish").and_then(Value::as_str) {
                    entry.finish = Some(f.to_string());
                }
                if let Some(tokens) = info.get("tokens") {
                    entry.usage = usage_from_tokens(tokens);
                }
                match info.get("error") {
                    Some(err) if !err.is_null() => vec![Output::Failed(failure(err))],
                    _ => self.on_structured(info.get("structured")),
                }
            }
            _ => Vec::new(),
        }
    }

    /// The structured answer, once: checked against the client's schema, then the content.
    fn on_structured(&mut self, value: Option<&Value>) -> Vec<Output> {
        let (Some((schema, sent)), Some(value)) = (self.structured.as_mut(), value) else {
            return Vec::new();
        };
        if *sent || value.is_null() {
            return Vec::new();
        }
        *sent = true;
        match schema.validate(value) {
            Ok(()) => vec![Output::Content(value.to_string())],
            Err(Rejected::Invalid(problems)) => vec![Output::Failed(ApiError::Upstream(format!(
                "The model's structured output does not follow the requested schema: {}",
                problems.join("; ")
            )))],
            Err(Rejected::TooCostly) => vec![Output::Failed(ApiError::Upstream(format!(
                "The model's structured output could not be checked: validating it against the requested schema would take more than {VALIDATION_BUDGET} steps (simplify the schema's anyOf/oneOf/allOf branches)."
            )))],
        }
    }

    fn on_part(&mut self, part: &Value, delta: Option<&Value>) -> Vec<Output> {
        let (Some(id), Some(message)) = (
            part.get("id").and_then(Value::as_str),
            part.get("messageID").and_then(Value::as_str),
        ) else {
            return Vec::new();
        };
        if !self.assistants.contains_key(message) {
            return Vec::new();
        }
        let kind = match part.get("type").and_then(Value::as_str) {
            Some("text") => PartKind::Text,
            Some("reasoning") => PartKind::Reasoning,
            _ => PartKind::Other,
        };
        let state = self.parts.entry(id.to_string()).or_default();
        state.kind = Some(kind);
        if kind == PartKind::Other {
            return tool_activity(part, state).into_iter().collect();
        }
        // Older servers put the increment on the update itself.
        if let Some(Value::String(d)) = delta {
            if !d.is_empty() {
                state.sent.push_str(d);
                return vec![emit(kind, d.clone())];
            }
        }
        // The full text so far: forward whatever the deltas have not carried yet.
        let Some(text) = part.get("text").and_then(Value::as_str) else {
            return Vec::new();
        };
        match text.strip_prefix(state.sent.as_str()) {
            Some(rest) if !rest.is_empty() => {
                let rest = rest.to_string();
                state.sent.push_str(&rest);
                vec![emit(kind, rest)]
            }
            _ => Vec::new(),
        }
    }

    fn on_delta(&mut self, p: &Value) -> Vec<Output> {
        let (Some(part), Some(message), Some(delta)) = (
            p.get("partID").and_then(Value::as_str),
            p.get("messageID").and_then(Value::as_str),
            p.get("delta").and_then(Value::as_str),
        ) else {
            return Vec::new();
        };
        if p.get("field")
            .and_then(Value::as_str)
            .is_some_and(|f| f != "text")
            || delta.is_empty()
            || !self.assistants.contains_key(message)
        {
            return Vec::new();
        }
        let Some(state) = self.parts.get_mut(part) else {
            return Vec::new();
        };
        match state.kind {
            Some(kind @ (PartKind::Text | PartKind::Reasoning)) => {
                state.sent.push_str(delta);
                vec![emit(kind, delta.to_string())]
            }
            _ => Vec::new(),
        }
    }

    fn on_status(&mut self, status: &Value) -> Vec<Output> {
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
                self.last_retry = Some(message.clone());
                if attempt > u64::from(self.max_retries) {
                    vec![Output::Failed(ApiError::Upstream(format!(
                        "The model provider failed (gave up after {attempt} attempts): {message}"
                    )))]
                } else {
                    Vec::new()
                }
            }
            Some("idle") => self.on_idle(),
            _ => Vec::new(),
        }
    }

    fn on_idle(&mut self) -> Vec<Output> {
        if !self.started {
            return Vec::new();
        }
        let Some(last) = self
            .last_assistant
            .as_ref()
            .and_then(|id| self.assistants.get(id))
        else {
            return vec![Output::Failed(ApiError::Upstream(
                "OpenCode finished the run without an answer".into(),
            ))];
        };
        // A structured answer arrives as a tool call, but for the client it is the answer.
        let finish_reason = match &self.structured {
            Some((_, true)) => "stop",
            _ => map_finish(last.finish.as_deref()),
        };
        vec![Output::Finished {
            finish_reason,
            usage: self.usage(),
        }]
    }
}

/// OpenCode's own tools (not the client's, whose calls the run reports itself, nor the
/// structured-output tool) as activity, once per state change.
fn tool_activity(part: &Value, seen: &mut Part) -> Option<Output> {
    if part.get("type").and_then(Value::as_str) != Some("tool") {
        return None;
    }
    let tool = part.get("tool").and_then(Value::as_str)?;
    if crate::tools::slots::is_slot_tool(tool) || tool == "StructuredOutput" {
        return None;
    }
    let state = part.get("state")?;
    let status = state.get("status").and_then(Value::as_str)?;
    if status == "pending" || seen.status == status {
        return None;
    }
    seen.status = status.to_string();
    Some(Output::Activity(Activity::Tool(ToolActivity {
        call_id: part
            .get("callID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        tool: tool.to_string(),
        status: status.to_string(),
        input: state.get("input").cloned().unwrap_or(Value::Null),
        output: state
            .get("output")
            .and_then(Value::as_str)
            .map(String::from),
        error: state
            .get("error")
            .and_then(Value::as_str)
            .map(crate::opencode::public_message),
    })))
}

fn emit(kind: PartKind, text: String) -> Output {
    match kind {
        PartKind::Reasoning => Output::Reasoning(text),
        _ => Output::Content(text),
    }
}

fn failure(err: &Value) -> ApiError {
    let name = err.get("name").and_then(Value::as_str).unwrap_or("");
    let message = error_message(err).unwrap_or_else(|| "unknown error".into());
    if name == "MessageAbortedError" {
        ApiError::Upstream(format!("The run was aborted: {message}"))
    } else if name == "StructuredOutputError" {
        ApiError::Upstream(format!(
            "The model did not produce the requested structured output: {message}"
        ))
    } else {
        ApiError::Upstream(format!("The model provider failed: {message}"))
    }
}

/// Maps OpenCode's `finish` to OpenAI's `finish_reason`. A run that ends on `tool-calls` ended
/// on OpenCode's own tools (a rejected question stops it): the client has no call to answer
/// (its own calls end a response elsewhere, when the run suspends), so that is `stop`.
pub fn map_finish(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "length",
        Some("content-filter") | Some("content_filter") => "content_filter",
        _ => "stop",
    }
}

/// OpenCode `tokens {input, output, reasoning, cache{read, write}}` → OpenAI usage.
pub fn usage_from_tokens(t: &Value) -> Usage {
    let n = |ptr: &str| t.pointer(ptr).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("/cache/read");
    let prompt = n("/input") + cached + n("/cache/write");
    let reasoning = n("/reasoning");
    let completion = n("/output") + reasoning;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: cached,
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: reasoning,
        },
        cache_write_tokens: n("/cache/write"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, properties: Value) -> Event {
        Event {
            kind: kind.into(),
            properties,
            ..Event::default()
        }
    }

    fn user(s: &str) -> Event {
        ev(
            "message.updated",
            json!({"info": {"id": "msg_u", "sessionID": s, "role": "user"}}),
        )
    }

    #[test]
    fn late_events_of_an_earlier_run_are_not_taken_for_this_one() {
        let mut a = Adapter::new(1, None);
        // A late update of the previous run's user message, then its assistant: ignored.
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_a0", "role": "user"}}),
        ));
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_u", "role": "user"}}),
        ));
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_a0", "role": "user"}}),
        ));
        let out = a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_b0", "role": "assistant", "parentID": "msg_a0",
            "error": {"name": "MessageAbortedError"}}}),
        ));
        assert!(out.is_empty());
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_v", "role": "assistant", "parentID": "msg_u"}}),
        ));
        a.feed(&ev(
            "message.part.updated",
            json!({"part": {"id": "p", "messageID": "msg_v", "type": "text", "text": "ok"}}),
        ));
        let out = a.feed(&ev("session.idle", json!({"sessionID": "s"})));
        assert!(matches!(&out[..], [Output::Finished { .. }]), "{out:?}");
    }

    #[test]
    fn messages_up_to_the_floor_are_not_this_runs() {
        // A fork's copied pair arrives after the subscription: ids at or below the floor.
        let mut a = Adapter::new(1, Some("msg_b".into()));
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_a", "role": "user"}}),
        ));
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_b", "role": "assistant", "parentID": "msg_a"}}),
        ));
        let out = a.feed(&ev(
            "message.part.updated",
            json!({"part": {"id": "p0", "messageID": "msg_b", "type": "text", "text": "old"}}),
        ));
        assert!(out.is_empty());
        assert_eq!(a.user_message_id(), None);
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_c", "role": "user"}}),
        ));
        a.feed(&ev(
            "message.updated",
            json!({"info": {"id": "msg_d", "role": "assistant", "parentID": "msg_c"}}),
        ));
        let out = a.feed(&ev(
            "message.part.updated",
            json!({"part": {"id": "p1", "messageID": "msg_d", "type": "text", "text": "new"}}),
        ));
        assert_eq!(out, vec![Output::Content("new".into())]);
    }

    #[test]
    fn a_failure_before_any_message_fails_a_fresh_run_only() {
        let mut reused = Adapter::new(1, None);
        let late = ev(
            "session.error",
            json!({"sessionID": "s", "error": {"name": "APIError"}}),
        );
        assert!(reused.feed(&late).is_empty());
        let mut a = Adapter::new(1, None).fresh_session();
        let out = a.feed(&ev(
            "session.error",
            json!({"sessionID": "s",
            "error": {"name": "UnknownError", "data": {"message": "Agent not found: nope"}}}),
        ));
        assert!(
            matches!(&out[..], [Output::Failed(ApiError::Upstream(m))] if m.contains("Agent not found"))
        );
    }

    #[test]
    fn usage_mapping_matches_opencode_semantics() {
        let u = usage_from_tokens(
            &json!({"input": 60, "output": 13, "reasoning": 7, "cache": {"read": 40, "write": 0}}),
        );
        assert_eq!(u.prompt_tokens, 100);
        assert_eq!(u.completion_tokens, 20);
        assert_eq!(u.total_tokens, 120);
        assert_eq!(u.prompt_tokens_details.cached_tokens, 40);
        assert_eq!(u.completion_tokens_details.reasoning_tokens, 7);
    }

    #[test]
    fn finish_mapping() {
        assert_eq!(map_finish(Some("stop")), "stop");
        assert_eq!(map_finish(Some("length")), "length");
        assert_eq!(map_finish(Some("tool-calls")), "stop");
        assert_eq!(map_finish(None), "stop");
    }

    /// `message.part.updated` of part `id` (type `kind`, whole text `text`) of message `msg`.
    fn part(msg: &str, id: &str, kind: &str, text: &str) -> Event {
        ev(
            "message.part.updated",
            json!({"part": {"id": id, "messageID": msg, "sessionID": "ses_1", "type": kind, "text": text}}),
        )
    }

    /// `message.part.delta` adding `delta` to part `id` of message `msg`.
    fn delta(msg: &str, id: &str, delta: &str) -> Event {
        ev(
            "message.part.delta",
            json!({"sessionID": "ses_1", "messageID": msg, "partID": id, "field": "text", "delta": delta}),
        )
    }

    fn status(kind: &str) -> Event {
        ev(
            "session.status",
            json!({"sessionID": "ses_1", "status": {"type": kind}}),
        )
    }

    #[test]
    fn never_echoes_the_user_part_and_routes_by_part_type() {
        let mut a = Adapter::new(2, None);
        let s = "ses_1";
        let mut out = Vec::new();
        for e in [
            ev(
                "message.updated",
                json!({"info": {"id": "msg_u", "sessionID": s, "role": "user"}}),
            ),
            part("msg_u", "prt_u", "text", "hello"),
            delta("msg_u", "prt_u", "hello"),
            status("busy"),
            ev(
                "message.updated",
                json!({"info": {"id": "msg_a", "sessionID": s, "role": "assistant", "parentID": "msg_u"}}),
            ),
            part("msg_a", "prt_r", "reasoning", ""),
            delta("msg_a", "prt_r", "hmm"),
            part("msg_a", "prt_t", "text", ""),
            delta("msg_a", "prt_t", "Hi "),
            delta("msg_a", "prt_t", "there"),
            part("msg_a", "prt_t", "text", "Hi there!"),
            ev(
                "message.updated",
                json!({"info": {"id": "msg_a", "sessionID": s, "role": "assistant", "parentID": "msg_u", "finish": "length",
                "tokens": {"input": 5, "output": 3, "reasoning": 1, "cache": {"read": 0, "write": 0}}}}),
            ),
            status("idle"),
            ev("session.idle", json!({"sessionID": s})),
        ] {
            out.extend(a.feed(&e));
        }
        assert_eq!(
            out,
            vec![
                Output::Reasoning("hmm".into()),
                Output::Content("Hi ".into()),
                Output::Content("there".into()),
                Output::Content("!".into()),
                Output::Finished {
                    finish_reason: "length",
                    usage: usage_from_tokens(&json!({"input": 5, "output": 3, "reasoning": 1})),
                },
            ]
        );
        assert!(a.is_done());
    }

    #[test]
    fn retries_beyond_budget_fail_with_the_provider_message() {
        let mut a = Adapter::new(1, None);
        a.feed(&user("s"));
        let retry = |n: u64| {
            ev(
                "session.status",
                json!({"sessionID": "s", "status": {"type": "retry", "attempt": n, "message": "boom 500"}}),
            )
        };
        assert!(a.feed(&retry(1)).is_empty());
        assert_eq!(a.last_retry_message(), Some("boom 500"));
        match a.feed(&retry(2)).as_slice() {
            [Output::Failed(ApiError::Upstream(m))] => assert!(m.contains("boom 500")),
            other => panic!("{other:?}"),
        }
        assert!(a.feed(&retry(3)).is_empty(), "nothing after the end");
    }

    #[test]
    fn session_error_and_assistant_error_fail() {
        let mut a = Adapter::new(1, None);
        a.feed(&user("s"));
        let out = a.feed(&ev("session.error", json!({"sessionID": "s", "error": {"name": "UnknownError", "data": {"message": "model nope"}}})));
        assert!(
            matches!(&out[..], [Output::Failed(ApiError::Upstream(m))] if m.contains("model nope"))
        );

        let mut a = Adapter::new(1, None);
        a.feed(&user("s"));
        let out = a.feed(&ev("message.updated", json!({"info": {"id": "m", "role": "assistant", "parentID": "msg_u", "error": {"name": "APIError", "data": {"message": "quota"}}}})));
        assert!(matches!(&out[..], [Output::Failed(ApiError::Upstream(m))] if m.contains("quota")));
    }

    #[test]
    fn events_before_the_user_message_are_ignored_and_idle_without_answer_fails() {
        let mut a = Adapter::new(1, None);
        assert!(a
            .feed(&ev("session.idle", json!({"sessionID": "s"})))
            .is_empty());
        assert!(a
            .feed(&ev(
                "session.error",
                json!({"sessionID": "s", "error": {"name": "MessageAbortedError"}})
            ))
            .is_empty());
        a.feed(&user("s"));
        a.feed(&ev(
            "session.status",
            json!({"sessionID": "s", "status": {"type": "busy"}}),
        ));
        assert!(matches!(
            &a.feed(&ev("session.idle", json!({"sessionID": "s"})))[..],
            [Output::Failed(_)]
        ));
    }
}
