//! `POST /v1/responses` bodies: the validated request, its input items turned into the same
//! [`Message`]s chat completions use.
//!
//! Input items map onto messages: `message` items by role, a run of `function_call` items onto
//! one assistant message with tool calls, each `function_call_output` onto a `tool` message;
//! `reasoning` items are the model's own and are not sent back. What the gateway cannot honour
//! (hosted tools, background mode, stored prompts, conversations) is a 400 naming the field.
mod functions;
mod input;

use serde_json::{Map, Value};

use super::chat_request::Message;
use super::tools::parse_json_schema_format;
use super::validate::{bad, parse_object, Fields};
use super::{ResponseFormat, ToolChoice, ToolSpec};
use crate::error::ApiError;

use functions::{parse_response_tool_choice, parse_response_tools};
use input::parse_input;

/// Longest `metadata` value, characters (OpenAI's limit).
const METADATA_VALUE_MAX: usize = 512;

/// A validated `POST /v1/responses` body.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    /// `provider/model`.
    pub model: String,
    /// The input as messages (system and developer items excluded, see `system`).
    pub turns: Vec<Message>,
    /// `instructions` followed by system/developer input items.
    pub system: Option<String>,
    /// `instructions` as given (echoed in the response).
    pub instructions: Option<String>,
    /// The input items, normalized to item objects with ids (for `input_items`).
    pub input_items: Vec<Value>,
    /// The parameter of the first image, if any.
    pub first_image: Option<String>,
    /// Continue from this response.
    pub previous_response_id: Option<String>,
    /// Answer as SSE events.
    pub stream: bool,
    /// Client tools.
    pub tools: Vec<ToolSpec>,
    /// `tools` as given, for the response.
    pub tools_json: Vec<Value>,
    /// Which tools the model may or must call.
    pub tool_choice: ToolChoice,
    /// `tool_choice` as given (or `"auto"`), for the response.
    pub tool_choice_json: Value,
    /// Whether one response may carry several calls.
    pub parallel_tool_calls: bool,
    /// `text.format`.
    pub response_format: ResponseFormat,
    /// `text` as given (or `{"format":{"type":"text"}}`), for the response.
    pub text_json: Value,
    /// `reasoning.effort`, forwarded as OpenCode's `variant`.
    pub reasoning_effort: Option<String>,
    /// `reasoning` as given, for the response.
    pub reasoning_json: Value,
    /// Keep the response retrievable (default true).
    pub store: bool,
    /// The client's key-value pairs.
    pub metadata: Map<String, Value>,
    /// Accepted; OpenCode takes the model's own output limit.
    pub max_output_tokens: Option<u64>,
    /// Accepted and echoed, not applied.
    pub temperature: Option<f64>,
    /// Accepted and echoed, not applied.
    pub top_p: Option<f64>,
    /// Accepted and echoed (`disabled` or `auto`).
    pub truncation: Option<String>,
}

impl ResponsesRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
        Self::from_object(&parse_object(body)?)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<ResponsesRequest, ApiError> {
        let f = Fields::new(obj, "");
        reject_unsupported(&f)?;
        let model = f.required_string("model")?.to_string();
        let instructions = f.string("instructions")?.map(String::from);
        let input = parse_input(&f)?;
        let previous_response_id = f.string("previous_response_id")?.map(String::from);
        let (tools, tools_json) = parse_response_tools(&f)?;
        let (tool_choice, tool_choice_json) = parse_response_tool_choice(&f, &tools)?;
        let (response_format, text_json) = parse_text(&f)?;
        let (reasoning_effort, reasoning_json) = parse_reasoning(&f)?;
        let system = join_system(instructions.as_deref(), &input.system);
        if input.turns.is_empty() {
            return Err(bad(
                "`input` must contain a user message or function call outputs.",
                "input",
            ));
        }
        Ok(ResponsesRequest {
            model,
            turns: input.turns,
            system,
            instructions,
            input_items: input.items,
            first_image: input.first_image,
            previous_response_id,
            stream: f.bool("stream")?.unwrap_or(false),
            tools,
            tools_json,
            tool_choice,
            tool_choice_json,
            parallel_tool_calls: f.bool("parallel_tool_calls")?.unwrap_or(true),
            response_format,
            text_json,
            reasoning_effort,
            reasoning_json,
            store: f.bool("store")?.unwrap_or(true),
            metadata: parse_metadata(&f)?,
            max_output_tokens: f.positive_int("max_output_tokens")?,
            temperature: f.number("temperature")?,
            top_p: f.number("top_p")?,
            truncation: parse_truncation(&f)?,
        })
    }
}

/// `instructions` and the system/developer input items, joined (`None`: none had text).
fn join_system(instructions: Option<&str>, input_system: &[String]) -> Option<String> {
    let parts: Vec<&str> = instructions
        .into_iter()
        .chain(input_system.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// Fields of the Responses API the gateway cannot honour.
fn reject_unsupported(f: &Fields<'_>) -> Result<(), ApiError> {
    if f.bool("background")? == Some(true) {
        return Err(bad(
            "Background mode is not supported: stream the response, or wait for it.",
            "background",
        ));
    }
    for (key, why) in [
        (
            "conversation",
            "use `previous_response_id` to continue a conversation",
        ),
        (
            "prompt",
            "stored prompts are not available through this gateway",
        ),
    ] {
        if f.get(key).is_some() {
            return Err(bad(format!("`{key}` is not supported: {why}."), key));
        }
    }
    Ok(())
}

/// `truncation`: `auto` or `disabled`.
fn parse_truncation(f: &Fields<'_>) -> Result<Option<String>, ApiError> {
    match f.string("truncation")? {
        None => Ok(None),
        Some(t @ ("auto" | "disabled")) => Ok(Some(t.to_string())),
        Some(other) => Err(bad(
            format!("Invalid `truncation` {other:?}: expected auto or disabled."),
            "truncation",
        )),
    }
}

/// `metadata`: at most 16 pairs of short keys and string values.
fn parse_metadata(f: &Fields<'_>) -> Result<Map<String, Value>, ApiError> {
    let Some(map) = f.object("metadata")? else {
        return Ok(Map::new());
    };
    if map.len() > 16 {
        return Err(bad("`metadata` may hold at most 16 pairs.", "metadata"));
    }
    for (k, v) in map {
        let ok = k.chars().count() <= 64
            && v.as_str()
                .is_some_and(|s| s.chars().count() <= METADATA_VALUE_MAX);
        if !ok {
            return Err(bad(
                "`metadata` keys must be at most 64 characters and values strings of at most 512.",
                format!("metadata.{k}"),
            ));
        }
    }
    Ok(map.clone())
}
/// `text.format`: text, json_object, or json_schema (flat: `{type, name, schema, strict}`).
fn parse_text(f: &Fields<'_>) -> Result<(ResponseFormat, Value), ApiError> {
    let default = serde_json::json!({"format": {"type": "text"}});
    let Some(text) = f.object("text")? else {
        return Ok((ResponseFormat::Text, default));
    };
    let tf = Fields::new(text, "text");
    let Some(format) = tf.object("format")? else {
        return Ok((ResponseFormat::Text, default));
    };
    let ff = Fields::new(format, "text.format");
    let parsed = match ff.string("type")? {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => parse_json_schema_format(format, "text.format")?,
        Some(other) => {
            return Err(bad(
                format!("Unsupported `text.format.type` {other:?}: expected text, json_object or json_schema."),
                "text.format.type",
            ))
        }
        None => return Err(ff.missing("type")),
    };
    Ok((parsed, Value::Object(text.clone())))
}

/// `reasoning`: its `effort`, and the object as given.
fn parse_reasoning(f: &Fields<'_>) -> Result<(Option<String>, Value), ApiError> {
    let Some(reasoning) = f.object("reasoning")? else {
        return Ok((None, Value::Null));
    };
    let rf = Fields::new(reasoning, "reasoning");
    let effort = rf.string("effort")?.map(String::from);
    rf.string("summary")?;
    Ok((effort, Value::Object(reasoning.clone())))
}

#[cfg(test)]
mod tests;
