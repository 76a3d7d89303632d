//! OpenAI wire types: the validated chat request and the response, chunk, usage and model shapes.
//!
//! Requests are parsed from JSON by hand so that every rejection is a 400 naming the exact
//! `param` at fault (`messages[2].content[0].image_url.url`), as OpenAI does.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (goes to OpenCode's `system`).
    System,
    /// Instructions from the developer (treated like `system`).
    Developer,
    /// The human.
    User,
    /// An earlier model reply.
    Assistant,
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentPart {
    /// Plain text.
    Text(String),
    /// An image as a `data:` URL.
    Image {
        /// Its MIME type, e.g. `image/png`.
        mime: String,
        /// The whole `data:` URL.
        url: String,
    },
}

/// One validated chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// The author.
    pub role: Role,
    /// The content, in order.
    pub parts: Vec<ContentPart>,
}

impl Message {
    /// The message's text parts joined by newlines.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text(t) => Some(t.as_str()),
                ContentPart::Image { .. } => None,
            })
            .collect();
        texts.join("\n")
    }

    /// Whether the message carries an image.
    pub fn has_image(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, ContentPart::Image { .. }))
    }
}

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
}

fn bad(message: impl Into<String>, param: impl Into<String>) -> ApiError {
    ApiError::invalid(message, Some(param.into()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl ChatRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(
                format!("We could not parse the JSON body of your request: {e}"),
                None,
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(ApiError::invalid(
                format!(
                    "The request body must be a JSON object, not {}.",
                    type_name(&value)
                ),
                None,
            ));
        };
        Self::from_object(&obj)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
        let model = match obj.get("model") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(bad("`model` must not be empty.", "model")),
            None | Some(Value::Null) => {
                return Err(bad("Missing required parameter: 'model'.", "model"))
            }
            Some(v) => {
                return Err(bad(
                    format!("`model` must be a string, not {}.", type_name(v)),
                    "model",
                ))
            }
        };
        let messages = match obj.get("messages") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_)) => {
                return Err(bad(
                    "`messages` must contain at least one message.",
                    "messages",
                ))
            }
            None | Some(Value::Null) => {
                return Err(bad("Missing required parameter: 'messages'.", "messages"))
            }
            Some(v) => {
                return Err(bad(
                    format!("`messages` must be an array, not {}.", type_name(v)),
                    "messages",
                ))
            }
        };
        let messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| parse_message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let last = messages.len() - 1;
        if messages[last].role != Role::User {
            return Err(bad(
                "The last message must have role `user`: the gateway answers the user's latest message.",
                format!("messages[{last}].role"),
            ));
        }

        let stream = opt_bool(obj, "stream")?.unwrap_or(false);
        let include_usage = match obj.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => {
                if !stream {
                    return Err(bad(
                        "`stream_options` is only allowed when `stream` is true.",
                        "stream_options",
                    ));
                }
                opt_bool(o, "include_usage")
                    .map_err(|_| {
                        bad(
                            "`stream_options.include_usage` must be a boolean.",
                            "stream_options.include_usage",
                        )
                    })?
                    .unwrap_or(false)
            }
            Some(v) => {
                return Err(bad(
                    format!("`stream_options` must be an object, not {}.", type_name(v)),
                    "stream_options",
                ))
            }
        };
        match obj.get("n") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(_) => {
                return Err(bad(
                    "Only `n = 1` is supported: OpenCode produces one answer per request.",
                    "n",
                ))
            }
        }
        for key in ["tools", "functions"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) if a.is_empty() => {}
                Some(_) => {
                    return Err(bad(
                        format!("`{key}` is not supported: client-side function calling is not available through this gateway."),
                        key,
                    ))
                }
            }
        }
        match obj.get("response_format") {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) if o.get("type") == Some(&Value::String("text".into())) => {}
            Some(_) => {
                return Err(bad(
                    "Only `response_format: {\"type\": \"text\"}` is supported.",
                    "response_format",
                ))
            }
        }
        for key in [
            "temperature",
            "top_p",
            "presence_penalty",
            "frequency_penalty",
        ] {
            match obj.get(key) {
                None | Some(Value::Null) | Some(Value::Number(_)) => {}
                Some(v) => {
                    return Err(bad(
                        format!("`{key}` must be a number, not {}.", type_name(v)),
                        key,
                    ))
                }
            }
        }
        for key in ["max_tokens", "max_completion_tokens"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {}
                Some(_) => return Err(bad(format!("`{key}` must be a positive integer."), key)),
            }
        }
        let reasoning_effort = match obj.get("reasoning_effort") {
            None | Some(Value::Null) => None,
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
            .filter(|m| matches!(m.role, Role::User | Role::Assistant))
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(
            format!("`{key}` must be a boolean, not {}.", type_name(v)),
            key,
        )),
    }
}

fn parse_message(i: usize, value: &Value) -> Result<Message, ApiError> {
    let at = format!("messages[{i}]");
    let Value::Object(obj) = value else {
        return Err(bad(
            format!("Each message must be an object, not {}.", type_name(value)),
            at,
        ));
    };
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(r @ ("tool" | "function")) => {
            return Err(bad(
                format!("Messages with role `{r}` are not supported: client-side function calling is not available through this gateway."),
                format!("{at}.role"),
            ))
        }
        Some(r) => {
            return Err(bad(
                format!("Invalid role `{r}`: expected one of system, developer, user, assistant."),
                format!("{at}.role"),
            ))
        }
        None => return Err(bad("Each message needs a string `role`.", format!("{at}.role"))),
    };
    if role == Role::Assistant {
        if let Some(calls) = obj.get("tool_calls") {
            if !matches!(calls, Value::Null) && calls.as_array().is_none_or(|a| !a.is_empty()) {
                return Err(bad(
                    "Assistant `tool_calls` are not supported through this gateway.",
                    format!("{at}.tool_calls"),
                ));
            }
        }
    }
    let content_at = format!("{at}.content");
    let parts = match obj.get("content") {
        Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(j, p)| parse_part(role, p, &format!("{content_at}[{j}]")))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect(),
        None | Some(Value::Null) if role == Role::Assistant => Vec::new(),
        None | Some(Value::Null) => {
            return Err(bad(
                format!("Missing required parameter: '{content_at}'."),
                content_at,
            ))
        }
        Some(v) => {
            return Err(bad(
                format!(
                    "Message content must be a string or an array of parts, not {}.",
                    type_name(v)
                ),
                content_at,
            ))
        }
    };
    if role == Role::User && parts.is_empty() {
        return Err(bad("A user message must not be empty.", content_at));
    }
    Ok(Message { role, parts })
}

fn parse_part(role: Role, value: &Value, at: &str) -> Result<Option<ContentPart>, ApiError> {
    let Value::Object(obj) = value else {
        return Err(bad("Each content part must be an object.", at));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => match obj.get("text") {
            Some(Value::String(s)) => Ok(Some(ContentPart::Text(s.clone()))),
            _ => Err(bad(
                "A text part needs a string `text`.",
                format!("{at}.text"),
            )),
        },
        Some("refusal") if role == Role::Assistant => Ok(None),
        Some("image_url") if role == Role::User => {
            let url_at = format!("{at}.image_url.url");
            let url = obj
                .get("image_url")
                .and_then(|i| i.get("url"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("An image_url part needs `image_url.url`.", url_at.clone()))?;
            let mime = parse_image_data_url(url).ok_or_else(|| {
                bad(
                    "Only base64 `data:image/...;base64,` URLs are supported for images.",
                    url_at,
                )
            })?;
            Ok(Some(ContentPart::Image {
                mime,
                url: url.to_string(),
            }))
        }
        Some(t) => Err(bad(
            format!("Content parts of type `{t}` are not supported in {role:?} messages."),
            format!("{at}.type"),
        )),
        None => Err(bad(
            "Each content part needs a string `type`.",
            format!("{at}.type"),
        )),
    }
}

/// Returns the MIME type of a well-formed `data:image/…;base64,…` URL.
fn parse_image_data_url(url: &str) -> Option<String> {
    use base64::Engine;
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    if !mime.starts_with("image/") || mime.len() <= "image/".len() || data.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    Some(mime.to_string())
}

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

/// One entry of `/v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// `provider/model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds (the model's release date when OpenCode knows it).
    pub created: u64,
    /// The provider id.
    pub owned_by: String,
}

/// `/v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<Model>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, ApiError> {
        ChatRequest::parse(v.to_string().as_bytes())
    }

    fn param_of(v: Value) -> String {
        match parse(v).unwrap_err() {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn parses_a_full_conversation() {
        let r = parse(json!({
            "model": "mock/echo",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}
                ]}
            ]
        }))
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.system_prompt().unwrap(), "be brief\n\nand kind");
        assert_eq!(r.turns().count(), 3);
        assert!(r.messages[4].has_image());
    }

    #[test]
    fn rejections_name_the_param() {
        assert_eq!(param_of(json!({"messages": []})), "model");
        assert_eq!(param_of(json!({"model": "m"})), "messages");
        assert_eq!(param_of(json!({"model": "m", "messages": []})), "messages");
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})),
            "messages[0].content"
        );
        assert_eq!(
            param_of(
                json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]})
            ),
            "messages[0].content[0].image_url.url"
        );
        assert_eq!(
            param_of(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
            ),
            "messages[1].role"
        );
        assert_eq!(
            param_of(
                json!({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]})
            ),
            "stream"
        );
        assert_eq!(
            param_of(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]})),
            "n"
        );
        assert_eq!(
            param_of(
                json!({"model": "m", "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]})
            ),
            "tools"
        );
        assert_eq!(
            param_of(
                json!({"model": "m", "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]})
            ),
            "stream_options"
        );
        assert!(matches!(
            ChatRequest::parse(b"{not json"),
            Err(ApiError::InvalidRequest { .. })
        ));
        assert!(matches!(
            ChatRequest::parse(b"[1]"),
            Err(ApiError::InvalidRequest { .. })
        ));
    }
}
