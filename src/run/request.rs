//! What a run is asked to do, whatever API asked: [`RunRequest`], and the [`Conversation`] it
//! continues as the session pool fingerprints it.

use super::placement::{Placement, Requested};
use crate::auth::ClientId;
use crate::client_tools::ParkKey;
use crate::openai::{
    ChatRequest, Message, ResponseFormat, ResponsesRequest, Role, ToolCall, ToolChoice, ToolSpec,
};
use crate::sessions::Fingerprint;

/// One completion request, independent of the wire format it came in.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// `provider/model`.
    pub model: String,
    /// System and developer instructions.
    pub system: Option<String>,
    /// User, assistant and tool messages; ends with a user message or tool results.
    pub turns: Vec<Message>,
    /// Forwarded as OpenCode's `variant`.
    pub reasoning_effort: Option<String>,
    /// Client tools.
    pub tools: Vec<ToolSpec>,
    /// Which of them the model may or must call.
    pub tool_choice: ToolChoice,
    /// Whether one response may carry several calls.
    pub parallel_tool_calls: bool,
    /// The shape of the answer.
    pub response_format: ResponseFormat,
    /// The request parameter of the first image, when there is one (for a 400 if the model
    /// takes none).
    pub first_image: Option<String>,
    /// The agent and directory the request names.
    pub requested: Requested,
}

impl From<&ChatRequest> for RunRequest {
    fn from(req: &ChatRequest) -> Self {
        let first_image = req
            .messages
            .iter()
            .position(Message::has_image)
            .map(|i| format!("messages[{i}].content"));
        RunRequest {
            model: req.model.clone(),
            system: req.system_prompt(),
            turns: req.turns().cloned().collect(),
            reasoning_effort: req.reasoning_effort.clone(),
            tools: req.tools.clone(),
            tool_choice: req.tool_choice.clone(),
            parallel_tool_calls: req.parallel_tool_calls,
            response_format: req.response_format.clone(),
            first_image,
            requested: Requested::default(),
        }
    }
}

impl From<&ResponsesRequest> for RunRequest {
    fn from(req: &ResponsesRequest) -> Self {
        RunRequest {
            model: req.model.clone(),
            system: req.system.clone(),
            turns: req.turns.clone(),
            reasoning_effort: req.reasoning_effort.clone(),
            tools: req.tools.clone(),
            tool_choice: req.tool_choice.clone(),
            parallel_tool_calls: req.parallel_tool_calls,
            response_format: req.response_format.clone(),
            first_image: req.first_image.clone(),
            requested: Requested::default(),
        }
    }
}

impl RunRequest {
    /// Whether the model is offered client tools.
    pub fn offers_tools(&self) -> bool {
        !self.tools.is_empty() && self.tool_choice != ToolChoice::None
    }
}

/// The conversation a request continues: what came before, and what is new.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Whose conversation (fingerprints are per key).
    pub client: ClientId,
    /// The model (fingerprints are per model).
    pub model: String,
    /// Agent, directory and tools (fingerprints are per placement too).
    pub placement: Placement,
    /// System and developer instructions.
    pub system: Option<String>,
    /// The turns before the new messages.
    pub prior: Vec<Message>,
    /// The new messages: one user message, or the results of the model's tool calls.
    pub new: Vec<Message>,
}

impl Conversation {
    /// Splits `req`'s turns into history and new messages.
    pub fn of(client: &ClientId, req: &RunRequest, placement: &Placement) -> Conversation {
        let mut prior = req.turns.clone();
        let trailing_tools = prior
            .iter()
            .rev()
            .take_while(|m| m.role == Role::Tool)
            .count();
        let keep = prior.len() - trailing_tools.max(1).min(prior.len());
        let new = prior.split_off(keep);
        Conversation {
            client: client.clone(),
            model: req.model.clone(),
            placement: placement.clone(),
            system: req.system.clone(),
            prior,
            new,
        }
    }

    /// All of `req`'s turns as new messages, for a session that holds the history already
    /// (a Responses chain continued with `previous_response_id`).
    pub fn continuing(client: &ClientId, req: &RunRequest, placement: &Placement) -> Conversation {
        Conversation {
            client: client.clone(),
            model: req.model.clone(),
            placement: placement.clone(),
            system: req.system.clone(),
            prior: Vec::new(),
            new: req.turns.clone(),
        }
    }

    /// Whether the new messages are tool results.
    pub fn answers_tools(&self) -> bool {
        self.new.first().is_some_and(|m| m.role == Role::Tool)
    }

    /// The fingerprint of the history the new messages continue.
    pub fn prior_fingerprint(&self) -> Fingerprint {
        let system = self.system.as_deref();
        Fingerprint::of(&self.client, &self.context(), system, &self.prior)
    }

    /// Model and placement, as fingerprinted.
    fn context(&self) -> String {
        format!("{}\u{0}{}", self.model, self.placement.key())
    }

    /// The fingerprint of the whole conversation once `reply` is appended.
    pub fn fingerprint_after(&self, reply: Message) -> Fingerprint {
        let mut turns = self.prior.clone();
        turns.extend(self.new.iter().cloned());
        turns.push(reply);
        let system = self.system.as_deref();
        Fingerprint::of(&self.client, &self.context(), system, &turns)
    }

    /// Where a pooled run that answers with `content` and `calls` is parked: the key the
    /// client's next request, carrying this answer and the results, presents (as its
    /// [`prior_fingerprint`](Self::prior_fingerprint)).
    pub fn park_key(&self, content: &str, calls: &[ToolCall]) -> ParkKey {
        let mut reply = Message::text_only(Role::Assistant, content);
        reply.tool_calls = calls.to_vec();
        ParkKey::Conversation(self.fingerprint_after(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::ContentPart;

    fn msg(role: Role, text: &str) -> Message {
        Message::text_only(role, text)
    }

    fn tool_result(id: &str) -> Message {
        Message {
            role: Role::Tool,
            parts: vec![ContentPart::Text("r".into())],
            tool_calls: Vec::new(),
            tool_call_id: Some(id.into()),
        }
    }

    fn request(turns: Vec<Message>) -> RunRequest {
        RunRequest {
            model: "m".into(),
            system: None,
            turns,
            reasoning_effort: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            response_format: ResponseFormat::Text,
            first_image: None,
            requested: Requested::default(),
        }
    }

    #[test]
    fn a_parked_run_is_found_by_the_request_that_answers_it() {
        let client = ClientId("k".into());
        let calls = vec![
            ToolCall {
                id: "call_a".into(),
                name: "f".into(),
                arguments: "{}".into(),
            },
            ToolCall {
                id: "call_b".into(),
                name: "g".into(),
                arguments: r#"{"x":1}"#.into(),
            },
        ];
        let place = Placement::default();
        let first = Conversation::of(&client, &request(vec![msg(Role::User, "hi")]), &place);
        assert!(!first.answers_tools());
        let parked = first.park_key("", &calls);

        let mut assistant = msg(Role::Assistant, "");
        assistant.tool_calls = calls;
        let second = Conversation::of(
            &client,
            &request(vec![
                msg(Role::User, "hi"),
                assistant,
                tool_result("call_a"),
                tool_result("call_b"),
            ]),
            &place,
        );
        assert!(second.answers_tools());
        assert_eq!(second.new.len(), 2);
        assert_eq!(ParkKey::Conversation(second.prior_fingerprint()), parked);
    }
}
