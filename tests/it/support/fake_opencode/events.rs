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

/// A run answering a structured prompt: no text, the value as the message's `structured`.
pub(super) fn emit_structured_run(s: &FakeState, sid: &str, value: Value) {
    let (u, a, _) = run_ids(s, sid);
    emit_run_start(s, sid);
    s.emit(
        "message.updated",
        json!({"info": {
            "id": a, "sessionID": sid, "role": "assistant", "parentID": u,
            "finish": "stop", "structured": value,
            "tokens": {"input": 1, "output": 2, "reasoning": 0, "cache": {"read": 0, "write": 0}}
        }}),
    );
    s.emit("session.idle", json!({"sessionID": sid}));
}

/// The smallest value `schema` accepts, roughly: required properties filled by type, the first
/// of an enum or a choice, local `$ref`s followed (to a bounded depth).
pub fn minimal_instance(schema: &Value, root: &Value, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(r) = schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        let target = root.pointer(r).unwrap_or(&Value::Null);
        return minimal_instance(target, root, depth + 1);
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema[key].as_array().and_then(|a| a.first()) {
            return minimal_instance(first, root, depth + 1);
        }
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(ts) => ts.first().and_then(Value::as_str).unwrap_or("object"),
        _ => "object",
    };
    match kind {
        "string" => json!(""),
        "integer" | "number" => json!(schema["minimum"].as_f64().map_or(0, |m| m.ceil() as i64)),
        "boolean" => json!(false),
        "null" => Value::Null,
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(0).min(4);
            Value::Array(
                (0..n)
                    .map(|_| minimal_instance(&schema["items"], root, depth + 1))
                    .collect(),
            )
        }
        _ => {
            let mut out = serde_json::Map::new();
            for name in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let prop = &schema["properties"][name];
                out.insert(name.to_string(), minimal_instance(prop, root, depth + 1));
            }
            Value::Object(out)
        }
    }
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
