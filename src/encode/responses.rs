//! A Responses API run as its typed SSE events (`event: response.output_text.delta` …), each
//! numbered; the response is stored before its last event goes out, so a client that asks for
//! it right after the stream ends finds it.

use std::convert::Infallible;

use axum::response::sse::Event;
use futures::Stream;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::adapter::Output;
use crate::app::state::AppState;
use crate::responses::builder::Builder;
use crate::responses::{self, Started};

fn sse(value: Value) -> Event {
    let kind = value["type"].as_str().unwrap_or("message").to_string();
    Event::default()
        .event(kind)
        .json_data(&value)
        .unwrap_or_else(|_| Event::default().data("{}"))
}

/// What the stream needs until its end.
struct State {
    app: AppState,
    outputs: mpsc::Receiver<Output>,
    /// The run's session and user message, sent just before its terminal output.
    end: Option<oneshot::Receiver<(String, Option<String>)>>,
    builder: Builder,
    store_input: Option<Vec<Value>>,
    resumed: bool,
    pending: std::collections::VecDeque<Value>,
    done: bool,
    _open: crate::metrics::StreamGauge,
}

impl Drop for State {
    fn drop(&mut self) {
        // However the stream ends (client gone, deadline), the response no longer runs, here
        // nor (for the other replicas) in the shared store.
        let id = self.builder.response().id.clone();
        self.app.backend.responses.finished(&id);
        let store = self.app.backend.responses.clone();
        tokio::spawn(async move { store.unshare(&id).await });
    }
}

impl State {
    /// The events of the next output; stores the response before its final events.
    async fn advance(&mut self) {
        let Some(output) = self.outputs.recv().await else {
            self.done = true;
            return;
        };
        let terminal = output.is_terminal();
        let events = self.builder.feed(output);
        if terminal {
            self.done = true;
            let (session, user_message) = match self.end.take() {
                Some(rx) => rx.await.unwrap_or_default(),
                None => Default::default(),
            };
            let start = if self.resumed { None } else { user_message };
            let input = self.store_input.take();
            responses::finish(
                &self.app.backend,
                self.builder.response(),
                &session,
                input,
                start,
            )
            .await;
        }
        self.pending.extend(events);
    }
}

/// The SSE events of a started response.
pub fn events(app: AppState, started: Started) -> impl Stream<Item = Result<Event, Infallible>> {
    let Started {
        run,
        mut builder,
        store_input,
        resumed,
    } = started;
    let (tx, rx) = oneshot::channel();
    let outputs = super::spawn(run, move |run| {
        let _ = tx.send((
            run.session_id().to_string(),
            run.user_message_id().map(String::from),
        ));
    });
    let first = builder.start();
    let state = State {
        app,
        outputs,
        end: Some(rx),
        builder,
        store_input,
        resumed,
        pending: first.into(),
        done: false,
        _open: crate::metrics::StreamGauge::open(),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok(sse(e)), s));
            }
            if s.done {
                return None;
            }
            s.advance().await;
        }
    })
}
