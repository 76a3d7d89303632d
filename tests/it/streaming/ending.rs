//! Runs ending: OpenCode killed mid-stream, clients leaving, deadlines, graceful shutdown.

use super::*;

/// OpenCode killed mid-stream (its event stream lost): the stream ends with an error event, no
/// `[DONE]`, within 5 s.
pub(super) async fn opencode_killed_mid_stream(bed: &mut TestBed) {
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "interrupted [slow:500] [chunks:10]")))
        .await;
    reader.until_content(FRAME_WAIT).await;
    bed.opencode.kill().await;
    let killed = Instant::now();
    let frames = tokio::time::timeout(Duration::from_secs(10), reader.rest(FRAME_WAIT))
        .await
        .expect("stream still open 10 s after OpenCode was killed");
    let ended = killed.elapsed();
    final_error(&datas(&frames));
    assert!(
        ended < Duration::from_secs(5),
        "error came {ended:?} after the kill (want < 5 s)"
    );
}

/// Replaces the bed's gateway (the old one is killed) with one using `config`.
pub(super) async fn replace_gateway(bed: &mut TestBed, config: &str) {
    bed.gateway = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config(config),
    )
    .await;
}

/// A non-streaming client that gives up mid-run gets its run aborted upstream too.
pub(super) async fn non_streaming_disconnect_aborts(bed: &TestBed) {
    let before = bed.mock.call_count();
    let request = bed
        .client
        .post(bed.url("/v1/chat/completions"))
        .json(&ask(ECHO, "give up [slow:500] [chunks:40]"))
        .send();
    let pending = tokio::spawn(request);
    // Once the model is streaming (it would go on for ~20 s), the client gives up.
    assert!(
        bed.mock
            .wait_for_calls(before + 1, Duration::from_secs(30))
            .await,
        "the run never reached the model"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    pending.abort();
    let _ = pending.await;
    if let Err(busy) = bed.opencode.wait_not_busy(Duration::from_secs(2)).await {
        panic!("the run kept going after the client left: {busy:?}");
    }
}

/// A stream in flight at SIGTERM finishes (to `[DONE]`, with all its content) and the gateway
/// then exits cleanly.
pub(super) async fn stream_in_flight_at_sigterm_completes(bed: &mut TestBed) {
    let text = "drain me [slow:300] [chunks:6]";
    let mut reader = bed.open_stream(streaming(ask(ECHO, text))).await;
    // Wait for the first content chunk, so the run is under way upstream.
    let mut frames = reader.until_content(FRAME_WAIT).await;
    let rest = tokio::spawn(async move { reader.rest(FRAME_WAIT).await });
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    frames.extend(rest.await.expect("reader"));
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway must exit cleanly after draining: {status:?}"
    );
    let datas = datas(&frames);
    assert_eq!(
        datas.last().map(String::as_str),
        Some("[DONE]"),
        "the in-flight stream must finish: {datas:?}"
    );
    assert_eq!(streamed_content(&datas), echo(text));
}

/// A model that sends nothing: the 4 s deadline (which covers the whole request, from its
/// arrival to the end of the stream) ends the stream with a timeout error event and no
/// `[DONE]`, and nothing stays busy upstream.
pub(super) async fn deadline_on_a_silent_model(bed: &mut TestBed) {
    replace_gateway(bed, "[prompt]\ndeadline_secs = 4\n").await;
    // Warm OpenCode up directly (its first prompt is slow, and a busy machine could push a
    // warm-up through the gateway past the 4 s deadline).
    let sid = bed.opencode.create_session("warm up").await;
    let (status, v) = match bed.opencode.is_v2() {
        // 2.x: the model is session state; the prompt returns at once, `wait` until idle.
        true => {
            let model = json!({"model": {"id": "echo", "providerID": "mock"}});
            bed.opencode
                .post_json(&format!("/api/session/{sid}/model"), &model)
                .await;
            let (status, v) = bed
                .opencode
                .post_json(
                    &format!("/api/session/{sid}/prompt"),
                    &json!({"text": "warm up"}),
                )
                .await;
            assert!(status.is_success(), "warm-up prompt: {status} {v}");
            bed.opencode
                .post_json(&format!("/api/experimental/session/{sid}/wait"), &json!({}))
                .await
        }
        false => {
            bed.opencode
                .post_json(
                    &format!("/session/{sid}/message"),
                    &json!({"parts": [{"type": "text", "text": "warm up"}],
                            "model": {"providerID": "mock", "modelID": "echo"}}),
                )
                .await
        }
    };
    assert!(status.is_success(), "warm-up prompt: {status} {v}");
    let started = Instant::now();
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "say nothing [hang]")))
        .await;
    // Headers go out when the run has started upstream.
    let run_started = started.elapsed();
    let frames = reader.rest(Duration::from_secs(20)).await;
    let took = started.elapsed();
    let after_start = frames.last().map_or(took, |f| f.at) - run_started;
    let v = final_error(&datas(&frames));
    let kind = format!("{} {}", v["error"]["type"], v["error"]["code"]);
    assert!(
        kind.contains("timeout"),
        "expected a timeout-typed error (504-style), got {v}"
    );
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(6),
        "deadline 4 s: the request took {took:?} in all ({after_start:?} after the headers)"
    );
    assert_not_busy(&bed.opencode, Duration::from_secs(2), "the deadline").await;
}

/// A stream still running when the grace period ends is ended with an error event (not cut
/// off), its run is aborted upstream and its session deleted before the gateway exits.
pub(super) async fn stream_outliving_the_grace_period(bed: &mut TestBed) {
    // Its own session title tells its sessions from earlier gateways'.
    replace_gateway(
        bed,
        "shutdown_grace_secs = 1\n[prompt]\nsession_title = \"grace\"\n",
    )
    .await;
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "long [slow:500] [chunks:30]")))
        .await;
    let mut frames = reader.until_content(FRAME_WAIT).await;
    let rest = tokio::spawn(async move { reader.rest(FRAME_WAIT).await });
    let started = Instant::now();
    let status = bed.gateway.terminate(Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    frames.extend(rest.await.expect("reader"));
    let v = final_error(&datas(&frames));
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    // Upstream: nothing left running, and the run's session is gone.
    assert_not_busy(&bed.opencode, Duration::from_secs(2), "shutdown").await;
    let left = bed.opencode.session_ids_titled("grace").await;
    assert!(left.is_empty(), "sessions left upstream: {left:?}");
}
