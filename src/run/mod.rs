//! One completion run, start to end: check the model, lease a session, subscribe to its events,
//! send the prompt, and pull [`Output`]s out of the [`Adapter`] until the run ends, fails, or
//! hits its deadline.
//!
//! The run knows nothing of the wire format it is answered in: every format is an
//! [`Encoder`] of its outputs (chat JSON and SSE, Responses JSON and SSE), fed by
//! [`Run::drain`] (a whole answer) or one output at a time (a stream). Dropping a [`Run`]
//! before it ends (client disconnect) aborts the OpenCode run at once.
//!
//! A run is a state machine ([`Phase`]): starting ([`start`]) → streaming → waiting for tool
//! results → finished, failed or cancelled. With client tools one OpenCode run spans several
//! responses: a response ends with `tool_calls` while OpenCode waits on the held calls; the
//! handler [parks](Run::park) the run, and the request carrying the results resumes it. Every
//! end goes through one path ([`Run::end`]): the session handed back or aborted, once.

mod answer_tool;
mod asks;
mod gateway;
mod output;
mod phase;
pub mod placement;
mod prompt;
mod request;
mod start;
mod tool_round;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

pub use gateway::Gateway;
pub use output::Encoder;
pub use phase::{Move, Phase};
pub use request::{Conversation, RunRequest};
pub use start::{resume, start, start_or_resume};

use std::sync::Arc;

use crate::adapter::{Adapter, Output};
use crate::client_tools::ParkKey;
use crate::error::ApiError;
use crate::openai::{Message, Role, ToolCall, Usage};
use crate::opencode::events::RunEvent;
use crate::opencode::hub::{HubMessage, Subscription};
use crate::opencode::{Event, RunDecoder};
use crate::sessions::{Lease, Outcome};
use crate::upstreams::Backend;
use tool_round::ToolRun;

/// How long a request waits for the upstream event connection before answering 503.
pub(crate) const EVENT_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a failing run's abort may take before the error is answered anyway.
const ABORT_WAIT: Duration = Duration::from_secs(2);

/// A running completion.
pub struct Run {
    gateway: Gateway,
    /// The upstream the run's session lives on: every call of the run goes there.
    backend: Arc<Backend>,
    lease: Option<Lease>,
    subscription: Subscription,
    /// Decodes the session's events into this run's (the protocol's side).
    decoder: RunDecoder,
    adapter: Adapter,
    deadline: Instant,
    queue: VecDeque<Output>,
    /// This response's answer text (fingerprints need it).
    content: String,
    /// The calls this response handed to the client.
    calls: Vec<ToolCall>,
    /// Usage reported by earlier responses of the same run.
    reported: Usage,
    conversation: Conversation,
    /// Where the run parks for tool results (`None`: by its conversation's fingerprint).
    park: Option<ParkKey>,
    tools: Option<ToolRun>,
    /// Where the run is in its life.
    phase: Phase,
    /// When the run started, and whether its first output came (time to first token).
    started: std::time::Instant,
    first_output_seen: bool,
    /// The run's share of its key's concurrent runs, held until it ends.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Its place among its upstream's runs in flight (admission control); given back while
    /// it is parked waiting for tool results, and not taken again when resumed.
    admitted: Option<crate::upstreams::admission::Admitted>,
    /// Held while the run lives, so shutdown can wait for it.
    _live: TaskTrackerToken,
    /// The run's place in its upstream's load (new conversations go where it is lowest).
    _in_flight: crate::upstreams::InFlight,
    /// What the caller granted this run, for its rest, by answering `always`.
    grants: crate::permissions::Grants,
    /// The tool the structured answer comes through, when OpenCode has no structured output.
    answer_tool: Option<answer_tool::AnswerTool>,
    /// The answer came: the response ends when its step does.
    answer_pending: bool,
    /// The response ended while OpenCode's execution goes on (it must be interrupted).
    upstream_goes_on: bool,
}

/// Where a run takes its session from.
pub enum Target {
    /// The conversation pool: the session that holds this history, or a new one.
    Conversation,
    /// The client's explicit session (`x-session-id`).
    Explicit(String),
    /// A session the caller already holds (a Responses chain); a run that suspends for tool
    /// results is parked under `park`.
    Leased {
        /// The session.
        lease: Box<Lease>,
        /// Where the run waits for tool results.
        park: ParkKey,
        /// The upstream the session lives on.
        backend: Arc<Backend>,
    },
}

impl Run {
    /// When the current response must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The upstream the run's session lives on.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The OpenCode session this run uses.
    pub fn session_id(&self) -> &str {
        self.subscription.session_id()
    }

    /// The next step; `None` after the response's last output.
    pub async fn next(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.queue.pop_front() {
                return Some(output);
            }
            if self.phase != Phase::Streaming {
                return None;
            }
            for output in self.receive().await {
                if self.accept(output).await {
                    break;
                }
            }
        }
    }

    /// Waits for the session's next event, a tool call, the end of a tool step, the deadline
    /// or shutdown, and translates what came.
    async fn receive(&mut self) -> Vec<Output> {
        let ready_at = self.tools.as_ref().and_then(ToolRun::ready_at);
        let calls = self.tools.as_mut().map(|t| &mut t.lease.calls);
        let message = tokio::select! {
            m = tokio::time::timeout_at(self.deadline, self.subscription.recv()) => m,
            Some(call) = async { match calls { Some(c) => c.recv().await, None => None } } => {
                return self.on_slot_call(call);
            }
            _ = async { match ready_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                return self.tool_round();
            }
            _ = self.gateway.hard_stop.cancelled() => {
                return vec![Output::Failed(ApiError::Unavailable(
                    "The gateway is shutting down.".into(),
                ))];
            }
        };
        match message {
            Ok(Some(HubMessage::Event(event))) => self.on_event(&event),
            Ok(Some(HubMessage::Lost(reason))) => vec![Output::Failed(ApiError::Upstream(
                format!("Lost OpenCode's event stream during the run: {reason}"),
            ))],
            Ok(None) => vec![Output::Failed(ApiError::Unavailable(
                "The run's events stopped: the client read too slowly or the gateway is stopping."
                    .into(),
            ))],
            Err(_) => vec![Output::Failed(self.deadline_error())],
        }
    }

    /// A call on the run's slot: the structured answer (taken at once, see
    /// [`answer_tool`]), or a client tool's call (held for the client).
    fn on_slot_call(&mut self, call: crate::client_tools::HeldCall) -> Vec<Output> {
        let Some(answer) = self
            .answer_tool
            .as_ref()
            .filter(|_| call.mcp_name == answer_tool::ANSWER_TOOL)
        else {
            if let Some(tools) = &mut self.tools {
                tools.on_call(call);
            }
            return Vec::new();
        };
        let value = answer.answer(call.arguments.clone());
        self.answer_pending = true;
        // Interrupted before the call is answered: once OpenCode has the tool's result it
        // hands it to the model for another step (a model call the client would pay for and
        // never see).
        let (sessions, id) = (
            self.backend.sessions.upstream().clone(),
            self.session_id().to_string(),
        );
        self.backend.sessions.upstream().spawn_cleanup(async move {
            if let Err(e) = sessions.abort(&id).await {
                tracing::debug!(session = %id, error = %e, "could not interrupt after the structured answer");
            }
            call.answer(crate::client_tools::CallResult {
                text: "Answer recorded.".into(),
                is_error: false,
            });
        });
        self.adapter.feed(&RunEvent::Structured(value))
    }

    /// Decodes one event of the session and acts on what it says: a request for the caller
    /// goes to the permission policy, everything else to the tool-step tracker and the
    /// adapter.
    fn on_event(&mut self, event: &Event) -> Vec<Output> {
        let mut out = Vec::new();
        for decoded in self.decoder.feed(event) {
            match &decoded {
                RunEvent::Asked(ask) => out.extend(self.answer_permission(ask)),
                RunEvent::Answered { id } => self.backend.permissions.forget(id),
                _ => {}
            }
            let answer_call = matches!(&decoded, RunEvent::Tool(u)
                if self.answer_tool.is_some() && answer_tool::AnswerTool::is_answer_tool(&u.tool));
            if let (Some(tools), false) = (&mut self.tools, answer_call) {
                tools.on_event(&decoded);
            }
            // After the answer, the run's end (OpenCode interrupted, or done) is the
            // response's.
            if self.answer_pending && matches!(&decoded, RunEvent::Failed(_) | RunEvent::Idle) {
                out.extend(self.adapter.feed(&RunEvent::Idle));
                continue;
            }
            out.extend(self.adapter.feed(&decoded));
        }
        if let Some(lease) = &mut self.lease {
            let user = self.decoder.user_message_id();
            lease.observe(user, self.decoder.last_assistant_id().or(user));
        }
        out
    }

    /// The tool calls of a complete step end this response: the run suspends.
    fn tool_round(&mut self) -> Vec<Output> {
        let Some((outputs, calls)) = self.tools.as_mut().and_then(ToolRun::round) else {
            return Vec::new();
        };
        self.calls = calls;
        self.phase.advance(Move::ToolCallsOut);
        let usage = self.adapter.usage();
        let mut out: Vec<Output> = outputs.into_iter().map(Output::ToolCall).collect();
        out.push(Output::Finished {
            finish_reason: "tool_calls",
            usage: usage.minus(self.reported),
        });
        self.reported = usage;
        for output in &out {
            self.measure(output);
        }
        self.queue.extend(out);
        Vec::new()
    }

    fn deadline_error(&self) -> ApiError {
        let secs = self.gateway.config.prompt.deadline.as_secs();
        match self.adapter.last_retry_message() {
            Some(m) => ApiError::Upstream(format!(
                "The model provider kept failing until the {secs}s deadline: {m}"
            )),
            None => ApiError::UpstreamTimeout(format!(
                "The model did not finish within the {secs}s deadline."
            )),
        }
    }

    /// Records what the metrics want of an output: the time to the first one, and how each
    /// response ended with its tokens.
    fn measure(&mut self, output: &Output) {
        if !self.first_output_seen && !output.is_terminal() {
            self.first_output_seen = true;
            crate::metrics::first_token(&self.conversation.model, self.started.elapsed());
        }
        let model = &self.conversation.model;
        match output {
            Output::Finished {
                finish_reason,
                usage,
            } => {
                let outcome = if *finish_reason == "tool_calls" {
                    "tool_calls"
                } else {
                    "completed"
                };
                crate::metrics::run_ended(
                    model,
                    outcome,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                );
                let rate_limits = &self.gateway.rate_limits;
                rate_limits.spend_tokens(&self.conversation.client, usage.total_tokens);
            }
            Output::Failed(_) => crate::metrics::run_ended(model, "failed", 0, 0),
            _ => {}
        }
    }

    /// Queues one output, ending the run on a terminal one; returns whether it was terminal.
    async fn accept(&mut self, output: Output) -> bool {
        let output = match output {
            Output::Finished {
                finish_reason,
                usage,
            } => {
                self.end(Move::Answered).await;
                Output::Finished {
                    finish_reason,
                    usage: usage.minus(self.reported),
                }
            }
            Output::Failed(e) => {
                self.end(Move::Failed).await;
                Output::Failed(e)
            }
            other => other,
        };
        if let Output::Content(t) = &output {
            self.content.push_str(t);
        }
        let terminal = output.is_terminal();
        self.measure(&output);
        self.queue.push_back(output);
        terminal
    }

    /// The one way a run ends while it is driven (`Answered` or `Failed`; an abandoned run
    /// ends in [`Drop`]): a failed run is aborted upstream (waiting at most [`ABORT_WAIT`]),
    /// then the session is handed back — an answered one remembered under the conversation
    /// it now holds — and the client tools' slot freed.
    async fn end(&mut self, how: Move) {
        self.phase.advance(how);
        let outcome = match how {
            Move::Answered => {
                if self.upstream_goes_on || self.decoder.upstream_goes_on() {
                    self.interrupt_upstream().await;
                }
                let reply = Message::text_only(Role::Assistant, self.content.clone());
                Outcome::Answered {
                    fingerprint: self.conversation.fingerprint_after(reply),
                }
            }
            _ => {
                self.interrupt_upstream().await;
                Outcome::Failed
            }
        };
        if let Some(lease) = self.lease.take() {
            lease.release(outcome).await;
        }
        self.tools = None;
    }

    /// Stops OpenCode's work on the run's session (waiting [`ABORT_WAIT`] at most).
    async fn interrupt_upstream(&self) {
        let id = self.session_id().to_string();
        let abort = self.backend.sessions.upstream().abort(&id);
        if tokio::time::timeout(ABORT_WAIT, abort).await.is_err() {
            tracing::warn!(session = %id, "abort did not finish in time");
        }
    }

    /// Where the run is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the response ended with tool calls and the run waits for their results.
    pub fn is_suspended(&self) -> bool {
        self.phase == Phase::AwaitingToolResults
    }

    /// Keeps a suspended run for the request that brings the results (for at most the
    /// configured result timeout); any other run is simply dropped.
    pub fn park(mut self) {
        if !self.is_suspended() {
            return;
        }
        self.admitted = None;
        let parked = self.gateway.parked.clone();
        let timeout = self.gateway.config.client_tools.result_timeout;
        let key = match &self.park {
            Some(key) => key.clone(),
            None => self.conversation.park_key(&self.content, &self.calls),
        };
        parked.park(key, self, timeout);
    }

    /// Parks the run under `key` from now on, should it suspend again (a resumed Responses run
    /// answers under a new response id, which the next round's outputs name).
    pub fn park_under(&mut self, key: ParkKey) {
        self.park = Some(key);
    }

    /// The id of the user message this run answers, once known.
    pub fn user_message_id(&self) -> Option<&str> {
        self.decoder.user_message_id()
    }

    /// Continues a parked run with the new request's tool results.
    fn resume(&mut self, conversation: Conversation, deadline: Instant) -> Result<(), ApiError> {
        if conversation.client != self.conversation.client {
            return Err(match &self.park {
                Some(ParkKey::Session(id)) => ApiError::session_not_found(id),
                _ => ApiError::invalid(
                    "These tool results answer a conversation of another API key.",
                    Some("messages".into()),
                ),
            });
        }
        let tools = self
            .tools
            .as_mut()
            .ok_or_else(|| ApiError::Internal("a parked run without tools".into()))?;
        tools.answer(&conversation.new)?;
        self.conversation = conversation;
        self.deadline = deadline;
        self.content.clear();
        self.calls.clear();
        self.phase.advance(Move::ResultsIn);
        tracing::debug!(session = %self.session_id(), "tool results answered; the run goes on");
        Ok(())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.phase.is_final() {
            return;
        }
        self.phase.advance(Move::Abandoned);
        // The client went away mid-run (or never brought its tool results): stop the generation
        // now; the lease's drop discards the session. Held tool calls are answered (with an
        // error) only after the abort, so the model never acts on them.
        let upstream = self.backend.sessions.upstream().clone();
        let id = self.session_id().to_string();
        let lease = self.lease.take();
        let tools = self.tools.take();
        tracing::info!(session = %id, "run abandoned; aborting it upstream");
        self.backend.sessions.upstream().spawn_cleanup(async move {
            if let Err(e) = upstream.abort(&id).await {
                tracing::warn!(session = %id, error = %e, "abort after disconnect failed");
            }
            drop(tools);
            drop(lease);
        });
    }
}
