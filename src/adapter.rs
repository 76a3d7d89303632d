//! The adapter: one run's [`RunEvent`]s (the gateway's own, decoded from OpenCode's events by
//! the protocol layer) turned into the run's [`Output`]s.
//!
//! It sums each step's tokens into the run's usage, maps how the last step finished to OpenAI's
//! `finish_reason`, fails the run on retries beyond the budget and on OpenCode's failures,
//! shows OpenCode's own tools at work (not the gateway's MCP tools: those are the client's
//! calls, which the run reports itself), and checks a structured answer against the client's
//! schema before it becomes the content. No I/O happens here, so it is unit-tested on event
//! sequences.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;
use crate::openai::schema::{Checked, Rejected, VALIDATION_BUDGET};
use crate::openai::{CompletionTokensDetails, PromptTokensDetails, Usage};
use crate::opencode::events::{FailureKind, Finish, RunEvent, RunFailure, Tokens, ToolStatus};

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

#[derive(Debug, Default, Clone)]
struct StepState {
    finish: Option<Finish>,
    usage: Usage,
}

/// Per-run translation state.
pub struct Adapter {
    max_retries: u32,
    steps: HashMap<String, StepState>,
    last_step: Option<String>,
    /// Each of OpenCode's tool calls' last state shown.
    tools: HashMap<String, ToolStatus>,
    done: bool,
    last_retry: Option<String>,
    /// The client's schema for a structured answer, and whether it was sent.
    structured: Option<(Checked, bool)>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("last_step", &self.last_step)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Adapter {
    /// An adapter that tolerates `max_retries` model retries before failing.
    pub fn new(max_retries: u32) -> Adapter {
        Adapter {
            max_retries,
            steps: HashMap::new(),
            last_step: None,
            tools: HashMap::new(),
            done: false,
            last_retry: None,
            structured: None,
        }
    }

    /// Expects a structured answer following `schema` (checked before it is passed on).
    pub fn structured(mut self, schema: Checked) -> Adapter {
        self.structured = Some((schema, false));
        self
    }

    /// Tokens of every step of the run so far.
    pub fn usage(&self) -> Usage {
        self.steps
            .values()
            .fold(Usage::default(), |a, b| a + b.usage)
    }

    /// The provider's message from the latest retry, if OpenCode is retrying.
    pub fn last_retry_message(&self) -> Option<&str> {
        self.last_retry.as_deref()
    }

    /// Whether a terminal output ([`Output::Finished`] or [`Output::Failed`]) was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one event of the run; returns what to tell the client.
    pub fn feed(&mut self, event: &RunEvent) -> Vec<Output> {
        if self.done {
            return Vec::new();
        }
        let out = self.translate(event);
        if out.iter().any(Output::is_terminal) {
            self.done = true;
        }
        out
    }

    fn translate(&mut self, event: &RunEvent) -> Vec<Output> {
        match event {
            // With a structured answer requested, the answer is that value alone: text the
            // model writes beside it is not the answer.
            RunEvent::Text { .. } if self.structured.is_some() => Vec::new(),
            RunEvent::Text { text, .. } => vec![Output::Content(text.clone())],
            RunEvent::Reasoning { text, .. } => vec![Output::Reasoning(text.clone())],
            RunEvent::Step(step) => {
                let entry = self.steps.entry(step.message.clone()).or_default();
                self.last_step = Some(step.message.clone());
                if let Some(finish) = step.finish {
                    entry.finish = Some(finish);
                }
                if let Some(tokens) = &step.tokens {
                    entry.usage = usage_from_tokens(tokens);
                }
                Vec::new()
            }
            RunEvent::Tool(update) => self.on_tool(update),
            RunEvent::Structured(value) => self.on_structured(value),
            RunEvent::Retrying { attempt, message } => {
                self.last_retry = Some(message.clone());
                if *attempt > u64::from(self.max_retries) {
                    vec![Output::Failed(ApiError::Upstream(format!(
                        "The model provider failed (gave up after {attempt} attempts): {message}"
                    )))]
                } else {
                    Vec::new()
                }
            }
            RunEvent::Idle => self.on_idle(),
            RunEvent::Failed(failure) => vec![Output::Failed(failed(failure))],
            RunEvent::Progress { .. } | RunEvent::Asked(_) | RunEvent::Answered { .. } => {
                Vec::new()
            }
        }
    }

    /// The structured answer, once: checked against the client's schema, then the content.
    fn on_structured(&mut self, value: &Value) -> Vec<Output> {
        let Some((schema, sent)) = self.structured.as_mut() else {
            return Vec::new();
        };
        if *sent {
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

    /// OpenCode's own tools (not the client's, whose calls the run reports itself) as
    /// activity, once per state change.
    fn on_tool(&mut self, update: &crate::opencode::events::ToolUpdate) -> Vec<Output> {
        if crate::client_tools::slots::is_slot_tool(&update.tool)
            || update.status == ToolStatus::Pending
        {
            return Vec::new();
        }
        if self.tools.get(&update.call_id) == Some(&update.status) {
            return Vec::new();
        }
        self.tools.insert(update.call_id.clone(), update.status);
        vec![Output::Activity(Activity::Tool(ToolActivity {
            call_id: update.call_id.clone(),
            tool: update.tool.clone(),
            status: update.status.label().to_string(),
            input: update.input.clone(),
            output: update.output.clone(),
            error: update.error.clone(),
        }))]
    }

    fn on_idle(&mut self) -> Vec<Output> {
        let Some(last) = self.last_step.as_ref().and_then(|id| self.steps.get(id)) else {
            return vec![Output::Failed(ApiError::Upstream(
                "OpenCode finished the run without an answer".into(),
            ))];
        };
        // A structured answer arrives as a tool call, but for the client it is the answer.
        let finish_reason = match &self.structured {
            Some((_, true)) => "stop",
            Some((_, false)) if last.finish != Some(Finish::Length) => {
                return vec![Output::Failed(ApiError::Upstream(
                    "The model did not produce the requested structured output: it gave no answer that follows the requested schema.".into(),
                ))]
            }
            _ => map_finish(last.finish),
        };
        vec![Output::Finished {
            finish_reason,
            usage: self.usage(),
        }]
    }
}

/// A failure as the client is told it.
fn failed(failure: &RunFailure) -> ApiError {
    let message = &failure.message;
    ApiError::Upstream(match failure.kind {
        FailureKind::Interrupted => format!("The run was aborted: {message}"),
        FailureKind::StructuredOutput => {
            format!("The model did not produce the requested structured output: {message}")
        }
        FailureKind::Provider => format!("The model provider failed: {message}"),
    })
}

/// Maps how the last step finished to OpenAI's `finish_reason`. A run that ends on tool calls
/// ended on OpenCode's own tools (a rejected question stops it): the client has no call to
/// answer (its own calls end a response elsewhere, when the run suspends), so that is `stop`.
pub fn map_finish(finish: Option<Finish>) -> &'static str {
    match finish {
        Some(Finish::Length) => "length",
        Some(Finish::ContentFilter) => "content_filter",
        _ => "stop",
    }
}

/// OpenCode's tokens → OpenAI usage: the prompt counts cache reads and writes, the completion
/// counts reasoning.
pub fn usage_from_tokens(t: &Tokens) -> Usage {
    let prompt = t.input + t.cache_read + t.cache_write;
    let completion = t.output + t.reasoning;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: t.cache_read,
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: t.reasoning,
        },
        cache_write_tokens: t.cache_write,
    }
}

#[cfg(test)]
mod tests;
