//! Structured outputs on an OpenCode that has none (2.x): the answer comes as a tool call.
//!
//! OpenCode 1.18 takes a JSON schema with the prompt and answers through its own
//! `StructuredOutput` tool; 2.x dropped that. So the gateway offers the model one more tool on
//! the run's MCP slot — [`ANSWER_TOOL`], whose input schema is the requested schema — allows it
//! for the turn, and tells the model to give its final answer by calling it. The call's
//! arguments are the answer: the run answers the call at once, checks the value against the
//! client's schema (as for 1.18's answer, in the adapter), ends the response there, and
//! interrupts OpenCode, which would otherwise let the model go on after the tool's result. A
//! model that answers in text instead gets the client a clear error, never unchecked text.
//!
//! A schema whose top is not an object (MCP tool inputs must be objects) is wrapped as the
//! property `value` of one, and unwrapped from the call.

use serde_json::{json, Value};

use crate::openai::ToolSpec;

/// The answer tool's name on the slot (OpenCode shows it as `<slot>_StructuredOutput`, the
/// same name as 1.18's own tool).
pub const ANSWER_TOOL: &str = "StructuredOutput";

/// The answer tool of one run.
#[derive(Debug, Clone)]
pub struct AnswerTool {
    /// Whether the client's schema was wrapped as `{value: …}`.
    wrapped: bool,
    spec: ToolSpec,
}

impl AnswerTool {
    /// The tool for answers following `schema`.
    pub fn new(schema: &Value) -> AnswerTool {
        let is_object = schema.get("type").and_then(Value::as_str) == Some("object");
        let parameters = match is_object {
            // An open object (`json_object`): said explicitly, or 2.x's check of the
            // arguments allows no property at all.
            true if schema.get("properties").is_none()
                && schema.get("additionalProperties").is_none() =>
            {
                let mut open = schema.clone();
                open["additionalProperties"] = json!(true);
                open
            }
            true => schema.clone(),
            false => {
                json!({"type": "object", "properties": {"value": schema}, "required": ["value"]})
            }
        };
        AnswerTool {
            wrapped: !is_object,
            spec: ToolSpec {
                name: ANSWER_TOOL.into(),
                description: Some(
                    "Give your final answer by calling this tool, with the answer as its arguments. Call it once, when you are done; do not answer in text.".into(),
                ),
                parameters,
                strict: true,
            },
        }
    }

    /// The tool as the slot serves it.
    pub fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// The answer in a call's arguments.
    pub fn answer(&self, arguments: Value) -> Value {
        match self.wrapped {
            true => arguments.get("value").cloned().unwrap_or(Value::Null),
            false => arguments,
        }
    }

    /// What the model is told, `visible` being the tool's name as OpenCode offers it.
    pub fn instruction(visible: &str) -> String {
        format!("When you are done, give your final answer by calling the tool `{visible}` with it as the arguments, and answer nothing in text.")
    }

    /// Whether a tool name (as OpenCode reports it: `<slot>_<tool>`) is the answer tool.
    pub fn is_answer_tool(name: &str) -> bool {
        name.strip_suffix(ANSWER_TOOL)
            .is_some_and(|slot| slot.ends_with('_'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_schemas_are_the_input_and_others_are_wrapped() {
        let object = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let tool = AnswerTool::new(&object);
        assert_eq!(tool.spec().parameters, object);
        let open = AnswerTool::new(&json!({"type": "object"}));
        assert_eq!(
            open.spec().parameters,
            json!({"type": "object", "additionalProperties": true})
        );
        assert_eq!(tool.answer(json!({"a": 1})), json!({"a": 1}));
        let list = json!({"type": "array", "items": {"type": "string"}});
        let tool = AnswerTool::new(&list);
        assert_eq!(tool.spec().parameters["properties"]["value"], list);
        assert_eq!(tool.answer(json!({"value": ["x"]})), json!(["x"]));
        assert!(AnswerTool::is_answer_tool("ptk1_StructuredOutput"));
        assert!(!AnswerTool::is_answer_tool("StructuredOutput"));
        assert!(!AnswerTool::is_answer_tool("ptk1_get_weather"));
    }
}
