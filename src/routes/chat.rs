//! `POST /v1/chat/completions`: JSON (`chat.completion`) or SSE (`chat.completion.chunk`s),
//! both driven by the same [`chat::Run`].

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::auth::ClientId;
use crate::chat::{self, Item, Run};
use crate::error::ApiError;
use crate::openai::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, Choice, ChunkChoice, Delta, ResponseMessage,
    Role, Usage,
};
use crate::routes::now_secs;

/// Header pinning a request to an explicit session created through `/v1/sessions`.
pub const SESSION_HEADER: &str = "x-session-id";

/// Maps a body-read failure: over the limit → 413, anything else → 400.
pub fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(limit)
    } else if is_timeout(&rejection) {
        ApiError::RequestTimeout("The request body was not received in time.".into())
    } else {
        ApiError::invalid(
            format!("Could not read the request body: {rejection}"),
            None,
        )
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The handler.
pub async fn completions(
    State(state): State<AppState>,
    Extension(client): Extension<ClientId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(r, state.config.limits.max_body_bytes))?;
    let req = ChatRequest::parse(&body)?;
    let pinned = match headers.get(SESSION_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::session_not_found(""))?
                .to_string(),
        ),
    };
    let run = chat::start(&state, &client, pinned.as_deref(), &req).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if req.stream {
        let stream = chunks(run, id, created, req.model, req.include_usage);
        let keepalive = Duration::from_secs(state.config.prompt.keepalive_secs);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive"))
            .into_response());
    }
    let done = run.collect().await?;
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model: req.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: done.content,
                refusal: None,
                reasoning_content: done.reasoning,
            },
            finish_reason: done.finish_reason,
            logprobs: None,
        }],
        usage: done.usage,
    })
    .into_response())
}

struct ChunkStream {
    /// Items from the task driving the run; `None` once the run's last item was taken.
    run: Option<mpsc::Receiver<Item>>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    sent_role: bool,
    pending: std::collections::VecDeque<Event>,
}

impl ChunkStream {
    fn chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> Event {
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            logprobs: None,
        };
        self.envelope(vec![choice], None)
    }

    fn usage_chunk(&self, usage: Usage) -> Event {
        self.envelope(Vec::new(), Some(usage))
    }

    /// Every chunk of the stream shares `id`, `created` and `model`.
    fn envelope(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        self.event(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    fn event<T: serde::Serialize>(&self, value: &T) -> Event {
        Event::default()
            .json_data(value)
            .unwrap_or_else(|_| Event::default().data("{}"))
    }

    /// The events for the next run item (empty when the run is over).
    async fn advance(&mut self) {
        if !self.sent_role {
            self.sent_role = true;
            let first = Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                reasoning_content: None,
            };
            let e = self.chunk(first, None);
            self.pending.push_back(e);
            return;
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        match run.recv().await {
            Some(Item::Content(t)) => {
                let e = self.chunk(
                    Delta {
                        content: Some(t),
                        ..Delta::default()
                    },
                    None,
                );
                self.pending.push_back(e);
            }
            Some(Item::Reasoning(t)) => {
                let e = self.chunk(
                    Delta {
                        reasoning_content: Some(t),
                        ..Delta::default()
                    },
                    None,
                );
                self.pending.push_back(e);
            }
            Some(Item::Finished {
                finish_reason,
                usage,
            }) => {
                self.run = None;
                let e = self.chunk(Delta::default(), Some(finish_reason));
                self.pending.push_back(e);
                if self.include_usage {
                    let u = self.usage_chunk(usage);
                    self.pending.push_back(u);
                }
                self.pending.push_back(Event::default().data("[DONE]"));
            }
            Some(Item::Failed(e)) => {
                self.run = None;
                tracing::warn!(status = e.status().as_u16(), error = %e, "stream failed");
                let ev = self.event(&e.body());
                self.pending.push_back(ev);
            }
            None => self.run = None,
        }
    }
}

/// Drives a streaming run in its own task, so its deadline holds even while the client is not
/// reading: a client that stalls past the deadline, or goes away, gets the run aborted (by
/// dropping it) instead of holding the session for as long as its socket lives.
async fn drive(mut run: Run, tx: mpsc::Sender<Item>) {
    let deadline = run.deadline();
    loop {
        let item = tokio::select! {
            item = run.next() => item,
            _ = tx.closed() => return,
        };
        let Some(item) = item else { return };
        match tokio::time::timeout_at(deadline, tx.send(item)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(session = %run.session_id(), "client stopped reading past the deadline; aborting");
                return;
            }
        }
    }
}

fn chunks(
    run: Run,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(drive(run, tx));
    let state = ChunkStream {
        run: Some(rx),
        id,
        created,
        model,
        include_usage,
        sent_role: false,
        pending: Default::default(),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok(e), s));
            }
            if s.run.is_none() && s.sent_role {
                return None;
            }
            s.advance().await;
        }
    })
}
