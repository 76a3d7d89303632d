//! Basic auth towards OpenCode, a failing model cut off by the deadline, OpenCode dying.

use super::*;

// ---------------------------------------------------------------------------------------------
// Upstream failures
// ---------------------------------------------------------------------------------------------

pub(super) const OC_USER: &str = "ocuser";
pub(super) const OC_PASSWORD: &str = "oc-s3cret";

/// Gateway options with the upstream basic-auth credentials.
pub(super) fn with_credentials() -> GatewayOptions {
    GatewayOptions::default()
        .env("OPENCODE_SERVER_PASSWORD", OC_PASSWORD)
        .env("OPENCODE_SERVER_USERNAME", OC_USER)
}

/// Basic auth towards OpenCode: with the credentials everything works; without the password,
/// with a wrong one, or with the default user name the gateway cannot reach OpenCode (health
/// 503, models 502).
pub(super) async fn upstream_basic_auth(bed: &TestBed) {
    let (status, h) = bed.get("/health").await;
    assert_eq!(status, 200, "{h}");
    let (status, v) = bed.get("/v1/models").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = bed.chat(ask(ECHO, "through basic auth")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: through basic auth");

    let url = bed.opencode.url();
    let (no_password, wrong, default_user) = tokio::join!(
        Gateway::start(&url),
        Gateway::start_with(
            &url,
            GatewayOptions::default().env("OPENCODE_SERVER_PASSWORD", "wrong")
        ),
        Gateway::start_with(
            &url,
            GatewayOptions::default().env("OPENCODE_SERVER_PASSWORD", OC_PASSWORD)
        ),
    );
    let client = test_client();
    let (status, _, h) = send(client.get(format!("{}/health", no_password.url()))).await;
    assert_eq!(status, 503, "health without the upstream password: {h}");
    for (gw, what) in [
        (&no_password, "models without the upstream password"),
        (&wrong, "models with a wrong upstream password"),
        (&default_user, "models with the wrong upstream user name"),
    ] {
        let (status, _, e) = send(client.get(format!("{}/v1/models", gw.url()))).await;
        assert_error(status, &e, 502, None, None, what);
    }
}

/// A failing model with a huge retry budget: the 5 s `prompt.deadline_secs` ends the request
/// after ~5 s with a 502 carrying the provider's message, and OpenCode's run is stopped.
pub(super) async fn model_failure_deadline(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        with_credentials().config("[prompt]\nmax_model_retries = 100\ndeadline_secs = 5\n"),
    )
    .await;
    let t = Instant::now();
    let (status, e) = chat_via(&gw, &ask(ECHO, "deadline please [fail]")).await;
    let took = t.elapsed();
    eprintln!("deadline failure answered after {took:?}");
    assert_error(status, &e, 502, None, None, "model failure (deadline)");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(FAILURE_MESSAGE),
        "502 should carry the provider's message: {e}"
    );
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
        "the 5 s deadline should end the request after ~5 s, took {took:?}"
    );
    assert_quiet_upstream(bed, "the deadline").await;
}

/// `/health` reflects OpenCode (status, version); when OpenCode dies, readiness and chats fail
/// fast with 503 while liveness stays up.
pub(super) async fn opencode_dies(bed: &mut TestBed) {
    let (status, h) = bed.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["opencode"]["healthy"], true, "{h}");
    assert_eq!(h["opencode"]["version"], opencode_version(), "{h}");
    let (status, l) = bed.get("/livez").await;
    assert_eq!(status, 200, "{l}");
    let (status, v) = bed.chat(ask(ECHO, "before the crash")).await;
    assert_eq!(status, 200, "{v}");

    bed.opencode.kill().await;

    let t = Instant::now();
    let (status, h) = bed.get("/health").await;
    let took = t.elapsed();
    assert_eq!(status, 503, "health with OpenCode down: {h}");
    assert!(took < Duration::from_secs(5), "health took {took:?}");
    assert_eq!(h["opencode"]["healthy"], false, "{h}");
    let (status, l) = bed.get("/livez").await;
    assert_eq!(status, 200, "livez must not depend on OpenCode: {l}");
    let t = Instant::now();
    let (status, e) = bed.chat(ask(ECHO, "after the crash")).await;
    let took = t.elapsed();
    assert_error(
        status,
        &e,
        503,
        Some("upstream_unavailable"),
        None,
        "chat with OpenCode down",
    );
    assert!(
        took < Duration::from_secs(10),
        "chat with OpenCode down took {took:?}"
    );
}
