//! A run as `chat.completion.chunk` events: a first chunk with the role, one chunk per piece of
//! answer or reasoning, a last chunk with `finish_reason`, the usage chunk when asked for, then
//! `[DONE]` — or, when the run fails after the stream started, an error event and no `[DONE]`.

use std::convert::Infallible;

use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;

use crate::adapter::Output;
use crate::adapter::{Activity, ToolCallOutput};
use crate::openai::{
    ChatCompletionChunk, ChunkChoice, ChunkFunction, ChunkToolCall, Delta, Role, Usage,
};
use crate::run::Run;

/// What every chunk of one stream shares.
#[derive(Debug, Clone)]
pub struct Chunks {
    /// `chatcmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id as requested.
    pub model: String,
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// Show what OpenCode's agent does, as SSE comments (`x-opencode-activity: 1`).
    pub include_activity: bool,
}

impl Chunks {
    /// The SSE events of `run`, driven in its own task (see [`super::spawn`]).
    pub fn stream(self, run: Run) -> impl Stream<Item = Result<Event, Infallible>> {
        let first = self.chunk(
            Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        );
        let gauge = crate::metrics::StreamGauge::open();
        let rest = ReceiverStream::new(super::spawn(run, |_| {})).flat_map(move |output| {
            let _open = &gauge;
            futures::stream::iter(self.encode(output))
        });
        futures::stream::once(async { first }).chain(rest).map(Ok)
    }

    /// The events for one output of the run.
    fn encode(&self, output: Output) -> Vec<Event> {
        match output {
            Output::Content(t) => vec![self.chunk(
                Delta {
                    content: Some(t),
                    ..Delta::default()
                },
                None,
            )],
            Output::Reasoning(t) => vec![self.chunk(
                Delta {
                    reasoning_content: Some(t),
                    ..Delta::default()
                },
                None,
            )],
            Output::ToolCall(call) => self.tool_call(call),
            Output::Activity(activity) if self.include_activity => {
                vec![activity_comment(&activity)]
            }
            Output::Activity(_) => Vec::new(),
            Output::Finished {
                finish_reason,
                usage,
            } => {
                let mut events = vec![self.chunk(Delta::default(), Some(finish_reason))];
                if self.include_usage {
                    events.push(self.envelope(Vec::new(), Some(usage)));
                }
                events.push(Event::default().data("[DONE]"));
                events
            }
            Output::Failed(e) => {
                tracing::warn!(status = e.status().as_u16(), error = %e, "stream failed");
                vec![json_event(&e.body())]
            }
        }
    }

    /// A tool call as OpenAI streams it: a chunk announcing it (id, type, name), then its
    /// arguments.
    fn tool_call(&self, call: ToolCallOutput) -> Vec<Event> {
        let piece = |id, kind, name, arguments| Delta {
            tool_calls: Some(vec![ChunkToolCall {
                index: call.index,
                id,
                kind,
                function: ChunkFunction { name, arguments },
            }]),
            ..Delta::default()
        };
        let head = piece(
            Some(call.id.clone()),
            Some("function"),
            Some(call.name.clone()),
            String::new(),
        );
        let arguments = piece(None, None, None, call.arguments.clone());
        vec![self.chunk(head, None), self.chunk(arguments, None)]
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> Event {
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            logprobs: None,
        };
        self.envelope(vec![choice], None)
    }

    /// Every chunk of the stream shares `id`, `created` and `model`.
    fn envelope(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        json_event(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }
}

/// The agent's activity as an SSE comment — `: opencode-activity {json}` — which every SSE
/// parser, the OpenAI SDKs' included, skips, so only clients that look for it see it.
pub fn activity_comment(activity: &Activity) -> Event {
    let body = match activity {
        Activity::Tool(t) => serde_json::json!({"type": "tool", "tool": t}),
        Activity::Permission(p) => serde_json::json!({"type": "permission", "request": p}),
    };
    Event::default().comment(format!("opencode-activity {body}"))
}

/// An SSE event whose data is `value` as JSON.
pub fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default()
        .json_data(value)
        .unwrap_or_else(|_| Event::default().data("{}"))
}
