//! Runs on a session: starting one with a prompt, aborting it, answering the permission
//! requests and questions it raises, counting busy sessions, and the server's event stream a
//! run's progress is read from (decoded per run by [`RunDecoder`]).

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::{
    is_sync_frame, sse, types, Api, Event, Frame, OpenCodeClient, Prompt, RunDecoder, UpstreamError,
};

impl OpenCodeClient {
    /// A decoder of one run's events (see [`RunDecoder`]): its messages are those newer than
    /// `history end`, on a session created for it (`fresh`) or reused.
    pub fn run_decoder(&self, history_end: Option<String>, fresh: bool) -> RunDecoder {
        match self.detected_api() {
            Some(Api::V2) => RunDecoder::v2(),
            _ => RunDecoder::new(history_end, fresh),
        }
    }

    /// Starts a run of `prompt` on session `id` (1.18: `POST /session/:id/prompt_async`; never
    /// retried).
    pub async fn prompt_async(&self, id: &str, prompt: &Prompt) -> Result<(), UpstreamError> {
        if self.is_v2().await {
            return self.v2_prompt(id, prompt).await;
        }
        let body = types::PromptBody::from(prompt);
        let rb = self
            .request(Method::POST, &format!("session/{id}/prompt_async"))
            .json(&body);
        let sent = tokio::time::timeout(self.timeout, self.send("send prompt", rb))
            .await
            .map_err(|_| UpstreamError::Timeout("send prompt".into()))
            .and_then(|r| r);
        if let Err(e) = &sent {
            crate::metrics::upstream_error(e.kind());
        }
        sent.map(|_| ())
    }

    /// `POST /session/:id/abort`.
    pub async fn abort(&self, id: &str) -> Result<(), UpstreamError> {
        if self.is_v2().await {
            return self.v2_interrupt(id).await;
        }
        let _: Value = self
            .json(
                "abort session",
                self.request(Method::POST, &format!("session/{id}/abort")),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// `POST /permission/:id/reply {reply, message?}`: answers a pending permission request
    /// (`once`, `always` or `reject`) of `session` (2.x names it in the path).
    pub async fn reply_permission(
        &self,
        session: &str,
        id: &str,
        reply: &str,
        message: Option<&str>,
    ) -> Result<(), UpstreamError> {
        if self.is_v2().await {
            return self.v2_reply_permission(session, id, reply, message).await;
        }
        let mut body = serde_json::json!({ "reply": reply });
        if let Some(m) = message {
            body["message"] = Value::String(m.to_string());
        }
        let _: Value = self
            .json(
                "reply to permission",
                self.request(Method::POST, &format!("permission/{id}/reply"))
                    .json(&body),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// `GET /session/status`: how many sessions of this client's directory are busy (or
    /// retrying) now.
    pub async fn busy_sessions(&self) -> Result<usize, UpstreamError> {
        if self.is_v2().await {
            return self.v2_busy_sessions().await;
        }
        let status: serde_json::Map<String, Value> = self
            .json(
                "session status",
                self.request(Method::GET, "session/status"),
                self.timeout,
            )
            .await?;
        Ok(status
            .values()
            .filter(|s| s["type"].as_str().is_some_and(|t| t != "idle"))
            .count())
    }

    /// `POST /question/:id/reply {answers}`: answers a question of the agent.
    pub async fn reply_question(
        &self,
        session: &str,
        id: &str,
        answers: &Value,
    ) -> Result<(), UpstreamError> {
        if self.is_v2().await {
            return self.v2_reply_form(session, id, answers).await;
        }
        let body = serde_json::json!({ "answers": answers });
        let _: Value = self
            .json(
                "answer question",
                self.request(Method::POST, &format!("question/{id}/reply"))
                    .json(&body),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// `POST /question/:id/reject`: declines a question of the agent.
    pub async fn reject_question(&self, session: &str, id: &str) -> Result<(), UpstreamError> {
        if self.is_v2().await {
            return self.v2_dismiss_form(session, id).await;
        }
        let _: Value = self
            .json(
                "reject question",
                self.request(Method::POST, &format!("question/{id}/reject")),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// Opens OpenCode's event stream and yields its events until the connection ends: `GET
    /// /global/event` (every project directory; its frames are unwrapped), or `GET /event` (the
    /// server's own directory) on a server without it.
    ///
    /// Only the connect and the response headers are bounded (by `headers_within`); the body is a
    /// long-lived stream whose liveness the caller watches (OpenCode sends a heartbeat every 10 s).
    ///
    /// Every (re)connect first asks the server which API it speaks (see [`super::api`]): an
    /// upstream replaced by another OpenCode version is followed in its own API.
    pub async fn events(
        &self,
        headers_within: Duration,
    ) -> Result<BoxStream<'static, Result<Event, UpstreamError>>, UpstreamError> {
        let api = match self.health(headers_within).await {
            Ok(h) => h.api,
            Err(_) => self.api().await,
        };
        if api == Api::V2 {
            return Ok(self.v2_events(headers_within).await?.boxed());
        }
        let subscribe = |path: &str| {
            let rb = self
                .request(Method::GET, path)
                .header("accept", "text/event-stream");
            tokio::time::timeout(headers_within, self.send("subscribe to events", rb))
        };
        let resp = match subscribe("global/event").await {
            Ok(Err(UpstreamError::NotFound(_))) => subscribe("event").await,
            other => other,
        }
        .map_err(|_| UpstreamError::Timeout("subscribe to events".into()))??;
        Ok(sse::data_of_events(resp.bytes_stream())
            .filter_map(|item| async move {
                match item {
                    Ok(data) if data.trim().is_empty() || is_sync_frame(&data) => None,
                    Ok(data) => Some(
                        serde_json::from_str::<Frame>(&data)
                            .map_err(|e| UpstreamError::Decode(format!("event: {e}")))
                            .and_then(|frame| {
                                frame.into_event().ok_or_else(|| {
                                    UpstreamError::Decode(
                                        "event: neither `type` nor `payload`".into(),
                                    )
                                })
                            }),
                    ),
                    Err(e) => Some(Err(e)),
                }
            })
            .boxed())
    }
}
