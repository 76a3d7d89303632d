//! The sweep of pooled sessions a gateway killed outright left behind.

use super::*;

/// A 2 s TTL and a sweep every second: a session idle for 4 s (TTL + 2 s grace) by OpenCode's
/// clock (its `Date` header has whole seconds) is an orphan if nothing holds it.
pub(super) const SWEEPING: &str = "[sessions]\nttl_secs = 2\nsweep_interval_secs = 1\n";

/// Gateway options with `config` and the state dir `state` (its instance id).
pub(super) fn with_state(config: &str, state: &std::path::Path) -> GatewayOptions {
    GatewayOptions::default()
        .config(config)
        .env("PORTATEK_STATE_DIR", state.to_string_lossy())
}

/// `portatek_sessions_swept_total{upstream="default"}` of the gateway at `url` (`None`: not
/// exported).
pub(super) async fn swept(bed: &TestBed, gateway: &Gateway) -> Option<f64> {
    let (m, _) = prometheus::scrape(&bed.client, &format!("{}/metrics", gateway.url()), None).await;
    let name = "portatek_sessions_swept_total";
    m.has(name).then(|| m.sum(name, &[("upstream", "default")]))
}

/// A session made on OpenCode directly, titled like the gateway's, with `metadata`.
pub(super) async fn made_upstream(bed: &TestBed, metadata: Value) -> String {
    let body = json!({ "title": TITLE, "metadata": metadata });
    let path = if bed.opencode.is_v2() {
        "/api/session"
    } else {
        "/session"
    };
    let (status, v) = bed.opencode.post_json(path, &body).await;
    assert!(status.is_success(), "POST {path} -> {status}: {v}");
    let created = if bed.opencode.is_v2() { &v["data"] } else { &v };
    created["id"].as_str().unwrap().to_string()
}

/// A gateway with a 2 s TTL answers a request slowly, its session quiet for 8 s (past TTL,
/// grace and a sweep): its own sweeps spare it. Then it holds three pooled conversations; an
/// explicit session, an unstamped session and one stamped by another instance sit beside
/// them. SIGKILL; a new gateway on the same state dir deletes exactly the three pooled
/// sessions within seconds, and counts them in `/metrics`.
pub(super) async fn a_hard_killed_gateways_sessions_are_swept(bed: &mut TestBed) {
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
pub(super) async fn live_gateways_keep_their_sessions(bed: &mut TestBed) {
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
pub(super) async fn survives_the_others_sweeps(bed: &TestBed, sweeper: &Gateway, what: &str) {
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
