//! Helpers of the session steps: histories, upstream sessions, turns, fresh gateways.

use super::*;

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
pub(super) const TRANSCRIPT_MARK: &str = "The conversation so far";
/// The title the gateway gives its sessions by default.
pub(super) const TITLE: &str = "PorTaTek Gateway";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `(role, content)` of each message of a `GET /v1/sessions/{id}/messages` answer.
pub(super) fn history_of(list: &Value) -> Vec<(String, String)> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data list: {list}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").to_string(),
                m["content"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub(super) fn rt(role: &str, text: &str) -> (String, String) {
    (role.to_string(), text.to_string())
}

/// Ids of every session OpenCode lists (each scenario starts without any, and only its gateway
/// creates sessions).
pub(super) async fn upstream_ids(bed: &TestBed) -> BTreeSet<String> {
    bed.opencode.session_ids().await
}

/// One gateway request with an explicit key and optional `x-session-id` → (status, JSON body).
pub(super) async fn send(
    bed: &TestBed,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
    session: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = bed.client.request(method.clone(), bed.url(path));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    if let Some(s) = session {
        rb = rb.header("x-session-id", s);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let resp = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    read_json(resp).await
}

/// `method path` without a body, as `key`.
pub(super) async fn call(
    bed: &TestBed,
    key: Option<&str>,
    method: Method,
    path: &str,
) -> (StatusCode, Value) {
    send(bed, key, method, path, None, None).await
}

/// Non-streaming chat with a key (and optional pinned session).
pub(super) async fn chat_as(
    bed: &TestBed,
    key: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    send(
        bed,
        key,
        Method::POST,
        "/v1/chat/completions",
        Some(body),
        session,
    )
    .await
}

/// Streaming chat (bed's own key): the content of a conforming stream ending in `[DONE]`.
pub(super) async fn stream_content(bed: &TestBed, messages: Vec<Value>) -> String {
    bed.read_ok_stream(streaming(chat_body(ECHO, messages)))
        .await
        .content
}

/// Asserts a 404 in OpenAI's error shape.
#[track_caller]
pub(super) fn assert_not_found(what: &str, status: StatusCode, v: &Value) {
    assert_error(status, v, 404, None, None, what);
}

/// Model calls made since `before`, checked to be exactly `n`.
pub(super) fn new_calls(bed: &TestBed, before: usize, n: usize, what: &str) -> Vec<Value> {
    let all = bed.mock.requests();
    let new: Vec<Value> = all[before..].to_vec();
    assert_eq!(
        new.len(),
        n,
        "{what}: expected {n} new model call(s), got {}: {:#?}",
        new.len(),
        new.iter().map(turns_of).collect::<Vec<_>>()
    );
    new
}

/// The one model call of a chat, made while `chat` runs.
pub(super) async fn one_call<F: std::future::Future>(
    bed: &TestBed,
    what: &str,
    chat: F,
) -> (F::Output, Value) {
    let before = bed.mock.call_count();
    let out = chat.await;
    let call = new_calls(bed, before, 1, what).remove(0);
    (out, call)
}

/// Turn 1 of a new conversation (as `key`) on an OpenCode without sessions: the one session it
/// created upstream, and its reply.
pub(super) async fn first_turn(bed: &TestBed, key: Option<&str>, text: &str) -> (String, String) {
    let (s, v) = chat_as(bed, key, None, &ask(ECHO, text)).await;
    let reply = reply_of(s, &v);
    let ids = upstream_ids(bed).await;
    assert_eq!(ids.len(), 1, "turn 1 should create one session: {ids:?}");
    (ids.into_iter().next().unwrap(), reply)
}

/// Turn 2 of the conversation [`first_turn`] started with "hi one" (as `key`): answered, the
/// model seeing both earlier turns exactly once, as real messages (no transcript replayed).
pub(super) async fn turn_two_continues(bed: &TestBed, key: Option<&str>, r1: &str, what: &str) {
    let turn2 = chat_body(ECHO, vec![user("hi one"), assistant(r1), user("second")]);
    let ((s, v), call) = one_call(bed, what, chat_as(bed, key, None, &turn2)).await;
    assert_eq!(reply_of(s, &v), "echo: second", "{what}");
    let want = vec![
        rt("user", "hi one"),
        rt("assistant", r1),
        rt("user", "second"),
    ];
    assert_eq!(
        turns_of(&call),
        want,
        "{what} must reach the model as real messages, each exactly once"
    );
    assert!(
        !call.to_string().contains(TRANSCRIPT_MARK),
        "{what} replayed a transcript: {call}"
    );
}

/// Replaces the bed's gateway with one started with `opts`, on an OpenCode without sessions
/// (the old gateway is killed first, then every upstream session is deleted).
pub(super) async fn fresh_gateway(bed: &mut TestBed, opts: GatewayOptions) {
    bed.gateway.kill().await;
    // Requests the killed gateway had in flight may still create sessions for a moment: clear
    // until OpenCode holds none for half a second (the tests count sessions).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        bed.opencode.delete_all_sessions().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if bed.opencode.session_ids().await.is_empty() || Instant::now() > deadline {
            break;
        }
    }
    bed.gateway = Gateway::start_with(&bed.opencode.url(), opts).await;
}

/// Gateway options with the API keys `k1` and `k2` (in this order or another).
pub(super) fn with_keys(keys: &str) -> GatewayOptions {
    GatewayOptions::default().env("PORTATEK_API_KEYS", keys)
}

/// The ids of a `GET /v1/sessions` answer.
pub(super) fn listed_ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data list: {list}"))
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The session API: keys, explicit and pinned sessions
// ---------------------------------------------------------------------------------------------

pub(super) const K1: Option<&str> = Some("k1");
pub(super) const K2: Option<&str> = Some("k2");
