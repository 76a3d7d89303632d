//! A run's outputs as a Responses API response: the `response` object and, for streams, the
//! typed event sequence (`response.created` … `response.completed`), each event numbered.
//!
//! One builder serves both modes, so a streamed response and a collected one agree item for
//! item. Items open and close as the run moves between reasoning, text and tool calls:
//! reasoning becomes a `reasoning` item with summary text, text a `message` item with one
//! `output_text` part, each tool call a `function_call` item.

use serde_json::{json, Value};

use crate::adapter::{Activity, Output, ToolActivity, ToolCallOutput};
use crate::error::ApiError;
use crate::openai::{
    IncompleteDetails, OutputItem, OutputText, ResponseError, ResponseObject, ResponseStatus,
    SummaryText,
};

/// The item being written.
enum Open {
    Message {
        index: usize,
        id: String,
        text: String,
    },
    Reasoning {
        index: usize,
        id: String,
        text: String,
    },
}

/// Builds one response from a run's outputs.
pub struct Builder {
    response: ResponseObject,
    sequence: u64,
    open: Option<Open>,
    /// OpenCode tool calls seen, by OpenCode's call id: (output index, item id).
    agent_calls: Vec<(String, usize, String)>,
}

fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn now_secs() -> u64 {
    crate::sync::now_secs()
}

impl Builder {
    /// A builder for `response` (status `in_progress`, no output yet).
    pub fn new(response: ResponseObject) -> Builder {
        Builder {
            response,
            sequence: 0,
            open: None,
            agent_calls: Vec::new(),
        }
    }

    /// The response as it stands.
    pub fn response(&self) -> &ResponseObject {
        &self.response
    }

    /// Takes the response out.
    pub fn into_response(self) -> ResponseObject {
        self.response
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Value {
        body["type"] = Value::String(kind.to_string());
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        body
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Value> {
        let snapshot = json!({ "response": self.response });
        let created = self.event("response.created", snapshot.clone());
        let in_progress = self.event("response.in_progress", snapshot);
        vec![created, in_progress]
    }

    /// The events for one output of the run (the non-streaming mode keeps only the
    /// `response` they build).
    pub fn feed(&mut self, output: Output) -> Vec<Value> {
        match output {
            Output::Reasoning(t) => self.reasoning(t),
            Output::Content(t) => self.text(t),
            Output::ToolCall(call) => {
                let mut events = self.close();
                events.extend(self.function_call(call));
                events
            }
            Output::Finished {
                finish_reason,
                usage,
            } => {
                let mut events = self.close();
                self.response.usage = Some(usage.into());
                if finish_reason == "length" {
                    self.response.status = ResponseStatus::Incomplete;
                    self.response.incomplete_details = Some(IncompleteDetails {
                        reason: "max_output_tokens".into(),
                    });
                    let body = json!({ "response": self.response });
                    events.push(self.event("response.incomplete", body));
                } else {
                    self.response.status = ResponseStatus::Completed;
                    self.response.completed_at = Some(now_secs());
                    let body = json!({ "response": self.response });
                    events.push(self.event("response.completed", body));
                }
                events
            }
            Output::Failed(e) => self.fail(&e),
            Output::Activity(Activity::Tool(t)) => self.agent_tool(t),
            // The Responses API has no item for a request waiting on our own API: clients use
            // `GET /v1/sessions/{id}/permissions` (the session is in `x-opencode-session-id`).
            Output::Activity(Activity::Permission(_)) => Vec::new(),
        }
    }

    /// The response failed: an `error` event, then `response.failed`.
    pub fn fail(&mut self, e: &ApiError) -> Vec<Value> {
        let mut events = self.close();
        let body = e.body();
        let error = &body["error"];
        events.push(self.event(
            "error",
            json!({"code": error["code"], "message": error["message"], "param": error["param"]}),
        ));
        self.response.status = ResponseStatus::Failed;
        self.response.error = Some(ResponseError {
            code: "server_error".into(),
            message: e.to_string(),
        });
        let body = json!({ "response": self.response });
        events.push(self.event("response.failed", body));
        events
    }

    fn reasoning(&mut self, delta: String) -> Vec<Value> {
        let mut events = Vec::new();
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            events.extend(self.close());
            let index = self.response.output.len();
            let id = item_id("rs");
            let item = OutputItem::Reasoning {
                id: id.clone(),
                summary: Vec::new(),
                status: "in_progress".into(),
            };
            self.response.output.push(item.clone());
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            events.push(self.event(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            ));
            self.open = Some(Open::Reasoning {
                index,
                id,
                text: String::new(),
            });
        }
        let Some(Open::Reasoning { index, id, text }) = &mut self.open else {
            return events;
        };
        text.push_str(&delta);
        let body =
            json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": delta});
        events.push(self.event("response.reasoning_summary_text.delta", body));
        events
    }

    fn text(&mut self, delta: String) -> Vec<Value> {
        let mut events = Vec::new();
        if !matches!(self.open, Some(Open::Message { .. })) {
            events.extend(self.close());
            let index = self.response.output.len();
            let id = item_id("msg");
            let item = OutputItem::Message {
                id: id.clone(),
                role: "assistant".into(),
                status: "in_progress".into(),
                content: Vec::new(),
            };
            self.response.output.push(item.clone());
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            events.push(self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": OutputText::new(String::new())}),
            ));
            self.open = Some(Open::Message {
                index,
                id,
                text: String::new(),
            });
        }
        let Some(Open::Message { index, id, text }) = &mut self.open else {
            return events;
        };
        text.push_str(&delta);
        let body = json!({"item_id": id, "output_index": index, "content_index": 0,
                          "delta": delta, "logprobs": []});
        events.push(self.event("response.output_text.delta", body));
        events
    }

    /// One of OpenCode's own tools as an `mcp_call` item: added when it starts, done when it
    /// completes or fails.
    fn agent_tool(&mut self, t: ToolActivity) -> Vec<Value> {
        let mut events = Vec::new();
        let known = self
            .agent_calls
            .iter()
            .find(|(call, _, _)| *call == t.call_id)
            .map(|(_, i, id)| (*i, id.clone()));
        let (index, id) = match known {
            Some(k) => k,
            None => {
                events.extend(self.close());
                let index = self.response.output.len();
                let id = item_id("mcp");
                self.agent_calls
                    .push((t.call_id.clone(), index, id.clone()));
                let item = self.mcp_item(&id, &t, "in_progress");
                self.response.output.push(item.clone());
                events.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                ));
                events.push(self.event(
                    "response.mcp_call.in_progress",
                    json!({"output_index": index, "item_id": id}),
                ));
                (index, id)
            }
        };
        let done = match t.status.as_str() {
            "completed" => "completed",
            "error" => "failed",
            _ => return events,
        };
        let item = self.mcp_item(&id, &t, done);
        self.response.output[index] = item.clone();
        let arguments = t.input.to_string();
        events.push(self.event(
            "response.mcp_call_arguments.done",
            json!({"output_index": index, "item_id": id, "arguments": arguments}),
        ));
        let kind = if done == "completed" {
            "response.mcp_call.completed"
        } else {
            "response.mcp_call.failed"
        };
        events.push(self.event(kind, json!({"output_index": index, "item_id": id})));
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        events
    }

    fn mcp_item(&self, id: &str, t: &ToolActivity, status: &str) -> OutputItem {
        OutputItem::McpCall {
            id: id.to_string(),
            server_label: "opencode".into(),
            name: t.tool.clone(),
            arguments: t.input.to_string(),
            output: t.output.clone(),
            error: t.error.clone(),
            status: status.to_string(),
        }
    }

    fn function_call(&mut self, call: ToolCallOutput) -> Vec<Value> {
        let index = self.response.output.len();
        let id = item_id("fc");
        let item = |arguments: &str, status: &str| OutputItem::FunctionCall {
            id: id.clone(),
            call_id: call.id.clone(),
            name: call.name.clone(),
            arguments: arguments.to_string(),
            status: status.to_string(),
        };
        let added = item("", "in_progress");
        let done = item(&call.arguments, "completed");
        self.response.output.push(done.clone());
        vec![
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            ),
            self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": call.arguments}),
            ),
            self.event(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": call.name,
                       "arguments": call.arguments}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            ),
        ]
    }

    /// Closes the open item: its `.done` events, and its final form in the output.
    fn close(&mut self) -> Vec<Value> {
        match self.open.take() {
            None => Vec::new(),
            Some(Open::Message { index, id, text }) => {
                let part = OutputText::new(text.clone());
                let item = OutputItem::Message {
                    id: id.clone(),
                    role: "assistant".into(),
                    status: "completed".into(),
                    content: vec![part.clone()],
                };
                self.response.output[index] = item.clone();
                vec![
                    self.event(
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                               "text": text, "logprobs": []}),
                    ),
                    self.event(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    ),
                    self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ),
                ]
            }
            Some(Open::Reasoning { index, id, text }) => {
                let part = SummaryText {
                    kind: "summary_text".into(),
                    text: text.clone(),
                };
                let item = OutputItem::Reasoning {
                    id: id.clone(),
                    summary: vec![part.clone()],
                    status: "completed".into(),
                };
                self.response.output[index] = item.clone();
                vec![
                    self.event(
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                    ),
                    self.event(
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                    ),
                    self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ),
                ]
            }
        }
    }
}

impl crate::run::Encoder for Builder {
    type Item = Value;

    fn encode(&mut self, output: Output) -> Vec<Value> {
        self.feed(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Usage;

    fn blank() -> ResponseObject {
        serde_json::from_value(json!({
            "id": "resp_x", "object": "response", "created_at": 1, "status": "in_progress",
            "completed_at": null, "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": "m", "output": [], "parallel_tool_calls": true,
            "previous_response_id": null, "reasoning": null, "store": true, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled", "usage": null, "metadata": {}
        }))
        .unwrap()
    }

    #[test]
    fn events_are_numbered_and_items_close_in_order() {
        let mut b = Builder::new(blank());
        let mut events = b.start();
        for o in [
            Output::Reasoning("hmm".into()),
            Output::Content("Hi ".into()),
            Output::Content("there".into()),
            Output::ToolCall(ToolCallOutput {
                index: 0,
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }),
            Output::Finished {
                finish_reason: "tool_calls",
                usage: Usage::default(),
            },
        ] {
            events.extend(b.feed(o));
        }
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let r = b.into_response();
        assert_eq!(r.status, ResponseStatus::Completed);
        assert_eq!(r.output.len(), 3);
        assert!(
            matches!(&r.output[1], OutputItem::Message { content, .. } if content[0].text == "Hi there")
        );
    }
}
