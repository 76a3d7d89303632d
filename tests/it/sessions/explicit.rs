//! Explicit and pinned sessions over the TTL, the per-key cap, a gateway restart.

use super::*;

/// `ttl_secs = 2`: an idle pooled session is deleted upstream within seconds; a pinned one is
/// never evicted and still holds its history. Explicit sessions are capped per key
/// (`max_explicit_per_key = 2`).
pub(super) async fn ttl_evicts_pooled_sessions_but_not_pinned_ones(bed: &mut TestBed) {
    let config = "[sessions]\nttl_secs = 2\nmax_explicit_per_key = 2\n";
    fresh_gateway(bed, GatewayOptions::default().config(config)).await;
    let p = idle_pooled_session_is_evicted(bed).await;
    explicit_sessions_are_capped_per_key(bed, &p).await;
}

/// A pinned session used once and a pooled conversation: the pooled one is deleted upstream
/// within 8 s of its 2 s TTL; 4 s on, the pinned one is still there (API and upstream) and
/// continues its history. Returns the pinned session.
pub(super) async fn idle_pooled_session_is_evicted(bed: &TestBed) -> String {
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
pub(super) async fn explicit_sessions_are_capped_per_key(bed: &TestBed, p: &str) {
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
pub(super) async fn explicit_sessions_survive_a_gateway_restart(bed: &mut TestBed) {
    fresh_gateway(bed, with_keys("k1,k2")).await;
    let id = explicit_session_outlives_its_gateway(bed).await;
    owner_keeps_it_after_the_restart(bed, &id).await;
    aliases_of_the_id_are_404(bed, &id).await;
    old_session_is_listed_behind_newer_ones(bed, &id).await;
}

/// An explicit session (its title shown without the owner tag) and a pooled conversation; on
/// SIGTERM the pooled session is deleted and the explicit one kept; the gateway comes back with
/// its keys in another order. Returns the explicit session.
pub(super) async fn explicit_session_outlives_its_gateway(bed: &mut TestBed) -> String {
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
pub(super) async fn owner_keeps_it_after_the_restart(bed: &TestBed, id: &str) {
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
pub(super) async fn aliases_of_the_id_are_404(bed: &TestBed, id: &str) {
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
pub(super) async fn old_session_is_listed_behind_newer_ones(bed: &TestBed, id: &str) {
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
