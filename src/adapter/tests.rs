//! The adapter on OpenCode 1.18's recorded event shapes, through the 1.18 decoder: the two
//! together are what a run does with its session's events.

use super::*;
use crate::opencode::events::Finish;
use crate::opencode::{Event, RunDecoder};
use serde_json::json;

/// A run's decoder and adapter, fed raw events.
struct Pipe {
    d: RunDecoder,
    a: Adapter,
}

impl Pipe {
    fn new(max_retries: u32, history_end: Option<String>) -> Pipe {
        Pipe {
            d: RunDecoder::new(history_end, false),
            a: Adapter::new(max_retries),
        }
    }

    fn fresh(max_retries: u32) -> Pipe {
        Pipe {
            d: RunDecoder::new(None, true),
            a: Adapter::new(max_retries),
        }
    }

    fn feed(&mut self, e: &Event) -> Vec<Output> {
        let events = self.d.feed(e);
        events.iter().flat_map(|ev| self.a.feed(ev)).collect()
    }

    fn user_message_id(&self) -> Option<&str> {
        self.d.user_message_id()
    }

    fn last_retry_message(&self) -> Option<&str> {
        self.a.last_retry_message()
    }

    fn is_done(&self) -> bool {
        self.a.is_done()
    }
}

fn ev(kind: &str, properties: Value) -> Event {
    Event {
        kind: kind.into(),
        properties,
        ..Event::default()
    }
}

fn user(s: &str) -> Event {
    ev(
        "message.updated",
        json!({"info": {"id": "msg_u", "sessionID": s, "role": "user"}}),
    )
}

#[test]
fn late_events_of_an_earlier_run_are_not_taken_for_this_one() {
    let mut a = Pipe::new(1, None);
    // A late update of the previous run's user message, then its assistant: ignored.
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_a0", "role": "user"}}),
    ));
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_u", "role": "user"}}),
    ));
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_a0", "role": "user"}}),
    ));
    let out = a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_b0", "role": "assistant", "parentID": "msg_a0",
        "error": {"name": "MessageAbortedError"}}}),
    ));
    assert!(out.is_empty());
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_v", "role": "assistant", "parentID": "msg_u"}}),
    ));
    a.feed(&ev(
        "message.part.updated",
        json!({"part": {"id": "p", "messageID": "msg_v", "type": "text", "text": "ok"}}),
    ));
    let out = a.feed(&ev("session.idle", json!({"sessionID": "s"})));
    assert!(matches!(&out[..], [Output::Finished { .. }]), "{out:?}");
}

#[test]
fn messages_up_to_the_history_end_are_not_this_runs() {
    // A fork's copied pair arrives after the subscription: ids at or below the history's end.
    let mut a = Pipe::new(1, Some("msg_b".into()));
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_a", "role": "user"}}),
    ));
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_b", "role": "assistant", "parentID": "msg_a"}}),
    ));
    let out = a.feed(&ev(
        "message.part.updated",
        json!({"part": {"id": "p0", "messageID": "msg_b", "type": "text", "text": "old"}}),
    ));
    assert!(out.is_empty());
    assert_eq!(a.user_message_id(), None);
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_c", "role": "user"}}),
    ));
    a.feed(&ev(
        "message.updated",
        json!({"info": {"id": "msg_d", "role": "assistant", "parentID": "msg_c"}}),
    ));
    let out = a.feed(&ev(
        "message.part.updated",
        json!({"part": {"id": "p1", "messageID": "msg_d", "type": "text", "text": "new"}}),
    ));
    assert_eq!(out, vec![Output::Content("new".into())]);
}

#[test]
fn a_failure_before_any_message_fails_a_fresh_run_only() {
    let mut reused = Pipe::new(1, None);
    let late = ev(
        "session.error",
        json!({"sessionID": "s", "error": {"name": "APIError"}}),
    );
    assert!(reused.feed(&late).is_empty());
    let mut a = Pipe::fresh(1);
    let out = a.feed(&ev(
        "session.error",
        json!({"sessionID": "s",
        "error": {"name": "UnknownError", "data": {"message": "Agent not found: nope"}}}),
    ));
    assert!(
        matches!(&out[..], [Output::Failed(ApiError::Upstream(m))] if m.contains("Agent not found"))
    );
}

#[test]
fn usage_mapping_matches_opencode_semantics() {
    let u = usage_from_tokens(&Tokens {
        input: 60,
        output: 13,
        reasoning: 7,
        cache_read: 40,
        cache_write: 0,
    });
    assert_eq!(u.prompt_tokens, 100);
    assert_eq!(u.completion_tokens, 20);
    assert_eq!(u.total_tokens, 120);
    assert_eq!(u.prompt_tokens_details.cached_tokens, 40);
    assert_eq!(u.completion_tokens_details.reasoning_tokens, 7);
}

#[test]
fn finish_mapping() {
    assert_eq!(map_finish(Some(Finish::Stop)), "stop");
    assert_eq!(map_finish(Some(Finish::Length)), "length");
    assert_eq!(map_finish(Some(Finish::ToolCalls)), "stop");
    assert_eq!(map_finish(None), "stop");
}

/// `message.part.updated` of part `id` (type `kind`, whole text `text`) of message `msg`.
fn part(msg: &str, id: &str, kind: &str, text: &str) -> Event {
    ev(
        "message.part.updated",
        json!({"part": {"id": id, "messageID": msg, "sessionID": "ses_1", "type": kind, "text": text}}),
    )
}

/// `message.part.delta` adding `delta` to part `id` of message `msg`.
fn delta(msg: &str, id: &str, delta: &str) -> Event {
    ev(
        "message.part.delta",
        json!({"sessionID": "ses_1", "messageID": msg, "partID": id, "field": "text", "delta": delta}),
    )
}

fn status(kind: &str) -> Event {
    ev(
        "session.status",
        json!({"sessionID": "ses_1", "status": {"type": kind}}),
    )
}

#[test]
fn never_echoes_the_user_part_and_routes_by_part_type() {
    let mut a = Pipe::new(2, None);
    let s = "ses_1";
    let mut out = Vec::new();
    for e in [
        ev(
            "message.updated",
            json!({"info": {"id": "msg_u", "sessionID": s, "role": "user"}}),
        ),
        part("msg_u", "prt_u", "text", "hello"),
        delta("msg_u", "prt_u", "hello"),
        status("busy"),
        ev(
            "message.updated",
            json!({"info": {"id": "msg_a", "sessionID": s, "role": "assistant", "parentID": "msg_u"}}),
        ),
        part("msg_a", "prt_r", "reasoning", ""),
        delta("msg_a", "prt_r", "hmm"),
        part("msg_a", "prt_t", "text", ""),
        delta("msg_a", "prt_t", "Hi "),
        delta("msg_a", "prt_t", "there"),
        part("msg_a", "prt_t", "text", "Hi there!"),
        ev(
            "message.updated",
            json!({"info": {"id": "msg_a", "sessionID": s, "role": "assistant", "parentID": "msg_u", "finish": "length",
            "tokens": {"input": 5, "output": 3, "reasoning": 1, "cache": {"read": 0, "write": 0}}}}),
        ),
        status("idle"),
        ev("session.idle", json!({"sessionID": s})),
    ] {
        out.extend(a.feed(&e));
    }
    assert_eq!(
        out,
        vec![
            Output::Reasoning("hmm".into()),
            Output::Content("Hi ".into()),
            Output::Content("there".into()),
            Output::Content("!".into()),
            Output::Finished {
                finish_reason: "length",
                usage: usage_from_tokens(&Tokens {
                    input: 5,
                    output: 3,
                    reasoning: 1,
                    ..Tokens::default()
                }),
            },
        ]
    );
    assert!(a.is_done());
}

#[test]
fn retries_beyond_budget_fail_with_the_provider_message() {
    let mut a = Pipe::new(1, None);
    a.feed(&user("s"));
    let retry = |n: u64| {
        ev(
            "session.status",
            json!({"sessionID": "s", "status": {"type": "retry", "attempt": n, "message": "boom 500"}}),
        )
    };
    assert!(a.feed(&retry(1)).is_empty());
    assert_eq!(a.last_retry_message(), Some("boom 500"));
    match a.feed(&retry(2)).as_slice() {
        [Output::Failed(ApiError::Upstream(m))] => assert!(m.contains("boom 500")),
        other => panic!("{other:?}"),
    }
    assert!(a.feed(&retry(3)).is_empty(), "nothing after the end");
}

#[test]
fn session_error_and_assistant_error_fail() {
    let mut a = Pipe::new(1, None);
    a.feed(&user("s"));
    let out = a.feed(&ev("session.error", json!({"sessionID": "s", "error": {"name": "UnknownError", "data": {"message": "model nope"}}})));
    assert!(
        matches!(&out[..], [Output::Failed(ApiError::Upstream(m))] if m.contains("model nope"))
    );

    let mut a = Pipe::new(1, None);
    a.feed(&user("s"));
    let out = a.feed(&ev("message.updated", json!({"info": {"id": "m", "role": "assistant", "parentID": "msg_u", "error": {"name": "APIError", "data": {"message": "quota"}}}})));
    assert!(matches!(&out[..], [Output::Failed(ApiError::Upstream(m))] if m.contains("quota")));
}

#[test]
fn events_before_the_user_message_are_ignored_and_idle_without_answer_fails() {
    let mut a = Pipe::new(1, None);
    assert!(a
        .feed(&ev("session.idle", json!({"sessionID": "s"})))
        .is_empty());
    assert!(a
        .feed(&ev(
            "session.error",
            json!({"sessionID": "s", "error": {"name": "MessageAbortedError"}})
        ))
        .is_empty());
    a.feed(&user("s"));
    a.feed(&ev(
        "session.status",
        json!({"sessionID": "s", "status": {"type": "busy"}}),
    ));
    assert!(matches!(
        &a.feed(&ev("session.idle", json!({"sessionID": "s"})))[..],
        [Output::Failed(_)]
    ));
}
