//! A run's side of client tools: its slot, the calls it holds, and answering them with the
//! client's results.

use tokio::time::Instant;

use crate::adapter::ToolCallOutput;
use crate::client_tools::step::StepTracker;
use crate::client_tools::{CallResult, HeldCall, SlotLease};
use crate::error::ApiError;
use crate::openai::{canonical_json, Message, ToolCall};
use crate::opencode::events::RunEvent;

/// The client tools of one run.
pub struct ToolRun {
    /// The slot serving the run's tools.
    pub lease: SlotLease,
    tracker: StepTracker<HeldCall>,
    /// Calls sent to the client, by the id it was given, waiting for results.
    outstanding: Vec<(String, HeldCall)>,
    /// Several calls per response allowed.
    parallel: bool,
}

impl ToolRun {
    /// The tools of a run on `lease`.
    pub fn new(lease: SlotLease, parallel: bool) -> ToolRun {
        ToolRun {
            tracker: StepTracker::new(&lease.name),
            lease,
            outstanding: Vec::new(),
            parallel,
        }
    }

    /// Feeds one event of the run to the step tracker.
    pub fn on_event(&mut self, event: &RunEvent) {
        self.tracker.on_event(event, Instant::now());
    }

    /// A call arrived on the run's slot.
    pub fn on_call(&mut self, call: HeldCall) {
        let name = call.mcp_name.clone();
        let arguments = call.arguments.clone();
        self.tracker.on_call(&name, arguments, call, Instant::now());
    }

    /// When the held calls could next form a complete step.
    pub fn ready_at(&self) -> Option<Instant> {
        self.tracker.ready_at()
    }

    /// The calls of a complete step, for the client (one at a time without
    /// `parallel_tool_calls`); `None` while the step is still going.
    pub fn round(&mut self) -> Option<(Vec<ToolCallOutput>, Vec<ToolCall>)> {
        if !self.tracker.is_complete(Instant::now()) {
            return None;
        }
        let max = if self.parallel { usize::MAX } else { 1 };
        let mut outputs = Vec::new();
        let mut calls = Vec::new();
        for (index, held) in self.tracker.take(max).into_iter().enumerate() {
            let id = format!("call_{}", uuid::Uuid::new_v4().simple());
            let name = self
                .lease
                .client_name(&held.mcp_name)
                .unwrap_or(&held.mcp_name)
                .to_string();
            let arguments = canonical_json(&held.arguments.to_string());
            outputs.push(ToolCallOutput {
                index,
                id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            });
            calls.push(ToolCall {
                id: id.clone(),
                name,
                arguments,
            });
            self.outstanding.push((id, held));
        }
        Some((outputs, calls))
    }

    /// Answers every outstanding call with the client's result; nothing is answered unless
    /// each outstanding call has exactly one result.
    pub fn answer(&mut self, results: &[Message]) -> Result<(), ApiError> {
        for r in results {
            let id = r.tool_call_id.as_deref().unwrap_or_default();
            if !self.outstanding.iter().any(|(o, _)| o == id) {
                return Err(ApiError::invalid(
                    format!("The tool result for {id:?} answers no call this conversation is waiting for."),
                    Some("messages".into()),
                ));
            }
        }
        if let Some((missing, _)) = self
            .outstanding
            .iter()
            .find(|(o, _)| !results.iter().any(|r| r.tool_call_id.as_deref() == Some(o)))
        {
            return Err(ApiError::invalid(
                format!("A `tool` message with the result of call {missing:?} is missing."),
                Some("messages".into()),
            ));
        }
        for (id, held) in self.outstanding.drain(..) {
            let text = results
                .iter()
                .find(|r| r.tool_call_id.as_deref() == Some(id.as_str()))
                .map(Message::text)
                .unwrap_or_default();
            held.answer(CallResult {
                text,
                is_error: false,
            });
        }
        Ok(())
    }
}
