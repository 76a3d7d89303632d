//! OpenCode's wire types: what the gateway sends to and reads from `opencode serve`.
//!
//! Only the fields the gateway uses are modelled; everything else is ignored on read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /global/health`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Health {
    /// Always true when it answers.
    pub healthy: bool,
    /// OpenCode's version.
    #[serde(default)]
    pub version: Option<String>,
    /// The server API it speaks (known from which health call answered).
    #[serde(skip)]
    pub api: super::Api,
}

/// `GET /config/providers`.
#[derive(Debug, Clone, Deserialize)]
pub struct Providers {
    /// Usable providers.
    pub providers: Vec<Provider>,
}

/// One provider of `GET /config/providers`.
#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    /// e.g. `anthropic`.
    pub id: String,
    /// Its models by id.
    #[serde(default)]
    pub models: BTreeMap<String, ProviderModel>,
}

/// One model of a provider.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderModel {
    /// Model id within the provider.
    pub id: String,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// `YYYY-MM-DD`, when known.
    #[serde(default)]
    pub release_date: Option<String>,
    /// Reasoning-effort variants by name (`low`, `high`, …); empty when the model has none.
    #[serde(default)]
    pub variants: BTreeMap<String, Value>,
}

/// `capabilities` of a model.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Capabilities {
    /// Exposes reasoning.
    #[serde(default)]
    pub reasoning: bool,
    /// Accepted inputs.
    #[serde(default)]
    pub input: Option<InputCapabilities>,
}

/// `capabilities.input`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InputCapabilities {
    /// Accepts images.
    #[serde(default)]
    pub image: bool,
}

/// An OpenCode session.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Session {
    /// `ses_…`.
    pub id: String,
    /// Its title.
    #[serde(default)]
    pub title: Option<String>,
    /// The session it was forked from / is a child of.
    #[serde(default, rename = "parentID", skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// The project directory it lives in (requests about it go to that directory's instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// `{created, updated}` in epoch milliseconds.
    #[serde(default)]
    pub time: Option<Value>,
    /// Free-form metadata; the gateway marks what it creates (`{"portatek":{"create":…}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Session {
    /// Last update time in epoch milliseconds (0 when unknown).
    pub fn updated_ms(&self) -> u64 {
        self.time
            .as_ref()
            .and_then(|t| t.get("updated"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// The marker the gateway put in the session's metadata when creating it.
    pub fn creation_marker(&self) -> Option<&str> {
        self.metadata
            .as_ref()?
            .pointer("/portatek/create")
            .and_then(Value::as_str)
    }

    /// Creation time in Unix seconds (0 when unknown).
    pub fn created_secs(&self) -> u64 {
        self.time
            .as_ref()
            .and_then(|t| t.get("created"))
            .and_then(Value::as_u64)
            .map_or(0, |ms| ms / 1000)
    }
}

/// `{providerID, modelID}` of a prompt.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModelRef {
    /// Provider id.
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// Model id within the provider.
    #[serde(rename = "modelID")]
    pub model_id: String,
}

/// One input part of a prompt.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PartInput {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A file (images as `data:` URLs).
    File {
        /// MIME type.
        mime: String,
        /// `data:` URL.
        url: String,
    },
}

/// What a run asks of OpenCode: the new turn (text and files), the model, the agent, the
/// system text, which tools are allowed, the reasoning variant and the output schema. How it
/// travels is the protocol's business (1.18: [`PromptBody`]).
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The user message.
    pub parts: Vec<PartInput>,
    /// The model (persists on the session).
    pub model: ModelRef,
    /// Agent to run.
    pub agent: Option<String>,
    /// Extra system prompt.
    pub system: Option<String>,
    /// Which tools are allowed, in order (the last matching rule wins).
    pub tools: ToolSwitches,
    /// Reasoning effort.
    pub variant: Option<String>,
    /// A JSON Schema the answer must follow (structured output).
    pub output_schema: Option<Value>,
}

/// Body of `POST /session/:id/prompt_async`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PromptBody {
    /// The user message.
    pub parts: Vec<PartInput>,
    /// Always sent (it persists on the session).
    pub model: ModelRef,
    /// Agent to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Extra system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Tool switches (`{"*": false}` turns all off).
    #[serde(skip_serializing_if = "ToolSwitches::is_empty")]
    pub tools: ToolSwitches,
    /// Reasoning effort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Output format (`{"type":"json_schema","schema":…}` for structured output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
}

impl From<&Prompt> for PromptBody {
    /// 1.18 answers a structured prompt through its `StructuredOutput` tool, which must be
    /// allowed after the other rules.
    fn from(p: &Prompt) -> PromptBody {
        let mut tools = p.tools.clone();
        let format = p.output_schema.as_ref().map(|schema| {
            tools.set("StructuredOutput", true);
            serde_json::json!({ "type": "json_schema", "schema": schema })
        });
        PromptBody {
            parts: p.parts.clone(),
            model: p.model.clone(),
            agent: p.agent.clone(),
            system: p.system.clone(),
            tools,
            variant: p.variant.clone(),
            format,
        }
    }
}

/// A prompt's `tools` map: name or wildcard pattern → allowed. OpenCode turns it into
/// permission rules in order, and the *last* matching rule wins, so order matters: it is kept
/// as given (`{"*": false, "ptk03_*": true}` allows exactly slot 3's tools).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolSwitches(pub Vec<(String, bool)>);

impl ToolSwitches {
    /// Adds a rule after the others.
    pub fn set(&mut self, pattern: impl Into<String>, allowed: bool) {
        self.0.push((pattern.into(), allowed));
    }

    /// Whether no rule is set (the map is then not sent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ToolSwitches {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One SSE event of `GET /event`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Event {
    /// e.g. `message.part.delta`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Event payload.
    #[serde(default)]
    pub properties: Value,
    /// The project directory it comes from (`/global/event` says; `None` on `/event`).
    #[serde(skip)]
    pub directory: Option<String>,
}

/// A frame of `GET /global/event` (`{directory, payload: Event}`) or of `GET /event` (the
/// event itself), read in one pass. (An untagged enum says the same in fewer lines, but serde
/// buffers every frame of an untagged enum and then parses it again: twice the work on the
/// hottest path of the gateway, every event of every run.)
#[derive(Debug, Deserialize)]
pub struct Frame {
    /// `/event`: the event's type.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `/event`: the event's payload.
    #[serde(default)]
    properties: Value,
    /// `/global/event`: the project directory.
    #[serde(default)]
    directory: Option<String>,
    /// `/global/event`: the event.
    payload: Option<Event>,
}

impl Frame {
    /// The event inside; `None` for a frame that is neither form.
    pub fn into_event(self) -> Option<Event> {
        match (self.payload, self.kind) {
            (Some(mut payload), _) => {
                payload.directory = self.directory;
                Some(payload)
            }
            (None, Some(kind)) => Some(Event {
                kind,
                properties: self.properties,
                directory: None,
            }),
            (None, None) => None,
        }
    }
}

/// Whether a raw frame is one of `/global/event`'s `sync` frames (a replication copy of an
/// event already delivered): skipped before it is parsed.
pub fn is_sync_frame(data: &str) -> bool {
    data.get(..200)
        .unwrap_or(data)
        .contains(r#""payload":{"type":"sync""#)
}

impl Event {
    /// The session the event belongs to, wherever the payload keeps it.
    pub fn session_id(&self) -> Option<&str> {
        let p = &self.properties;
        p.get("sessionID")
            .or_else(|| p.get("info").and_then(|i| i.get("sessionID")))
            .or_else(|| p.get("part").and_then(|i| i.get("sessionID")))
            .or_else(|| p.get("form").and_then(|i| i.get("sessionID")))
            .and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_id_is_found_wherever_it_is() {
        let e = |p: Value| Event {
            kind: "x".into(),
            properties: p,
            directory: None,
        };
        assert_eq!(e(json!({"sessionID": "ses_1"})).session_id(), Some("ses_1"));
        assert_eq!(
            e(json!({"info": {"sessionID": "ses_2"}})).session_id(),
            Some("ses_2")
        );
        assert_eq!(
            e(json!({"part": {"sessionID": "ses_3"}})).session_id(),
            Some("ses_3")
        );
        assert_eq!(e(json!({})).session_id(), None);
    }

    #[test]
    fn frames_of_both_event_endpoints_are_read() {
        let read = |data: &str| {
            serde_json::from_str::<Frame>(data)
                .ok()
                .and_then(Frame::into_event)
        };
        let global = read(
            r#"{"directory":"/p","payload":{"type":"session.idle","properties":{"sessionID":"ses_1"}}}"#,
        )
        .expect("a /global/event frame");
        assert_eq!(global.kind, "session.idle");
        assert_eq!(global.directory.as_deref(), Some("/p"));
        assert_eq!(global.session_id(), Some("ses_1"));
        let bare = read(r#"{"properties":{"sessionID":"ses_2"},"type":"session.idle"}"#)
            .expect("an /event frame");
        assert_eq!(bare.kind, "session.idle");
        assert_eq!(bare.directory, None);
        assert_eq!(bare.session_id(), Some("ses_2"));
        let no_properties = read(r#"{"type":"server.heartbeat"}"#).expect("an /event frame");
        assert_eq!(no_properties.properties, Value::Null);
        assert!(read(r#"{"directory":"/p"}"#).is_none(), "neither form");
        assert!(
            read(r#"{"payload":{"properties":{}}}"#).is_none(),
            "payload without type"
        );
    }

    #[test]
    fn prompt_body_shape() {
        let body = PromptBody {
            parts: vec![
                PartInput::Text { text: "hi".into() },
                PartInput::File {
                    mime: "image/png".into(),
                    url: "data:image/png;base64,AA==".into(),
                },
            ],
            model: ModelRef {
                provider_id: "p".into(),
                model_id: "m".into(),
            },
            agent: None,
            system: Some("s".into()),
            tools: ToolSwitches(vec![("*".into(), false), ("ptk03_*".into(), true)]),
            variant: None,
            format: None,
        };
        let text = serde_json::to_string(&body).unwrap();
        assert!(
            text.contains(r#""tools":{"*":false,"ptk03_*":true}"#),
            "rules keep their order: {text}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({
                "parts": [{"type": "text", "text": "hi"}, {"type": "file", "mime": "image/png", "url": "data:image/png;base64,AA=="}],
                "model": {"providerID": "p", "modelID": "m"},
                "system": "s",
                "tools": {"*": false, "ptk03_*": true}
            })
        );
    }
}
