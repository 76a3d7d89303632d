//! The Responses API (`/v1/responses`) on OpenCode sessions.
//!
//! `previous_response_id` is what an OpenCode session is: the server keeps the conversation,
//! the client sends only what is new. So a stored response (`store: true`, the default) lives in
//! a session of its own chain ([`saved`]): a new conversation gets a new session, a follow-up
//! continues the session of the response it names — or, when that response is no longer the
//! latest there (the client branches from an older one), a fork of it holding the conversation
//! up to that response, so both branches live. `store: false` responses are stateless: they
//! go through the conversation pool, exactly as chat completions do.
//!
//! A run is the same [`Run`] chat completions use; [`builder`] turns its outputs into the
//! `response` object and the typed stream events. Function tools share the client-tools
//! machinery: a response that ends with `function_call` items parks its run under its own id,
//! and `function_call_output` items sent with `previous_response_id` resume it.

pub mod builder;
pub mod saved;

use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::client_tools::ParkKey;
use crate::error::ApiError;
use crate::openai::{ResponseObject, ResponseStatus, ResponsesRequest};
use crate::run::placement::{self, Requested};
use crate::run::{self, Conversation, Gateway, Run, RunRequest, Target};
use crate::upstreams::Backend;
use builder::Builder;
pub use saved::Record;

/// A response under way: its run, its builder, and where it is stored.
pub struct Started {
    /// The run producing it.
    pub run: Run,
    /// The response being built.
    pub builder: Builder,
    /// The input items, when the response is stored.
    pub store_input: Option<Vec<Value>>,
    /// Whether the run continues a run parked for tool results (its user message is not its own).
    pub resumed: bool,
}

/// The `response` object a request starts with (`in_progress`, no output).
fn snapshot(id: String, req: &ResponsesRequest) -> ResponseObject {
    ResponseObject {
        id,
        object: "response".into(),
        created_at: crate::sync::now_secs(),
        status: ResponseStatus::InProgress,
        completed_at: None,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        model: req.model.clone(),
        output: Vec::new(),
        parallel_tool_calls: req.parallel_tool_calls,
        previous_response_id: req.previous_response_id.clone(),
        reasoning: req.reasoning_json.clone(),
        store: req.store,
        temperature: req.temperature.unwrap_or(1.0),
        text: req.text_json.clone(),
        tool_choice: req.tool_choice_json.clone(),
        tools: req.tools_json.clone(),
        top_p: req.top_p.unwrap_or(1.0),
        truncation: req.truncation.clone().unwrap_or_else(|| "disabled".into()),
        usage: None,
        metadata: Map::clone(&req.metadata),
    }
}

/// Starts (or resumes) the run of a `POST /v1/responses`.
pub async fn start(
    state: &Gateway,
    caller: &Caller,
    req: &ResponsesRequest,
    requested: Requested,
) -> Result<Started, ApiError> {
    let client = &caller.id;
    let mut run_req = RunRequest::from(req);
    run_req.requested = requested;
    let placement = placement::resolve(&state.config, caller, &run_req.requested)?;
    // On the upstream of the chain's session, or where a new conversation goes.
    let backend: std::sync::Arc<Backend> = match (&req.previous_response_id, req.store) {
        (Some(previous), true) => match saved::session_of(previous) {
            Some(session) => state.backend_of_session(&session).await?,
            None => state.default_backend(),
        },
        (None, true) => state.backend_for_new(),
        _ => state.default_backend(),
    };
    let store = &backend.responses;
    let (run, id, resumed) = match (&req.previous_response_id, req.store) {
        (Some(_), false) => {
            return Err(ApiError::invalid(
                "`store: false` cannot continue a stored response: omit `store`, or send the whole conversation as `input` without `previous_response_id`.",
                Some("store".into()),
            ))
        }
        (Some(previous), true) => {
            let conversation = Conversation::continuing(client, &run_req, &placement);
            let key = ParkKey::Response(previous.clone());
            match conversation.answers_tools().then(|| run::resume(state, &key, conversation.clone())).flatten() {
                Some(resumed) => {
                    let mut run = resumed?;
                    let id = saved::new_id(run.session_id());
                    run.park_under(ParkKey::Response(id.clone()));
                    (run, id, true)
                }
                None => {
                    // The stored chain must name it (a 404 for an unknown or foreign id).
                    let lease = store.continue_from(caller, previous).await?;
                    state.upstreams.set_home(&lease.session_id, backend.index);
                    let id = saved::new_id(&lease.session_id);
                    let target = Target::Leased {
                        lease: Box::new(lease),
                        park: ParkKey::Response(id.clone()),
                        backend: backend.clone(),
                    };
                    (run::start(state, &backend, caller, conversation, target, &run_req).await?, id, false)
                }
            }
        }
        (None, true) => {
            let lease = store.open(client, placement.directory.as_deref()).await?;
            state.upstreams.set_home(&lease.session_id, backend.index);
            let id = saved::new_id(&lease.session_id);
            let conversation = Conversation::of(client, &run_req, &placement);
            let target = Target::Leased {
                lease: Box::new(lease),
                park: ParkKey::Response(id.clone()),
                backend: backend.clone(),
            };
            (run::start(state, &backend, caller, conversation, target, &run_req).await?, id, false)
        }
        (None, false) => {
            let run = run::start_or_resume(state, caller, Target::Conversation, &run_req).await?;
            (run, saved::unstored_id(), false)
        }
    };
    let snapshot = snapshot(id, req);
    if req.store {
        run.backend()
            .responses
            .started(saved::Running {
                session_id: run.session_id().to_string(),
                owner: caller.id.clone(),
                snapshot: snapshot.clone(),
                cancelled: false,
            })
            .await;
    }
    Ok(Started {
        builder: Builder::new(snapshot),
        run,
        store_input: req.store.then(|| req.input_items.clone()),
        resumed,
    })
}

/// Stores a finished response (when it is stored) and marks it no longer running.
pub async fn finish(
    backend: &Backend,
    response: &ResponseObject,
    session_id: &str,
    input: Option<Vec<Value>>,
    start: Option<String>,
) {
    let store = &backend.responses;
    let mut response = response.clone();
    if store.finished(&response.id) {
        response.status = ResponseStatus::Cancelled;
        response.error = None;
    }
    let Some(input) = input else { return };
    let id = response.id.clone();
    let record = Record {
        response,
        input,
        start,
    };
    if let Err(e) = store.save(session_id, record).await {
        tracing::warn!(response = %id, error = %e, "could not store the response");
    }
    store.unshare(&id).await;
}
