//! Keys isolating sessions, the session routes, pinned sessions.

use super::*;

/// Different API keys never share a pooled session, even with identical histories. Then the
/// session API (create, list, get, messages, fork, abort, delete; scoped to the key; unknown
/// ids) and pinned sessions via `x-session-id` (only the last message sent, continuation, 409
/// while busy).
pub(super) async fn keys_isolate_sessions_and_session_api_works(bed: &mut TestBed) {
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
pub(super) async fn pooled_sessions_are_per_key(bed: &TestBed) {
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
pub(super) async fn create_list_and_get(bed: &TestBed) -> String {
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
pub(super) async fn pinned_session_gets_only_the_last_message(bed: &TestBed, p: &str) {
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
pub(super) async fn messages_fork_and_abort(bed: &TestBed, p: &str) -> String {
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
pub(super) async fn assert_hidden_from(bed: &TestBed, key: Option<&str>, id: &str) {
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
pub(super) async fn another_key_gets_404_everywhere(bed: &TestBed, p: &str, f: &str) {
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
pub(super) async fn unknown_ids_are_404(bed: &TestBed) {
    for id in ["nope", "ses_doesnotexist"] {
        assert_hidden_from(bed, K1, id).await;
    }
}

/// A busy pinned session refuses a second request with 409 (no model call for it), and is
/// free again afterwards.
pub(super) async fn busy_pinned_session_is_409(bed: &TestBed) {
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
pub(super) async fn delete_removes_it_from_api_and_upstream(bed: &TestBed, p: &str, f: &str) {
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
