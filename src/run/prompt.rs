//! What a run sends to OpenCode: the request checked against the model's abilities, and the
//! prompt body (parts, model, agent, system prompt, tool switches, variant, output format).

use crate::catalog::ModelInfo;
use crate::client_tools::slots::{SlotLease, SLOT_PREFIX};
use crate::error::ApiError;
use crate::openai::{ContentPart, Message, Role, ToolChoice};
use crate::opencode::{ModelRef, PartInput, Prompt, ToolSwitches};
use crate::sessions::Seed;

use super::answer_tool::{AnswerTool, ANSWER_TOOL};
use super::placement::Placement;
use super::request::RunRequest;

/// Rejects what the model cannot take (images, an unknown reasoning effort) before anything
/// is created upstream: OpenCode would substitute an error text or fail late.
pub fn check_model(req: &RunRequest, model: &ModelInfo) -> Result<(), ApiError> {
    if let (false, Some(param)) = (model.image_input, &req.first_image) {
        return Err(ApiError::invalid(
            format!("The model `{}` does not accept image input.", req.model),
            Some(param.clone()),
        ));
    }
    let Some(effort) = &req.reasoning_effort else {
        return Ok(());
    };
    if model.variants.contains(effort) {
        return Ok(());
    }
    let message = if model.variants.is_empty() {
        format!(
            "The model `{}` does not support `reasoning_effort`.",
            req.model
        )
    } else {
        format!(
            "Unsupported `reasoning_effort` {effort:?} for `{}`: expected one of {}.",
            req.model,
            model.variants.join(", ")
        )
    };
    Err(ApiError::invalid(message, Some("reasoning_effort".into())))
}

/// The parts to send for the `new` messages, given what the session already holds (`seed`).
pub fn parts(seed: Seed, prior: &[Message], new: &[Message]) -> Vec<PartInput> {
    match seed {
        Seed::NewTurnOnly => new_parts(new),
        Seed::WholeHistory if prior.is_empty() => new_parts(new),
        Seed::WholeHistory => seeded_parts(prior, new),
    }
}

/// The tools a run offers through its MCP slot: the client's, and the gateway's answer tool
/// (structured output where OpenCode has none, see `answer_tool`).
#[derive(Clone, Copy)]
pub struct Offer<'a> {
    /// The run's slot, when it has one.
    pub slot: Option<&'a SlotLease>,
    /// Whether the slot serves the answer tool.
    pub answer_tool: bool,
}

/// The prompt body for `parts`: the run's agent and tool policy, the tools it offers (on its
/// slot) and output format.
pub fn body(
    model: &ModelInfo,
    parts: Vec<PartInput>,
    req: &RunRequest,
    placement: &Placement,
    offer: Offer<'_>,
) -> Prompt {
    let Offer { slot, answer_tool } = offer;
    let mut system = req.system.clone();
    let mut tools = ToolSwitches::default();
    // OpenCode's own tools stay off unless the operator turned them on (for the key, or for
    // everyone), whatever agent runs the prompt; other runs' client tools are never offered.
    if placement.tools {
        tools.set(format!("{SLOT_PREFIX}*"), false);
    } else {
        tools.set("*", false);
    }
    if let Some(slot) = slot {
        let mut instructions = Vec::new();
        if req.offers_tools() {
            instructions.extend(allow_client_tools(&mut tools, slot, &req.tool_choice));
        }
        if answer_tool {
            let visible = format!("{}_{ANSWER_TOOL}", slot.name);
            tools.set(visible.clone(), true);
            instructions.push(AnswerTool::instruction(&visible));
        }
        for instruction in instructions {
            system = Some(match system {
                Some(s) => format!("{s}\n\n{instruction}"),
                None => instruction,
            });
        }
    }
    Prompt {
        parts,
        model: ModelRef {
            provider_id: model.provider_id.clone(),
            model_id: model.model_id.clone(),
        },
        agent: placement.agent.clone(),
        system,
        tools,
        variant: req.reasoning_effort.clone(),
        // Asked of OpenCode only when it answers in a schema itself.
        output_schema: req.response_format.schema().filter(|_| !answer_tool),
    }
}

/// Allows the slot's tools as `choice` says; returns the instruction that stands in for a
/// forced choice (OpenCode has no per-prompt `tool_choice`).
fn allow_client_tools(
    tools: &mut ToolSwitches,
    slot: &SlotLease,
    choice: &ToolChoice,
) -> Option<String> {
    match choice {
        ToolChoice::None => None,
        ToolChoice::Auto => {
            tools.set(format!("{}_*", slot.name), true);
            None
        }
        ToolChoice::Required => {
            tools.set(format!("{}_*", slot.name), true);
            Some("You must call at least one of the available tools before you answer.".into())
        }
        ToolChoice::Function(name) => {
            let mcp = slot.mcp_name(name).unwrap_or(name);
            let visible = format!("{}_{mcp}", slot.name);
            tools.set(visible.clone(), true);
            Some(format!(
                "You must call the tool `{visible}` before you answer."
            ))
        }
    }
}

fn message_parts(m: &Message) -> Vec<PartInput> {
    m.parts
        .iter()
        .map(|p| match p {
            ContentPart::Text(t) => PartInput::Text { text: t.clone() },
            ContentPart::Image { mime, url } => PartInput::File {
                mime: mime.clone(),
                url: url.clone(),
            },
        })
        .collect()
}

/// The new messages as parts: the user's message, or tool results written out (for a session
/// whose run that asked for them is gone).
fn new_parts(new: &[Message]) -> Vec<PartInput> {
    if new.iter().all(|m| m.role == Role::Tool) {
        let mut text = String::from("The results of the tool calls you made:");
        for r in new {
            text.push('\n');
            text.push_str(&render(r));
        }
        return vec![PartInput::Text { text }];
    }
    // Usually one user message; a Responses input may add several items at once.
    new.iter()
        .flat_map(|m| match m.role {
            Role::User => message_parts(m),
            _ => vec![PartInput::Text { text: render(m) }],
        })
        .collect()
}

/// One earlier message written out for a seeded history.
fn render(m: &Message) -> String {
    match m.role {
        Role::Assistant => {
            let mut out = format!("<assistant>\n{}", m.text());
            for c in &m.tool_calls {
                out.push_str(&format!(
                    "\n<tool_call id=\"{}\" name=\"{}\">{}</tool_call>",
                    c.id, c.name, c.arguments
                ));
            }
            out.push_str("\n</assistant>");
            out
        }
        Role::Tool => format!(
            "<tool_result id=\"{}\">\n{}\n</tool_result>",
            m.tool_call_id.as_deref().unwrap_or_default(),
            m.text()
        ),
        _ => format!("<user>\n{}\n</user>", m.text()),
    }
}

/// A new session gets the earlier turns as context, then the new messages, in one model call.
fn seeded_parts(prior: &[Message], new: &[Message]) -> Vec<PartInput> {
    let mut parts = vec![PartInput::Text {
        text: "The conversation so far, for context:".into(),
    }];
    for m in prior {
        parts.push(PartInput::Text { text: render(m) });
        parts.extend(
            message_parts(m)
                .into_iter()
                .filter(|p| matches!(p, PartInput::File { .. })),
        );
    }
    if new.first().is_some_and(|m| m.role != Role::Tool) {
        parts.push(PartInput::Text {
            text: "The user's new message:".into(),
        });
    }
    parts.extend(new_parts(new));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::ToolCall;

    #[test]
    fn a_seeded_history_writes_out_tool_calls_and_results() {
        let mut assistant = Message::text_only(Role::Assistant, "let me look");
        assistant.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        let result = Message {
            role: Role::Tool,
            parts: vec![ContentPart::Text("sunny".into())],
            tool_calls: Vec::new(),
            tool_call_id: Some("call_1".into()),
        };
        let prior = [Message::text_only(Role::User, "weather?"), assistant];
        let texts: Vec<String> = parts(Seed::WholeHistory, &prior, &[result])
            .into_iter()
            .filter_map(|p| match p {
                PartInput::Text { text } => Some(text),
                PartInput::File { .. } => None,
            })
            .collect();
        let all = texts.join("\n");
        assert!(all.contains("<user>\nweather?\n</user>"), "{all}");
        assert!(
            all.contains(
                r#"<tool_call id="call_1" name="get_weather">{"city":"Paris"}</tool_call>"#
            ),
            "{all}"
        );
        assert!(
            all.contains("<tool_result id=\"call_1\">\nsunny\n</tool_result>"),
            "{all}"
        );
        assert!(!all.contains("The user's new message"), "{all}");
    }
}
