//! Parsing Chat Completions' `messages`: each message's role, content parts and tool calls, and
//! the rules across messages (the last one is the user's or a tool's, every tool result answers
//! an earlier call once). The rest of the body is parsed in the parent module.

use serde_json::Value;

use super::{canonical_json, ContentPart, Message, Role, ToolCall};
use crate::error::ApiError;
use crate::openai::validate::{bad, image_data_url_mime, type_name, Fields};

/// `messages`: present, not empty, each valid, the last one the user's.
pub(super) fn parse_messages(f: &Fields<'_>) -> Result<Vec<Message>, ApiError> {
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

/// A message's `role` (the deprecated `function` role refused by name).
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

/// One message of `messages`, at index `i`.
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

/// One part of an array `content` (`None`: a part that is dropped, an assistant's refusal).
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

/// An `image_url` part: a `data:` URL of an image.
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
