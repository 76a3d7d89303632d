//! The event stream dropped, unavailable or silent; stalled readers; the model catalog's cache.

use super::*;

/// Starts a fake whose `/event` stream ends right after the first delta of a run, and a gateway
/// subscribed to it.
pub(super) async fn dropping_event_stream() -> (FakeOpenCode, Gateway) {
    let fake = Harness::fake().start().await;
    fake.faults().drop_after_delta.store(true, SeqCst);
    let gw = fake.gateway().await;
    assert!(
        eventually(Duration::from_secs(5), || async { connections(&fake) >= 1 }).await,
        "the gateway never subscribed to /event"
    );
    (fake, gw)
}

pub(super) fn connections(fake: &FakeOpenCode) -> u32 {
    fake.seen().event_connections.load(SeqCst)
}

/// After a run failed on a dropped event stream (`before` = connections until then): the run was
/// aborted upstream, the hub reconnects within 2 s, and once the stream holds the next chat works.
pub(super) async fn assert_recovers(fake: &FakeOpenCode, gw: &Gateway, before: u32) {
    assert!(
        eventually(Duration::from_secs(2), || async {
            connections(fake) > before
        })
        .await,
        "the hub did not reconnect within 2 s (connections: {})",
        connections(fake)
    );
    let prompts = fake.prompts();
    assert_eq!(prompts.len(), 1);
    let aborts = fake.aborts();
    assert!(
        aborts.contains(&prompts[0]),
        "run of {} not aborted: {aborts:?}",
        prompts[0]
    );
    fake.faults().drop_after_delta.store(false, SeqCst);
    let (status, body, _) = chat(gw, "again").await;
    assert_eq!(status, StatusCode::OK, "{body}\nlogs:\n{}", gw.logs());
    assert_eq!(content(&body), FAKE_ANSWER);
}

/// 5a. The event stream drops mid-stream: the text before the drop arrives, then an error event
/// and no `[DONE]`, fast; then the gateway recovers ([`assert_recovers`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn dropped_event_stream_ends_a_stream_with_an_error() {
    let (fake, gw) = dropping_event_stream().await;
    let before = connections(&fake);
    let (status, is_sse, payloads, elapsed) = chat_stream(&gw, "first").await;
    assert_eq!(status, StatusCode::OK, "{payloads:?}");
    assert!(is_sse, "not SSE: {payloads:?}");
    assert!(elapsed < Duration::from_secs(5), "stream took {elapsed:?}");
    final_error(&payloads);
    assert_eq!(
        streamed_content(&payloads),
        FAKE_ANSWER,
        "text sent before the drop: {payloads:?}"
    );
    assert_recovers(&fake, &gw, before).await;
}

/// 5b. The event stream drops mid-run of a non-streaming chat: a prompt 502; then the gateway
/// recovers ([`assert_recovers`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn dropped_event_stream_is_a_502() {
    let (fake, gw) = dropping_event_stream().await;
    let before = connections(&fake);
    let (status, body, elapsed) = chat(&gw, "second").await;
    assert_error(&gw, status, &body, 502, "upstream_error");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_recovers(&fake, &gw, before).await;
}

/// 6. `/event` always 500: a chat is 503 `upstream_unavailable` after the bounded wait, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn event_stream_unavailable_is_503() {
    let fake = Harness::fake().start().await;
    fake.faults().events_fail.store(true, SeqCst);
    let gw = fake.gateway().await;
    let (status, body, elapsed) = chat(&gw, "hello").await;
    assert_error(&gw, status, &body, 503, "upstream_unavailable");
    assert!(
        elapsed < Duration::from_secs(7),
        "took {elapsed:?} (the event wait is 5 s)"
    );
    assert!(
        fake.prompts().is_empty(),
        "no prompt may be sent without an event subscription"
    );
    assert_eq!(
        fake.seen().session_creates.load(SeqCst),
        0,
        "no session may be created while the event stream is down"
    );
    // Readiness reflects it: OpenCode answers its health check, but chats cannot be served.
    let resp = test_client()
        .get(format!("{}/health", gw.url()))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = resp.json().await.expect("health JSON");
    assert_eq!(v["opencode"]["healthy"], true, "{v}");
    assert_eq!(v["events"]["connected"], false, "{v}");
}

/// 7. The prompt is accepted but nothing ever comes back: 504 at the deadline, run aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn silent_run_hits_deadline_and_is_aborted() {
    let fake = Harness::fake().start().await;
    fake.faults().prompt_silent.store(true, SeqCst);
    let gw = fake.gateway_with("[prompt]\ndeadline_secs = 2\n").await;
    let (status, body, elapsed) = chat(&gw, "hello").await;
    assert_error(&gw, status, &body, 504, "upstream_timeout");
    assert!(
        elapsed >= Duration::from_millis(1_500) && elapsed < Duration::from_secs(4),
        "took {elapsed:?} with deadline_secs = 2"
    );
    let prompts = fake.prompts();
    assert_eq!(prompts.len(), 1);
    assert!(
        eventually(Duration::from_secs(2), || async {
            fake.aborts().contains(&prompts[0])
        })
        .await,
        "session {} was not aborted (aborts: {:?})",
        prompts[0],
        fake.aborts()
    );
}

/// 8. `/config/providers` failing persistently: `/v1/models` is a prompt 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn providers_500_persistently_is_502() {
    let fake = Harness::fake().start().await;
    fake.faults().providers_failures.store(ALWAYS, SeqCst);
    let gw = fake.gateway().await;
    let (status, body, elapsed) = get_json(&gw, "/v1/models").await;
    assert_error(&gw, status, &body, 502, "upstream_error");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("providers exploded"),
        "upstream's message should be passed on: {body}"
    );
}

/// 10. A streaming client that stops reading (its socket full) cannot hold the run past the
/// deadline: the gateway aborts it upstream on time even though nothing can be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn stalled_stream_reader_is_cut_at_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let fake = Harness::fake().start().await;
    fake.faults().flood_deltas.store(6_000, SeqCst);
    let gw = fake.gateway_with("[prompt]\ndeadline_secs = 3\n").await;
    let addr: std::net::SocketAddr = gw.url().trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.expect("connect");
    let body = streaming(ask(ECHO, "flood")).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Never read. The run streams ~12 MB, far beyond what the sockets buffer.
    let started = Instant::now();
    let aborted = loop {
        if !fake.aborts().is_empty() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        aborted,
        "the stalled run was not aborted within 10 s of a 3 s deadline\nlogs:\n{}",
        gw.logs()
    );
    assert_eq!(
        fake.aborts(),
        fake.prompts(),
        "the run's own session is aborted"
    );
    drop(tcp);
}

/// 11. The model list is cached (requests do not each hit OpenCode) and refreshed in the
/// background within the TTL, so a model added upstream appears without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn model_catalog_is_cached_and_refreshed_in_the_background() {
    let fake = Harness::fake().start().await;
    let gw = fake.gateway_with("[models]\ncache_ttl_secs = 2\n").await;
    let client = test_client();
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = || async {
        let resp = client
            .get(format!("{}/v1/models", gw.url()))
            .send()
            .await
            .expect("models");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.expect("JSON")
    };
    assert_eq!(ids(&list().await), ["mock/echo"]);
    let before = fake.seen().providers.load(SeqCst);
    for _ in 0..20 {
        list().await;
    }
    assert!(
        fake.seen().providers.load(SeqCst) <= before + 1,
        "20 model lists must be served from the cache"
    );
    fake.faults().extra_model.store(true, SeqCst);
    let idle_from = fake.seen().providers.load(SeqCst);
    // No requests meanwhile: only the background refresh can fetch.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        fake.seen().providers.load(SeqCst) > idle_from,
        "the catalog was not refreshed in the background"
    );
    assert_eq!(ids(&list().await), ["mock/added", "mock/echo"]);
}
