//! Function calling and structured output on the request side: `tools`, `tool_choice`,
//! `parallel_tool_calls`, `response_format`. Shared by chat completions and (in their own
//! shapes) the Responses API.

use serde_json::{Map, Value};

use super::validate::{bad, Fields};
use crate::error::ApiError;

/// One client-defined function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The client's own name (`^[a-zA-Z0-9_-]{1,64}$`).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// JSON Schema of its arguments (an object schema).
    pub parameters: Value,
    /// `strict`: the client asks for arguments that follow the schema exactly.
    pub strict: bool,
}

/// Which tools the model may or must call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// No tool: answer in text.
    None,
    /// The model decides (the default when tools are given).
    #[default]
    Auto,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Function(String),
}

/// The shape of the answer.
#[derive(Debug, Clone, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following `schema`.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The JSON Schema.
        schema: Value,
        /// `strict`.
        strict: bool,
    },
}

impl ResponseFormat {
    /// The JSON Schema the answer must follow, if any (`json_object` is any object).
    pub fn schema(&self) -> Option<Value> {
        match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(serde_json::json!({"type": "object"})),
            ResponseFormat::JsonSchema { schema, .. } => Some(schema.clone()),
        }
    }
}

/// Whether `name` is a valid function name (OpenAI's rule).
pub fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses `tools` (chat-completions shape: `{"type":"function","function":{…}}`).
pub fn parse_tools(f: &Fields<'_>) -> Result<Vec<ToolSpec>, ApiError> {
    let Some(items) = f.array("tools")? else {
        return Ok(Vec::new());
    };
    let mut tools: Vec<ToolSpec> = Vec::with_capacity(items.len());
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
                    format!("Tools of type `{other}` are not supported; use `function`."),
                    tf.param("type"),
                ))
            }
            None => return Err(tf.missing("type")),
        }
        let function_at = tf.param("function");
        let function = tf
            .object("function")?
            .ok_or_else(|| tf.missing("function"))?;
        let spec = parse_function(function, &function_at)?;
        if tools.iter().any(|t| t.name == spec.name) {
            return Err(bad(
                format!("Duplicate tool name `{}`.", spec.name),
                format!("{function_at}.name"),
            ));
        }
        tools.push(spec);
    }
    Ok(tools)
}

/// Parses one function definition (`{name, description?, parameters?, strict?}`) found at `at`.
pub fn parse_function(obj: &Map<String, Value>, at: &str) -> Result<ToolSpec, ApiError> {
    let f = Fields::new(obj, at);
    let name = f.string("name")?.ok_or_else(|| f.missing("name"))?;
    if !is_function_name(name) {
        return Err(bad(
            "A function name must be 1 to 64 letters, digits, underscores or dashes.",
            f.param("name"),
        ));
    }
    let description = f.string("description")?.map(String::from);
    let parameters = match f.object("parameters")? {
        None => serde_json::json!({"type": "object", "properties": {}}),
        Some(schema) => {
            check_object_schema(schema, &f.param("parameters"))?;
            Value::Object(schema.clone())
        }
    };
    let strict = f.bool("strict")?.unwrap_or(false);
    Ok(ToolSpec {
        name: name.to_string(),
        description,
        parameters,
        strict,
    })
}

/// A tool's `parameters` must describe an object (MCP tools take an object of arguments) and
/// be a schema a validator can compile.
fn check_object_schema(schema: &Map<String, Value>, param: &str) -> Result<(), ApiError> {
    match schema.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(_) => {
            return Err(bad(
                "`parameters` must be a JSON Schema of type `object`.",
                param,
            ))
        }
    }
    compile_schema(&Value::Object(schema.clone()), param).map(|_| ())
}

/// Checks a client's JSON Schema against the gateway's bounds and compiles it, or a 400 naming
/// `param` (see [`super::schema`]).
pub fn compile_schema(schema: &Value, param: &str) -> Result<super::schema::Checked, ApiError> {
    super::schema::compile(schema, param)
}

/// Parses `tool_choice` against the declared `tools`.
pub fn parse_tool_choice(f: &Fields<'_>, tools: &[ToolSpec]) -> Result<ToolChoice, ApiError> {
    let param = f.param("tool_choice");
    let choice = match f.get("tool_choice") {
        None => return Ok(ToolChoice::default()),
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(
                    format!(
                    "Invalid `tool_choice` {other:?}: expected none, auto, required or a function."
                ),
                    param,
                ))
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => ToolChoice::Function(name.to_string()),
                _ => {
                    return Err(bad(
                        "`tool_choice` must be none, auto, required, or {\"type\":\"function\",\"function\":{\"name\":…}}.",
                        param,
                    ))
                }
            }
        }
        Some(v) => return Err(f.wrong_type("tool_choice", "a string or an object", v)),
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
        _ => Ok(choice),
    }
}

/// Parses `response_format` (chat-completions shape).
pub fn parse_response_format(f: &Fields<'_>) -> Result<ResponseFormat, ApiError> {
    let Some(obj) = f.object("response_format")? else {
        return Ok(ResponseFormat::Text);
    };
    let rf = Fields::new(obj, "response_format");
    match rf.string("type")? {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let inner = rf
                .object("json_schema")?
                .ok_or_else(|| rf.missing("json_schema"))?;
            parse_json_schema_format(inner, "response_format.json_schema")
        }
        Some(other) => Err(bad(
            format!("Unsupported `response_format.type` {other:?}: expected text, json_object or json_schema."),
            "response_format.type",
        )),
        None => Err(rf.missing("type")),
    }
}

/// `{name, schema, strict?, description?}` of a `json_schema` format found at `at`.
pub fn parse_json_schema_format(
    obj: &Map<String, Value>,
    at: &str,
) -> Result<ResponseFormat, ApiError> {
    let f = Fields::new(obj, at);
    let name = f.string("name")?.ok_or_else(|| f.missing("name"))?;
    if !is_function_name(name) {
        return Err(bad(
            "A schema name must be 1 to 64 letters, digits, underscores or dashes.",
            f.param("name"),
        ));
    }
    let schema = f.object("schema")?.ok_or_else(|| f.missing("schema"))?;
    let schema = Value::Object(schema.clone());
    compile_schema(&schema, &f.param("schema"))?;
    Ok(ResponseFormat::JsonSchema {
        name: name.to_string(),
        schema,
        strict: f.bool("strict")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: &Value) -> Fields<'_> {
        Fields::new(v.as_object().unwrap(), "")
    }

    fn param(e: ApiError) -> String {
        match e {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn tools_parse_and_bad_ones_name_the_field() {
        let v = json!({"tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": true}}]});
        let tools = parse_tools(&fields(&v)).unwrap();
        assert_eq!(tools[0].name, "get_weather");
        assert!(tools[0].strict);
        for (body, at) in [
            (
                json!({"tools": [{"type": "function", "function": {}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "string"}}}]}),
                "tools[0].function.parameters",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": 5}}}]}),
                "tools[0].function.parameters",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]}),
                "tools[1].function.name",
            ),
            (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
            (json!({"tools": {}}), "tools"),
        ] {
            assert_eq!(
                param(parse_tools(&fields(&body)).unwrap_err()),
                at,
                "{body}"
            );
        }
    }

    #[test]
    fn tool_choice_must_name_a_declared_tool() {
        let v = json!({"tools": [{"type": "function", "function": {"name": "f"}}]});
        let tools = parse_tools(&fields(&v)).unwrap();
        let choice = |c: Value| parse_tool_choice(&fields(&json!({"tool_choice": c})), &tools);
        assert_eq!(choice(json!("none")).unwrap(), ToolChoice::None);
        assert_eq!(choice(json!("required")).unwrap(), ToolChoice::Required);
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "f"}})).unwrap(),
            ToolChoice::Function("f".into())
        );
        for bad in [
            json!({"type": "function", "function": {"name": "g"}}),
            json!("sometimes"),
            json!(3),
        ] {
            assert_eq!(param(choice(bad).unwrap_err()), "tool_choice");
        }
        let none = parse_tool_choice(&fields(&json!({"tool_choice": "required"})), &[]);
        assert_eq!(param(none.unwrap_err()), "tool_choice");
    }

    #[test]
    fn response_formats() {
        let rf = |v: Value| parse_response_format(&fields(&json!({ "response_format": v })));
        assert!(matches!(
            rf(json!({"type": "text"})).unwrap(),
            ResponseFormat::Text
        ));
        assert!(matches!(
            rf(json!({"type": "json_object"})).unwrap(),
            ResponseFormat::JsonObject
        ));
        let s = rf(
            json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": true}}),
        );
        assert!(matches!(
            s.unwrap(),
            ResponseFormat::JsonSchema { strict: true, .. }
        ));
        for (v, at) in [
            (
                json!({"type": "json_schema"}),
                "response_format.json_schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": {}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "n"}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "nope"}}}),
                "response_format.json_schema.schema",
            ),
            (json!({"type": "yaml"}), "response_format.type"),
        ] {
            assert_eq!(param(rf(v.clone()).unwrap_err()), at, "{v}");
        }
    }
}
