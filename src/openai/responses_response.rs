//! What `/v1/responses` answers: the `response` object, its output items and usage, as
//! OpenAI's schemas define them. The same object is what the gateway stores to answer
//! `GET /v1/responses/{id}` later, so it also deserializes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Usage;

/// `response.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Running.
    InProgress,
    /// Done.
    Completed,
    /// Ended early (the model's output limit).
    Incomplete,
    /// Failed; see `error`.
    Failed,
    /// Cancelled by the client.
    Cancelled,
}

/// `response.error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    /// One of OpenAI's response error codes (`server_error` for upstream trouble).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// `response.incomplete_details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

/// `response.usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Input tokens, cached included.
    pub input_tokens: u64,
    /// Breakdown of the input tokens.
    pub input_tokens_details: InputTokensDetails,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// Breakdown of the output tokens.
    pub output_tokens_details: OutputTokensDetails,
    /// The sum.
    pub total_tokens: u64,
}

/// `usage.input_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Read from the provider's cache.
    pub cached_tokens: u64,
    /// Written to the provider's cache.
    pub cache_write_tokens: u64,
}

/// `usage.output_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    /// Spent reasoning.
    pub reasoning_tokens: u64,
}

impl From<Usage> for ResponseUsage {
    fn from(u: Usage) -> Self {
        ResponseUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: u.prompt_tokens_details.cached_tokens,
                cache_write_tokens: u.cache_write_tokens,
            },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: u.completion_tokens_details.reasoning_tokens,
            },
            total_tokens: u.total_tokens,
        }
    }
}

/// One `output_text` part of a message item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputText {
    /// Always `output_text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
    /// Always empty.
    pub annotations: Vec<Value>,
    /// Always empty.
    pub logprobs: Vec<Value>,
}

impl OutputText {
    /// An `output_text` part.
    pub fn new(text: String) -> OutputText {
        OutputText {
            kind: "output_text".into(),
            text,
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }
}

/// One `summary_text` of a reasoning item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryText {
    /// Always `summary_text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The reasoning text.
    pub text: String,
}

/// One item of `response.output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The answer.
    Message {
        /// `msg_…`.
        id: String,
        /// Always `assistant`.
        role: String,
        /// `in_progress`, `completed` or `incomplete`.
        status: String,
        /// The text parts.
        content: Vec<OutputText>,
    },
    /// The model's reasoning, as summary text.
    Reasoning {
        /// `rs_…`.
        id: String,
        /// The reasoning text.
        summary: Vec<SummaryText>,
        /// `in_progress` or `completed`.
        status: String,
    },
    /// One of OpenCode's own tools, run by the agent on the server (server label `opencode`).
    McpCall {
        /// `mcp_…`.
        id: String,
        /// Always `opencode`.
        server_label: String,
        /// The tool (`bash`, `read`, …).
        name: String,
        /// Its arguments as JSON text.
        arguments: String,
        /// What it returned.
        output: Option<String>,
        /// Why it failed.
        error: Option<String>,
        /// `in_progress`, `completed` or `failed`.
        status: String,
    },
    /// A call of one of the client's functions.
    FunctionCall {
        /// `fc_…`.
        id: String,
        /// What the `function_call_output` must name.
        call_id: String,
        /// The function.
        name: String,
        /// JSON text.
        arguments: String,
        /// `in_progress` or `completed`.
        status: String,
    },
}

impl OutputItem {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. }
            | OutputItem::Reasoning { id, .. }
            | OutputItem::McpCall { id, .. }
            | OutputItem::FunctionCall { id, .. } => id,
        }
    }
}

/// The `response` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    /// `resp_…`.
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Where it stands.
    pub status: ResponseStatus,
    /// Unix seconds, when completed.
    pub completed_at: Option<u64>,
    /// Why it failed.
    pub error: Option<ResponseError>,
    /// Why it ended early.
    pub incomplete_details: Option<IncompleteDetails>,
    /// `instructions` as given.
    pub instructions: Option<String>,
    /// `max_output_tokens` as given.
    pub max_output_tokens: Option<u64>,
    /// The model id as requested.
    pub model: String,
    /// What the model produced.
    pub output: Vec<OutputItem>,
    /// As requested.
    pub parallel_tool_calls: bool,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// `reasoning` as given (or null).
    pub reasoning: Value,
    /// Whether it is retrievable.
    pub store: bool,
    /// As given (1 when not).
    pub temperature: f64,
    /// `text` as given.
    pub text: Value,
    /// `tool_choice` as given.
    pub tool_choice: Value,
    /// `tools` as given.
    pub tools: Vec<Value>,
    /// As given (1 when not).
    pub top_p: f64,
    /// `disabled` or `auto`.
    pub truncation: String,
    /// Token accounting, once done (left out before: OpenAI's schema allows an object or
    /// nothing, not `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    /// The client's key-value pairs.
    pub metadata: Map<String, Value>,
}

/// `GET /v1/responses/{id}/input_items`.
#[derive(Debug, Clone, Serialize)]
pub struct InputItemList {
    /// Always `list`.
    pub object: &'static str,
    /// The items of this page.
    pub data: Vec<Value>,
    /// Id of the first item of the page.
    pub first_id: Option<String>,
    /// Id of the last item of the page.
    pub last_id: Option<String>,
    /// Whether more items follow.
    pub has_more: bool,
}
