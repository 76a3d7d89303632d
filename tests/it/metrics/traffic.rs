//! The steps of `metrics_follow_the_traffic`, and their bed.

use super::*;

pub(super) const KEY: &str = "sk-metrics-key-7f3a9c0d1e";
/// Texts sent in prompts (and a model id the catalog does not know): none may show in a label.
pub(super) const SECRET_TEXTS: &[&str] = &[
    "zebra-prompt-4411",
    "okapi-stream-9321",
    "mock/quokka-model-5512",
];

/// A keyed gateway in front of the fake.
pub(super) struct Bed {
    pub(super) fake: FakeOpenCode,
    pub(super) gw: Gateway,
    pub(super) client: reqwest::Client,
}

impl Bed {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    /// `/metrics` with the key: parsed (panics naming the bad line) and as text.
    pub(super) async fn scrape(&self) -> (Metrics, String) {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/plain"), "content-type {ct}");
        let text = resp.text().await.unwrap();
        let m = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (m, text)
    }

    pub(super) async fn chat(&self, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        read_json(resp).await
    }
}

/// `portatek_http_requests_total` of the chat route with `status` (and `model`, when given).
pub(super) fn chat_requests(m: &Metrics, status: &str, model: Option<&str>) -> f64 {
    let mut labels = vec![
        ("route", "/v1/chat/completions"),
        ("method", "POST"),
        ("status", status),
    ];
    if let Some(model) = model {
        labels.push(("model", model));
    }
    m.sum("portatek_http_requests_total", &labels)
}

/// Without the key `/metrics` is a 401 in OpenAI's shape; with it, Prometheus text that
/// parses, with the state gauges read at scrape time (the event stream is up).
pub(super) async fn metrics_need_the_key_and_parse(b: &Bed) {
    let resp = b.client.get(b.url("/metrics")).send().await.unwrap();
    let (status, body) = read_json(resp).await;
    assert_error(
        status,
        &body,
        401,
        Some("invalid_api_key"),
        None,
        "/metrics without a key",
    );
    let (m, _) = b.scrape().await;
    assert_eq!(m.sum("portatek_event_stream_connected", &[]), 1.0);
    assert!(m
        .types
        .get("portatek_sessions")
        .is_some_and(|t| t == "gauge"));
    assert!(m.has("portatek_pending_session_cleanup"));
}

/// A chat completion moves the request counter (with its model), the run and token counters
/// (the fake's run uses 1 token in, 2 out), and the duration and first-token histograms.
pub(super) async fn a_chat_is_counted(b: &Bed) {
    let (before, _) = b.scrape().await;
    let (status, v) = b.chat(&ask(ECHO, SECRET_TEXTS[0])).await;
    assert_eq!(reply_of(status, &v), FAKE_ANSWER);
    let (after, _) = b.scrape().await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        chat_requests(&after, "200", Some(ECHO)) - chat_requests(&before, "200", Some(ECHO)),
        1.0
    );
    let run = [("model", ECHO), ("outcome", "completed")];
    assert_eq!(delta("portatek_runs_total", &run), 1.0);
    let tokens_in = [("model", ECHO), ("direction", "in")];
    assert_eq!(delta("portatek_tokens_total", &tokens_in), 1.0);
    let tokens_out = [("model", ECHO), ("direction", "out")];
    assert_eq!(delta("portatek_tokens_total", &tokens_out), 2.0);
    assert_eq!(
        delta(
            "portatek_time_to_first_token_seconds_count",
            &[("model", ECHO)]
        ),
        1.0
    );
    let route = [("route", "/v1/chat/completions"), ("method", "POST")];
    assert_eq!(
        delta("portatek_http_request_duration_seconds_count", &route),
        1.0
    );
}

/// `portatek_active_streams` is 1 while a stream is open and back to 0 when it ended; the
/// stream is counted as a 200 and a completed run.
pub(super) async fn a_stream_is_active_while_open_and_counted(b: &Bed) {
    let (before, _) = b.scrape().await;
    assert_eq!(before.sum("portatek_active_streams", &[]), 0.0);
    b.fake.faults().slow_delta_gap_ms.store(100, SeqCst);
    b.fake.faults().slow_deltas.store(10, SeqCst);
    let resp = b
        .client
        .post(b.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&streaming(ask(ECHO, SECRET_TEXTS[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let mut frames = reader.until_content(Duration::from_secs(10)).await;
    let (during, _) = b.scrape().await;
    frames.extend(reader.rest(Duration::from_secs(10)).await);
    b.fake.faults().slow_deltas.store(0, SeqCst);
    check_ok_stream(frames, ECHO);
    assert_eq!(
        during.sum("portatek_active_streams", &[]),
        1.0,
        "during the stream"
    );
    let (after, _) = b.scrape().await;
    assert_eq!(
        after.sum("portatek_active_streams", &[]),
        0.0,
        "after the stream"
    );
    assert_eq!(
        chat_requests(&after, "200", Some(ECHO)) - chat_requests(&before, "200", Some(ECHO)),
        1.0
    );
    let run = [("model", ECHO), ("outcome", "completed")];
    assert_eq!(
        after.sum("portatek_runs_total", &run) - before.sum("portatek_runs_total", &run),
        1.0
    );
}

/// Client errors are counted by status: an unknown model is a 404 of the chat route (with no
/// model label: the id is not the catalog's), an unknown path a 404 of `unmatched`.
pub(super) async fn client_errors_are_counted(b: &Bed) {
    let (before, _) = b.scrape().await;
    let (status, _) = b.chat(&ask(SECRET_TEXTS[2], "hello?")).await;
    assert_eq!(status, 404);
    let resp = b
        .client
        .get(b.url("/v1/no-such-route"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (after, _) = b.scrape().await;
    assert_eq!(
        chat_requests(&after, "404", Some("")) - chat_requests(&before, "404", Some("")),
        1.0
    );
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(
        after.sum("portatek_http_requests_total", &unmatched)
            - before.sum("portatek_http_requests_total", &unmatched),
        1.0
    );
}

/// Upstream failures are counted: OpenCode answering 503 to every session create moves
/// `portatek_upstream_errors_total{kind="status_5xx"}` (once per attempt), and a run failing
/// with `session.error` is a `failed` run.
pub(super) async fn upstream_errors_are_counted(b: &Bed) {
    let (before, _) = b.scrape().await;
    b.fake.faults().session_failures.store(ALWAYS, SeqCst);
    let (status, body) = b.chat(&ask(ECHO, "while OpenCode refuses")).await;
    b.fake.faults().session_failures.store(0, SeqCst);
    assert!(status.is_server_error(), "{status}: {body}");
    *b.fake.faults().run_error.lock().unwrap() =
        Some(json!({"name": "UnknownError", "data": {"message": "provider down"}}));
    let (status, body) = b.chat(&ask(ECHO, "while the provider fails")).await;
    *b.fake.faults().run_error.lock().unwrap() = None;
    assert_eq!(status, 502, "{body}");
    let (after, _) = b.scrape().await;
    let kind = [("kind", "status_5xx")];
    let upstream = after.sum("portatek_upstream_errors_total", &kind)
        - before.sum("portatek_upstream_errors_total", &kind);
    assert!(upstream >= 1.0, "upstream errors counted: {upstream}");
    let failed = [("model", ECHO), ("outcome", "failed")];
    assert_eq!(
        after.sum("portatek_runs_total", &failed) - before.sum("portatek_runs_total", &failed),
        1.0
    );
}

/// With `sessions.ttl_secs = 1`, an idle conversation expires: counted in
/// `portatek_session_evictions_total{cause="expired"}`, and its session deleted upstream.
pub(super) async fn evictions_are_counted(b: &Bed) {
    let expired = [("cause", "expired")];
    // Conversations of earlier traffic on this gateway expire too: let them go first.
    let drained = eventually(Duration::from_secs(10), || async {
        b.scrape()
            .await
            .0
            .sum("portatek_sessions", &[("kind", "pooled")])
            == 0.0
    })
    .await;
    assert!(drained, "earlier conversations never expired");
    let (before, _) = b.scrape().await;
    let (status, v) = b.chat(&ask(ECHO, "soon forgotten")).await;
    assert_eq!(reply_of(status, &v), FAKE_ANSWER);
    let session = b.fake.prompts().last().cloned().unwrap();
    let evicted = eventually(Duration::from_secs(10), || async {
        b.fake.seen().deletes.lock().unwrap().contains(&session)
    })
    .await;
    assert!(
        evicted,
        "the idle session {session} was not deleted upstream within 10 s"
    );
    let (after, _) = b.scrape().await;
    let counted = after.sum("portatek_session_evictions_total", &expired)
        - before.sum("portatek_session_evictions_total", &expired);
    assert_eq!(counted, 1.0, "expiries counted");
}

/// Nothing a client sends ends up in a label: not the API key, not the prompts, not an unknown
/// model id (the whole text is searched); every `model` label is a catalog id or empty.
pub(super) async fn labels_hold_no_secrets(b: &Bed) {
    // The Responses API too, with an unknown model.
    let resp = b
        .client
        .post(b.url("/v1/responses"))
        .bearer_auth(KEY)
        .json(&json!({"model": SECRET_TEXTS[2], "input": SECRET_TEXTS[0]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (m, text) = b.scrape().await;
    for secret in std::iter::once(&KEY).chain(SECRET_TEXTS) {
        assert!(!text.contains(secret), "{secret:?} in the metrics:\n{text}");
    }
    let models: std::collections::BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("model").map(String::as_str))
        .collect();
    assert!(
        models.iter().all(|m| m.is_empty() || *m == ECHO),
        "model labels: {models:?}"
    );
}
