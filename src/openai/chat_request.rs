//! `POST /v1/chat/completions` bodies: the validated request and its messages.
//!
//! Parsed by hand through [`Fields`] so that every rejection is a 400 naming the exact `param`
//! at fault, as OpenAI does.

mod message;
mod messages;

use serde_json::{Map, Value};

use super::tools::{
    parse_response_format, parse_tool_choice, parse_tools, ResponseFormat, ToolChoice, ToolSpec,
};
use super::validate::{bad, parse_object, Fields};
use crate::error::ApiError;

use messages::parse_messages;

pub use message::{canonical_json, ContentPart, Message, Role, ToolCall};

/// A validated `POST /v1/chat/completions` body.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// `provider/model`.
    pub model: String,
    /// The conversation; the last one is from the user.
    pub messages: Vec<Message>,
    /// Answer as SSE chunks.
    pub stream: bool,
    /// Send a last chunk with `usage` (`stream_options.include_usage`).
    pub include_usage: bool,
    /// `reasoning_effort`, forwarded as OpenCode's `variant`.
    pub reasoning_effort: Option<String>,
    /// Functions the model may call (answered by the client).
    pub tools: Vec<ToolSpec>,
    /// Which of them it may or must call.
    pub tool_choice: ToolChoice,
    /// Whether one response may carry several calls.
    pub parallel_tool_calls: bool,
    /// The shape of the answer.
    pub response_format: ResponseFormat,
    /// `metadata` (string values): `opencode_agent` / `opencode_directory` select the agent and
    /// directory for clients that cannot set headers.
    pub metadata: Option<Map<String, Value>>,
}

impl ChatRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        Self::from_object(&parse_object(body)?)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
        let f = Fields::new(obj, "");
        let model = f.required_string("model")?.to_string();
        let messages = parse_messages(&f)?;
        let stream = f.bool("stream")?.unwrap_or(false);
        let include_usage = parse_stream_options(&f, stream)?;
        reject_unsupported(&f)?;
        let tools = parse_tools(&f)?;
        let tool_choice = parse_tool_choice(&f, &tools)?;
        let parallel_tool_calls = f.bool("parallel_tool_calls")?.unwrap_or(true);
        let response_format = parse_response_format(&f)?;
        let metadata = f.object("metadata")?.cloned();
        if let Some((k, _)) = metadata.iter().flatten().find(|(_, v)| !v.is_string()) {
            return Err(bad(
                "`metadata` values must be strings.",
                format!("metadata.{k}"),
            ));
        }
        // Accepted and ignored (OpenCode does not take them per prompt), but type-checked.
        for key in [
            "temperature",
            "top_p",
            "presence_penalty",
            "frequency_penalty",
        ] {
            f.number(key)?;
        }
        for key in ["max_tokens", "max_completion_tokens"] {
            f.positive_int(key)?;
        }
        let reasoning_effort = match f.get("reasoning_effort") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(bad(
                    "`reasoning_effort` must be a non-empty string.",
                    "reasoning_effort",
                ))
            }
        };
        Ok(ChatRequest {
            model,
            messages,
            stream,
            include_usage,
            reasoning_effort,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
            metadata,
        })
    }

    /// The joined system and developer instructions, if any.
    pub fn system_prompt(&self) -> Option<String> {
        let parts: Vec<String> = self
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::System | Role::Developer))
            .map(Message::text)
            .filter(|t| !t.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// The conversation without system/developer messages.
    pub fn turns(&self) -> impl Iterator<Item = &Message> {
        self.messages
            .iter()
            .filter(|m| !matches!(m.role, Role::System | Role::Developer))
    }
}

/// `stream_options.include_usage` (only with `stream: true`).
fn parse_stream_options(f: &Fields<'_>, stream: bool) -> Result<bool, ApiError> {
    let Some(options) = f.object("stream_options")? else {
        return Ok(false);
    };
    if !stream {
        return Err(bad(
            "`stream_options` is only allowed when `stream` is true.",
            "stream_options",
        ));
    }
    Ok(Fields::new(options, "stream_options")
        .bool("include_usage")?
        .unwrap_or(false))
}

/// Fields the gateway cannot honour: 400 rather than a silently different answer.
fn reject_unsupported(f: &Fields<'_>) -> Result<(), ApiError> {
    match f.get("n") {
        None => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(bad(
                "Only `n = 1` is supported: OpenCode produces one answer per request.",
                "n",
            ))
        }
    }
    for key in ["functions", "function_call"] {
        if f.get(key).is_some() {
            return Err(bad(
                format!("`{key}` (the deprecated function-calling API) is not supported: use `tools` and `tool_choice`."),
                key,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
