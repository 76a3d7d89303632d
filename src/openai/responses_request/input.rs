//! The Responses API's `input`, turned into the same [`Message`]s chat completions use: a run of
//! `function_call` items onto one assistant message with tool calls, each
//! `function_call_output` onto a `tool` message, system and developer items into the system
//! text, `reasoning` items dropped; and every item normalized with an id for `input_items`.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::chat_request::{canonical_json, ContentPart, Message, Role, ToolCall};
use crate::openai::tools::is_function_name;
use crate::openai::validate::{bad, image_data_url_mime, type_name, Fields};

/// The input as messages, system text and normalized items.
#[derive(Default)]
pub(super) struct Input {
    pub(super) turns: Vec<Message>,
    pub(super) system: Vec<String>,
    pub(super) items: Vec<Value>,
    pub(super) first_image: Option<String>,
}

/// A fresh item id with OpenAI's `prefix` (`msg`, `fc`, `fco`).
fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// `input`: a string (one user message) or an array of items; the last one the user's or a
/// function call output.
pub(super) fn parse_input(f: &Fields<'_>) -> Result<Input, ApiError> {
    let mut input = Input::default();
    match f.get("input") {
        None => return Err(f.missing("input")),
        Some(Value::String(text)) => {
            if text.is_empty() {
                return Err(bad("`input` must not be empty.", "input"));
            }
            input
                .turns
                .push(Message::text_only(Role::User, text.clone()));
            input.items.push(serde_json::json!({
                "id": item_id("msg"), "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_text", "text": text}],
            }));
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(bad("`input` must not be empty.", "input"));
            }
            for (i, item) in items.iter().enumerate() {
                parse_item(&mut input, i, item)?;
            }
        }
        Some(v) => return Err(f.wrong_type("input", "a string or an array of items", v)),
    }
    if let Some(last) = input.turns.last() {
        if !matches!(last.role, Role::User | Role::Tool) {
            return Err(bad(
                "The last input item must be a user message or a function call output.",
                format!("input[{}]", input.items.len().saturating_sub(1)),
            ));
        }
    }
    Ok(input)
}

/// One input item, at index `i`: a message, a function call or its output, or reasoning.
fn parse_item(input: &mut Input, i: usize, item: &Value) -> Result<(), ApiError> {
    let at = format!("input[{i}]");
    let Value::Object(obj) = item else {
        return Err(bad(
            format!(
                "Each input item must be an object, not {}.",
                type_name(item)
            ),
            at,
        ));
    };
    let f = Fields::new(obj, &at);
    let kind = f.string("type")?.unwrap_or("message");
    match kind {
        "message" => parse_message_item(input, &f, obj),
        "function_call" => {
            let call_id = f.required_string("call_id")?.to_string();
            let name = f.required_string("name")?;
            if !is_function_name(name) {
                return Err(bad("Invalid function name.", f.param("name")));
            }
            let arguments = canonical_json(f.string("arguments")?.unwrap_or("{}"));
            let call = ToolCall {
                id: call_id.clone(),
                name: name.to_string(),
                arguments: arguments.clone(),
            };
            // Consecutive calls (and the text before them) are one assistant turn.
            match input.turns.last_mut() {
                Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                _ => {
                    let mut m = Message::text_only(Role::Assistant, "");
                    m.tool_calls.push(call);
                    input.turns.push(m);
                }
            }
            input.items.push(serde_json::json!({
                "id": f.string("id")?.map_or_else(|| item_id("fc"), String::from),
                "type": "function_call", "call_id": call_id, "name": name,
                "arguments": arguments, "status": "completed",
            }));
            Ok(())
        }
        "function_call_output" => {
            let call_id = f.required_string("call_id")?.to_string();
            let output = match f.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => output_text(parts, &f.param("output"))?,
                None => return Err(f.missing("output")),
                Some(v) => return Err(f.wrong_type("output", "a string or an array", v)),
            };
            input.turns.push(Message {
                role: Role::Tool,
                parts: vec![ContentPart::Text(output.clone())],
                tool_calls: Vec::new(),
                tool_call_id: Some(call_id.clone()),
            });
            input.items.push(serde_json::json!({
                "id": f.string("id")?.map_or_else(|| item_id("fco"), String::from),
                "type": "function_call_output", "call_id": call_id, "output": output,
                "status": "completed",
            }));
            Ok(())
        }
        // The model's own reasoning from an earlier turn: not sent back.
        "reasoning" => Ok(()),
        other => Err(bad(
            format!("Input items of type `{other}` are not supported."),
            f.param("type"),
        )),
    }
}

/// The text of a `function_call_output` given as content parts.
fn output_text(parts: &[Value], at: &str) -> Result<String, ApiError> {
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match (p["type"].as_str(), p["text"].as_str()) {
            (Some("input_text" | "output_text"), Some(t)) => out.push(t.to_string()),
            _ => {
                return Err(bad(
                    "Only text parts are supported in a function call output.",
                    format!("{at}[{j}]"),
                ))
            }
        }
    }
    Ok(out.join("\n"))
}

/// A `message` item: by role onto a turn (user, assistant) or the system text.
fn parse_message_item(
    input: &mut Input,
    f: &Fields<'_>,
    obj: &Map<String, Value>,
) -> Result<(), ApiError> {
    let role = match f.string("role")? {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some(other) => {
            return Err(bad(
                format!("Invalid role `{other}`: expected user, assistant, system or developer."),
                f.param("role"),
            ))
        }
        None => return Err(f.missing("role")),
    };
    let content_at = f.param("content");
    let mut parts = Vec::new();
    let mut items = Vec::new();
    match f.get("content") {
        Some(Value::String(s)) => {
            parts.push(ContentPart::Text(s.clone()));
            let kind = if role == Role::Assistant {
                "output_text"
            } else {
                "input_text"
            };
            items.push(text_item(kind, s));
        }
        Some(Value::Array(list)) => {
            for (j, p) in list.iter().enumerate() {
                let part_at = format!("{content_at}[{j}]");
                let (part, item) = parse_content_part(role, p, &part_at)?;
                if matches!(part, ContentPart::Image { .. }) && input.first_image.is_none() {
                    input.first_image = Some(part_at);
                }
                parts.push(part);
                items.push(item);
            }
        }
        None => return Err(f.missing("content")),
        Some(v) => return Err(f.wrong_type("content", "a string or an array of parts", v)),
    }
    let id = f.string("id")?.map_or_else(|| item_id("msg"), String::from);
    input.items.push(serde_json::json!({
        "id": id, "type": "message", "role": obj.get("role"), "status": "completed", "content": items,
    }));
    match role {
        Role::System | Role::Developer => {
            let text: Vec<String> = parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text(t) => Some(t.clone()),
                    ContentPart::Image { .. } => None,
                })
                .collect();
            input.system.push(text.join("\n"));
        }
        _ => {
            if role == Role::User && parts.is_empty() {
                return Err(bad("A user message must not be empty.", content_at));
            }
            let mut m = Message::text_only(role, "");
            m.parts = parts;
            if role == Role::Assistant {
                m.parts
                    .retain(|p| !matches!(p, ContentPart::Text(t) if t.is_empty()));
            }
            input.turns.push(m);
        }
    }
    Ok(())
}

/// A text part as `input_items` lists it: `output_text` with the `annotations` and `logprobs`
/// OpenAI's schema requires of it.
fn text_item(kind: &str, text: &str) -> Value {
    if kind == "output_text" {
        serde_json::json!({"type": kind, "text": text, "annotations": [], "logprobs": []})
    } else {
        serde_json::json!({"type": kind, "text": text})
    }
}

/// One part of a message item's content, as a [`ContentPart`] and as `input_items` lists it.
fn parse_content_part(role: Role, p: &Value, at: &str) -> Result<(ContentPart, Value), ApiError> {
    let Value::Object(obj) = p else {
        return Err(bad("Each content part must be an object.", at));
    };
    let f = Fields::new(obj, at);
    match f.string("type")? {
        Some(kind @ ("input_text" | "output_text")) => {
            let text = f.string("text")?.ok_or_else(|| f.missing("text"))?;
            Ok((ContentPart::Text(text.to_string()), text_item(kind, text)))
        }
        Some("input_image") if role == Role::User => {
            if f.get("file_id").is_some() {
                return Err(bad(
                    "Images by `file_id` are not supported; send a base64 data URL.",
                    f.param("file_id"),
                ));
            }
            let url = f
                .string("image_url")?
                .ok_or_else(|| f.missing("image_url"))?;
            let mime = image_data_url_mime(url)
                .map_err(|why| bad(format!("Invalid image URL: {why}."), f.param("image_url")))?;
            let detail = f.string("detail")?.unwrap_or("auto");
            Ok((
                ContentPart::Image {
                    mime,
                    url: url.to_string(),
                },
                serde_json::json!({"type": "input_image", "image_url": url, "detail": detail}),
            ))
        }
        Some(other) => Err(bad(
            format!("Content parts of type `{other}` are not supported here."),
            f.param("type"),
        )),
        None => Err(f.missing("type")),
    }
}
