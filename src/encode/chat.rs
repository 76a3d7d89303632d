//! A run as a chat completion: one `chat.completion` answer ([`ChatAnswer`]), or
//! `chat.completion.chunk` events ([`Chunks`]): a first chunk with the role, one chunk per
//! piece of answer or reasoning, a last chunk with `finish_reason`, the usage chunk when asked
//! for, then `[DONE]` — or, when the run fails after the stream started, an error event and no
//! `[DONE]`. Both are [`Encoder`]s of the same outputs, so they agree.

use std::convert::Infallible;

use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;

use crate::adapter::Output;
use crate::adapter::{Activity, ToolCallOutput};
use crate::error::ApiError;
use crate::openai::{
    ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, ChunkFunction, ChunkToolCall, Delta,
    FunctionCall, MessageToolCall, ResponseMessage, Role, Usage,
};
use crate::run::{Encoder, Run};

/// A run as one `chat.completion` answer: the outputs add up, [`ChatAnswer::finish`] makes
/// the object.
#[derive(Debug)]
pub struct ChatAnswer {
    id: String,
    created: u64,
    model: String,
    content: String,
    reasoning: String,
    tool_calls: Vec<MessageToolCall>,
    end: Option<(&'static str, Usage)>,
}

impl ChatAnswer {
    /// An empty answer with the completion's `id`, `created` and `model`.
    pub fn new(id: String, created: u64, model: String) -> ChatAnswer {
        ChatAnswer {
            id,
            created,
            model,
            content: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            end: None,
        }
    }

    /// The `chat.completion` object, once the run finished its response.
    pub fn finish(self) -> Result<ChatCompletion, ApiError> {
        let (finish_reason, usage) = self
            .end
            .ok_or_else(|| ApiError::Internal("the run ended without a result".into()))?;
        // With tool calls and no text, `content` is null (as OpenAI sends it).
        let content =
            (self.tool_calls.is_empty() || !self.content.is_empty()).then_some(self.content);
        let message = ResponseMessage {
            role: Role::Assistant,
            content,
            refusal: None,
            reasoning_content: (!self.reasoning.is_empty()).then_some(self.reasoning),
            tool_calls: self.tool_calls,
        };
        Ok(ChatCompletion {
            id: self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason,
                logprobs: None,
            }],
            usage,
        })
    }
}

impl Encoder for ChatAnswer {
    type Item = ();

    fn encode(&mut self, output: Output) -> Vec<()> {
        match output {
            Output::Content(t) => self.content.push_str(&t),
            Output::Reasoning(t) => self.reasoning.push_str(&t),
            Output::ToolCall(c) => self.tool_calls.push(MessageToolCall {
                id: c.id,
                kind: "function",
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            }),
            // Only streams show the agent's activity; a failure is the drain's to return.
            Output::Activity(_) | Output::Failed(_) => {}
            Output::Finished {
                finish_reason,
                usage,
            } => self.end = Some((finish_reason, usage)),
        }
        Vec::new()
    }
}

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
        let mut encoder = self;
        let rest = ReceiverStream::new(super::spawn(run, |_| {})).flat_map(move |output| {
            let _open = &gauge;
            futures::stream::iter(encoder.encode(output))
        });
        futures::stream::once(async { first }).chain(rest).map(Ok)
    }

    /// The events for one output of the run.
    fn events(&self, output: Output) -> Vec<Event> {
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

impl Encoder for Chunks {
    type Item = Event;

    fn encode(&mut self, output: Output) -> Vec<Event> {
        self.events(output)
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
