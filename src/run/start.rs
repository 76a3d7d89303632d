//! Starting a run: route it to its upstream, check the model, take its admission place and
//! rate-limit share, lease a session (the conversation's, the explicit one, or a Responses
//! chain's), subscribe to the session's events, and send the prompt — or resume the parked
//! run that the request's tool results answer. Everything here happens before the first
//! output; the configured deadline covers it.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use crate::adapter::Adapter;
use crate::auth::Caller;
use crate::catalog::ModelInfo;
use crate::client_tools::ParkKey;

use super::answer_tool::{AnswerTool, ANSWER_TOOL};
use crate::error::ApiError;
use crate::openai::tools::compile_schema;
use crate::openai::Usage;
use crate::opencode::UpstreamError;
use crate::sessions::{not_found_as_session, Lease, Seed};
use crate::upstreams::Backend;

use super::phase::Phase;
use super::placement;
use super::prompt;
use super::tool_round::ToolRun;
use super::{Conversation, Gateway, Run, RunRequest, Target, EVENT_CONNECT_WAIT};

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
    // Without structured output upstream, the answer comes as a call of a tool of the run's
    // slot (see `answer_tool`).
    let answer_tool = match req.response_format.schema() {
        Some(schema) if !backend.client.has_structured_output().await => {
            Some(AnswerTool::new(&schema))
        }
        _ => None,
    };
    let mut specs = match req.offers_tools() {
        true => req.tools.clone(),
        false => Vec::new(),
    };
    if let Some(answer) = &answer_tool {
        if specs.iter().any(|t| t.name == ANSWER_TOOL) {
            return Err(ApiError::invalid(
                format!("A function may not be named `{ANSWER_TOOL}` with a structured response format on this upstream: the gateway answers through a tool of that name."),
                Some("tools".to_string()),
            ));
        }
        specs.push(answer.spec().clone());
    }
    let tools = match specs.is_empty() {
        false => Some(ToolRun::new(
            backend
                .tools
                .slots
                .acquire(&specs, directory.as_deref())
                .await?,
            req.parallel_tool_calls,
        )),
        true => None,
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
        let offer = prompt::Offer {
            slot,
            answer_tool: answer_tool.is_some(),
        };
        let sent = send(backend, caller, &lease, &model, &conversation, req, offer).await;
        // How long OpenCode took to accept the prompt is admission control's load signal.
        backend.admission.sample(sending.elapsed());
        match sent {
            Ok(()) => break subscription,
            // A remembered session that vanished upstream (deleted behind the gateway's back,
            // OpenCode restarted with fresh storage): the pool does not look it up before each
            // turn, so its prompt's 404 says so. Drop it (the lease's drop discards it) and run
            // the turn in a new session seeded with the history.
            Err(UpstreamError::NotFound(message))
                if pooled && lease.seed == Seed::NewTurnOnly && attempts < 3 =>
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
        .run_decoder(lease.history_end.clone(), lease.seed == Seed::WholeHistory);
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
        phase: Phase::Streaming,
        started: std::time::Instant::now(),
        first_output_seen: false,
        _permit: permit,
        admitted,
        _live: state.live_runs.token(),
        _in_flight: state.upstreams.run_started(backend.index),
        grants: crate::permissions::Grants::default(),
        answer_tool,
        answer_pending: false,
        upstream_goes_on: false,
    })
}

/// Runs on `session` in its directory (OpenCode serves a session only from its own
/// directory's instance): a request naming another directory is refused.
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

/// Claims the session the run will use (the explicit one named, or the conversation's),
/// once the upstream's event stream is up (a run nobody can follow is not started).
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
    offer: prompt::Offer<'_>,
) -> Result<(), UpstreamError> {
    let parts = prompt::parts(lease.seed, &conversation.prior, &conversation.new);
    let placement = &conversation.placement;
    let body = prompt::body(model, parts, req, placement, offer);
    let client = state.client.in_directory(placement.directory.as_deref());
    client.prompt_async(&lease.session_id, &body).await?;
    tracing::debug!(session = %lease.session_id, seed = ?lease.seed, "prompt sent");
    if placement.tools {
        tracing::info!(target: "portatek_gateway::audit", key = %caller.name, session = %lease.session_id,
            agent = placement.agent.as_deref().unwrap_or("default"), "run with OpenCode's tools on");
    }
    Ok(())
}
