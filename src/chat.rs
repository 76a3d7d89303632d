//! One chat completion, start to end: check the model, claim a session, subscribe to its
//! events, send the prompt, and pull OpenAI deltas out of the [`Adapter`] until the run ends,
//! fails, or hits its deadline.
//!
//! Streaming and non-streaming share this one pipeline: non-streaming just collects the stream
//! ([`Run::collect`]), so both modes agree on content byte for byte. Dropping a [`Run`] before it
//! ends (client disconnect) aborts the OpenCode run at once.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::adapter::{Adapter, Output};
use crate::app::AppState;
use crate::auth::ClientId;
use crate::error::ApiError;
use crate::hub::{HubMessage, Subscription};
use crate::openai::{ChatRequest, ContentPart, Message, Role, Usage};
use crate::opencode::{ModelRef, PartInput, PromptBody, UpstreamError};
use crate::pool::{Fingerprint, Lease, Outcome, Seed};

/// How long a request waits for the upstream event connection before answering 503.
const EVENT_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a failing run's abort may take before the error is answered anyway.
const ABORT_WAIT: Duration = Duration::from_secs(2);

/// One step of a run, as the HTTP layer sees it.
#[derive(Debug, Clone)]
pub enum Item {
    /// New answer text.
    Content(String),
    /// New reasoning text.
    Reasoning(String),
    /// The end.
    Finished {
        /// OpenAI finish reason.
        finish_reason: &'static str,
        /// Token accounting.
        usage: Usage,
    },
    /// The run failed; nothing follows.
    Failed(ApiError),
}

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

/// A running completion.
pub struct Run {
    state: AppState,
    lease: Option<Lease>,
    subscription: Subscription,
    adapter: Adapter,
    deadline: Instant,
    queue: VecDeque<Item>,
    content: String,
    conversation: Conversation,
    ended: bool,
    /// Held while the run lives, so shutdown can wait for it.
    _live: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// What the pool needs to remember the conversation after the reply.
struct Conversation {
    client: ClientId,
    model: String,
    system: Option<String>,
    turns: Vec<Message>,
}

/// Validates the request against the catalog, claims a session and starts the run. The
/// configured deadline covers everything from here to the end of the run.
pub async fn start(
    state: &AppState,
    client: &ClientId,
    pinned_session: Option<&str>,
    req: &ChatRequest,
) -> Result<Run, ApiError> {
    let deadline = Instant::now() + state.config.deadline();
    let secs = state.config.prompt.deadline_secs;
    tokio::time::timeout_at(
        deadline,
        begin(state, client, pinned_session, req, deadline),
    )
    .await
    .map_err(|_| {
        ApiError::Timeout(format!(
            "OpenCode did not accept the prompt within the {secs}s deadline."
        ))
    })?
}

async fn begin(
    state: &AppState,
    client: &ClientId,
    pinned_session: Option<&str>,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<Run, ApiError> {
    let model = state.catalog.get(&req.model).await?;
    if !model.image_input {
        if let Some(i) = req.messages.iter().position(Message::has_image) {
            return Err(ApiError::invalid(
                format!("The model `{}` does not accept image input.", req.model),
                Some(format!("messages[{i}].content")),
            ));
        }
    }
    if let Some(effort) = &req.reasoning_effort {
        if !model.variants.contains(effort) {
            let message = if model.variants.is_empty() {
                format!(
                    "The model `{}` does not support `reasoning_effort`.",
                    req.model
                )
            } else {
                format!(
                    "Unsupported `reasoning_effort` {effort:?} for `{}`: expected one of {}.",
                    req.model,
                    model.variants.join(", ")
                )
            };
            return Err(ApiError::invalid(message, Some("reasoning_effort".into())));
        }
    }
    let system = req.system_prompt();
    let turns: Vec<Message> = req.turns().cloned().collect();
    let (last, prior) = turns
        .split_last()
        .ok_or_else(|| ApiError::invalid("No user message to answer.", Some("messages".into())))?;

    // Without the event stream a run cannot be followed: fail before creating anything upstream.
    if !state.hub.wait_connected(EVENT_CONNECT_WAIT).await {
        return Err(ApiError::event_stream_down());
    }
    let lease = match pinned_session {
        Some(id) => state.pool.acquire_pinned(client, id).await?,
        None => {
            let prior_fp = Fingerprint::of(client, &req.model, system.as_deref(), prior);
            state.pool.acquire(prior_fp).await?
        }
    };
    let session_id = lease.session_id.clone();
    let subscription = state
        .hub
        .subscribe(&session_id, EVENT_CONNECT_WAIT)
        .await
        .ok_or_else(ApiError::event_stream_down)?;

    let parts = match lease.seed {
        Seed::LastOnly => message_parts(last),
        Seed::Full => seeded_parts(prior, last),
    };
    let prompt = &state.config.prompt;
    // Tools stay off unless the operator turned them on, whatever agent runs the prompt.
    let tools = (!prompt.tools_enabled).then(|| BTreeMap::from([("*".to_string(), false)]));
    let body = PromptBody {
        parts,
        model: ModelRef {
            provider_id: model.provider_id.clone(),
            model_id: model.model_id.clone(),
        },
        agent: prompt.agent.clone(),
        system: system.clone(),
        tools,
        variant: req.reasoning_effort.clone(),
    };
    state
        .client
        .prompt_async(&session_id, &body)
        .await
        .map_err(|e| match (e, pinned_session) {
            // An explicit session deleted upstream behind the gateway's back.
            (UpstreamError::NotFound(_), Some(id)) => ApiError::session_not_found(id),
            (e, _) => e.into(),
        })?;
    tracing::debug!(session = %session_id, seed = ?lease.seed, "prompt sent");

    let mut adapter = Adapter::new(prompt.max_model_retries, lease.floor.clone());
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
        conversation: Conversation {
            client: client.clone(),
            model: req.model.clone(),
            system,
            turns,
        },
        ended: false,
        _live: state.live_runs.token(),
    })
}

fn message_parts(m: &Message) -> Vec<PartInput> {
    m.parts
        .iter()
        .map(|p| match p {
            ContentPart::Text(t) => PartInput::Text { text: t.clone() },
            ContentPart::Image { mime, url } => PartInput::File {
                mime: mime.clone(),
                url: url.clone(),
            },
        })
        .collect()
}

/// A new session gets the earlier turns as context, then the new message, in one model call.
fn seeded_parts(prior: &[Message], last: &Message) -> Vec<PartInput> {
    if prior.is_empty() {
        return message_parts(last);
    }
    let mut parts = vec![PartInput::Text {
        text: "The conversation so far, for context:".into(),
    }];
    for m in prior {
        let tag = if m.role == Role::Assistant {
            "assistant"
        } else {
            "user"
        };
        parts.push(PartInput::Text {
            text: format!("<{tag}>\n{}\n</{tag}>", m.text()),
        });
        parts.extend(
            message_parts(m)
                .into_iter()
                .filter(|p| matches!(p, PartInput::File { .. })),
        );
    }
    parts.push(PartInput::Text {
        text: "The user's new message:".into(),
    });
    parts.extend(message_parts(last));
    parts
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

    /// The next step; `None` after [`Item::Finished`] or [`Item::Failed`].
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let message = tokio::select! {
                m = tokio::time::timeout_at(self.deadline, self.subscription.recv()) => Some(m),
                _ = self.state.hard_stop.cancelled() => None,
            };
            let Some(message) = message else {
                let e = ApiError::Unavailable("The gateway is shutting down.".into());
                self.finish_failed().await;
                self.queue.push_back(Item::Failed(e));
                continue;
            };
            let outputs = match message {
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
                Err(_) => {
                    let secs = self.state.config.prompt.deadline_secs;
                    vec![Output::Failed(match self.adapter.last_retry_message() {
                        Some(m) => ApiError::Upstream(format!(
                            "The model provider kept failing until the {secs}s deadline: {m}"
                        )),
                        None => ApiError::Timeout(format!(
                            "The model did not finish within the {secs}s deadline."
                        )),
                    })]
                }
            };
            for output in outputs {
                match output {
                    Output::Content(t) => {
                        self.content.push_str(&t);
                        self.queue.push_back(Item::Content(t));
                    }
                    Output::Reasoning(t) => self.queue.push_back(Item::Reasoning(t)),
                    Output::Finished {
                        finish_reason,
                        usage,
                    } => {
                        self.finish_ok().await;
                        self.queue.push_back(Item::Finished {
                            finish_reason,
                            usage,
                        });
                        break;
                    }
                    Output::Failed(e) => {
                        self.finish_failed().await;
                        self.queue.push_back(Item::Failed(e));
                        break;
                    }
                }
            }
        }
    }

    async fn finish_ok(&mut self) {
        self.ended = true;
        if let Some(lease) = self.lease.take() {
            let c = &self.conversation;
            let fingerprint = Fingerprint::after_reply(
                &c.client,
                &c.model,
                c.system.as_deref(),
                &c.turns,
                &self.content,
            );
            let outcome = Outcome::Answered { fingerprint };
            self.state.pool.release(lease, outcome).await;
        }
    }

    async fn finish_failed(&mut self) {
        self.ended = true;
        let id = self.session_id().to_string();
        if tokio::time::timeout(ABORT_WAIT, self.state.client.abort(&id))
            .await
            .is_err()
        {
            tracing::warn!(session = %id, "abort did not finish in time");
        }
        if let Some(lease) = self.lease.take() {
            self.state.pool.release(lease, Outcome::Failed).await;
        }
    }

    /// Runs to the end and returns the whole answer (the non-streaming mode).
    pub async fn collect(mut self) -> Result<Completion, ApiError> {
        let mut content = String::new();
        let mut reasoning = String::new();
        while let Some(item) = self.next().await {
            match item {
                Item::Content(t) => content.push_str(&t),
                Item::Reasoning(t) => reasoning.push_str(&t),
                Item::Finished {
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
                Item::Failed(e) => return Err(e),
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
        let client = self.state.client.clone();
        let id = self.session_id().to_string();
        let lease = self.lease.take();
        tracing::info!(session = %id, "client disconnected; aborting the run");
        self.state.pool.spawn_cleanup(async move {
            if let Err(e) = client.abort(&id).await {
                tracing::warn!(session = %id, error = %e, "abort after disconnect failed");
            }
            drop(lease);
        });
    }
}
