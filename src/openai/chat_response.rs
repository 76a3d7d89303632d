//! What `POST /v1/chat/completions` answers: `chat.completion`, `chat.completion.chunk` and
//! their usage, as OpenAI's schemas define them (the tests validate every body against them).

use serde::Serialize;
use serde_json::Value;

use super::chat_request::Role;

/// Token accounting, as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// The sum.
    pub total_tokens: u64,
    /// Breakdown of the prompt tokens.
    pub prompt_tokens_details: PromptTokensDetails,
    /// Breakdown of the completion tokens.
    pub completion_tokens_details: CompletionTokensDetails,
    /// Tokens written to the provider's cache (part of `prompt_tokens`; chat completions have
    /// no field for it, the Responses API has).
    #[serde(skip)]
    pub cache_write_tokens: u64,
}

impl std::ops::Add for Usage {
    type Output = Usage;

    /// The usage of two model calls together (a run with tool steps makes several).
    fn add(self, b: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens + b.prompt_tokens,
            completion_tokens: self.completion_tokens + b.completion_tokens,
            total_tokens: self.total_tokens + b.total_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: self.prompt_tokens_details.cached_tokens
                    + b.prompt_tokens_details.cached_tokens,
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: self.completion_tokens_details.reasoning_tokens
                    + b.completion_tokens_details.reasoning_tokens,
            },
            cache_write_tokens: self.cache_write_tokens + b.cache_write_tokens,
        }
    }
}

impl Usage {
    /// What `self` adds to `earlier` (a run answered in several responses reports each
    /// response's own share).
    pub fn minus(self, earlier: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_sub(earlier.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_sub(earlier.completion_tokens),
            total_tokens: self.total_tokens.saturating_sub(earlier.total_tokens),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: self
                    .prompt_tokens_details
                    .cached_tokens
                    .saturating_sub(earlier.prompt_tokens_details.cached_tokens),
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: self
                    .completion_tokens_details
                    .reasoning_tokens
                    .saturating_sub(earlier.completion_tokens_details.reasoning_tokens),
            },
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_sub(earlier.cache_write_tokens),
        }
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    /// Tokens read from the provider's cache.
    pub cached_tokens: u64,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompletionTokensDetails {
    /// Tokens spent reasoning.
    pub reasoning_tokens: u64,
}

/// The assistant message of a non-streamed answer.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: Role,
    /// The answer text (null when the message only calls tools, as OpenAI sends it).
    pub content: Option<String>,
    /// Always null (no refusals are produced).
    pub refusal: Option<String>,
    /// The model's reasoning, when it exposed any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Calls of the client's tools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<MessageToolCall>,
}

/// `message.tool_calls[]` of a non-streamed answer.
#[derive(Debug, Clone, Serialize)]
pub struct MessageToolCall {
    /// `call_…`.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What to call.
    pub function: FunctionCall,
}

/// `{name, arguments}` of a tool call.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionCall {
    /// The client's function name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// `delta.tool_calls[]` of a streamed chunk: the first chunk of a call carries its `id`,
/// `type` and name; later ones only `index` and a piece of the arguments.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkToolCall {
    /// Which call of the response.
    pub index: usize,
    /// On the call's first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on the call's first chunk.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Name (first chunk) and argument pieces.
    pub function: ChunkFunction,
}

/// `function` of a [`ChunkToolCall`].
#[derive(Debug, Clone, Serialize)]
pub struct ChunkFunction {
    /// On the call's first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the arguments.
    pub arguments: String,
}

/// One choice of a non-streamed answer.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The answer.
    pub message: ResponseMessage,
    /// Why generation stopped.
    pub finish_reason: &'static str,
    /// Always null.
    pub logprobs: Option<Value>,
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id as requested.
    pub model: String,
    /// Exactly one choice.
    pub choices: Vec<Choice>,
    /// Token accounting.
    pub usage: Usage,
}

/// `delta` of a streamed chunk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    /// `assistant` on the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Answer text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Reasoning text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool calls, piece by piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ChunkToolCall>>,
}

/// One choice of a streamed chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Set on the last content chunk.
    pub finish_reason: Option<&'static str>,
    /// Always null.
    pub logprobs: Option<Value>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    /// Same for every chunk of a stream.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Same for every chunk of a stream.
    pub created: u64,
    /// The model id as requested.
    pub model: String,
    /// One choice, or none on the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only on the usage chunk (with `stream_options.include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}
