//! Integration tests of the conversation → OpenCode session pool and the session API, against a
//! real `opencode serve` and the scripted mock model.
//!
//! Beds are shared between related checks to keep the runtime modest: each bed costs a fresh
//! OpenCode (a few seconds to start, and a slow first model call).

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::mock_model::content_text;
use support::{Gateway, GatewayOptions, OpenCodeOptions, TestBed};

const MODEL: &str = "mock/echo";
/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
const TRANSCRIPT_MARK: &str = "The conversation so far";

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

fn chat_body(messages: Vec<Value>) -> Value {
    json!({"model": MODEL, "messages": messages})
}

fn stream_body(messages: Vec<Value>) -> Value {
    json!({"model": MODEL, "messages": messages, "stream": true})
}

/// The answer text of a non-streaming chat completion (panics with the body otherwise).
fn reply_of(status: StatusCode, v: &Value) -> String {
    assert_eq!(status, StatusCode::OK, "chat completion failed: {v}");
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no message content in {v}"))
        .to_string()
}

/// `(role, text)` of every non-system message the model received in one call.
fn turns_of(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in model request {request}"))
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").to_string(),
                content_text(&m["content"]),
            )
        })
        .collect()
}

/// `(role, content)` of each message of a `GET /v1/sessions/{id}/messages` answer.
fn history_of(list: &Value) -> Vec<(String, String)> {
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

fn rt(role: &str, text: &str) -> (String, String) {
    (role.to_string(), text.to_string())
}

/// Ids of every session OpenCode lists (only the gateway creates sessions in these beds).
async fn upstream_ids(bed: &TestBed) -> BTreeSet<String> {
    bed.opencode
        .sessions()
        .await
        .iter()
        .map(|s| s["id"].as_str().expect("session id").to_string())
        .collect()
}

/// Polls `cond` every 200 ms until it holds or `timeout` passes; returns whether it held.
async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One gateway request with an explicit key and optional `x-session-id` → (status, JSON body).
async fn send(
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
    support::api::read_json(resp).await
}

/// Non-streaming chat with a key (and optional pinned session).
async fn chat_as(
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

/// Streaming chat (bed's own key): the assembled content; asserts a clean `[DONE]` ending.
async fn stream_content(bed: &TestBed, body: Value) -> String {
    let (status, payloads) = bed.chat_stream(body).await;
    assert_eq!(status, StatusCode::OK, "stream failed: {payloads:?}");
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "stream did not end with [DONE]: {payloads:?}"
    );
    let mut content = String::new();
    for p in &payloads[..payloads.len() - 1] {
        let v: Value = serde_json::from_str(p).unwrap_or_else(|e| panic!("bad chunk {p}: {e}"));
        assert!(v.get("error").is_none(), "error in stream: {v}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
    }
    content
}

/// Asserts a 404 in OpenAI's error shape.
fn assert_not_found(what: &str, status: StatusCode, v: &Value) {
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{what}: expected 404, got {status}: {v}"
    );
    let err = &v["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: error.message missing: {v}"
    );
    assert!(err["type"].is_string(), "{what}: error.type missing: {v}");
    assert!(
        err.get("param").is_some() && err.get("code").is_some(),
        "{what}: error.param/code missing: {v}"
    );
}

/// Model calls made since `before`, checked to be exactly `n`.
fn new_calls(bed: &TestBed, before: usize, n: usize, what: &str) -> Vec<Value> {
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

/// Affinity without replay (JSON and streaming), an edited history starting a seeded session,
/// an OpenCode restart between turns, and `delete_on_shutdown` deleting every pooled session
/// when the gateway gets SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown() {
    let mut bed = TestBed::start().await;

    // ---- JSON: turn 1 creates a session, turn 2 continues it with only the new message.
    let (s, v) = bed.chat(chat_body(vec![user("hi one")])).await;
    let r1 = reply_of(s, &v);
    assert_eq!(r1, "echo: hi one");
    let ids = upstream_ids(&bed).await;
    assert_eq!(ids.len(), 1, "turn 1 should create one session: {ids:?}");
    let s1 = ids.iter().next().unwrap().clone();

    let before = bed.mock.call_count();
    let (s, v) = bed
        .chat(chat_body(vec![
            user("hi one"),
            assistant(&r1),
            user("second"),
        ]))
        .await;
    assert_eq!(reply_of(s, &v), "echo: second");
    let call = &new_calls(&bed, before, 1, "JSON turn 2")[0];
    assert_eq!(
        turns_of(call),
        vec![
            rt("user", "hi one"),
            rt("assistant", &r1),
            rt("user", "second")
        ],
        "turn 2 must reach the model as real messages, each exactly once"
    );
    assert!(
        !call.to_string().contains(TRANSCRIPT_MARK),
        "turn 2 replayed a transcript: {call}"
    );
    assert_eq!(
        upstream_ids(&bed).await,
        BTreeSet::from([s1.clone()]),
        "turn 2 must reuse the turn-1 session"
    );
    assert_eq!(bed.opencode.messages(&s1).await.len(), 4);

    // ---- Streaming: same behaviour.
    let rs = stream_content(&bed, stream_body(vec![user("hi stream")])).await;
    assert_eq!(rs, "echo: hi stream");
    let ids = upstream_ids(&bed).await;
    assert_eq!(
        ids.len(),
        2,
        "a new conversation gets its own session: {ids:?}"
    );
    let s2 = ids.iter().find(|i| **i != s1).unwrap().clone();

    let before = bed.mock.call_count();
    let rs2 = stream_content(
        &bed,
        stream_body(vec![user("hi stream"), assistant(&rs), user("more")]),
    )
    .await;
    assert_eq!(rs2, "echo: more");
    let call = &new_calls(&bed, before, 1, "streaming turn 2")[0];
    assert_eq!(
        turns_of(call),
        vec![
            rt("user", "hi stream"),
            rt("assistant", &rs),
            rt("user", "more")
        ]
    );
    assert!(!call.to_string().contains(TRANSCRIPT_MARK));
    assert_eq!(
        upstream_ids(&bed).await,
        BTreeSet::from([s1.clone(), s2.clone()])
    );
    assert_eq!(bed.opencode.messages(&s2).await.len(), 4);

    // ---- Edited history: a changed earlier user text cannot continue s1: a new, seeded session.
    let before = bed.mock.call_count();
    let (s, v) = bed
        .chat(chat_body(vec![
            user("hi one, edited"),
            assistant(&r1),
            user("second"),
        ]))
        .await;
    let edited = reply_of(s, &v);
    assert!(
        edited.starts_with("echo: ") && edited.ends_with("second"),
        "edited-history reply: {edited}"
    );
    let call = &new_calls(&bed, before, 1, "edited history")[0];
    let t = turns_of(call);
    assert_eq!(t.len(), 1, "a seeded session gets one user message: {t:?}");
    assert_eq!(t[0].0, "user");
    assert!(
        t[0].1.contains("hi one, edited") && t[0].1.contains(&r1) && t[0].1.ends_with("second"),
        "the seeded call must carry the prior turns as a transcript: {t:?}"
    );
    let ids = upstream_ids(&bed).await;
    assert_eq!(
        ids.len(),
        3,
        "the edited history needs its own session: {ids:?}"
    );
    assert_eq!(
        bed.opencode.messages(&s1).await.len(),
        4,
        "the original session must be untouched"
    );

    // ---- OpenCode restarts between turns: the next turn still answers (whether or not the
    // remembered session survived the restart).
    let restart = Instant::now();
    bed.opencode.restart().await;
    let restart_took = restart.elapsed();
    let asked = Instant::now();
    let (s, v) = bed
        .chat(chat_body(vec![
            user("hi one"),
            assistant(&r1),
            user("second"),
            assistant("echo: second"),
            user("after restart"),
        ]))
        .await;
    eprintln!(
        "[restart] OpenCode restart took {restart_took:?}; the next turn answered {s} after {:?}",
        asked.elapsed()
    );
    let hub_log = || -> String {
        let logs = bed.gateway.logs();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("event stream"))
            .collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    };
    assert_eq!(
        s,
        StatusCode::OK,
        "turn after an OpenCode restart failed after {:?} (restart took {restart_took:?}): {v}\n\
         gateway event-stream log (tail):\n{}",
        asked.elapsed(),
        hub_log()
    );
    let after = reply_of(s, &v);
    assert!(
        after.starts_with("echo: ") && after.ends_with("after restart"),
        "turn after an OpenCode restart: {after}"
    );
    let ids = upstream_ids(&bed).await;

    // ---- delete_on_shutdown (default true): SIGTERM deletes every pooled session upstream.
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway did not exit cleanly on SIGTERM: {status:?}\n{}",
        bed.gateway.logs()
    );
    let left = upstream_ids(&bed).await;
    assert!(
        left.is_empty(),
        "pooled sessions left upstream after shutdown: {left:?} (had {ids:?})"
    );
}

/// Two concurrent requests with the same history get distinct sessions (the second a fork of
/// the remembered one); both answer correctly and each model call sees the history exactly
/// once. Shutdown then leaves neither branch's session behind.
///
/// Findings are collected and reported together, so one defect does not hide the others.
#[tokio::test(flavor = "multi_thread")]
async fn pool_forks_concurrent_branches() {
    let mut bed = TestBed::start().await;
    let (s, v) = bed.chat(chat_body(vec![user("hi par")])).await;
    let r = reply_of(s, &v);
    let ids = upstream_ids(&bed).await;
    assert_eq!(ids.len(), 1);
    let s1 = ids.iter().next().unwrap().clone();
    let mut problems: Vec<String> = Vec::new();

    // ---- The same turn-2 body twice at once; the slow marker makes the runs overlap.
    let branch = "branch [slow:300] [chunks:4]";
    let body = chat_body(vec![user("hi par"), assistant(&r), user(branch)]);
    let before = bed.mock.call_count();
    let ((sa, va), (sb, vb)) = tokio::join!(bed.chat(body.clone()), bed.chat(body.clone()));
    let expected = format!("echo: {branch}");
    for (which, got) in [("first", reply_of(sa, &va)), ("second", reply_of(sb, &vb))] {
        if got != expected {
            problems.push(format!(
                "{which} concurrent branch answered {got:?}, expected {expected:?}"
            ));
        }
    }
    for call in new_calls(&bed, before, 2, "concurrent branches") {
        let t = turns_of(&call);
        let want = vec![
            rt("user", "hi par"),
            rt("assistant", &r),
            rt("user", branch),
        ];
        if t != want || call.to_string().contains(TRANSCRIPT_MARK) {
            problems.push(format!(
                "a branch's model call did not see the history exactly once as real messages: {t:?}"
            ));
        }
    }
    // Both branches answered alike, so they end under one fingerprint: the pool keeps one and
    // deletes the replaced one upstream (off the request path) rather than orphaning it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let ids = loop {
        let ids = upstream_ids(&bed).await;
        if ids.len() <= 1 || std::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if ids.len() != 1 {
        problems.push(format!(
            "expected the replaced branch's session deleted, leaving one of {s1} or its fork upstream, got {ids:?}"
        ));
    }
    for id in &ids {
        let n = bed.opencode.messages(id).await.len();
        if n != 4 {
            problems.push(format!(
                "session {id} holds {n} messages, expected 4 (turn 1, copied or original, plus its own branch)"
            ));
        }
    }

    // ---- Shutdown deletes what the pool holds; neither branch's session may be orphaned.
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    assert!(status.is_some(), "gateway did not exit on SIGTERM");
    let left = upstream_ids(&bed).await;
    if !left.is_empty() {
        let deletions: Vec<String> = bed
            .gateway
            .logs()
            .lines()
            .filter(|l| l.contains("delet"))
            .map(str::to_string)
            .collect();
        problems.push(format!(
            "sessions left upstream after shutdown: {left:?} (before: {ids:?}); \
             gateway deletion log:\n{}",
            deletions.join("\n")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Different API keys never share a pooled session, even with identical histories.
/// Then the session API (CRUD, scoping to the key, unknown ids) and pinned sessions via
/// `x-session-id` (only the last message sent, continuation, 409 while busy).
#[tokio::test(flavor = "multi_thread")]
async fn keys_isolate_sessions_and_session_api_works() {
    let bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().env("PORTATEK_API_KEYS", "k1,k2"),
    )
    .await;
    let k1 = Some("k1");
    let k2 = Some("k2");

    // ---- Pool isolation by key.
    let (s, v) = chat_as(&bed, k1, None, &chat_body(vec![user("hi one")])).await;
    let r1 = reply_of(s, &v);
    let ids = upstream_ids(&bed).await;
    assert_eq!(ids.len(), 1);
    let s1 = ids.iter().next().unwrap().clone();

    let turn2 = chat_body(vec![user("hi one"), assistant(&r1), user("second")]);
    let before = bed.mock.call_count();
    let (s, v) = chat_as(&bed, k2, None, &turn2).await;
    let other = reply_of(s, &v);
    assert!(other.ends_with("second"), "k2 reply: {other}");
    let call = &new_calls(&bed, before, 1, "k2 turn 2")[0];
    let t = turns_of(call);
    assert!(
        !t.iter().any(|(role, _)| role == "assistant"),
        "k2 must not continue k1's session (it saw k1's real messages): {t:?}"
    );
    assert_eq!(
        bed.opencode.messages(&s1).await.len(),
        2,
        "k1's session must be untouched by k2"
    );
    assert_eq!(
        upstream_ids(&bed).await.len(),
        2,
        "k2 needs its own session"
    );

    let before = bed.mock.call_count();
    let (s, v) = chat_as(&bed, k1, None, &turn2).await;
    assert_eq!(reply_of(s, &v), "echo: second");
    let call = &new_calls(&bed, before, 1, "k1 turn 2")[0];
    assert_eq!(
        turns_of(call),
        vec![
            rt("user", "hi one"),
            rt("assistant", &r1),
            rt("user", "second")
        ],
        "k1's own turn 2 continues its session"
    );
    assert_eq!(bed.opencode.messages(&s1).await.len(), 4);
    assert_eq!(upstream_ids(&bed).await.len(), 2);

    // ---- POST /v1/sessions.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (s, created) = send(&bed, k1, Method::POST, "/v1/sessions", None, None).await;
    assert_eq!(s, StatusCode::CREATED, "POST /v1/sessions: {created}");
    let p = created["id"].as_str().expect("session id").to_string();
    assert_eq!(created["object"], "session", "{created}");
    let c = created["created"].as_u64().expect("created (unix seconds)");
    assert!(c + 60 > now && c < now + 60, "created {c} vs now {now}");
    assert!(created.get("title").is_some(), "title missing: {created}");
    assert!(
        upstream_ids(&bed).await.contains(&p),
        "the session must exist upstream"
    );

    // ---- Listing is scoped to the key.
    let (s, list1) = send(&bed, k1, Method::GET, "/v1/sessions", None, None).await;
    assert_eq!(s, StatusCode::OK, "{list1}");
    let listed: Vec<&str> = list1["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data list: {list1}"))
        .iter()
        .filter_map(|x| x["id"].as_str())
        .collect();
    assert!(listed.contains(&p.as_str()), "k1's list lacks {p}: {list1}");
    let (s, list2) = send(&bed, k2, Method::GET, "/v1/sessions", None, None).await;
    assert_eq!(s, StatusCode::OK, "{list2}");
    assert!(
        !list2.to_string().contains(&p),
        "k2's list shows k1's session: {list2}"
    );

    // ---- GET one.
    let (s, got) = send(
        &bed,
        k1,
        Method::GET,
        &format!("/v1/sessions/{p}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["id"], p.as_str());
    assert_eq!(got["object"], "session");

    // ---- Pinned chat: only the last message is sent.
    let before = bed.mock.call_count();
    let (s, v) = chat_as(
        &bed,
        k1,
        Some(&p),
        &chat_body(vec![user("ctx a"), assistant("ctx b"), user("pinned one")]),
    )
    .await;
    assert_eq!(reply_of(s, &v), "echo: pinned one");
    let call = &new_calls(&bed, before, 1, "pinned turn 1")[0];
    assert_eq!(
        turns_of(call),
        vec![rt("user", "pinned one")],
        "a pinned session gets only the last message"
    );

    // ---- A second request continues the same session.
    let before = bed.mock.call_count();
    let (s, v) = chat_as(
        &bed,
        k1,
        Some(&p),
        &chat_body(vec![user("whatever"), user("pinned two")]),
    )
    .await;
    assert_eq!(reply_of(s, &v), "echo: pinned two");
    let call = &new_calls(&bed, before, 1, "pinned turn 2")[0];
    assert_eq!(
        turns_of(call),
        vec![
            rt("user", "pinned one"),
            rt("assistant", "echo: pinned one"),
            rt("user", "pinned two")
        ]
    );
    assert_eq!(bed.opencode.messages(&p).await.len(), 4);

    // ---- Messages in chat form.
    let (s, msgs) = send(
        &bed,
        k1,
        Method::GET,
        &format!("/v1/sessions/{p}/messages"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{msgs}");
    let history = history_of(&msgs);
    let expected_history = vec![
        rt("user", "pinned one"),
        rt("assistant", "echo: pinned one"),
        rt("user", "pinned two"),
        rt("assistant", "echo: pinned two"),
    ];
    assert_eq!(history, expected_history);

    // ---- Fork: new id, same history, owned by k1.
    let (s, forked) = send(
        &bed,
        k1,
        Method::POST,
        &format!("/v1/sessions/{p}/fork"),
        None,
        None,
    )
    .await;
    assert!(s.is_success(), "fork: {s} {forked}");
    let f = forked["id"].as_str().expect("fork id").to_string();
    assert_ne!(f, p);
    assert_eq!(forked["object"], "session");
    let (s, fmsgs) = send(
        &bed,
        k1,
        Method::GET,
        &format!("/v1/sessions/{f}/messages"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{fmsgs}");
    let fhistory = history_of(&fmsgs);
    assert_eq!(fhistory, expected_history, "a fork has the same history");
    let (_, list1) = send(&bed, k1, Method::GET, "/v1/sessions", None, None).await;
    assert!(list1.to_string().contains(&f), "fork not listed: {list1}");

    // ---- Abort (idle session): accepted.
    let (s, v) = send(
        &bed,
        k1,
        Method::POST,
        &format!("/v1/sessions/{p}/abort"),
        None,
        None,
    )
    .await;
    assert!(s.is_success(), "abort: {s} {v}");

    // ---- Cross-key: every route is 404 for k2, and nothing changes for k1.
    let before = bed.mock.call_count();
    for (method, path) in [
        (Method::GET, format!("/v1/sessions/{p}")),
        (Method::GET, format!("/v1/sessions/{p}/messages")),
        (Method::POST, format!("/v1/sessions/{p}/fork")),
        (Method::POST, format!("/v1/sessions/{p}/abort")),
        (Method::DELETE, format!("/v1/sessions/{p}")),
    ] {
        let (s, v) = send(&bed, k2, method.clone(), &path, None, None).await;
        assert_not_found(&format!("k2 {method} {path}"), s, &v);
    }
    let (s, v) = chat_as(&bed, k2, Some(&p), &chat_body(vec![user("intrude")])).await;
    assert_not_found("k2 chat with k1's x-session-id", s, &v);
    assert_eq!(
        bed.mock.call_count(),
        before,
        "k2's requests reached the model"
    );
    let (s, v) = send(
        &bed,
        k1,
        Method::GET,
        &format!("/v1/sessions/{p}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "k1 lost its session after k2's attempts: {v}"
    );
    assert_eq!(bed.opencode.messages(&p).await.len(), 4);
    let (_, list2) = send(&bed, k2, Method::GET, "/v1/sessions", None, None).await;
    assert!(
        !list2.to_string().contains(&p) && !list2.to_string().contains(&f),
        "k2's list shows k1's sessions: {list2}"
    );

    // ---- Unknown ids: 404 in OpenAI shape, on every route.
    for id in ["nope", "ses_doesnotexist"] {
        for (method, path) in [
            (Method::GET, format!("/v1/sessions/{id}")),
            (Method::GET, format!("/v1/sessions/{id}/messages")),
            (Method::POST, format!("/v1/sessions/{id}/fork")),
            (Method::POST, format!("/v1/sessions/{id}/abort")),
            (Method::DELETE, format!("/v1/sessions/{id}")),
        ] {
            let (s, v) = send(&bed, k1, method.clone(), &path, None, None).await;
            assert_not_found(&format!("{method} {path}"), s, &v);
        }
        let (s, v) = chat_as(&bed, k1, Some(id), &chat_body(vec![user("x")])).await;
        assert_not_found(&format!("chat with x-session-id {id}"), s, &v);
    }

    // ---- A busy pinned session refuses a second request with 409.
    let (s, created) = send(&bed, k1, Method::POST, "/v1/sessions", None, None).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let busy = created["id"].as_str().unwrap().to_string();
    let slow = "slow pinned [slow:400] [chunks:5]";
    let before = bed.mock.call_count();
    let slow_body = chat_body(vec![user(slow)]);
    let first = chat_as(&bed, k1, Some(&busy), &slow_body);
    let second = async {
        assert!(
            bed.mock
                .wait_for_calls(before + 1, Duration::from_secs(30))
                .await,
            "the first pinned request never reached the model"
        );
        chat_as(
            &bed,
            k1,
            Some(&busy),
            &chat_body(vec![user("queue jumper")]),
        )
        .await
    };
    let ((s1, v1), (s2, v2)) = tokio::join!(first, second);
    assert_eq!(reply_of(s1, &v1), format!("echo: {slow}"));
    assert_eq!(
        s2,
        StatusCode::CONFLICT,
        "second request on a busy session: {v2}"
    );
    assert!(
        v2["error"]["message"].is_string(),
        "409 not in OpenAI shape: {v2}"
    );
    new_calls(&bed, before, 1, "busy pinned session");
    // Free again afterwards.
    let (s, v) = chat_as(&bed, k1, Some(&busy), &chat_body(vec![user("after busy")])).await;
    assert_eq!(reply_of(s, &v), "echo: after busy");

    // ---- DELETE: gone from the API and upstream.
    let (s, v) = send(
        &bed,
        k1,
        Method::DELETE,
        &format!("/v1/sessions/{p}"),
        None,
        None,
    )
    .await;
    assert!(s.is_success(), "delete: {s} {v}");
    let (s, v) = send(
        &bed,
        k1,
        Method::GET,
        &format!("/v1/sessions/{p}"),
        None,
        None,
    )
    .await;
    assert_not_found("GET after DELETE", s, &v);
    let (s, v) = send(
        &bed,
        k1,
        Method::GET,
        &format!("/v1/sessions/{p}/messages"),
        None,
        None,
    )
    .await;
    assert_not_found("messages after DELETE", s, &v);
    assert!(
        !upstream_ids(&bed).await.contains(&p),
        "deleted session still exists upstream"
    );
    let (_, list1) = send(&bed, k1, Method::GET, "/v1/sessions", None, None).await;
    assert!(
        !list1.to_string().contains(&p),
        "deleted session listed: {list1}"
    );
    assert!(
        list1.to_string().contains(&f),
        "the fork must survive: {list1}"
    );
}

/// `ttl_secs = 2`: an idle pooled session is deleted upstream within seconds; a pinned one is
/// never evicted.
#[tokio::test(flavor = "multi_thread")]
async fn ttl_evicts_pooled_sessions_but_not_pinned_ones() {
    let bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().config("[sessions]\nttl_secs = 2\nmax_explicit_per_key = 2\n"),
    )
    .await;

    // A pinned session, used once.
    let (s, created) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let p = created["id"].as_str().unwrap().to_string();
    let (s, v) = chat_as(&bed, None, Some(&p), &chat_body(vec![user("pin ttl")])).await;
    assert_eq!(reply_of(s, &v), "echo: pin ttl");
    let pinned_used = Instant::now();

    // A pooled conversation.
    let (s, v) = bed.chat(chat_body(vec![user("hi ttl")])).await;
    assert_eq!(reply_of(s, &v), "echo: hi ttl");
    let ids = upstream_ids(&bed).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    let pooled = ids.iter().find(|i| **i != p).unwrap().clone();

    let gone = eventually(Duration::from_secs(8), || async {
        !upstream_ids(&bed).await.contains(&pooled)
    })
    .await;
    assert!(
        gone,
        "the idle pooled session {pooled} was not deleted upstream within 8 s of a 2 s TTL"
    );

    let waited = pinned_used.elapsed();
    if waited < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_secs(4) - waited).await;
    }
    assert!(
        upstream_ids(&bed).await.contains(&p),
        "the pinned session was evicted by the TTL"
    );
    let (s, v) = bed.get(&format!("/v1/sessions/{p}")).await;
    assert_eq!(s, StatusCode::OK, "pinned session after the TTL: {v}");
    let before = bed.mock.call_count();
    let (s, v) = chat_as(&bed, None, Some(&p), &chat_body(vec![user("still here")])).await;
    assert_eq!(reply_of(s, &v), "echo: still here");
    let call = &new_calls(&bed, before, 1, "pinned after TTL")[0];
    assert_eq!(
        turns_of(call),
        vec![
            rt("user", "pin ttl"),
            rt("assistant", "echo: pin ttl"),
            rt("user", "still here")
        ]
    );

    // Explicit sessions are capped per key (here 2): create and fork both count.
    let (s, second) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    let (s, v) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "too_many_sessions", "{v}");
    let (s, v) = bed
        .post(&format!("/v1/sessions/{p}/fork"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let second = second["id"].as_str().unwrap().to_string();
    let (s, v) = send(
        &bed,
        None,
        Method::DELETE,
        &format!("/v1/sessions/{second}"),
        None,
        None,
    )
    .await;
    assert!(s.is_success(), "{v}");
    let (s, v) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "after a delete there is room again: {v}"
    );
}

/// `max_capacity = 1`: a second conversation evicts one of the two, deleting it upstream.
#[tokio::test(flavor = "multi_thread")]
async fn capacity_eviction_deletes_sessions_upstream() {
    let bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().config("[sessions]\nmax_capacity = 1\n"),
    )
    .await;
    let (s, v) = bed.chat(chat_body(vec![user("cap one")])).await;
    assert_eq!(reply_of(s, &v), "echo: cap one");
    let (s, v) = bed.chat(chat_body(vec![user("cap two")])).await;
    assert_eq!(reply_of(s, &v), "echo: cap two");
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut left = upstream_ids(&bed).await;
    while left.len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = upstream_ids(&bed).await;
    }
    assert!(
        left.len() <= 1,
        "with max_capacity = 1, at most one pooled session may remain upstream: {left:?}"
    );
}

/// A remembered session that vanished upstream (deleted behind the gateway's back, or OpenCode
/// restarted with fresh storage) is dropped transparently: the next turn runs in a new session
/// seeded with the history, in one model call, and the conversation carries on from there.
#[tokio::test(flavor = "multi_thread")]
async fn vanished_session_falls_back_to_a_seeded_one() {
    let bed = TestBed::start().await;
    let (s, v) = bed.chat(chat_body(vec![user("gone one")])).await;
    let r1 = reply_of(s, &v);
    let ids = upstream_ids(&bed).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let old = ids.iter().next().unwrap().clone();
    let resp = bed
        .opencode
        .client()
        .delete(format!("{}/session/{old}", bed.opencode.url()))
        .send()
        .await
        .expect("delete upstream");
    assert!(resp.status().is_success(), "{}", resp.status());

    let before = bed.mock.call_count();
    let (s, v) = bed
        .chat(chat_body(vec![
            user("gone one"),
            assistant(&r1),
            user("gone two"),
        ]))
        .await;
    let r2 = reply_of(s, &v);
    assert!(r2.ends_with("gone two"), "{r2}");
    let calls = new_calls(&bed, before, 1, "turn after the session vanished");
    let seen = calls[0].to_string();
    assert!(
        seen.contains(TRANSCRIPT_MARK) && seen.contains("gone one") && seen.contains(&r1),
        "the new session must be seeded with the earlier turns: {seen}"
    );
    let ids = upstream_ids(&bed).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(!ids.contains(&old));

    // Turn 3 continues the new session without a transcript.
    let before = bed.mock.call_count();
    let (s, v) = bed
        .chat(chat_body(vec![
            user("gone one"),
            assistant(&r1),
            user("gone two"),
            assistant(&r2),
            user("gone three"),
        ]))
        .await;
    assert!(reply_of(s, &v).ends_with("gone three"));
    let calls = new_calls(&bed, before, 1, "turn 3");
    let turns = turns_of(&calls[0]);
    assert_eq!(
        turns.last(),
        Some(&rt("user", "gone three")),
        "turn 3 sends only the new message: {turns:?}"
    );
    let seeded_user_turns = turns
        .iter()
        .filter(|(role, text)| role == "user" && text.contains(TRANSCRIPT_MARK))
        .count();
    assert_eq!(
        (seeded_user_turns, turns.len()),
        (1, 3),
        "turn 3 continues the seeded session (seeded turn 2, its reply, the new message): {turns:?}"
    );
    assert_eq!(
        upstream_ids(&bed).await,
        ids,
        "turn 3 reuses the new session"
    );
}

/// Explicit sessions survive a gateway restart (ownership is recorded upstream, keyed by the
/// API key itself, not its position in the key list): the owner still lists and uses them,
/// another key still gets 404, while pooled sessions are deleted on shutdown as configured.
#[tokio::test(flavor = "multi_thread")]
async fn explicit_sessions_survive_a_gateway_restart() {
    let mut bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().env("PORTATEK_API_KEYS", "k1,k2"),
    )
    .await;
    let (s, created) = send(
        &bed,
        Some("k1"),
        Method::POST,
        "/v1/sessions",
        Some(&json!({})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["title"], "PorTaTek Gateway",
        "the owner tag is not shown: {created}"
    );
    let (s, v) = chat_as(
        &bed,
        Some("k1"),
        Some(&id),
        &chat_body(vec![user("before restart")]),
    )
    .await;
    assert_eq!(reply_of(s, &v), "echo: before restart");
    // A pooled conversation too, which shutdown deletes.
    let (s, v) = chat_as(&bed, Some("k1"), None, &chat_body(vec![user("pooled")])).await;
    assert_eq!(reply_of(s, &v), "echo: pooled");
    assert_eq!(upstream_ids(&bed).await.len(), 2);

    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    assert!(status.is_some(), "gateway did not exit on SIGTERM");
    assert_eq!(
        upstream_ids(&bed).await,
        BTreeSet::from([id.clone()]),
        "shutdown deletes pooled sessions, keeps explicit ones"
    );
    bed.gateway = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().env("PORTATEK_API_KEYS", "k2,k1"),
    )
    .await;

    let (s, list) = send(&bed, Some("k1"), Method::GET, "/v1/sessions", None, None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{list}");
    let (s, v) = send(&bed, Some("k2"), Method::GET, "/v1/sessions", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]), "{v}");
    let (s, v) = send(
        &bed,
        Some("k2"),
        Method::GET,
        &format!("/v1/sessions/{id}"),
        None,
        None,
    )
    .await;
    assert_not_found("other key after restart", s, &v);

    let before = bed.mock.call_count();
    let (s, v) = chat_as(
        &bed,
        Some("k1"),
        Some(&id),
        &chat_body(vec![user("after restart")]),
    )
    .await;
    assert_eq!(reply_of(s, &v), "echo: after restart");
    let call = &new_calls(&bed, before, 1, "explicit session after restart")[0];
    assert_eq!(
        turns_of(call),
        vec![
            rt("user", "before restart"),
            rt("assistant", "echo: before restart"),
            rt("user", "after restart")
        ]
    );

    // Aliases of the id (OpenCode is lenient with a trailing slash) are not the session: 404,
    // so the one-request-at-a-time guard cannot be sidestepped.
    for alias in [format!("{id}/"), format!("{id}?x=1"), format!("{id}%2F")] {
        let (s, v) = chat_as(
            &bed,
            Some("k1"),
            Some(&alias),
            &chat_body(vec![user("alias")]),
        )
        .await;
        assert_not_found(&format!("x-session-id {alias}"), s, &v);
    }
    let (s, v) = send(
        &bed,
        Some("k1"),
        Method::GET,
        &format!("/v1/sessions/{id}%2F"),
        None,
        None,
    )
    .await;
    assert_not_found("encoded alias in the path", s, &v);

    // OpenCode lists only its 100 newest sessions by default: an older explicit session must
    // still be listed (and counted) when many other sessions exist.
    for i in 0..110 {
        bed.opencode.create_session(&format!("noise {i}")).await;
    }
    let (s, list) = send(&bed, Some("k1"), Method::GET, "/v1/sessions", None, None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "behind 110 newer sessions: {list}");
}
