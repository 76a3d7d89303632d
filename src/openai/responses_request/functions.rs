//! The client's functions in the Responses shape: `tools` (flat `{"type":"function","name",…}`,
//! hosted tools refused) and `tool_choice`, each also kept as given for the response. The
//! shared function parsing lives in [`crate::openai::tools`].

use serde_json::Value;

use crate::error::ApiError;
use crate::openai::tools::parse_function;
use crate::openai::validate::{bad, Fields};
use crate::openai::{ToolChoice, ToolSpec};

/// `tools` in the Responses shape: `{"type":"function","name",…}` (flat).
pub(super) fn parse_response_tools(
    f: &Fields<'_>,
) -> Result<(Vec<ToolSpec>, Vec<Value>), ApiError> {
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

/// `tool_choice` in the Responses shape (`{"type":"function","name"}`, flat), checked against
/// `tools`; with the value as given, for the response.
pub(super) fn parse_response_tool_choice(
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
