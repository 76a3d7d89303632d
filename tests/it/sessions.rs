//! The conversation → OpenCode session pool and the session API, against a real
//! `opencode serve` and the scripted mock model.
//!
//! Two beds (an OpenCode takes a few seconds to start, and its first model call more), running
//! in parallel, each one OpenCode shared by named scenarios; every scenario starts with a fresh
//! gateway on an OpenCode without sessions ([`fresh_gateway`]), and its steps are named
//! functions with doc comments:
//! - [`conversation_pool`]: affinity, seeding, forks, eviction, vanished sessions, shutdown;
//! - [`session_api`]: keys isolating sessions, the session API, pinned sessions, restarts;
//! - [`orphan_sweep`]: the sweep of pooled sessions a gateway killed outright left behind, and
//!   the sessions it must never touch (live gateways', explicit, foreign).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::api::read_json;
use support::mock_model::turns_of;
use support::prometheus;
use support::scenarios::scenario;
use support::{
    ask, assert_error, assistant, chat_body, eventually, reply_of, streaming, user, ECHO,
};
use support::{Gateway, GatewayOptions, Scenarios, TestBed};

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
const TRANSCRIPT_MARK: &str = "The conversation so far";
/// The title the gateway gives its sessions by default.
const TITLE: &str = "PorTaTek Gateway";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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

/// Ids of every session OpenCode lists (each scenario starts without any, and only its gateway
/// creates sessions).
async fn upstream_ids(bed: &TestBed) -> BTreeSet<String> {
    bed.opencode.session_ids().await
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
    read_json(resp).await
}

/// `method path` without a body, as `key`.
async fn call(bed: &TestBed, key: Option<&str>, method: Method, path: &str) -> (StatusCode, Value) {
    send(bed, key, method, path, None, None).await
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

/// Streaming chat (bed's own key): the content of a conforming stream ending in `[DONE]`.
async fn stream_content(bed: &TestBed, messages: Vec<Value>) -> String {
    bed.read_ok_stream(streaming(chat_body(ECHO, messages)))
        .await
        .content
}

/// Asserts a 404 in OpenAI's error shape.
#[track_caller]
fn assert_not_found(what: &str, status: StatusCode, v: &Value) {
    assert_error(status, v, 404, None, None, what);
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

/// The one model call of a chat, made while `chat` runs.
async fn one_call<F: std::future::Future>(
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
async fn first_turn(bed: &TestBed, key: Option<&str>, text: &str) -> (String, String) {
    let (s, v) = chat_as(bed, key, None, &ask(ECHO, text)).await;
    let reply = reply_of(s, &v);
    let ids = upstream_ids(bed).await;
    assert_eq!(ids.len(), 1, "turn 1 should create one session: {ids:?}");
    (ids.into_iter().next().unwrap(), reply)
}

/// Turn 2 of the conversation [`first_turn`] started with "hi one" (as `key`): answered, the
/// model seeing both earlier turns exactly once, as real messages (no transcript replayed).
async fn turn_two_continues(bed: &TestBed, key: Option<&str>, r1: &str, what: &str) {
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
async fn fresh_gateway(bed: &mut TestBed, opts: GatewayOptions) {
    bed.gateway.kill().await;
    bed.opencode.delete_all_sessions().await;
    bed.gateway = Gateway::start_with(&bed.opencode.url(), opts).await;
}

/// Gateway options with the API keys `k1` and `k2` (in this order or another).
fn with_keys(keys: &str) -> GatewayOptions {
    GatewayOptions::default().env("PORTATEK_API_KEYS", keys)
}

/// The ids of a `GET /v1/sessions` answer.
fn listed_ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data list: {list}"))
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The conversation pool
// ---------------------------------------------------------------------------------------------

/// The conversation → session pool on one OpenCode: affinity without replay and clean-up on
/// shutdown, concurrent branches, capacity eviction, a vanished session.
#[tokio::test(flavor = "multi_thread")]
async fn conversation_pool() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(
        s,
        pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown(&mut bed)
    );
    scenario!(s, pool_forks_concurrent_branches(&mut bed));
    scenario!(s, capacity_eviction_deletes_sessions_upstream(&mut bed));
    scenario!(s, vanished_session_falls_back_to_a_seeded_one(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// Affinity without replay (JSON and streaming), an edited history starting a seeded session,
/// an OpenCode restart between turns, and `delete_on_shutdown` deleting every pooled session
/// when the gateway gets SIGTERM.
async fn pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown(bed: &mut TestBed) {
    fresh_gateway(bed, GatewayOptions::default()).await;
    let (s1, r1) = json_turn_two_continues_the_session(bed).await;
    streaming_turn_two_continues_the_session(bed, &s1).await;
    edited_history_starts_a_seeded_session(bed, &s1, &r1).await;
    turn_after_an_opencode_restart_answers(bed, &r1).await;
    shutdown_deletes_every_pooled_session(bed).await;
}

/// JSON: turn 1 creates a session; turn 2 continues it with only the new message, the model
/// seeing every turn once as a real message (no transcript). Returns (session, turn-1 reply).
async fn json_turn_two_continues_the_session(bed: &TestBed) -> (String, String) {
    let (s1, r1) = first_turn(bed, None, "hi one").await;
    assert_eq!(r1, "echo: hi one");

    turn_two_continues(bed, None, &r1, "JSON turn 2").await;
    assert_eq!(
        upstream_ids(bed).await,
        BTreeSet::from([s1.clone()]),
        "turn 2 must reuse the turn-1 session"
    );
    assert_eq!(bed.opencode.messages(&s1).await.len(), 4);
    (s1, r1)
}

/// Streaming: the same — a new conversation gets its own session, and its turn 2 continues it.
async fn streaming_turn_two_continues_the_session(bed: &TestBed, s1: &str) {
    let rs = stream_content(bed, vec![user("hi stream")]).await;
    assert_eq!(rs, "echo: hi stream");
    let ids = upstream_ids(bed).await;
    assert_eq!(
        ids.len(),
        2,
        "a new conversation gets its own session: {ids:?}"
    );
    let s2 = ids.iter().find(|i| *i != s1).unwrap().clone();

    let turn2 = vec![user("hi stream"), assistant(&rs), user("more")];
    let (rs2, call) = one_call(bed, "streaming turn 2", stream_content(bed, turn2)).await;
    assert_eq!(rs2, "echo: more");
    assert_eq!(
        turns_of(&call),
        vec![
            rt("user", "hi stream"),
            rt("assistant", &rs),
            rt("user", "more")
        ]
    );
    assert!(!call.to_string().contains(TRANSCRIPT_MARK));
    assert_eq!(
        upstream_ids(bed).await,
        BTreeSet::from([s1.to_string(), s2.clone()])
    );
    assert_eq!(bed.opencode.messages(&s2).await.len(), 4);
}

/// An edited history (a changed earlier user text) cannot continue the remembered session: a
/// new session seeded with the earlier turns as a transcript, in one model call; the original
/// session is untouched.
async fn edited_history_starts_a_seeded_session(bed: &TestBed, s1: &str, r1: &str) {
    let edited = chat_body(
        ECHO,
        vec![user("hi one, edited"), assistant(r1), user("second")],
    );
    let ((s, v), call) = one_call(bed, "edited history", bed.chat(edited)).await;
    let reply = reply_of(s, &v);
    assert!(
        reply.starts_with("echo: ") && reply.ends_with("second"),
        "edited-history reply: {reply}"
    );
    let t = turns_of(&call);
    assert_eq!(t.len(), 1, "a seeded session gets one user message: {t:?}");
    assert_eq!(t[0].0, "user");
    assert!(
        t[0].1.contains("hi one, edited") && t[0].1.contains(r1) && t[0].1.ends_with("second"),
        "the seeded call must carry the prior turns as a transcript: {t:?}"
    );
    let ids = upstream_ids(bed).await;
    assert_eq!(
        ids.len(),
        3,
        "the edited history needs its own session: {ids:?}"
    );
    assert_eq!(
        bed.opencode.messages(s1).await.len(),
        4,
        "the original session must be untouched"
    );
}

/// OpenCode restarts between turns: the next turn still answers (whether or not the remembered
/// session survived the restart).
async fn turn_after_an_opencode_restart_answers(bed: &mut TestBed, r1: &str) {
    let restart = Instant::now();
    bed.opencode.restart().await;
    let restart_took = restart.elapsed();
    let asked = Instant::now();
    let (s, v) = bed
        .chat(chat_body(
            ECHO,
            vec![
                user("hi one"),
                assistant(r1),
                user("second"),
                assistant("echo: second"),
                user("after restart"),
            ],
        ))
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
}

/// `delete_on_shutdown` (default true): SIGTERM deletes every pooled session upstream.
async fn shutdown_deletes_every_pooled_session(bed: &mut TestBed) {
    let ids = upstream_ids(bed).await;
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway did not exit cleanly on SIGTERM: {status:?}\n{}",
        bed.gateway.logs()
    );
    let left = upstream_ids(bed).await;
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
async fn pool_forks_concurrent_branches(bed: &mut TestBed) {
    fresh_gateway(bed, GatewayOptions::default()).await;
    let (s1, r) = first_turn(bed, None, "hi par").await;
    let mut problems: Vec<String> = Vec::new();

    // The same turn-2 body twice at once; the slow marker makes the runs overlap.
    let branch = "branch [slow:300] [chunks:4]";
    let body = chat_body(ECHO, vec![user("hi par"), assistant(&r), user(branch)]);
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
    for call in new_calls(bed, before, 2, "concurrent branches") {
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
    eventually(Duration::from_secs(5), || async {
        upstream_ids(bed).await.len() <= 1
    })
    .await;
    let ids = upstream_ids(bed).await;
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

    // Shutdown deletes what the pool holds; neither branch's session may be orphaned.
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    assert!(status.is_some(), "gateway did not exit on SIGTERM");
    let left = upstream_ids(bed).await;
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

/// `max_capacity = 1`: a second conversation evicts one of the two, deleting it upstream.
async fn capacity_eviction_deletes_sessions_upstream(bed: &mut TestBed) {
    let config = "[sessions]\nmax_capacity = 1\n";
    fresh_gateway(bed, GatewayOptions::default().config(config)).await;
    let (s, v) = bed.chat(ask(ECHO, "cap one")).await;
    assert_eq!(reply_of(s, &v), "echo: cap one");
    let (s, v) = bed.chat(ask(ECHO, "cap two")).await;
    assert_eq!(reply_of(s, &v), "echo: cap two");
    eventually(Duration::from_secs(6), || async {
        upstream_ids(bed).await.len() <= 1
    })
    .await;
    let left = upstream_ids(bed).await;
    assert!(
        left.len() <= 1,
        "with max_capacity = 1, at most one pooled session may remain upstream: {left:?}"
    );
}

/// A remembered session that vanished upstream (deleted behind the gateway's back, or OpenCode
/// restarted with fresh storage) is dropped transparently: the next turn runs in a new session
/// seeded with the history, in one model call, and the conversation carries on from there.
async fn vanished_session_falls_back_to_a_seeded_one(bed: &mut TestBed) {
    fresh_gateway(bed, GatewayOptions::default()).await;
    let (old, r1) = first_turn(bed, None, "gone one").await;
    bed.opencode.delete_session(&old).await;

    // Turn 2 runs in a new session seeded with the earlier turns.
    let turn2 = chat_body(
        ECHO,
        vec![user("gone one"), assistant(&r1), user("gone two")],
    );
    let ((s, v), call) = one_call(bed, "turn after the session vanished", bed.chat(turn2)).await;
    let r2 = reply_of(s, &v);
    assert!(r2.ends_with("gone two"), "{r2}");
    let seen = call.to_string();
    assert!(
        seen.contains(TRANSCRIPT_MARK) && seen.contains("gone one") && seen.contains(&r1),
        "the new session must be seeded with the earlier turns: {seen}"
    );
    let ids = upstream_ids(bed).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(!ids.contains(&old));

    // Turn 3 continues the new session without a transcript.
    let turn3 = chat_body(
        ECHO,
        vec![
            user("gone one"),
            assistant(&r1),
            user("gone two"),
            assistant(&r2),
            user("gone three"),
        ],
    );
    let ((s, v), call) = one_call(bed, "turn 3", bed.chat(turn3)).await;
    assert!(reply_of(s, &v).ends_with("gone three"));
    let turns = turns_of(&call);
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
        upstream_ids(bed).await,
        ids,
        "turn 3 reuses the new session"
    );
}

// ---------------------------------------------------------------------------------------------
// The session API: keys, explicit and pinned sessions
// ---------------------------------------------------------------------------------------------

const K1: Option<&str> = Some("k1");
const K2: Option<&str> = Some("k2");

/// The session API on one OpenCode: keys isolate pooled and explicit sessions, the session
/// routes and pinned chats work, explicit sessions outlive the TTL (and are capped per key) and
/// survive a gateway restart.
#[tokio::test(flavor = "multi_thread")]
async fn session_api() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(s, keys_isolate_sessions_and_session_api_works(&mut bed));
    scenario!(s, ttl_evicts_pooled_sessions_but_not_pinned_ones(&mut bed));
    scenario!(s, explicit_sessions_survive_a_gateway_restart(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// Different API keys never share a pooled session, even with identical histories. Then the
/// session API (create, list, get, messages, fork, abort, delete; scoped to the key; unknown
/// ids) and pinned sessions via `x-session-id` (only the last message sent, continuation, 409
/// while busy).
async fn keys_isolate_sessions_and_session_api_works(bed: &mut TestBed) {
    fresh_gateway(bed, with_keys("k1,k2")).await;
    let bed = &*bed;
    pooled_sessions_are_per_key(bed).await;
    let p = create_list_and_get(bed).await;
    pinned_session_gets_only_the_last_message(bed, &p).await;
    let f = messages_fork_and_abort(bed, &p).await;
    another_key_gets_404_everywhere(bed, &p, &f).await;
    unknown_ids_are_404(bed).await;
    busy_pinned_session_is_409(bed).await;
    delete_removes_it_from_api_and_upstream(bed, &p, &f).await;
}

/// Pool isolation by key: k2 sending k1's turn 2 gets its own session (it does not see k1's
/// real messages); k1's own turn 2 continues k1's session.
async fn pooled_sessions_are_per_key(bed: &TestBed) {
    let (s1, r1) = first_turn(bed, K1, "hi one").await;

    let turn2 = chat_body(ECHO, vec![user("hi one"), assistant(&r1), user("second")]);
    let ((s, v), call) = one_call(bed, "k2 turn 2", chat_as(bed, K2, None, &turn2)).await;
    let other = reply_of(s, &v);
    assert!(other.ends_with("second"), "k2 reply: {other}");
    let t = turns_of(&call);
    assert!(
        !t.iter().any(|(role, _)| role == "assistant"),
        "k2 must not continue k1's session (it saw k1's real messages): {t:?}"
    );
    assert_eq!(
        bed.opencode.messages(&s1).await.len(),
        2,
        "k1's session must be untouched by k2"
    );
    assert_eq!(upstream_ids(bed).await.len(), 2, "k2 needs its own session");

    turn_two_continues(bed, K1, &r1, "k1's own turn 2").await;
    assert_eq!(bed.opencode.messages(&s1).await.len(), 4);
    assert_eq!(upstream_ids(bed).await.len(), 2);
}

/// `POST /v1/sessions` creates a session (201, `{id, object, created, title}`, upstream too);
/// `GET /v1/sessions` lists it for its key only; `GET /v1/sessions/{id}` returns it.
async fn create_list_and_get(bed: &TestBed) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (s, created) = call(bed, K1, Method::POST, "/v1/sessions").await;
    assert_eq!(s, StatusCode::CREATED, "POST /v1/sessions: {created}");
    let p = created["id"].as_str().expect("session id").to_string();
    assert_eq!(created["object"], "session", "{created}");
    let c = created["created"].as_u64().expect("created (unix seconds)");
    assert!(c + 60 > now && c < now + 60, "created {c} vs now {now}");
    assert!(created.get("title").is_some(), "title missing: {created}");
    assert!(
        upstream_ids(bed).await.contains(&p),
        "the session must exist upstream"
    );

    let (s, list1) = call(bed, K1, Method::GET, "/v1/sessions").await;
    assert_eq!(s, StatusCode::OK, "{list1}");
    assert!(
        listed_ids(&list1).contains(&p.as_str()),
        "k1's list lacks {p}: {list1}"
    );
    let (s, list2) = call(bed, K2, Method::GET, "/v1/sessions").await;
    assert_eq!(s, StatusCode::OK, "{list2}");
    assert!(
        !list2.to_string().contains(&p),
        "k2's list shows k1's session: {list2}"
    );

    let (s, got) = call(bed, K1, Method::GET, &format!("/v1/sessions/{p}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["id"], p.as_str());
    assert_eq!(got["object"], "session");
    p
}

/// A chat pinned with `x-session-id` sends only its last message (the session holds the
/// history); the next one continues the same session.
async fn pinned_session_gets_only_the_last_message(bed: &TestBed, p: &str) {
    let body = chat_body(
        ECHO,
        vec![user("ctx a"), assistant("ctx b"), user("pinned one")],
    );
    let ((s, v), call) = one_call(bed, "pinned turn 1", chat_as(bed, K1, Some(p), &body)).await;
    assert_eq!(reply_of(s, &v), "echo: pinned one");
    assert_eq!(
        turns_of(&call),
        vec![rt("user", "pinned one")],
        "a pinned session gets only the last message"
    );

    let body = chat_body(ECHO, vec![user("whatever"), user("pinned two")]);
    let ((s, v), call) = one_call(bed, "pinned turn 2", chat_as(bed, K1, Some(p), &body)).await;
    assert_eq!(reply_of(s, &v), "echo: pinned two");
    assert_eq!(
        turns_of(&call),
        vec![
            rt("user", "pinned one"),
            rt("assistant", "echo: pinned one"),
            rt("user", "pinned two")
        ]
    );
    assert_eq!(bed.opencode.messages(p).await.len(), 4);
}

/// `GET …/messages` gives the history in chat form; `POST …/fork` copies it into a new session
/// of the same key; `POST …/abort` on an idle session is accepted. Returns the fork's id.
async fn messages_fork_and_abort(bed: &TestBed, p: &str) -> String {
    let (s, msgs) = call(bed, K1, Method::GET, &format!("/v1/sessions/{p}/messages")).await;
    assert_eq!(s, StatusCode::OK, "{msgs}");
    let expected_history = vec![
        rt("user", "pinned one"),
        rt("assistant", "echo: pinned one"),
        rt("user", "pinned two"),
        rt("assistant", "echo: pinned two"),
    ];
    assert_eq!(history_of(&msgs), expected_history);

    let (s, forked) = call(bed, K1, Method::POST, &format!("/v1/sessions/{p}/fork")).await;
    assert!(s.is_success(), "fork: {s} {forked}");
    let f = forked["id"].as_str().expect("fork id").to_string();
    assert_ne!(f, p);
    assert_eq!(forked["object"], "session");
    let (s, fmsgs) = call(bed, K1, Method::GET, &format!("/v1/sessions/{f}/messages")).await;
    assert_eq!(s, StatusCode::OK, "{fmsgs}");
    assert_eq!(
        history_of(&fmsgs),
        expected_history,
        "a fork has the same history"
    );
    let (_, list1) = call(bed, K1, Method::GET, "/v1/sessions").await;
    assert!(list1.to_string().contains(&f), "fork not listed: {list1}");

    let (s, v) = call(bed, K1, Method::POST, &format!("/v1/sessions/{p}/abort")).await;
    assert!(s.is_success(), "abort: {s} {v}");
    f
}

/// Every session route of `id` (and a chat pinned to it) is a 404 for `key`.
async fn assert_hidden_from(bed: &TestBed, key: Option<&str>, id: &str) {
    for (method, path) in [
        (Method::GET, format!("/v1/sessions/{id}")),
        (Method::GET, format!("/v1/sessions/{id}/messages")),
        (Method::POST, format!("/v1/sessions/{id}/fork")),
        (Method::POST, format!("/v1/sessions/{id}/abort")),
        (Method::DELETE, format!("/v1/sessions/{id}")),
    ] {
        let (s, v) = call(bed, key, method.clone(), &path).await;
        assert_not_found(&format!("{key:?} {method} {path}"), s, &v);
    }
    let (s, v) = chat_as(bed, key, Some(id), &ask(ECHO, "intrude")).await;
    assert_not_found(&format!("{key:?} chat with x-session-id {id}"), s, &v);
}

/// Another key gets 404 on every route of k1's session (and reaches no model); nothing changes
/// for k1, and k2's list shows none of k1's sessions.
async fn another_key_gets_404_everywhere(bed: &TestBed, p: &str, f: &str) {
    let before = bed.mock.call_count();
    assert_hidden_from(bed, K2, p).await;
    assert_eq!(
        bed.mock.call_count(),
        before,
        "k2's requests reached the model"
    );
    let (s, v) = call(bed, K1, Method::GET, &format!("/v1/sessions/{p}")).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "k1 lost its session after k2's attempts: {v}"
    );
    assert_eq!(bed.opencode.messages(p).await.len(), 4);
    let (_, list2) = call(bed, K2, Method::GET, "/v1/sessions").await;
    assert!(
        !list2.to_string().contains(p) && !list2.to_string().contains(f),
        "k2's list shows k1's sessions: {list2}"
    );
}

/// Unknown ids: 404 in OpenAI shape, on every route.
async fn unknown_ids_are_404(bed: &TestBed) {
    for id in ["nope", "ses_doesnotexist"] {
        assert_hidden_from(bed, K1, id).await;
    }
}

/// A busy pinned session refuses a second request with 409 (no model call for it), and is
/// free again afterwards.
async fn busy_pinned_session_is_409(bed: &TestBed) {
    let (s, created) = call(bed, K1, Method::POST, "/v1/sessions").await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let busy = created["id"].as_str().unwrap().to_string();
    let slow = "slow pinned [slow:400] [chunks:5]";
    let before = bed.mock.call_count();
    let slow_body = ask(ECHO, slow);
    let first = chat_as(bed, K1, Some(&busy), &slow_body);
    let second = async {
        assert!(
            bed.mock
                .wait_for_calls(before + 1, Duration::from_secs(30))
                .await,
            "the first pinned request never reached the model"
        );
        let jumper = ask(ECHO, "queue jumper");
        chat_as(bed, K1, Some(&busy), &jumper).await
    };
    let ((s1, v1), (s2, v2)) = tokio::join!(first, second);
    assert_eq!(reply_of(s1, &v1), format!("echo: {slow}"));
    assert_error(s2, &v2, 409, None, None, "second request on a busy session");
    new_calls(bed, before, 1, "busy pinned session");
    let after = ask(ECHO, "after busy");
    let (s, v) = chat_as(bed, K1, Some(&busy), &after).await;
    assert_eq!(reply_of(s, &v), "echo: after busy");
}

/// `DELETE /v1/sessions/{id}`: gone from the API (404, not listed) and upstream; its fork
/// survives.
async fn delete_removes_it_from_api_and_upstream(bed: &TestBed, p: &str, f: &str) {
    let (s, v) = call(bed, K1, Method::DELETE, &format!("/v1/sessions/{p}")).await;
    assert!(s.is_success(), "delete: {s} {v}");
    let (s, v) = call(bed, K1, Method::GET, &format!("/v1/sessions/{p}")).await;
    assert_not_found("GET after DELETE", s, &v);
    let (s, v) = call(bed, K1, Method::GET, &format!("/v1/sessions/{p}/messages")).await;
    assert_not_found("messages after DELETE", s, &v);
    assert!(
        !upstream_ids(bed).await.contains(p),
        "deleted session still exists upstream"
    );
    let (_, list1) = call(bed, K1, Method::GET, "/v1/sessions").await;
    assert!(
        !list1.to_string().contains(p),
        "deleted session listed: {list1}"
    );
    assert!(
        list1.to_string().contains(f),
        "the fork must survive: {list1}"
    );
}

/// `ttl_secs = 2`: an idle pooled session is deleted upstream within seconds; a pinned one is
/// never evicted and still holds its history. Explicit sessions are capped per key
/// (`max_explicit_per_key = 2`).
async fn ttl_evicts_pooled_sessions_but_not_pinned_ones(bed: &mut TestBed) {
    let config = "[sessions]\nttl_secs = 2\nmax_explicit_per_key = 2\n";
    fresh_gateway(bed, GatewayOptions::default().config(config)).await;
    let p = idle_pooled_session_is_evicted(bed).await;
    explicit_sessions_are_capped_per_key(bed, &p).await;
}

/// A pinned session used once and a pooled conversation: the pooled one is deleted upstream
/// within 8 s of its 2 s TTL; 4 s on, the pinned one is still there (API and upstream) and
/// continues its history. Returns the pinned session.
async fn idle_pooled_session_is_evicted(bed: &TestBed) -> String {
    let (s, created) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let p = created["id"].as_str().unwrap().to_string();
    let pin = ask(ECHO, "pin ttl");
    let (s, v) = chat_as(bed, None, Some(&p), &pin).await;
    assert_eq!(reply_of(s, &v), "echo: pin ttl");
    let pinned_used = Instant::now();

    let (s, v) = bed.chat(ask(ECHO, "hi ttl")).await;
    assert_eq!(reply_of(s, &v), "echo: hi ttl");
    let ids = upstream_ids(bed).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    let pooled = ids.iter().find(|i| **i != p).unwrap().clone();

    let gone = eventually(Duration::from_secs(8), || async {
        !upstream_ids(bed).await.contains(&pooled)
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
        upstream_ids(bed).await.contains(&p),
        "the pinned session was evicted by the TTL"
    );
    let (s, v) = bed.get(&format!("/v1/sessions/{p}")).await;
    assert_eq!(s, StatusCode::OK, "pinned session after the TTL: {v}");
    let again = ask(ECHO, "still here");
    let ((s, v), call) = one_call(
        bed,
        "pinned after TTL",
        chat_as(bed, None, Some(&p), &again),
    )
    .await;
    assert_eq!(reply_of(s, &v), "echo: still here");
    assert_eq!(
        turns_of(&call),
        vec![
            rt("user", "pin ttl"),
            rt("assistant", "echo: pin ttl"),
            rt("user", "still here")
        ]
    );
    p
}

/// With one explicit session `p` already held and a cap of 2: a second is created, a third is a
/// 429 `too_many_sessions`, and so is a fork; after a delete there is room again.
async fn explicit_sessions_are_capped_per_key(bed: &TestBed, p: &str) {
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
    let (s, v) = call(bed, None, Method::DELETE, &format!("/v1/sessions/{second}")).await;
    assert!(s.is_success(), "{v}");
    let (s, v) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "after a delete there is room again: {v}"
    );
}

/// Explicit sessions survive a gateway restart (ownership is recorded upstream, keyed by the
/// API key itself, not its position in the key list): the owner still lists and uses them,
/// another key still gets 404, while pooled sessions are deleted on shutdown as configured.
/// Aliases of an id are not the session, and an old session is listed behind many newer ones.
async fn explicit_sessions_survive_a_gateway_restart(bed: &mut TestBed) {
    fresh_gateway(bed, with_keys("k1,k2")).await;
    let id = explicit_session_outlives_its_gateway(bed).await;
    owner_keeps_it_after_the_restart(bed, &id).await;
    aliases_of_the_id_are_404(bed, &id).await;
    old_session_is_listed_behind_newer_ones(bed, &id).await;
}

/// An explicit session (its title shown without the owner tag) and a pooled conversation; on
/// SIGTERM the pooled session is deleted and the explicit one kept; the gateway comes back with
/// its keys in another order. Returns the explicit session.
async fn explicit_session_outlives_its_gateway(bed: &mut TestBed) -> String {
    let (s, created) = send(
        bed,
        K1,
        Method::POST,
        "/v1/sessions",
        Some(&json!({})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["title"], TITLE,
        "the owner tag is not shown: {created}"
    );
    let before = ask(ECHO, "before restart");
    let (s, v) = chat_as(bed, K1, Some(&id), &before).await;
    assert_eq!(reply_of(s, &v), "echo: before restart");
    let pooled = ask(ECHO, "pooled");
    let (s, v) = chat_as(bed, K1, None, &pooled).await;
    assert_eq!(reply_of(s, &v), "echo: pooled");
    assert_eq!(upstream_ids(bed).await.len(), 2);

    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    assert!(status.is_some(), "gateway did not exit on SIGTERM");
    assert_eq!(
        upstream_ids(bed).await,
        BTreeSet::from([id.clone()]),
        "shutdown deletes pooled sessions, keeps explicit ones"
    );
    bed.gateway = Gateway::start_with(&bed.opencode.url(), with_keys("k2,k1")).await;
    id
}

/// After the restart the owner lists and continues the session (its history intact); another
/// key sees nothing of it.
async fn owner_keeps_it_after_the_restart(bed: &TestBed, id: &str) {
    let (s, list) = call(bed, K1, Method::GET, "/v1/sessions").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(listed_ids(&list), vec![id], "{list}");
    let (s, v) = call(bed, K2, Method::GET, "/v1/sessions").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]), "{v}");
    let (s, v) = call(bed, K2, Method::GET, &format!("/v1/sessions/{id}")).await;
    assert_not_found("other key after restart", s, &v);

    let after = ask(ECHO, "after restart");
    let what = "explicit session after restart";
    let ((s, v), call) = one_call(bed, what, chat_as(bed, K1, Some(id), &after)).await;
    assert_eq!(reply_of(s, &v), "echo: after restart");
    assert_eq!(
        turns_of(&call),
        vec![
            rt("user", "before restart"),
            rt("assistant", "echo: before restart"),
            rt("user", "after restart")
        ]
    );
}

/// Aliases of the id (OpenCode is lenient with a trailing slash) are not the session: 404, so
/// the one-request-at-a-time guard cannot be sidestepped.
async fn aliases_of_the_id_are_404(bed: &TestBed, id: &str) {
    for alias in [format!("{id}/"), format!("{id}?x=1"), format!("{id}%2F")] {
        let body = ask(ECHO, "alias");
        let (s, v) = chat_as(bed, K1, Some(&alias), &body).await;
        assert_not_found(&format!("x-session-id {alias}"), s, &v);
    }
    let (s, v) = call(bed, K1, Method::GET, &format!("/v1/sessions/{id}%2F")).await;
    assert_not_found("encoded alias in the path", s, &v);
}

/// OpenCode lists only its 100 newest sessions by default: an older explicit session must
/// still be listed (and counted) when many other sessions exist.
async fn old_session_is_listed_behind_newer_ones(bed: &TestBed, id: &str) {
    for i in 0..110 {
        bed.opencode.create_session(&format!("noise {i}")).await;
    }
    let (s, list) = call(bed, K1, Method::GET, "/v1/sessions").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(
        listed_ids(&list),
        vec![id],
        "behind 110 newer sessions: {list}"
    );
}

// ---------------------------------------------------------------------------------------------
// The orphan sweep
// ---------------------------------------------------------------------------------------------

/// Pooled sessions a gateway killed outright leaves behind are swept by its next life (same
/// state dir), and nothing else is: explicit sessions, sessions without the stamp, a live
/// gateway's sessions, a running request's session. Two gateways on one OpenCode never sweep
/// each other's sessions.
#[tokio::test(flavor = "multi_thread")]
async fn orphan_sweep() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(s, a_hard_killed_gateways_sessions_are_swept(&mut bed));
    scenario!(s, live_gateways_keep_their_sessions(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// A 2 s TTL and a sweep every second: a session idle for 4 s (TTL + 2 s grace) by OpenCode's
/// clock (its `Date` header has whole seconds) is an orphan if nothing holds it.
const SWEEPING: &str = "[sessions]\nttl_secs = 2\nsweep_interval_secs = 1\n";

/// Gateway options with `config` and the state dir `state` (its instance id).
fn with_state(config: &str, state: &std::path::Path) -> GatewayOptions {
    GatewayOptions::default()
        .config(config)
        .env("PORTATEK_STATE_DIR", state.to_string_lossy())
}

/// `portatek_sessions_swept_total{upstream="default"}` of the gateway at `url` (`None`: not
/// exported).
async fn swept(bed: &TestBed, gateway: &Gateway) -> Option<f64> {
    let (m, _) = prometheus::scrape(&bed.client, &format!("{}/metrics", gateway.url()), None).await;
    let name = "portatek_sessions_swept_total";
    m.has(name).then(|| m.sum(name, &[("upstream", "default")]))
}

/// A session made on OpenCode directly, titled like the gateway's, with `metadata`.
async fn made_upstream(bed: &TestBed, metadata: Value) -> String {
    let body = json!({ "title": TITLE, "metadata": metadata });
    let (status, v) = bed.opencode.post_json("/session", &body).await;
    assert!(status.is_success(), "POST /session -> {status}: {v}");
    v["id"].as_str().unwrap().to_string()
}

/// A gateway with a 2 s TTL answers a request slowly, its session quiet for 8 s (past TTL,
/// grace and a sweep): its own sweeps spare it. Then it holds three pooled conversations; an
/// explicit session, an unstamped session and one stamped by another instance sit beside
/// them. SIGKILL; a new gateway on the same state dir deletes exactly the three pooled
/// sessions within seconds, and counts them in `/metrics`.
async fn a_hard_killed_gateways_sessions_are_swept(bed: &mut TestBed) {
    let state = tempfile::tempdir().unwrap();
    let opts = with_state(SWEEPING, state.path());
    fresh_gateway(bed, opts.clone()).await;
    let exported = eventually(Duration::from_secs(5), || async {
        swept(bed, &bed.gateway).await == Some(0.0)
    })
    .await;
    assert!(
        exported,
        "the swept counter is exported from the first sweep on"
    );
    let instance = std::fs::read_to_string(state.path().join("instance-id")).unwrap();

    let (s, created) = bed.post("/v1/sessions", &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let explicit = created["id"].as_str().unwrap().to_string();
    let foreign = made_upstream(bed, json!({"note": "not the gateway's"})).await;
    let other = json!({"portatek": {"instance": "0123456789abcdef0123456789abcdef", "deployment": "local"}});
    let others = made_upstream(bed, other).await;
    let kept = BTreeSet::from([explicit.clone(), foreign.clone(), others.clone()]);

    // 8 s between the two chunks: OpenCode updates the session at neither end of the wait.
    let (s, v) = bed.chat(ask(ECHO, "[chunks:2][slow:8000] slow one")).await;
    assert_eq!(
        reply_of(s, &v),
        "echo: [chunks:2][slow:8000] slow one",
        "a running request's session survives its own gateway's sweeps"
    );
    let expired = eventually(Duration::from_secs(10), || async {
        upstream_ids(bed).await == kept
    })
    .await;
    assert!(expired, "the pool deletes its own idle session at the TTL");
    // Three conversations at once (all idle for less than the TTL when the gateway dies).
    let shared = &*bed;
    let turn = |text: &'static str| async move {
        let (s, v) = shared.chat(ask(ECHO, text)).await;
        assert_eq!(reply_of(s, &v), format!("echo: {text}"));
    };
    tokio::join!(turn("orphan one"), turn("orphan two"), turn("orphan three"));
    let pooled: BTreeSet<String> = upstream_ids(bed).await.difference(&kept).cloned().collect();
    assert_eq!(pooled.len(), 3, "three pooled sessions: {pooled:?}");

    bed.gateway.kill().await; // SIGKILL: nothing deleted
    let all: BTreeSet<String> = kept.union(&pooled).cloned().collect();
    assert_eq!(
        upstream_ids(bed).await,
        all,
        "a killed gateway deletes nothing"
    );

    bed.gateway = Gateway::start_with(&bed.opencode.url(), opts).await;
    let started = Instant::now();
    let cleaned = eventually(Duration::from_secs(15), || async {
        upstream_ids(bed).await == kept
    })
    .await;
    assert!(
        cleaned,
        "after {:?} OpenCode holds {:?}, want only {kept:?}",
        started.elapsed(),
        upstream_ids(bed).await
    );
    let counted = eventually(Duration::from_secs(5), || async {
        swept(bed, &bed.gateway).await == Some(3.0)
    })
    .await;
    assert!(
        counted,
        "swept counter: {:?}",
        swept(bed, &bed.gateway).await
    );
    assert!(
        bed.gateway
            .logs()
            .contains(&format!("instance={}", instance.trim())),
        "the restarted gateway is the same instance"
    );
}

/// Two gateways on one OpenCode, each its own instance: one with a 30 s TTL, the other with a
/// 2 s TTL and sweeps every second. The long-TTL gateway's conversation, idle for 8 s (well
/// past the other's TTL and grace), survives the other's sweeps and continues without a
/// replay. Then the roles swap (same instances, the second one in a deployment named
/// explicitly): again nothing of the other's goes.
async fn live_gateways_keep_their_sessions(bed: &mut TestBed) {
    let (a_state, b_state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let long = "[sessions]\nttl_secs = 30\nsweep_interval_secs = 1\n";
    let a = with_state(long, a_state.path());
    fresh_gateway(bed, a).await;
    let b = Gateway::start_with(&bed.opencode.url(), with_state(SWEEPING, b_state.path())).await;
    survives_the_others_sweeps(bed, &b, "A's, swept by B").await;
    drop(b);

    let named = "[sessions]\nttl_secs = 30\nsweep_interval_secs = 1\ndeployment = \"team-b\"\n";
    let a = with_state(SWEEPING, a_state.path());
    fresh_gateway(bed, with_state(named, b_state.path())).await;
    let sweeper = Gateway::start_with(&bed.opencode.url(), a).await;
    survives_the_others_sweeps(bed, &sweeper, "B's, swept by A").await;
}

/// The bed's gateway answers turn 1 of a conversation; 8 s later (the `sweeper`, on the same
/// OpenCode, sweeping meanwhile), its session is still there and turn 2 continues it with one
/// model call seeing every turn once; the sweeper deleted nothing.
async fn survives_the_others_sweeps(bed: &TestBed, sweeper: &Gateway, what: &str) {
    let (s1, r1) = first_turn(bed, None, "hi one").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        upstream_ids(bed).await,
        BTreeSet::from([s1.clone()]),
        "{what}: the idle session of a live gateway was swept"
    );
    turn_two_continues(bed, None, &r1, what).await;
    assert_eq!(upstream_ids(bed).await, BTreeSet::from([s1]), "{what}");
    assert_eq!(
        swept(bed, sweeper).await,
        Some(0.0),
        "{what}: the sweeper swept (and deleted nothing)"
    );
}
