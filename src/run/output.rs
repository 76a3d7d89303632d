//! The one seam between a run and the wire format it is answered in.
//!
//! A run makes [`Output`]s (text, reasoning, tool calls, activity, the end); each API and mode
//! is an [`Encoder`] of them: chat completions as one JSON answer or as
//! `chat.completion.chunk` events, the Responses API's builder (its typed stream events, and
//! the `response` object they add up to). A new API — Anthropic's Messages — is one more
//! encoder; the run does not change.

use crate::adapter::Output;
use crate::error::ApiError;

use super::Run;

/// Turns a run's outputs, in order, into one wire format.
pub trait Encoder {
    /// What one output becomes right away (an SSE event, a typed stream event; `()` for a
    /// format that answers only at the end).
    type Item;

    /// Encodes the next output of the run.
    fn encode(&mut self, output: Output) -> Vec<Self::Item>;
}

/// How a drained response ended.
#[derive(Debug)]
pub struct Drained {
    /// The session it ran on.
    pub session_id: String,
    /// The user message it answered, once known.
    pub user_message_id: Option<String>,
    /// Its failure, if it failed.
    pub failure: Option<ApiError>,
}

impl Run {
    /// Runs to the end of the current response, feeding every output to `encoder` (what the
    /// encoder makes of each is dropped: the whole-answer modes read the encoder afterwards).
    /// A run that ended its response with tool calls is then parked for the results.
    pub async fn drain<E: Encoder>(mut self, encoder: &mut E) -> Drained {
        let mut failure = None;
        while let Some(output) = self.next().await {
            if let Output::Failed(e) = &output {
                failure = Some(e.clone());
            }
            encoder.encode(output);
        }
        let drained = Drained {
            session_id: self.session_id().to_string(),
            user_message_id: self.user_message_id().map(String::from),
            failure,
        };
        self.park();
        drained
    }
}
