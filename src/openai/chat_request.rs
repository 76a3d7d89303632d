//! `POST /v1/chat/completions` bodies: the validated request and its messages.
//!
//! Parsed by hand through [`Fields`] so that every rejection is a 400 naming the exact `param`
//! at fault, as OpenAI does.

use serde::Serialize;
use serde_json::{Map, Value};

use super::tools::{
    parse_response_format, parse_tool_choice, parse_tools, ResponseFormat, ToolChoice, ToolSpec,
};
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
    /// The result of a tool call the model asked for.
    Tool,
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

/// A tool call the model made (in an assistant message).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToolCall {
    /// The call's id, as the gateway gave it to the client.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as a JSON text, canonical (see [`canonical_json`]) so that a client that
    /// re-serializes them still continues the same conversation.
    pub arguments: String,
}

/// `text` re-serialized compactly with sorted keys when it is JSON, else as it is.
pub fn canonical_json(text: &str) -> String {
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_string(), |v| v.to_string())
}

/// One validated chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// The author.
    pub role: Role,
    /// The content, in order (empty text parts of assistant messages are dropped, so that
    /// `content: ""` and `content: null` are the same message).
    pub parts: Vec<ContentPart>,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A tool message's call id.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A text-only message (an assistant's empty text is no part at all).
    pub fn text_only(role: Role, text: impl Into<String>) -> Message {
        let text = text.into();
        let parts = if role == Role::Assistant && text.is_empty() {
            Vec::new()
        } else {
            vec![ContentPart::Text(text)]
        };
        Message {
            role,
            parts,
            tool_calls: Vec::new(),
            tool_call_id: None,
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
    if !matches!(messages[last].role, Role::User | Role::Tool) {
        return Err(bad(
            "The last message must have role `user` (or `tool`, with the results of the model's tool calls).",
            format!("messages[{last}].role"),
        ));
    }
    check_tool_results(&messages)?;
    Ok(messages)
}

/// Every `tool` message answers a call of an earlier assistant message, once.
fn check_tool_results(messages: &[Message]) -> Result<(), ApiError> {
    let mut open: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        open.extend(m.tool_calls.iter().map(|c| c.id.as_str()));
        let Some(id) = &m.tool_call_id else { continue };
        match open.iter().position(|c| c == id) {
            Some(k) => {
                open.remove(k);
            }
            None => {
                return Err(bad(
                    format!("`tool_call_id` {id:?} does not answer any earlier assistant tool call (or answers it twice)."),
                    format!("messages[{i}].tool_call_id"),
                ))
            }
        }
    }
    Ok(())
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

fn parse_role(f: &Fields<'_>) -> Result<Role, ApiError> {
    let param = f.param("role");
    match f.get("role").and_then(Value::as_str) {
        Some("system") => Ok(Role::System),
        Some("developer") => Ok(Role::Developer),
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some("tool") => Ok(Role::Tool),
        Some("function") => Err(bad(
            "Messages with role `function` (the deprecated function-calling API) are not supported: use `tools` and `tool` messages.",
            param,
        )),
        Some(r) => Err(bad(
            format!("Invalid role `{r}`: expected one of system, developer, user, assistant, tool."),
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
    let tool_calls = match role {
        Role::Assistant => parse_tool_calls(&f)?,
        _ => Vec::new(),
    };
    let tool_call_id = match role {
        Role::Tool => Some(f.required_string("tool_call_id")?.to_string()),
        _ => None,
    };
    let mut parts = parse_content(&f, role)?;
    if role == Role::Assistant {
        parts.retain(|p| !matches!(p, ContentPart::Text(t) if t.is_empty()));
    }
    Ok(Message {
        role,
        parts,
        tool_calls,
        tool_call_id,
    })
}

/// `content`: a string or an array of parts; optional for assistant messages.
fn parse_content(f: &Fields<'_>, role: Role) -> Result<Vec<ContentPart>, ApiError> {
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
    Ok(parts)
}

/// An assistant message's `tool_calls`.
fn parse_tool_calls(f: &Fields<'_>) -> Result<Vec<ToolCall>, ApiError> {
    let Some(items) = f.array("tool_calls")? else {
        return Ok(Vec::new());
    };
    let mut calls = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let at = format!("{}[{j}]", f.param("tool_calls"));
        let obj = item
            .as_object()
            .ok_or_else(|| bad("Each tool call must be an object.", at.clone()))?;
        let cf = Fields::new(obj, &at);
        let id = cf.required_string("id")?.to_string();
        if cf.string("type")?.is_some_and(|t| t != "function") {
            return Err(bad(
                "Tool calls must have type `function`.",
                cf.param("type"),
            ));
        }
        let function_at = cf.param("function");
        let function = cf
            .object("function")?
            .ok_or_else(|| cf.missing("function"))?;
        let ff = Fields::new(function, &function_at);
        let name = ff.required_string("name")?.to_string();
        let arguments = canonical_json(ff.string("arguments")?.unwrap_or("{}"));
        calls.push(ToolCall {
            id,
            name,
            arguments,
        });
    }
    Ok(calls)
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
                "tools[0].function",
            ),
            (
                json!({"model": "m", "functions": [{"name": "f"}], "messages": user}),
                "functions",
            ),
            (
                json!({"model": "m", "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "call_1", "content": "r"}]}),
                "messages[1].tool_call_id",
            ),
            (
                json!({"model": "m", "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "content": "r"}]}),
                "messages[2].tool_call_id",
            ),
            (
                json!({"model": "m", "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "r"}]}),
                "messages[1].tool_calls[0].id",
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
        let loop_back = parse(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{ \"b\": 1, \"a\": 2 }"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "r"}]}]}))
        .unwrap();
        assert_eq!(
            loop_back.messages[1].tool_calls[0].arguments,
            r#"{"a":2,"b":1}"#
        );
        assert!(loop_back.messages[1].parts.is_empty());
        assert_eq!(loop_back.turns().count(), 3);
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
