//! The conversation pool: affinity, seeding, forks, eviction, vanished sessions, shutdown.

use super::*;

/// Affinity without replay (JSON and streaming), an edited history starting a seeded session,
/// an OpenCode restart between turns, and `delete_on_shutdown` deleting every pooled session
/// when the gateway gets SIGTERM.
pub(super) async fn pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown(
    bed: &mut TestBed,
) {
    fresh_gateway(bed, GatewayOptions::default()).await;
    let (s1, r1) = json_turn_two_continues_the_session(bed).await;
    streaming_turn_two_continues_the_session(bed, &s1).await;
    edited_history_starts_a_seeded_session(bed, &s1, &r1).await;
    turn_after_an_opencode_restart_answers(bed, &r1).await;
    shutdown_deletes_every_pooled_session(bed).await;
}

/// JSON: turn 1 creates a session; turn 2 continues it with only the new message, the model
/// seeing every turn once as a real message (no transcript). Returns (session, turn-1 reply).
pub(super) async fn json_turn_two_continues_the_session(bed: &TestBed) -> (String, String) {
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
pub(super) async fn streaming_turn_two_continues_the_session(bed: &TestBed, s1: &str) {
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
pub(super) async fn edited_history_starts_a_seeded_session(bed: &TestBed, s1: &str, r1: &str) {
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
pub(super) async fn turn_after_an_opencode_restart_answers(bed: &mut TestBed, r1: &str) {
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
pub(super) async fn shutdown_deletes_every_pooled_session(bed: &mut TestBed) {
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
pub(super) async fn pool_forks_concurrent_branches(bed: &mut TestBed) {
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
pub(super) async fn capacity_eviction_deletes_sessions_upstream(bed: &mut TestBed) {
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
pub(super) async fn vanished_session_falls_back_to_a_seeded_one(bed: &mut TestBed) {
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
