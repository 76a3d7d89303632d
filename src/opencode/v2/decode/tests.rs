//! The 2.x decoder on 2.1.2's recorded event shapes.
use super::*;
use serde_json::json;

fn ev(kind: &str, data: Value) -> Event {
    Event {
        kind: kind.into(),
        properties: data,
        directory: None,
    }
}

#[test]
fn a_text_run_decodes_in_order() {
    let mut d = Decoder::default();
    assert!(
        d.feed(&ev(
            "session.step.ended",
            json!({"assistantMessageID": "msg_old", "finish": "stop"})
        ))
        .is_empty(),
        "a late event of an earlier run"
    );
    d.feed(&ev(
        "session.inbox.enqueued",
        json!({"sessionID": "ses_1", "inboxID": "msg_u"}),
    ));
    d.feed(&ev(
        "session.execution.started",
        json!({"sessionID": "ses_1"}),
    ));
    assert_eq!(d.user_message_id(), Some("msg_u"));
    let step = d.feed(&ev(
        "session.step.started",
        json!({"assistantMessageID": "msg_a"}),
    ));
    assert!(matches!(&step[..], [RunEvent::Step(s)] if s.message == "msg_a" && !s.completed));
    assert_eq!(
        d.feed(&ev(
            "session.reasoning.delta",
            json!({"assistantMessageID": "msg_a", "delta": "hm"})
        )),
        vec![RunEvent::Reasoning {
            message: "msg_a".into(),
            text: "hm".into()
        }]
    );
    assert_eq!(
        d.feed(&ev(
            "session.text.delta",
            json!({"assistantMessageID": "msg_a", "delta": "hi"})
        )),
        vec![RunEvent::Text {
            message: "msg_a".into(),
            text: "hi".into()
        }]
    );
    let ended = d.feed(&ev(
        "session.step.ended",
        json!({
            "assistantMessageID": "msg_a", "finish": "stop",
            "tokens": {"input": 10, "output": 2, "reasoning": 1, "cache": {"read": 3, "write": 0}}
        }),
    ));
    let [RunEvent::Step(s)] = &ended[..] else {
        panic!("{ended:?}")
    };
    assert_eq!(s.finish, Some(Finish::Stop));
    assert_eq!(
        s.tokens
            .map(|t| (t.input, t.output, t.reasoning, t.cache_read)),
        Some((10, 2, 1, 3))
    );
    assert_eq!(d.last_assistant_id(), Some("msg_a"));
    assert_eq!(
        d.feed(&ev("session.execution.succeeded", json!({}))),
        vec![RunEvent::Idle]
    );
}

#[test]
fn a_prompt_delivered_into_a_running_execution_starts_the_run() {
    let mut d = Decoder::default();
    d.feed(&ev("session.inbox.enqueued", json!({"inboxID": "msg_u"})));
    assert!(d
        .feed(&ev(
            "session.step.ended",
            json!({"assistantMessageID": "old"})
        ))
        .is_empty());
    d.feed(&ev(
        "session.inbox.delivered",
        json!({"inboxID": "msg_other"}),
    ));
    assert_eq!(d.user_message_id(), None, "someone else's input");
    d.feed(&ev("session.inbox.delivered", json!({"inboxID": "msg_u"})));
    assert_eq!(d.user_message_id(), Some("msg_u"));
    let text = d.feed(&ev(
        "session.text.delta",
        json!({"assistantMessageID": "m", "delta": "x"}),
    ));
    assert_eq!(
        text,
        vec![RunEvent::Text {
            message: "m".into(),
            text: "x".into()
        }]
    );
}

#[test]
fn a_step_cut_by_the_token_limit_ends_the_run_there() {
    let mut d = Decoder::default();
    d.feed(&ev("session.execution.started", json!({})));
    d.feed(&ev(
        "session.step.started",
        json!({"assistantMessageID": "m1"}),
    ));
    let out = d.feed(&ev(
        "session.step.ended",
        json!({"assistantMessageID": "m1", "finish": "length"}),
    ));
    assert!(
        matches!(&out[..], [RunEvent::Step(s), RunEvent::Idle] if s.finish == Some(Finish::Length)),
        "{out:?}"
    );
    assert!(d.cut_short(), "OpenCode goes on: the run must interrupt it");
    assert!(d
        .feed(&ev(
            "session.step.started",
            json!({"assistantMessageID": "m2"})
        ))
        .is_empty());
}

#[test]
fn tools_retries_failures_and_asks() {
    let mut d = Decoder::default();
    d.feed(&ev("session.execution.started", json!({})));
    d.feed(&ev(
        "session.tool.input.started",
        json!({"assistantMessageID": "m", "id": "c1", "name": "ptk01_get"}),
    ));
    let called = d.feed(&ev(
        "session.tool.called",
        json!({"assistantMessageID": "m", "id": "c1", "input": {"q": 1}}),
    ));
    let [RunEvent::Tool(t)] = &called[..] else {
        panic!("{called:?}")
    };
    assert_eq!(
        (t.tool.as_str(), t.status, &t.input),
        ("ptk01_get", ToolStatus::Running, &json!({"q": 1}))
    );
    let done = d.feed(&ev(
        "session.tool.success",
        json!({"assistantMessageID": "m", "id": "c1", "content": [{"type": "text", "text": "ok"}]}),
    ));
    let [RunEvent::Tool(t)] = &done[..] else {
        panic!("{done:?}")
    };
    assert_eq!(
        (t.status, t.output.as_deref()),
        (ToolStatus::Completed, Some("ok"))
    );
    let retry = d.feed(&ev(
        "session.retry.scheduled",
        json!({"attempt": 2, "error": {"type": "provider.internal", "message": "mock failure"}}),
    ));
    assert_eq!(
        retry,
        vec![RunEvent::Retrying {
            attempt: 1,
            message: "mock failure".into()
        }]
    );
    let failed = d.feed(&ev(
        "session.execution.failed",
        json!({"error": {"type": "provider.no-route", "message": "Model unavailable: x/y"}}),
    ));
    assert!(
        matches!(&failed[..], [RunEvent::Failed(f)] if f.kind == FailureKind::Provider && f.message.contains("Model unavailable"))
    );
    let stopped = d.feed(&ev(
        "session.execution.interrupted",
        json!({"reason": "user"}),
    ));
    assert!(matches!(&stopped[..], [RunEvent::Failed(f)] if f.kind == FailureKind::Interrupted));
    let asked = d.feed(&ev("permission.asked", json!({"id": "per_1", "sessionID": "ses_1", "action": "shell", "resources": ["ls"], "save": ["ls *"]})));
    let [RunEvent::Asked(a)] = &asked[..] else {
        panic!("{asked:?}")
    };
    assert_eq!(
        (a.permission.as_str(), a.patterns.clone(), a.kind),
        ("bash", vec!["ls".to_string()], AskKind::Permission)
    );
    let form = d.feed(&ev("form.created", json!({"form": {"id": "frm_1", "sessionID": "ses_1", "fields": [{"key": "q0", "title": "Pick", "options": [{"value": "A", "label": "A"}]}]}})));
    let [RunEvent::Asked(q)] = &form[..] else {
        panic!("{form:?}")
    };
    assert_eq!(
        (q.id.as_str(), q.kind, q.session_id.as_str()),
        ("frm_1", AskKind::Question, "ses_1")
    );
    assert_eq!(q.details["questions"][0]["question"], "Pick");
    assert_eq!(
        d.feed(&ev(
            "permission.replied",
            json!({"requestID": "per_1", "reply": "once"})
        )),
        vec![RunEvent::Answered { id: "per_1".into() }]
    );
}
