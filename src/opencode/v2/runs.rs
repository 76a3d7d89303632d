//! 2.x runs: prompting (session state first, then the turn), interrupting, answering
//! permission requests and forms, counting running sessions, the event stream.

use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::types::PartInput;
use super::super::{sse, Event, OpenCodeClient, Prompt, ToolSwitches, UpstreamError};
use super::state::{self, Setting};

/// The instruction entry that carries a request's system text (see [`OpenCodeClient::v2_prompt`]).
const SYSTEM_ENTRY: &str = "portatek-system";

/// The answer a declined question gets (see [`OpenCodeClient::v2_dismiss_form`]).
const DECLINED: &str = "(The user declined to answer this question. Go on without the answer.)";

/// A frame of `GET /api/event`.
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    location: Option<Location>,
}

#[derive(Debug, Deserialize)]
struct Location {
    #[serde(default)]
    directory: Option<String>,
}

/// 1.18's tool names that 2.x renamed (its permission actions are the new names).
fn action_of(tool: &str) -> &str {
    match tool {
        "bash" => "shell",
        "task" => "subagent",
        other => other,
    }
}

/// 1.18's tool switches as 2.x session permission rules (the last matching rule wins in
/// both).
fn permission_rules(tools: &ToolSwitches) -> Value {
    Value::Array(
        tools
            .0
            .iter()
            .map(|(pattern, allowed)| {
                json!({
                    "action": action_of(pattern),
                    "resource": "*",
                    "effect": if *allowed { "allow" } else { "deny" },
                })
            })
            .collect(),
    )
}

impl OpenCodeClient {
    /// Starts a run: the session's model (and variant), agent, tool permissions and system
    /// text are set first — 2.x keeps them as session state, a prompt carries only its text
    /// and files — then `POST /api/session/:id/prompt {text, files}` (never resent).
    ///
    /// The system text is the instruction entry `portatek-system`, which 2.x hands the model
    /// at the turn's start as a `<system-update>` message (and again only when it changes);
    /// with no system text the entry is removed.
    pub(crate) async fn v2_prompt(&self, id: &str, prompt: &Prompt) -> Result<(), UpstreamError> {
        if prompt.output_schema.is_some() {
            return Err(UpstreamError::Unsupported(format!(
                "OpenCode {} has no structured output: the gateway asks for a structured answer through its answer tool instead.",
                self.detected_version().unwrap_or_else(|| "2.x".into())
            )));
        }
        let session = format!("api/session/{id}");
        let mut model =
            json!({ "id": prompt.model.model_id, "providerID": prompt.model.provider_id });
        if let Some(variant) = &prompt.variant {
            model["variant"] = json!(variant);
        }
        let model = json!({ "model": model });
        self.v2_setting(id, Setting::Model, &model, "select model", || {
            self.request(Method::POST, &format!("{session}/model"))
                .json(&model)
        })
        .await?;
        let agent = json!({ "agent": prompt.agent.as_deref().unwrap_or("build") });
        self.v2_setting(id, Setting::Agent, &agent, "select agent", || {
            self.request(Method::POST, &format!("{session}/agent"))
                .json(&agent)
        })
        .await?;
        let permissions = json!({ "permissions": permission_rules(&prompt.tools) });
        self.v2_setting(
            id,
            Setting::Permissions,
            &permissions,
            "set tool permissions",
            || self.request(Method::PATCH, &session).json(&permissions),
        )
        .await?;
        let entry = format!("api/experimental/session/{id}/instructions/entries/{SYSTEM_ENTRY}");
        let system = prompt.system.as_deref().filter(|s| !s.is_empty());
        let digest = state::digest(&system);
        if self.settings.needs(id, Setting::System, digest) {
            match system {
                Some(system) => {
                    self.v2_write(
                        "set system text",
                        self.request(Method::PUT, &entry)
                            .json(&json!({ "value": system })),
                    )
                    .await?
                }
                None => match self
                    .v2_write("clear system text", self.request(Method::DELETE, &entry))
                    .await
                {
                    Ok(()) | Err(UpstreamError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                },
            }
            self.settings.set(id, Setting::System, digest);
        }
        let mut texts = Vec::new();
        let mut files = Vec::new();
        for part in &prompt.parts {
            match part {
                PartInput::Text { text } => texts.push(text.as_str()),
                PartInput::File { mime, url } => files.push(json!({
                    "uri": url,
                    "name": format!("file-{}.{}", files.len() + 1, mime.rsplit('/').next().unwrap_or("bin")),
                })),
            }
        }
        let mut body = json!({ "text": texts.join("\n\n") });
        if !files.is_empty() {
            body["files"] = Value::Array(files);
        }
        self.v2_write(
            "send prompt",
            self.request(Method::POST, &format!("{session}/prompt"))
                .json(&body),
        )
        .await
    }

    /// Sends one session setting (the request `make` builds) unless it is what was last set
    /// (see [`state`]).
    async fn v2_setting(
        &self,
        id: &str,
        setting: Setting,
        value: &Value,
        what: &str,
        make: impl FnOnce() -> reqwest::RequestBuilder,
    ) -> Result<(), UpstreamError> {
        let digest = state::digest(&value.to_string());
        if !self.settings.needs(id, setting, digest) {
            return Ok(());
        }
        self.v2_write(what, make()).await?;
        self.settings.set(id, setting, digest);
        Ok(())
    }

    /// `POST /api/session/:id/interrupt`.
    pub(crate) async fn v2_interrupt(&self, id: &str) -> Result<(), UpstreamError> {
        self.v2_write(
            "interrupt session",
            self.request(Method::POST, &format!("api/session/{id}/interrupt")),
        )
        .await
    }

    /// `POST /api/session/:sid/permission/:id/reply {decision, message?}`.
    pub(crate) async fn v2_reply_permission(
        &self,
        session: &str,
        id: &str,
        reply: &str,
        message: Option<&str>,
    ) -> Result<(), UpstreamError> {
        let mut body = json!({ "decision": reply });
        if let Some(m) = message {
            body["message"] = json!(m);
        }
        self.v2_write(
            "reply to permission",
            self.request(
                Method::POST,
                &format!("api/session/{session}/permission/{id}/reply"),
            )
            .json(&body),
        )
        .await
    }

    /// Answers a form (2.x's questions): 1.18's answers (one list of labels per question) as
    /// `{answer: {q0: …, q1: …}}`.
    pub(crate) async fn v2_reply_form(
        &self,
        session: &str,
        id: &str,
        answers: &Value,
    ) -> Result<(), UpstreamError> {
        let mut answer = serde_json::Map::new();
        for (i, a) in answers.as_array().into_iter().flatten().enumerate() {
            let labels: Vec<&str> = match a {
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                Value::String(s) => vec![s.as_str()],
                _ => Vec::new(),
            };
            answer.insert(format!("q{i}"), json!(labels.join(", ")));
        }
        self.v2_write(
            "answer question",
            self.request(
                Method::POST,
                &format!("api/session/{session}/form/{id}/reply"),
            )
            .json(&json!({ "answer": answer })),
        )
        .await
    }

    /// Declines a form (2.x's question). Dismissing it (`DELETE`) would stop the whole run,
    /// where 1.x told the model the question was declined and went on: so each field is
    /// answered with that, and only a form refusing such an answer is dismissed.
    pub(crate) async fn v2_dismiss_form(
        &self,
        session: &str,
        id: &str,
    ) -> Result<(), UpstreamError> {
        let path = format!("api/session/{session}/form/{id}");
        let form: Value = self.v2_read("get form", &path, &[]).await?;
        let answer: serde_json::Map<String, Value> = form["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["key"].as_str()?.to_string(), json!(DECLINED))))
            .collect();
        let declined = self
            .v2_write(
                "decline question",
                self.request(Method::POST, &format!("{path}/reply"))
                    .json(&json!({ "answer": answer })),
            )
            .await;
        match declined {
            Err(UpstreamError::Status {
                status: 400..=499, ..
            }) => {
                self.v2_write("reject question", self.request(Method::DELETE, &path))
                    .await
            }
            other => other,
        }
    }

    /// How many sessions run now (`GET /api/session/active`).
    pub(crate) async fn v2_busy_sessions(&self) -> Result<usize, UpstreamError> {
        let active: serde_json::Map<String, Value> = self
            .v2_read("active sessions", "api/session/active", &[])
            .await?;
        Ok(active.len())
    }

    /// `GET /api/event`: every session's events, as [`Event`]s (`type`, `data`, the
    /// location's directory); heartbeats (SSE comments) come as `server.heartbeat`.
    pub(crate) async fn v2_events(
        &self,
        headers_within: Duration,
    ) -> Result<impl Stream<Item = Result<Event, UpstreamError>> + Send + 'static, UpstreamError>
    {
        let rb = self
            .request(Method::GET, "api/event")
            .header("accept", "text/event-stream");
        let resp = tokio::time::timeout(headers_within, self.send("subscribe to events", rb))
            .await
            .map_err(|_| UpstreamError::Timeout("subscribe to events".into()))??;
        Ok(sse::data_of_events(resp.bytes_stream()).map(|item| {
            let data = item?;
            if data.trim().is_empty() {
                return Ok(Event {
                    kind: "server.heartbeat".into(),
                    ..Event::default()
                });
            }
            let frame: Frame = serde_json::from_str(&data)
                .map_err(|e| UpstreamError::Decode(format!("event: {e}")))?;
            Ok(Event {
                kind: frame.kind,
                properties: frame.data,
                directory: frame.location.and_then(|l| l.directory),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Data;
    use super::*;

    #[test]
    fn tool_switches_become_permission_rules_in_order() {
        let tools = ToolSwitches(vec![
            ("*".into(), false),
            ("ptk03_*".into(), true),
            ("bash".into(), true),
        ]);
        assert_eq!(
            permission_rules(&tools),
            json!([
                {"action": "*", "resource": "*", "effect": "deny"},
                {"action": "ptk03_*", "resource": "*", "effect": "allow"},
                {"action": "shell", "resource": "*", "effect": "allow"},
            ])
        );
    }

    #[test]
    fn data_envelopes_unwrap() {
        let d: Data<Vec<u8>> = serde_json::from_str(r#"{"data":[1,2]}"#).unwrap();
        assert_eq!(d.data, vec![1, 2]);
    }
}
