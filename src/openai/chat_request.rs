//! `POST /v1/chat/completions` bodies: the validated request and its messages.
//!
//! Parsed by hand through [`Fields`] so that every rejection is a 400 naming the exact `param`
//! at fault, as OpenAI does.

use serde::Serialize;
use serde_json::{Map, Value};

use super::validate::{bad, image_data_url_mime, parse_object, type_name, Fields};
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
    /// A text-only message.
    pub fn text_only(role: Role, text: impl Into<String>) -> Message {
        Message {
            role,
            parts: vec![ContentPart::Text(text.into())],
        }
    }

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

/// `messages`: present, not empty, each valid, the last one the user's.
fn parse_messages(f: &Fields<'_>) -> Result<Vec<Message>, ApiError> {
    let items = f.array("messages")?.ok_or_else(|| f.missing("messages"))?;
    if items.is_empty() {
        return Err(bad(
            "`messages` must contain at least one message.",
            "messages",
        ));
    }
    let messages = items
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
    Ok(messages)
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
    for key in ["tools", "functions"] {
        if f.get(key)
            .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(bad(
                format!("`{key}` is not supported: client-side function calling is not available through this gateway."),
                key,
            ));
        }
    }
    match f.get("response_format") {
        None => Ok(()),
        Some(Value::Object(o)) if o.get("type") == Some(&Value::String("text".into())) => Ok(()),
        Some(_) => Err(bad(
            "Only `response_format: {\"type\": \"text\"}` is supported.",
            "response_format",
        )),
    }
}

fn parse_role(f: &Fields<'_>) -> Result<Role, ApiError> {
    let param = f.param("role");
    match f.get("role").and_then(Value::as_str) {
        Some("system") => Ok(Role::System),
        Some("developer") => Ok(Role::Developer),
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some(r @ ("tool" | "function")) => Err(bad(
            format!("Messages with role `{r}` are not supported: client-side function calling is not available through this gateway."),
            param,
        )),
        Some(r) => Err(bad(
            format!("Invalid role `{r}`: expected one of system, developer, user, assistant."),
            param,
        )),
        None => Err(bad("Each message needs a string `role`.", param)),
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
    let f = Fields::new(obj, &at);
    let role = parse_role(&f)?;
    if role == Role::Assistant
        && f.get("tool_calls")
            .is_some_and(|c| c.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(bad(
            "Assistant `tool_calls` are not supported through this gateway.",
            f.param("tool_calls"),
        ));
    }
    let content_at = f.param("content");
    let parts = match f.get("content") {
        Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for (j, p) in items.iter().enumerate() {
                parts.extend(parse_part(role, p, &format!("{content_at}[{j}]"))?);
            }
            parts
        }
        None if role == Role::Assistant => Vec::new(),
        None => return Err(f.missing("content")),
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
    let f = Fields::new(obj, at);
    match f.get("type").and_then(Value::as_str) {
        Some("text") => match f.get("text") {
            Some(Value::String(s)) => Ok(Some(ContentPart::Text(s.clone()))),
            _ => Err(bad("A text part needs a string `text`.", f.param("text"))),
        },
        Some("refusal") if role == Role::Assistant => Ok(None),
        Some("image_url") if role == Role::User => parse_image(&f).map(Some),
        Some(t) => Err(bad(
            format!("Content parts of type `{t}` are not supported in {role:?} messages."),
            f.param("type"),
        )),
        None => Err(bad(
            "Each content part needs a string `type`.",
            f.param("type"),
        )),
    }
}

fn parse_image(f: &Fields<'_>) -> Result<ContentPart, ApiError> {
    let url_at = f.param("image_url.url");
    let url = f
        .get("image_url")
        .and_then(|i| i.get("url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("An image_url part needs `image_url.url`.", url_at.clone()))?;
    let mime = image_data_url_mime(url)
        .map_err(|why| bad(format!("Invalid image URL: {why}."), url_at))?;
    Ok(ContentPart::Image {
        mime,
        url: url.to_string(),
    })
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
        let user = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (json!({"messages": []}), "model"),
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"model": "m", "messages": [
                    {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
                "messages[1].role",
            ),
            (
                json!({"model": "m", "stream": "yes", "messages": user}),
                "stream",
            ),
            (json!({"model": "m", "n": 2, "messages": user}), "n"),
            (
                json!({"model": "m", "tools": [{"type": "function"}], "messages": user}),
                "tools",
            ),
            (
                json!({"model": "m", "stream_options": {"include_usage": true}, "messages": user}),
                "stream_options",
            ),
            (
                json!({"model": "m", "stream": true, "stream_options": {"include_usage": 1},
                       "messages": user}),
                "stream_options.include_usage",
            ),
            (
                json!({"model": "m", "temperature": "hot", "messages": user}),
                "temperature",
            ),
            (
                json!({"model": "m", "max_tokens": 0, "messages": user}),
                "max_tokens",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(body.clone()), param, "{body}");
        }
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
