//! `POST /v1/responses` bodies: the validated request, its input items turned into the same
//! [`Message`]s chat completions use.
//!
//! Input items map onto messages: `message` items by role, a run of `function_call` items onto
//! one assistant message with tool calls, each `function_call_output` onto a `tool` message;
//! `reasoning` items are the model's own and are not sent back. What the gateway cannot honour
//! (hosted tools, background mode, stored prompts, conversations) is a 400 naming the field.

use serde_json::{Map, Value};

use super::chat_request::{canonical_json, ContentPart, Message, Role, ToolCall};
use super::tools::{is_function_name, parse_function, parse_json_schema_format};
use super::validate::{bad, image_data_url_mime, parse_object, type_name, Fields};
use super::{ResponseFormat, ToolChoice, ToolSpec};
use crate::error::ApiError;

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

/// `tools` in the Responses shape: `{"type":"function","name",…}` (flat).
fn parse_response_tools(f: &Fields<'_>) -> Result<(Vec<ToolSpec>, Vec<Value>), ApiError> {
    let Some(items) = f.array("tools")? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut tools: Vec<ToolSpec> = Vec::new();
    let mut echoed = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("tools[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| bad("Each tool must be an object.", at.clone()))?;
        let tf = Fields::new(obj, &at);
        match tf.string("type")? {
            Some("function") => {}
            Some(other) => {
                return Err(bad(
                    format!("Tools of type `{other}` are not supported; only `function` tools are (hosted tools run on OpenAI's servers)."),
                    tf.param("type"),
                ))
            }
            None => return Err(tf.missing("type")),
        }
        let spec = parse_function(obj, &at)?;
        if tools.iter().any(|t| t.name == spec.name) {
            return Err(bad(
                format!("Duplicate tool name `{}`.", spec.name),
                tf.param("name"),
            ));
        }
        echoed.push(serde_json::json!({
            "type": "function",
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
            "strict": spec.strict,
        }));
        tools.push(spec);
    }
    Ok((tools, echoed))
}

fn parse_response_tool_choice(
    f: &Fields<'_>,
    tools: &[ToolSpec],
) -> Result<(ToolChoice, Value), ApiError> {
    let param = "tool_choice";
    let choice = match f.get(param) {
        None => return Ok((ToolChoice::Auto, Value::String("auto".into()))),
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(
                    format!("Invalid `tool_choice` {other:?}: expected none, auto, required or a function."),
                    param,
                ))
            }
        },
        Some(Value::Object(o)) => match (o.get("type").and_then(Value::as_str), o.get("name").and_then(Value::as_str)) {
            (Some("function"), Some(name)) => ToolChoice::Function(name.to_string()),
            _ => {
                return Err(bad(
                    "`tool_choice` must be none, auto, required, or {\"type\":\"function\",\"name\":…}.",
                    param,
                ))
            }
        },
        Some(v) => return Err(f.wrong_type(param, "a string or an object", v)),
    };
    match &choice {
        ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => Err(bad(
            format!("`tool_choice` names the function `{name}`, which is not in `tools`."),
            param,
        )),
        ToolChoice::Required | ToolChoice::Function(_) if tools.is_empty() => Err(bad(
            "`tool_choice` requires a tool call, but no `tools` were given.",
            param,
        )),
        _ => Ok((choice, f.get(param).cloned().unwrap_or(Value::Null))),
    }
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

fn parse_reasoning(f: &Fields<'_>) -> Result<(Option<String>, Value), ApiError> {
    let Some(reasoning) = f.object("reasoning")? else {
        return Ok((None, Value::Null));
    };
    let rf = Fields::new(reasoning, "reasoning");
    let effort = rf.string("effort")?.map(String::from);
    rf.string("summary")?;
    Ok((effort, Value::Object(reasoning.clone())))
}

/// The input as messages, system text and normalized items.
#[derive(Default)]
struct Input {
    turns: Vec<Message>,
    system: Vec<String>,
    items: Vec<Value>,
    first_image: Option<String>,
}

fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn parse_input(f: &Fields<'_>) -> Result<Input, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ResponsesRequest, ApiError> {
        ResponsesRequest::parse(v.to_string().as_bytes())
    }

    fn param(v: Value) -> String {
        match parse(v).unwrap_err() {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn string_and_item_inputs() {
        let r = parse(json!({"model": "m", "input": "hi", "instructions": "be brief"})).unwrap();
        assert_eq!(r.turns.len(), 1);
        assert_eq!(r.system.as_deref(), Some("be brief"));
        assert!(r.store);
        let r = parse(json!({"model": "m", "input": [
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": [{"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,aGVsbG8="}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{ }"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"}
        ]}))
        .unwrap();
        assert_eq!(r.system.as_deref(), Some("dev"));
        assert_eq!(r.turns.len(), 3);
        assert_eq!(r.turns[1].tool_calls[0].arguments, "{}");
        assert_eq!(r.turns[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(r.first_image.as_deref(), Some("input[1].content[1]"));
        assert_eq!(r.input_items.len(), 4);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        for (body, at) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (
                json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"model": "m", "input": [{"type": "web_search_call"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
                "input[0].content[0].image_url",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
                "tools[0].name",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}),
                "text.format.name",
            ),
            (
                json!({"model": "m", "input": "x", "background": true}),
                "background",
            ),
            (
                json!({"model": "m", "input": "x", "metadata": {"k": 5}}),
                "metadata.k",
            ),
            (
                json!({"model": "m", "input": "x", "truncation": "sometimes"}),
                "truncation",
            ),
            (
                json!({"model": "m", "input": [{"role": "assistant", "content": "x"}]}),
                "input[0]",
            ),
        ] {
            assert_eq!(param(body.clone()), at, "{body}");
        }
    }
}
