//! The fake OpenCode's runs and event stream.

use super::*;

/// The ids of the current run of `sid`: its user message, assistant message and text part
/// (ascending from run to run, as OpenCode's: a later run's are never taken for an earlier's).
pub(super) fn run_ids(s: &FakeState, sid: &str) -> (String, String, String) {
    let n = s.turns.lock().unwrap().get(sid).copied().unwrap_or(1);
    (
        format!("msg_{n:06}u"),
        format!("msg_{n:06}v"),
        format!("prt_{n:06}"),
    )
}

/// A run's opening events: its user message, busy, the assistant message and its text part.
pub(super) fn emit_run_start(s: &FakeState, sid: &str) {
    let (u, a, p) = run_ids(s, sid);
    s.emit(
        "message.updated",
        json!({"info": {"id": u, "sessionID": sid, "role": "user"}}),
    );
    s.emit(
        "session.status",
        json!({"sessionID": sid, "status": {"type": "busy"}}),
    );
    s.emit(
        "message.updated",
        json!({"info": {"id": a, "sessionID": sid, "role": "assistant", "parentID": u}}),
    );
    s.emit(
        "message.part.updated",
        json!({"part": {"id": p, "sessionID": sid, "messageID": a, "type": "text", "text": ""}}),
    );
}

/// The start of a run of `sid` followed by `n` 2 KiB deltas (paced so that the broadcast to
/// `/event` streams keeps up), and no end.
pub(super) async fn emit_flood(s: &FakeState, sid: &str, n: u32) {
    let (_, a, p) = run_ids(s, sid);
    emit_run_start(s, sid);
    let delta = "x".repeat(2048);
    for i in 0..n {
        s.emit(
            "message.part.delta",
            json!({"sessionID": sid, "messageID": a, "partID": p, "field": "text", "delta": delta}),
        );
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A successful run of `sid` whose answer ([`FAKE_ANSWER`] repeated `n` times) arrives as `n`
/// deltas `gap` apart.
pub(super) async fn emit_slow_run(s: &FakeState, sid: &str, n: u32, gap: Duration) {
    emit_run_start(s, sid);
    for _ in 0..n {
        tokio::time::sleep(gap).await;
        emit_delta(s, sid, FAKE_ANSWER);
    }
    emit_run_end(s, sid);
}

pub(super) fn emit_delta(s: &FakeState, sid: &str, text: &str) {
    let (_, a, p) = run_ids(s, sid);
    s.emit(
        "message.part.delta",
        json!({"sessionID": sid, "messageID": a, "partID": p, "field": "text", "delta": text}),
    );
}

/// The events of one short successful run of `sid`, in OpenCode's order.
pub(super) fn emit_run(s: &FakeState, sid: &str) {
    emit_run_start(s, sid);
    emit_delta(s, sid, FAKE_ANSWER);
    emit_run_end(s, sid);
}

/// A run's closing events: the finished assistant message (with tokens) and idle.
pub(super) fn emit_run_end(s: &FakeState, sid: &str) {
    let (u, a, _) = run_ids(s, sid);
    s.emit(
        "message.updated",
        json!({"info": {
            "id": a, "sessionID": sid, "role": "assistant", "parentID": u,
            "finish": "stop",
            "tokens": {"input": 1, "output": 2, "reasoning": 0, "cache": {"read": 0, "write": 0}}
        }}),
    );
    s.emit("session.idle", json!({"sessionID": sid}));
}

pub(super) async fn event_stream(State(s): St) -> Response {
    if s.faults.events_fail.load(SeqCst) {
        return opencode_error(StatusCode::INTERNAL_SERVER_ERROR, "event stream broken");
    }
    s.seen.event_connections.fetch_add(1, SeqCst);
    // Subscribe before answering so that nothing emitted after the headers is missed.
    let rx = s.events.subscribe();
    let first = s.frame("server.connected", json!({}));
    let stream = futures::stream::unfold(
        (Some(first), rx, s, false),
        |(first, mut rx, s, ended)| async move {
            if ended {
                return None;
            }
            if let Some(f) = first {
                let ev = SseEvent::default().data(f.to_string());
                return Some((Ok::<_, Infallible>(ev), (None, rx, s, false)));
            }
            loop {
                match rx.recv().await {
                    Ok(f) => {
                        let drop_now = f["type"] == "message.part.delta"
                            && s.faults.drop_after_delta.load(SeqCst);
                        let ev = SseEvent::default().data(f.to_string());
                        return Some((Ok(ev), (None, rx, s, drop_now)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream).into_response()
}

/// Only `mock/echo` (text in, no variants): the fake's catalog unless a test sets another.
pub fn echo_only() -> Value {
    json!({"echo": {"id": "echo", "capabilities": {"input": {"image": false}}}})
}

/// `mock/echo` (text only), `mock/vision` (image input) and `mock/thinker` (reasoning-effort
/// variants `low` and `high`): the shape of the real test bed's `mock` provider.
pub fn mock_models() -> Value {
    json!({
        "echo": {"id": "echo", "capabilities": {"input": {"image": false}}},
        "vision": {"id": "vision", "capabilities": {"input": {"image": true}}},
        "thinker": {"id": "thinker", "capabilities": {"input": {"image": false}},
                    "variants": {"high": {"reasoningEffort": "high"}, "low": {"reasoningEffort": "low"}}}
    })
}
