//! One completion run, start to end: check the model, lease a session, subscribe to its events,
//! send the prompt, and pull [`Output`]s out of the [`Adapter`] until the run ends, fails, or
//! hits its deadline.
//!
//! The run knows nothing of the wire format it is answered in: the non-streaming handler
//! [collects](Run::collect) it, the streaming one turns each output into an SSE event
//! ([`crate::stream`]), so both agree byte for byte. Dropping a [`Run`] before it ends (client
//! disconnect) aborts the OpenCode run at once.

mod prompt;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::adapter::{Adapter, Output};
use crate::app::AppState;
use crate::auth::ClientId;
use crate::catalog::ModelInfo;
use crate::error::ApiError;
use crate::hub::{HubMessage, Subscription};
use crate::openai::{ChatRequest, Message, Usage};
use crate::sessions::{Fingerprint, Lease, Outcome, Seed};

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
    /// OpenAI finish reason.
    pub finish_reason: &'static str,
    /// Token accounting.
    pub usage: Usage,
}

/// The conversation a request continues, as the session pool fingerprints it.
struct Conversation {
    client: ClientId,
    model: String,
    system: Option<String>,
    /// The user and assistant turns before the new message.
    prior: Vec<Message>,
    /// The new user message.
    last: Message,
}

impl Conversation {
    fn of(client: &ClientId, req: &ChatRequest) -> Result<Conversation, ApiError> {
        let mut prior: Vec<Message> = req.turns().cloned().collect();
        let last = prior.pop().ok_or_else(|| {
            ApiError::invalid("No user message to answer.", Some("messages".into()))
        })?;
        Ok(Conversation {
            client: client.clone(),
            model: req.model.clone(),
            system: req.system_prompt(),
            prior,
            last,
        })
    }

    /// The fingerprint of the history the new message continues.
    fn prior(&self) -> Fingerprint {
        let system = self.system.as_deref();
        Fingerprint::of(&self.client, &self.model, system, &self.prior)
    }

    /// The fingerprint of the history once the new message and `reply` are appended.
    fn after(&self, reply: &str) -> Fingerprint {
        let mut turns = self.prior.clone();
        turns.push(self.last.clone());
        let system = self.system.as_deref();
        Fingerprint::after_reply(&self.client, &self.model, system, turns, reply)
    }
}

/// A running completion.
pub struct Run {
    state: AppState,
    lease: Option<Lease>,
    subscription: Subscription,
    adapter: Adapter,
    deadline: Instant,
    queue: VecDeque<Output>,
    /// The answer so far (the conversation's fingerprint after the reply needs it).
    content: String,
    conversation: Conversation,
    ended: bool,
    /// Held while the run lives, so shutdown can wait for it.
    _live: TaskTrackerToken,
}

/// Validates the request against the catalog, claims a session (the explicit one named, or
/// the conversation's) and starts the run. The configured deadline covers everything from
/// here to the end of the run.
pub async fn start(
    state: &AppState,
    client: &ClientId,
    explicit_session: Option<&str>,
    req: &ChatRequest,
) -> Result<Run, ApiError> {
    let deadline = Instant::now() + state.config.prompt.deadline;
    let begun = begin(state, client, explicit_session, req, deadline);
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
    state: &AppState,
    client: &ClientId,
    explicit_session: Option<&str>,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<Run, ApiError> {
    let model = state.catalog.get(&req.model).await?;
    prompt::check_model(req, &model)?;
    let conversation = Conversation::of(client, req)?;
    let lease = lease(state, client, explicit_session, &conversation).await?;
    let subscription = state
        .hub
        .subscribe(&lease.session_id, EVENT_CONNECT_WAIT)
        .await
        .ok_or_else(ApiError::event_stream_down)?;
    send(state, &lease, &model, &conversation, req, explicit_session).await?;
    let mut adapter = Adapter::new(state.config.prompt.max_model_retries, lease.floor.clone());
    if lease.seed == Seed::Full {
        adapter = adapter.fresh_session();
    }
    Ok(Run {
        state: state.clone(),
        lease: Some(lease),
        subscription,
        adapter,
        deadline,
        queue: VecDeque::new(),
        content: String::new(),
        conversation,
        ended: false,
        _live: state.live_runs.token(),
    })
}

/// Claims the session the run will use.
async fn lease(
    state: &AppState,
    client: &ClientId,
    explicit_session: Option<&str>,
    conversation: &Conversation,
) -> Result<Lease, ApiError> {
    // Without the event stream a run cannot be followed: fail before creating anything upstream.
    if !state.hub.wait_connected(EVENT_CONNECT_WAIT).await {
        return Err(ApiError::event_stream_down());
    }
    match explicit_session {
        Some(id) => state.sessions.explicit.acquire(client, id).await,
        None => {
            state
                .sessions
                .conversations
                .acquire(conversation.prior())
                .await
        }
    }
}

/// Sends the prompt (subscribe first: OpenCode's events are not replayed).
async fn send(
    state: &AppState,
    lease: &Lease,
    model: &ModelInfo,
    conversation: &Conversation,
    req: &ChatRequest,
    explicit_session: Option<&str>,
) -> Result<(), ApiError> {
    let parts = prompt::parts(lease.seed, &conversation.prior, &conversation.last);
    let system = conversation.system.clone();
    let variant = req.reasoning_effort.clone();
    let body = prompt::body(&state.config.prompt, model, parts, system, variant);
    let sent = state.client.prompt_async(&lease.session_id, &body).await;
    if let Err(e) = sent {
        // An explicit session deleted upstream behind the gateway's back is the client's 404.
        return Err(match explicit_session {
            Some(id) => crate::sessions::not_found_as_session(id)(e),
            None => e.into(),
        });
    }
    tracing::debug!(session = %lease.session_id, seed = ?lease.seed, "prompt sent");
    Ok(())
}

impl Run {
    /// When the run must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The OpenCode session this run uses.
    pub fn session_id(&self) -> &str {
        self.subscription.session_id()
    }

    /// The next step; `None` after [`Output::Finished`] or [`Output::Failed`].
    pub async fn next(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.queue.pop_front() {
                return Some(output);
            }
            if self.ended {
                return None;
            }
            for output in self.receive().await {
                if self.accept(output).await {
                    break;
                }
            }
        }
    }

    /// Waits for the session's next event (or the deadline, or shutdown) and translates it.
    async fn receive(&mut self) -> Vec<Output> {
        let message = tokio::select! {
            m = tokio::time::timeout_at(self.deadline, self.subscription.recv()) => m,
            _ = self.state.hard_stop.cancelled() => {
                return vec![Output::Failed(ApiError::Unavailable(
                    "The gateway is shutting down.".into(),
                ))];
            }
        };
        match message {
            Ok(Some(HubMessage::Event(event))) => {
                let outputs = self.adapter.feed(&event);
                if let Some(lease) = &mut self.lease {
                    let user = self.adapter.user_message_id();
                    lease.observe(user, self.adapter.last_assistant_id().or(user));
                }
                outputs
            }
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

    fn deadline_error(&self) -> ApiError {
        let secs = self.state.config.prompt.deadline.as_secs();
        match self.adapter.last_retry_message() {
            Some(m) => ApiError::Upstream(format!(
                "The model provider kept failing until the {secs}s deadline: {m}"
            )),
            None => ApiError::UpstreamTimeout(format!(
                "The model did not finish within the {secs}s deadline."
            )),
        }
    }

    /// Queues one output, ending the run on a terminal one; returns whether it was terminal.
    async fn accept(&mut self, output: Output) -> bool {
        let terminal = match &output {
            Output::Content(t) => {
                self.content.push_str(t);
                false
            }
            Output::Reasoning(_) => false,
            Output::Finished { .. } => {
                self.finish_ok().await;
                true
            }
            Output::Failed(_) => {
                self.finish_failed().await;
                true
            }
        };
        self.queue.push_back(output);
        terminal
    }

    async fn finish_ok(&mut self) {
        self.ended = true;
        if let Some(lease) = self.lease.take() {
            let fingerprint = self.conversation.after(&self.content);
            lease.release(Outcome::Answered { fingerprint }).await;
        }
    }

    async fn finish_failed(&mut self) {
        self.ended = true;
        let id = self.session_id().to_string();
        let abort = self.state.sessions.upstream().abort(&id);
        if tokio::time::timeout(ABORT_WAIT, abort).await.is_err() {
            tracing::warn!(session = %id, "abort did not finish in time");
        }
        if let Some(lease) = self.lease.take() {
            lease.release(Outcome::Failed).await;
        }
    }

    /// Runs to the end and returns the whole answer (the non-streaming mode).
    pub async fn collect(mut self) -> Result<Completion, ApiError> {
        let mut content = String::new();
        let mut reasoning = String::new();
        while let Some(output) = self.next().await {
            match output {
                Output::Content(t) => content.push_str(&t),
                Output::Reasoning(t) => reasoning.push_str(&t),
                Output::Finished {
                    finish_reason,
                    usage,
                } => {
                    return Ok(Completion {
                        content,
                        reasoning: (!reasoning.is_empty()).then_some(reasoning),
                        finish_reason,
                        usage,
                    })
                }
                Output::Failed(e) => return Err(e),
            }
        }
        Err(ApiError::Internal("the run ended without a result".into()))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // The client went away mid-run: stop the generation now; the lease's drop discards the session.
        let upstream = self.state.sessions.upstream().clone();
        let id = self.session_id().to_string();
        let lease = self.lease.take();
        tracing::info!(session = %id, "client disconnected; aborting the run");
        self.state.sessions.upstream().spawn_cleanup(async move {
            if let Err(e) = upstream.abort(&id).await {
                tracing::warn!(session = %id, error = %e, "abort after disconnect failed");
            }
            drop(lease);
        });
    }
}
