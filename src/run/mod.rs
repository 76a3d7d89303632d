//! One completion run, start to end: check the model, lease a session, subscribe to its events,
//! send the prompt, and pull [`Output`]s out of the [`Adapter`] until the run ends, fails, or
//! hits its deadline.
//!
//! The run knows nothing of the wire format it is answered in: the non-streaming handler
//! [collects](Run::collect) it, the streaming one turns each output into an SSE event
//! ([`crate::stream`]), so both agree byte for byte. Dropping a [`Run`] before it ends (client
//! disconnect) aborts the OpenCode run at once.
//!
//! With client tools, one OpenCode run can span several responses: a response ends with
//! `tool_calls` while the run *suspends* (OpenCode waits on the held calls); the handler then
//! [parks](Run::park) it, and the request carrying the results [resumes](start) it.

mod gateway;
pub mod placement;
mod prompt;
mod request;
mod tools;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

pub use gateway::{Gateway, ParkedRuns};
pub use request::{Conversation, RunRequest};

use crate::adapter::{Activity, Adapter, Output};
use crate::auth::Caller;
use crate::catalog::ModelInfo;
use crate::error::ApiError;
use crate::openai::tools::compile_schema;
use crate::openai::{Message, Role, ToolCall, Usage};
use crate::opencode::events::{Ask, AskKind, RunEvent};
use crate::opencode::hub::{HubMessage, Subscription};
use crate::opencode::{Event, RunDecoder, UpstreamError};
use crate::permissions::Decision;
use crate::sessions::{not_found_as_session, Lease, Outcome, Seed};
use crate::tools::{ParkKey, SlotLease};
use crate::upstreams::Backend;
use std::sync::Arc;
use tools::ToolRun;

/// How long a request waits for the upstream event connection before answering 503.
const EVENT_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a failing run's abort may take before the error is answered anyway.
const ABORT_WAIT: Duration = Duration::from_secs(2);

/// A whole answer (the non-streaming result).
#[derive(Debug, Clone)]
pub struct Completion {
    /// Answer text.
    pub content: String,
    /// Reasoning text, if any.
    pub reasoning: Option<String>,
    /// Calls of the client's tools (the answer then finishes with `tool_calls`).
    pub tool_calls: Vec<crate::adapter::ToolCallOutput>,
    /// OpenAI finish reason.
    pub finish_reason: &'static str,
    /// Token accounting.
    pub usage: Usage,
}

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
    /// The upstream run is over (answered or failed).
    ended: bool,
    /// The response ended with tool calls; the upstream run waits for their results.
    suspended: bool,
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

/// Resumes the run parked under `key` with `conversation`'s tool results; `None` when no run
/// waits there. A request whose results do not fit gets its 400 and leaves the run parked.
pub fn resume(
    gateway: &Gateway,
    key: &ParkKey,
    conversation: Conversation,
) -> Option<Result<Run, ApiError>> {
    let mut run = gateway.parked.take(key)?;
    let deadline = Instant::now() + gateway.config.prompt.deadline;
    Some(match run.resume(conversation, deadline) {
        Ok(()) => Ok(run),
        Err(e) => {
            run.park();
            Err(e)
        }
    })
}

/// Starts a run for `req` on `target` — or, when `req` carries the tool results a parked run
/// of the same conversation waits for, resumes that run.
pub async fn start_or_resume(
    state: &Gateway,
    caller: &Caller,
    target: Target,
    req: &RunRequest,
) -> Result<Run, ApiError> {
    let placement = placement::resolve(&state.config, caller, &req.requested)?;
    let conversation = Conversation::of(&caller.id, req, &placement);
    if conversation.answers_tools() {
        let key = match &target {
            Target::Conversation => Some(ParkKey::Conversation(conversation.prior_fingerprint())),
            Target::Explicit(id) => Some(ParkKey::Session(id.clone())),
            Target::Leased { .. } => None,
        };
        if let Some(key) = key {
            if let Some(resumed) = resume(state, &key, conversation.clone()) {
                return resumed;
            }
        }
        // Not waiting here (another process, or it was abandoned): the results are written
        // into the prompt instead (see `prompt::parts`).
    }
    // Where the session is: the conversation's upstream, or the named session's.
    let routed = match &target {
        Target::Conversation => {
            state
                .backend_of_conversation(&conversation.prior_fingerprint())
                .await
        }
        Target::Explicit(id) => state.backend_of_session(id).await?,
        Target::Leased { backend, .. } => backend.clone(),
    };
    if !matches!(target, Target::Conversation) || state.upstreams.is_single() {
        return start(state, &routed, caller, conversation, target, req).await;
    }
    // A conversation can move: when its upstream fails it before anything ran (unreachable,
    // its event stream gone, a 5xx creating the session or refusing the prompt — not a timeout,
    // after which the prompt may be running), the turn goes once more to another one.
    let first = start(
        state,
        &routed,
        caller,
        conversation.clone(),
        Target::Conversation,
        req,
    )
    .await;
    let failed = match first {
        Err(e @ (ApiError::Unavailable(_) | ApiError::Upstream(_))) => e,
        result => return result,
    };
    let Some(other) = state.upstreams.pick_other(routed.index) else {
        return Err(failed);
    };
    tracing::warn!(upstream = %routed.name, error = %failed, "upstream failed the turn before it ran; trying another");
    start(
        state,
        &state.backend(other),
        caller,
        conversation,
        Target::Conversation,
        req,
    )
    .await
}

/// Starts a run. The configured deadline covers everything from here to the end of the
/// response.
pub async fn start(
    state: &Gateway,
    backend: &Arc<Backend>,
    caller: &Caller,
    conversation: Conversation,
    target: Target,
    req: &RunRequest,
) -> Result<Run, ApiError> {
    let deadline = Instant::now() + state.config.prompt.deadline;
    let begun = begin(state, backend, caller, conversation, target, req, deadline);
    tokio::time::timeout_at(deadline, begun)
        .await
        .map_err(|_| {
            ApiError::UpstreamTimeout(format!(
                "OpenCode did not accept the prompt within the {}s deadline.",
                state.config.prompt.deadline.as_secs()
            ))
        })?
}

async fn begin(
    state: &Gateway,
    backend: &Arc<Backend>,
    caller: &Caller,
    mut conversation: Conversation,
    target: Target,
    req: &RunRequest,
    deadline: Instant,
) -> Result<Run, ApiError> {
    let model = backend.catalog.get(&req.model).await?;
    // An explicit session lives in one project directory: its runs go there (OpenCode serves
    // a session only from its own directory's instance).
    let explicit_session = match &target {
        Target::Explicit(id) => {
            let session = backend.sessions.explicit.owned(caller, id).await?;
            let asked = req.requested.directory.is_some();
            in_session_directory(&mut conversation, &session, asked)?;
            Some(session)
        }
        _ => None,
    };
    prompt::check_model(req, &model)?;
    let structured = match req.response_format.schema() {
        Some(schema) => Some(compile_schema(&schema, "response_format")?),
        None => None,
    };
    let permit = state.rate_limits.start_run(&conversation.client)?;
    let admitted = backend.admission.admit().await.map_err(|refusal| {
        metrics::counter!("portatek_admission_refused_total",
            "upstream" => backend.name.clone(), "reason" => refusal.label())
        .increment(1);
        ApiError::Overloaded {
            message: format!(
                "OpenCode ({}) is at its limit of runs in flight; try again shortly.",
                backend.name
            ),
            retry_after: backend.admission.retry_after(),
        }
    })?;
    let directory = conversation.placement.directory.clone();
    let tools = match req.offers_tools() {
        true => Some(ToolRun::new(
            backend
                .tools
                .slots
                .acquire(&req.tools, directory.as_deref())
                .await?,
            req.parallel_tool_calls,
        )),
        false => None,
    };
    let pooled = matches!(target, Target::Conversation);
    let (mut lease, park, explicit) = match target {
        Target::Conversation => (lease(backend, &conversation, None).await?, None, None),
        Target::Explicit(id) => {
            let lease = lease(backend, &conversation, explicit_session.as_ref()).await?;
            (lease, Some(ParkKey::Session(id.clone())), Some(id))
        }
        Target::Leased { lease, park, .. } => (*lease, Some(park), None),
    };
    let slot = tools.as_ref().map(|t| &t.lease);
    let mut attempts = 0;
    let subscription = loop {
        attempts += 1;
        backend
            .sessions
            .owners
            .record(&lease.session_id, &caller.id);
        let subscription = backend
            .hub
            .subscribe(&lease.session_id, EVENT_CONNECT_WAIT)
            .await
            .ok_or_else(ApiError::event_stream_down)?;
        let sending = std::time::Instant::now();
        let sent = send(backend, caller, &lease, &model, &conversation, req, slot).await;
        // How long OpenCode took to accept the prompt is admission control's load signal.
        backend.admission.sample(sending.elapsed());
        match sent {
            Ok(()) => break subscription,
            // A remembered session that vanished upstream (deleted behind the gateway's back,
            // OpenCode restarted with fresh storage): the pool does not look it up before each
            // turn, so its prompt's 404 says so. Drop it (the lease's drop discards it) and run
            // the turn in a new session seeded with the history.
            Err(UpstreamError::NotFound(message))
                if pooled && lease.seed == Seed::LastOnly && attempts < 3 =>
            {
                tracing::info!(session = %lease.session_id, %message, "remembered session unusable; starting a new one");
                drop(subscription);
                // Discard it before asking again: while it is held, its history counts as
                // busy and the new request would wait to fork it.
                drop(lease);
                lease = self::lease(backend, &conversation, None).await?;
            }
            // An explicit session deleted upstream behind the gateway's back is the client's 404.
            Err(e) => {
                return Err(match explicit.as_deref() {
                    Some(id) => not_found_as_session(id)(e),
                    None => e.into(),
                })
            }
        }
    };
    let decoder = backend
        .client
        .run_decoder(lease.floor.clone(), lease.seed == Seed::Full);
    let mut adapter = Adapter::new(state.config.prompt.max_model_retries);
    if let Some(schema) = structured {
        adapter = adapter.structured(schema);
    }
    Ok(Run {
        gateway: state.clone(),
        backend: backend.clone(),
        lease: Some(lease),
        subscription,
        decoder,
        adapter,
        deadline,
        queue: VecDeque::new(),
        content: String::new(),
        calls: Vec::new(),
        reported: Usage::default(),
        conversation,
        park,
        tools,
        ended: false,
        suspended: false,
        started: std::time::Instant::now(),
        first_output_seen: false,
        _permit: permit,
        admitted,
        _live: state.live_runs.token(),
        _in_flight: state.upstreams.run_started(backend.index),
        grants: crate::permissions::Grants::default(),
    })
}

/// Claims the session the run will use (the explicit one named, or the conversation's).
/// Runs on `session` in its directory: a request naming another directory is refused.
fn in_session_directory(
    conversation: &mut Conversation,
    session: &crate::opencode::Session,
    asked: bool,
) -> Result<(), ApiError> {
    let Some(dir) = &session.directory else {
        return Ok(());
    };
    match &conversation.placement.directory {
        Some(named) if asked && named.trim_end_matches('/') != dir.trim_end_matches('/') => {
            Err(ApiError::invalid(
                format!(
                    "Session {} lives in {dir:?}; `{}` names {named:?}.",
                    session.id,
                    placement::DIRECTORY_HEADER
                ),
                None,
            ))
        }
        _ => {
            conversation.placement.directory = Some(dir.clone());
            Ok(())
        }
    }
}

async fn lease(
    state: &Backend,
    conversation: &Conversation,
    explicit_session: Option<&crate::opencode::Session>,
) -> Result<Lease, ApiError> {
    // Without the event stream a run cannot be followed: fail before creating anything upstream.
    if !state.hub.wait_connected(EVENT_CONNECT_WAIT).await {
        return Err(ApiError::event_stream_down());
    }
    match explicit_session {
        Some(session) => state.sessions.explicit.claim(session).await,
        None => {
            let prior = conversation.prior_fingerprint();
            let dir = conversation.placement.directory.as_deref();
            state.sessions.conversations.acquire(prior, dir).await
        }
    }
}

/// Sends the prompt (subscribe first: OpenCode's events are not replayed).
async fn send(
    state: &Backend,
    caller: &Caller,
    lease: &Lease,
    model: &ModelInfo,
    conversation: &Conversation,
    req: &RunRequest,
    slot: Option<&SlotLease>,
) -> Result<(), UpstreamError> {
    let parts = prompt::parts(lease.seed, &conversation.prior, &conversation.new);
    let placement = &conversation.placement;
    let body = prompt::body(model, parts, req, placement, slot);
    let client = state.client.in_directory(placement.directory.as_deref());
    client.prompt_async(&lease.session_id, &body).await?;
    tracing::debug!(session = %lease.session_id, seed = ?lease.seed, "prompt sent");
    if placement.tools {
        tracing::info!(target: "portatek_gateway::audit", key = %caller.name, session = %lease.session_id,
            agent = placement.agent.as_deref().unwrap_or("default"), "run with OpenCode's tools on");
    }
    Ok(())
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
            if self.ended || self.suspended {
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
                if let Some(tools) = &mut self.tools {
                    tools.on_call(call);
                }
                return Vec::new();
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
            if let Some(tools) = &mut self.tools {
                tools.on_event(&decoded);
            }
            out.extend(self.adapter.feed(&decoded));
        }
        if let Some(lease) = &mut self.lease {
            let user = self.decoder.user_message_id();
            lease.observe(user, self.decoder.last_assistant_id().or(user));
        }
        out
    }

    /// A headless run must never wait on a permission prompt: the policy answers it now, or
    /// shows it to the caller (a notice in the stream) and answers it after the timeout.
    fn answer_permission(&self, ask: &Ask) -> Vec<Output> {
        let permissions = &self.backend.permissions;
        let kind = ask.kind.label();
        let granted =
            ask.kind == AskKind::Permission && self.grants.cover(&ask.permission, &ask.patterns);
        let reply = match permissions.decide(ask, self.tools.is_some()) {
            Decision::Reply(reply) => {
                tracing::info!(kind, permission = %ask.permission, reply,
                    session = %self.session_id(), "answering a permission request by policy");
                reply
            }
            Decision::AskClient if granted => {
                tracing::info!(permission = %ask.permission, session = %self.session_id(),
                    "granting a permission request: the caller answered `always` earlier in this run");
                "once"
            }
            Decision::AskClient => {
                return permissions
                    .ask_client(ask, &self.conversation.client, &self.grants)
                    .map(|p| vec![Output::Activity(Activity::Permission(p))])
                    .unwrap_or_default()
            }
        };
        let (permissions, id, directory) =
            (permissions.clone(), ask.id.clone(), ask.directory.clone());
        self.backend.sessions.upstream().spawn_cleanup(async move {
            let dir = directory.as_deref();
            if let Err(e) = permissions.reply(kind, &id, reply, None, dir).await {
                tracing::warn!(error = %e, "could not answer a permission request");
            }
        });
        Vec::new()
    }

    /// The tool calls of a complete step end this response: the run suspends.
    fn tool_round(&mut self) -> Vec<Output> {
        let Some((outputs, calls)) = self.tools.as_mut().and_then(ToolRun::round) else {
            return Vec::new();
        };
        self.calls = calls;
        self.suspended = true;
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
                self.finish_ok().await;
                Output::Finished {
                    finish_reason,
                    usage: usage.minus(self.reported),
                }
            }
            Output::Failed(e) => {
                self.finish_failed().await;
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

    async fn finish_ok(&mut self) {
        self.ended = true;
        if let Some(lease) = self.lease.take() {
            let reply = Message::text_only(Role::Assistant, self.content.clone());
            let fingerprint = self.conversation.fingerprint_after(reply);
            lease.release(Outcome::Answered { fingerprint }).await;
        }
        self.tools = None;
    }

    async fn finish_failed(&mut self) {
        self.ended = true;
        let id = self.session_id().to_string();
        let abort = self.backend.sessions.upstream().abort(&id);
        if tokio::time::timeout(ABORT_WAIT, abort).await.is_err() {
            tracing::warn!(session = %id, "abort did not finish in time");
        }
        if let Some(lease) = self.lease.take() {
            lease.release(Outcome::Failed).await;
        }
        self.tools = None;
    }

    /// Whether the response ended with tool calls and the run waits for their results.
    pub fn is_suspended(&self) -> bool {
        self.suspended && !self.ended
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
        self.suspended = false;
        tracing::debug!(session = %self.session_id(), "tool results answered; the run goes on");
        Ok(())
    }

    /// Runs to the end of the response and returns it whole (the non-streaming mode); a run
    /// that suspends for tool results is parked.
    pub async fn collect(mut self) -> Result<Completion, ApiError> {
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        let mut end = None;
        while let Some(output) = self.next().await {
            match output {
                Output::Content(t) => content.push_str(&t),
                Output::Reasoning(t) => reasoning.push_str(&t),
                Output::ToolCall(call) => tool_calls.push(call),
                // Only streams show the agent's activity.
                Output::Activity(_) => {}
                Output::Finished {
                    finish_reason,
                    usage,
                } => end = Some((finish_reason, usage)),
                Output::Failed(e) => return Err(e),
            }
        }
        self.park();
        let (finish_reason, usage) =
            end.ok_or_else(|| ApiError::Internal("the run ended without a result".into()))?;
        Ok(Completion {
            content,
            reasoning: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls,
            finish_reason,
            usage,
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
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
