//! What a run sends to OpenCode: the request checked against the model's abilities, and the
//! prompt body (parts, model, agent, system prompt, tool switches, variant).

use std::collections::BTreeMap;

use crate::catalog::ModelInfo;
use crate::config::PromptConfig;
use crate::error::ApiError;
use crate::openai::{ChatRequest, ContentPart, Message, Role};
use crate::opencode::{ModelRef, PartInput, PromptBody};
use crate::sessions::Seed;

/// Rejects what the model cannot take (images, an unknown reasoning effort) before anything
/// is created upstream: OpenCode would substitute an error text or fail late.
pub fn check_model(req: &ChatRequest, model: &ModelInfo) -> Result<(), ApiError> {
    if !model.image_input {
        if let Some(i) = req.messages.iter().position(Message::has_image) {
            return Err(ApiError::invalid(
                format!("The model `{}` does not accept image input.", req.model),
                Some(format!("messages[{i}].content")),
            ));
        }
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

/// The parts to send for `last`, given what the session already holds (`seed`).
pub fn parts(seed: Seed, prior: &[Message], last: &Message) -> Vec<PartInput> {
    match seed {
        Seed::LastOnly => message_parts(last),
        Seed::Full => seeded_parts(prior, last),
    }
}

/// The prompt body: `parts` for `model`, with the operator's agent and tool policy.
pub fn body(
    config: &PromptConfig,
    model: &ModelInfo,
    parts: Vec<PartInput>,
    system: Option<String>,
    variant: Option<String>,
) -> PromptBody {
    // Tools stay off unless the operator turned them on, whatever agent runs the prompt.
    let tools = (!config.tools_enabled).then(|| BTreeMap::from([("*".to_string(), false)]));
    PromptBody {
        parts,
        model: ModelRef {
            provider_id: model.provider_id.clone(),
            model_id: model.model_id.clone(),
        },
        agent: config.agent.clone(),
        system,
        tools,
        variant,
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

/// A new session gets the earlier turns as context, then the new message, in one model call.
fn seeded_parts(prior: &[Message], last: &Message) -> Vec<PartInput> {
    if prior.is_empty() {
        return message_parts(last);
    }
    let mut parts = vec![PartInput::Text {
        text: "The conversation so far, for context:".into(),
    }];
    for m in prior {
        let tag = if m.role == Role::Assistant {
            "assistant"
        } else {
            "user"
        };
        parts.push(PartInput::Text {
            text: format!("<{tag}>\n{}\n</{tag}>", m.text()),
        });
        parts.extend(
            message_parts(m)
                .into_iter()
                .filter(|p| matches!(p, PartInput::File { .. })),
        );
    }
    parts.push(PartInput::Text {
        text: "The user's new message:".into(),
    });
    parts.extend(message_parts(last));
    parts
}
