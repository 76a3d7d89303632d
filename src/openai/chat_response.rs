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
    /// The answer text.
    pub content: String,
    /// Always null (no refusals are produced).
    pub refusal: Option<String>,
    /// The model's reasoning, when it exposed any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
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
