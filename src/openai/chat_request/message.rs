//! The conversation model both request formats parse into: a [`Message`] with its [`Role`],
//! content parts and tool calls. Chat Completions' `messages` and the Responses API's `input`
//! items both become these, so the core sees one shape.

use serde::Serialize;
use serde_json::Value;

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
