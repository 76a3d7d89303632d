//! OpenAI's wire format, one file per API: what clients send (validated by hand, so that a 400
//! names the exact field) and what the gateway answers (serialized as OpenAI's schemas define
//! it). The `{"error":{…}}` body lives with the error type, in [`crate::error`].

mod chat_request;
mod chat_response;
mod models;
mod responses_request;
mod responses_response;
pub mod schema;
pub mod tools;
pub mod validate;

pub use chat_request::{canonical_json, ChatRequest, ContentPart, Message, Role, ToolCall};
pub use chat_response::{
    ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, ChunkFunction, ChunkToolCall,
    CompletionTokensDetails, Delta, FunctionCall, MessageToolCall, PromptTokensDetails,
    ResponseMessage, Usage,
};
pub use models::{Model, ModelList};
pub use responses_request::ResponsesRequest;
pub use responses_response::{
    IncompleteDetails, InputItemList, InputTokensDetails, OutputItem, OutputText,
    OutputTokensDetails, ResponseError, ResponseObject, ResponseStatus, ResponseUsage, SummaryText,
};
pub use tools::{ResponseFormat, ToolChoice, ToolSpec};
