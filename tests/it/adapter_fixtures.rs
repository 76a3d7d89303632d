//! The stream adapter (OpenCode events → OpenAI deltas) on event sequences recorded from a real
//! OpenCode (`tests/fixtures/events/*.jsonl`; see the README there). Pure: starts nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use portatek_gateway::adapter::{Adapter, Output};
use portatek_gateway::opencode::Event;
use portatek_gateway::opencode::RunDecoder;
use support::mock_model::{self, FAILURE_MESSAGE};

/// A run's decoder (OpenCode 1.18's events → the gateway's) and adapter, fed raw events.
pub(crate) struct Pipe {
    pub(crate) decoder: RunDecoder,
    pub(crate) adapter: Adapter,
}

impl Pipe {
    pub(crate) fn new(max_retries: u32, fresh: bool) -> Pipe {
        Pipe {
            decoder: RunDecoder::new(None, fresh),
            adapter: Adapter::new(max_retries),
        }
    }

    pub(crate) fn feed(&mut self, event: &Event) -> Vec<Output> {
        let decoded = self.decoder.feed(event);
        decoded.iter().flat_map(|e| self.adapter.feed(e)).collect()
    }
}

/// The events of a recorded fixture, or `None` (the test is skipped, saying so) when it has not
/// been recorded yet.
fn fixture(name: &str) -> Option<Vec<Event>> {
    let path = format!(
        "{}/tests/fixtures/events/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("SKIPPED: fixture {name} not recorded yet");
        return None;
    };
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<Event>(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}"))
            })
            .collect(),
    )
}

/// The user's text parts of a fixture (what must never come back as content).
fn user_texts(events: &[Event]) -> Vec<String> {
    let users: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "message.updated")
        .filter(|e| e.properties["info"]["role"] == "user")
        .filter_map(|e| e.properties["info"]["id"].as_str())
        .collect();
    events
        .iter()
        .filter(|e| e.kind == "message.part.updated")
        .filter(|e| {
            e.properties["part"]["messageID"]
                .as_str()
                .is_some_and(|m| users.contains(&m))
        })
        .filter_map(|e| e.properties["part"]["text"].as_str().map(String::from))
        .collect()
}

/// Feeds every event to a fresh adapter; checks there is at most one terminal output, and
/// nothing after it.
fn run_adapter(events: &[Event], max_retries: u32) -> Vec<Output> {
    let mut a = Pipe::new(max_retries, false);
    let mut out = Vec::new();
    for e in events {
        out.extend(a.feed(e));
    }
    let terminal = out
        .iter()
        .filter(|o| matches!(o, Output::Finished { .. } | Output::Failed(_)))
        .count();
    assert!(terminal <= 1, "more than one terminal output: {out:?}");
    if terminal == 1 {
        assert!(
            matches!(
                out.last(),
                Some(Output::Finished { .. } | Output::Failed(_))
            ),
            "nothing may follow the terminal output: {out:?}"
        );
        assert!(a.adapter.is_done());
    }
    out
}

/// (all answer text, the answer deltas one by one).
fn contents(out: &[Output]) -> (String, Vec<String>) {
    let pieces: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Content(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    (pieces.concat(), pieces)
}

/// All reasoning text.
fn reasonings(out: &[Output]) -> String {
    out.iter()
        .filter_map(|o| match o {
            Output::Reasoning(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The user's own text never comes back: no output before the assistant message, and no output
/// starting with a user part's text.
fn assert_no_user_echo(events: &[Event], out: &[Output]) {
    let users = user_texts(events);
    assert!(!users.is_empty(), "fixture has no user part");
    // Nothing at all before the run's assistant message exists.
    let first_assistant = events
        .iter()
        .position(|e| e.kind == "message.updated" && e.properties["info"]["role"] == "assistant");
    if let Some(i) = first_assistant {
        let mut a = Pipe::new(5, false);
        let early: Vec<Output> = events[..i].iter().flat_map(|e| a.feed(e)).collect();
        assert!(
            early.is_empty(),
            "output before the assistant message: {early:?}"
        );
    }
    // The user's text may legitimately occur inside the echo reply, but the output must not
    // start with it (that would be the user's part forwarded as answer or reasoning).
    let (content, _) = contents(out);
    let reasoning = reasonings(out);
    for u in &users {
        assert!(
            !content.starts_with(u.as_str()) && !reasoning.starts_with(u.as_str()),
            "the user's own part text {u:?} came back as output: {out:?}"
        );
    }
}

/// A plain answer: the deltas are forwarded one by one and make `echo: hello`; no reasoning;
/// finish `stop`; usage counted once although the final `message.updated` comes twice.
#[test]
fn text_run_streams_its_deltas_and_finishes_once() {
    let Some(ev) = fixture("text") else { return };
    let out = run_adapter(&ev, 2);
    let (content, pieces) = contents(&out);
    assert_eq!(content, "echo: hello", "{out:?}");
    assert!(pieces.len() >= 2, "deltas forwarded one by one: {pieces:?}");
    assert!(reasonings(&out).is_empty());
    let Some(Output::Finished {
        finish_reason,
        usage: u,
    }) = out.last()
    else {
        panic!("text.jsonl must end Finished, got {:?}", out.last());
    };
    assert_eq!(*finish_reason, "stop");
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (
            mock_model::USAGE_PROMPT_TOKENS,
            mock_model::USAGE_COMPLETION_TOKENS,
            mock_model::USAGE_TOTAL_TOKENS
        ),
        "usage counted once despite the duplicated final message.updated"
    );
    assert_no_user_echo(&ev, &out);
}

/// A reasoning model: the reasoning part becomes reasoning output, all of it before the answer
/// content, and the run finishes with `stop`.
#[test]
fn reasoning_run_separates_reasoning_from_content() {
    let Some(ev) = fixture("reasoning") else {
        return;
    };
    let out = run_adapter(&ev, 2);
    assert_eq!(
        reasonings(&out),
        "thinking about why [reasoning]",
        "{out:?}"
    );
    assert_eq!(contents(&out).0, "echo: why [reasoning]", "{out:?}");
    let last_r = out
        .iter()
        .rposition(|o| matches!(o, Output::Reasoning(_)))
        .unwrap();
    let first_c = out
        .iter()
        .position(|o| matches!(o, Output::Content(_)))
        .unwrap();
    assert!(last_r < first_c, "reasoning before content: {out:?}");
    assert!(
        matches!(
            out.last(),
            Some(Output::Finished {
                finish_reason: "stop",
                ..
            })
        ),
        "{out:?}"
    );
    assert_no_user_echo(&ev, &out);
}

/// A failing model: with a retry budget of N the run fails exactly when OpenCode reports retry
/// N+1, carrying the provider's message, with no content; within the budget nothing is terminal.
#[test]
fn model_failure_fails_when_the_retry_budget_is_spent() {
    let Some(ev) = fixture("model_failure") else {
        return;
    };
    let attempts = ev
        .iter()
        .filter(|e| e.properties["status"]["type"] == "retry")
        .count() as u32;
    assert!(attempts >= 2, "fixture needs 2+ retries");
    for budget in 1..attempts {
        let out = run_adapter(&ev, budget);
        assert!(contents(&out).0.is_empty(), "{out:?}");
        match out.last() {
            Some(Output::Failed(e)) => {
                let m = e.to_string();
                assert!(m.contains(FAILURE_MESSAGE), "budget {budget}: {m}");
            }
            other => panic!("budget {budget}: expected Failed, got {other:?}"),
        }
        // It fails exactly when attempt budget+1 is reported, not earlier.
        let mut a = Pipe::new(budget, false);
        let mut retries_seen = 0;
        for e in &ev {
            let out = a.feed(e);
            if e.properties["status"]["type"] == "retry" {
                retries_seen += 1;
            }
            if !out.is_empty() {
                assert_eq!(
                    retries_seen,
                    budget + 1,
                    "budget {budget}: failed at retry {retries_seen}"
                );
                break;
            }
        }
    }
    let out = run_adapter(&ev, attempts);
    assert!(
        out.is_empty(),
        "within the retry budget ({attempts}) nothing is terminal yet: {out:?}"
    );
    assert_no_user_echo(&ev, &out);
}

/// An aborted run: the text so far is forwarded, then the run fails with an abort message.
#[test]
fn aborted_run_fails_after_the_text_so_far() {
    let Some(ev) = fixture("abort") else { return };
    let out = run_adapter(&ev, 2);
    assert_eq!(contents(&out).0, "echo: one two three", "{out:?}");
    match out.last() {
        Some(Output::Failed(e)) => {
            let m = e.to_string().to_lowercase();
            assert!(m.contains("abort"), "abort failure message: {m}");
        }
        other => panic!("abort.jsonl must end Failed, got {other:?}"),
    }
    assert_no_user_echo(&ev, &out);
}

/// A model OpenCode does not know: the run fails with OpenCode's message, without the stack
/// trace of its second `session.error`, and no content.
#[test]
fn unknown_model_fails_without_a_stack_trace() {
    let Some(ev) = fixture("unknown_model") else {
        return;
    };
    let out = run_adapter(&ev, 2);
    assert!(contents(&out).0.is_empty(), "{out:?}");
    match out.last() {
        Some(Output::Failed(e)) => {
            let m = e.to_string();
            assert!(m.contains("Model not found: mock/nope."), "{m}");
            assert!(!m.contains("    at "), "stack trace forwarded: {m}");
        }
        other => panic!("unknown_model.jsonl must end Failed, got {other:?}"),
    }
    assert_no_user_echo(&ev, &out);
}
