//! Prometheus `/metrics` (issue 10): the text format parses (a strict reader,
//! `tests/it/support/prometheus.rs`); counters move for chats, streams, errors, evictions and
//! upstream errors; `portatek_active_streams` rises while a stream is open; no label ever
//! holds an API key, message text or a model id the catalog does not know; `/metrics` is
//! behind the API keys, or on its own listener without them (and then not on the API's).
//!
//! The gateway binary runs in front of the fake OpenCode (each gateway process has its own
//! registry, so the numbers are this test's alone). No real OpenCode is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::api::read_json;
use support::fake_opencode::{ALWAYS, FAKE_ANSWER};
use support::gateway::test_client;
use support::opencode::free_port;
use support::prometheus::{self, Metrics};
use support::sse::{check_ok_stream, SseReader};
use support::{ask, assert_error, eventually, reply_of, streaming, FakeOpenCode, Gateway};
use support::{GatewayOptions, ECHO};

mod traffic;

use traffic::*;

/// A keyed gateway (`sessions.ttl_secs = 1`) of its own in front of a fake OpenCode, ready:
/// each test reads its own process's registry, so the numbers are that test's alone.
async fn keyed_bed() -> Bed {
    let fake = Harness::fake().start().await;
    let gw = Gateway::start_with(
        fake.url(),
        GatewayOptions::default()
            .env("PORTATEK_API_KEYS", KEY)
            .config("[sessions]\nttl_secs = 1\n"),
    )
    .await;
    let b = Bed {
        fake,
        gw,
        client: test_client(),
    };
    let ready = eventually(Duration::from_secs(10), || async {
        b.client
            .get(b.url("/health"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(ready, "the gateway is not ready");
    b
}

/// The metrics of a keyed gateway follow its traffic: one test per kind of traffic.
mod metrics_follow_the_traffic {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_need_the_key_and_parse() {
        super::metrics_need_the_key_and_parse(&keyed_bed().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chat_is_counted() {
        super::a_chat_is_counted(&keyed_bed().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_is_active_while_open_and_counted() {
        super::a_stream_is_active_while_open_and_counted(&keyed_bed().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_errors_are_counted() {
        super::client_errors_are_counted(&keyed_bed().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_errors_are_counted() {
        super::upstream_errors_are_counted(&keyed_bed().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn evictions_are_counted() {
        super::evictions_are_counted(&keyed_bed().await).await;
    }

    /// After the traffic that carries the secrets (a chat, a stream, an unknown model).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn labels_hold_no_secrets() {
        let b = keyed_bed().await;
        super::a_chat_is_counted(&b).await;
        super::a_stream_is_active_while_open_and_counted(&b).await;
        super::client_errors_are_counted(&b).await;
        super::labels_hold_no_secrets(&b).await;
    }
}

/// With `[metrics] listen`, `/metrics` is served on that address without a key, and nothing
/// else is; the API listener no longer serves it (404 even with the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_listener() {
    let fake = Harness::fake().start().await;
    let port = free_port();
    let gw = Gateway::start_with(
        fake.url(),
        GatewayOptions::default()
            .env("PORTATEK_API_KEYS", KEY)
            .config(format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")),
    )
    .await;
    let client = test_client();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let up = eventually(Duration::from_secs(10), || async {
        client
            .get(&metrics_url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "no /metrics on 127.0.0.1:{port}\n{}", gw.logs());
    let text = client
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let other = client
        .get(format!("http://127.0.0.1:{port}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves only /metrics"
    );
    let resp = client
        .get(format!("{}/metrics", gw.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let (status, body) = read_json(resp).await;
    assert_error(
        status,
        &body,
        404,
        None,
        None,
        "/metrics on the API listener",
    );
}

/// `[metrics] enabled = false`: no `/metrics` at all (404 in OpenAI's shape).
#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = support::in_process::App::start_with(
        support::in_process::Settings::default().config("[metrics]\nenabled = false\n"),
    )
    .await;
    let r = app.get("/metrics").await;
    r.assert_error(404, None, None, "/metrics when disabled");
}

/// Every answer is counted in `portatek_http_requests_total`, including a request refused
/// before routing by the up-front size check (a declared `Content-Length` over
/// `limits.max_body_bytes` → 413), as a 400 from the router is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_before_routing_is_counted() {
    let gw = Gateway::start(support::gateway::UNUSED_OPENCODE_URL).await;
    let addr = support::raw_http::addr_of(&gw.url());
    let oversized = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\
                     content-type: application/json\r\ncontent-length: 11534336\r\n\r\n";
    let not_json = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\
                    content-type: application/json\r\ncontent-length: 5\r\n\r\n{\"a\":";
    for (req, status) in [(oversized, 413), (not_json, 400)] {
        let r = support::raw_http::exchange(&addr, req.as_bytes().to_vec(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.status, status);
    }
    let (m, text) =
        prometheus::scrape(&test_client(), &format!("{}/metrics", gw.url()), None).await;
    assert_eq!(chat_requests(&m, "400", None), 1.0, "the 400 is counted");
    assert_eq!(
        m.sum("portatek_http_requests_total", &[("status", "413")]),
        1.0,
        "the 413 is not counted:\n{text}"
    );
}

/// No client-chosen text becomes a label, whoever sends it: requests with made-up HTTP methods
/// (unauthenticated, to an unknown path, or with the key to a known one) are counted under
/// methods from a fixed set, not one new series per method token — else any client could
/// write into the metrics and grow them without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_never_become_labels() {
    let gw = Gateway::start_with(
        support::gateway::UNUSED_OPENCODE_URL,
        GatewayOptions::default().env("PORTATEK_API_KEYS", KEY),
    )
    .await;
    let addr = support::raw_http::addr_of(&gw.url());
    for i in 0..20 {
        for (path, auth) in [
            ("/nowhere", String::new()),
            ("/v1/models", format!("authorization: Bearer {KEY}\r\n")),
        ] {
            let req = format!("CHOSENBYCLIENT{i} {path} HTTP/1.1\r\nhost: x\r\n{auth}\r\n");
            let r = support::raw_http::exchange(&addr, req.into_bytes(), Duration::from_secs(5))
                .await
                .unwrap();
            assert!(matches!(r.status, 404 | 405), "{path}: {}", r.status);
        }
    }
    let (m, text) =
        prometheus::scrape(&test_client(), &format!("{}/metrics", gw.url()), Some(KEY)).await;
    let methods: std::collections::BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("method").map(String::as_str))
        .collect();
    assert!(
        !text.contains("CHOSENBYCLIENT"),
        "client-chosen methods became labels: {methods:?}"
    );
    assert!(
        methods.len() <= 10,
        "{} method labels: {methods:?}",
        methods.len()
    );
}

/// The test's Prometheus reader is strict: it takes the format's escapes and histogram
/// suffixes, and refuses samples without a type, unquoted label values and bad numbers.
#[test]
fn the_prometheus_reader_is_strict() {
    let text =
        "# HELP a_total Things.\n# TYPE a_total counter\na_total{k=\"v\\\"x\\\\\",z=\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
    let m = prometheus::parse(text).unwrap();
    assert_eq!(m.sum("a_total", &[("k", "v\"x\\")]), 3.0);
    assert_eq!(m.sum("h_count", &[]), 1.0);
    assert!(prometheus::parse("x 1\n").is_err(), "no TYPE");
    assert!(
        prometheus::parse("# TYPE x counter\nx{a=b} 1\n").is_err(),
        "unquoted"
    );
    assert!(
        prometheus::parse("# TYPE x counter\nx one\n").is_err(),
        "bad value"
    );
    assert!(
        prometheus::parse("# TYPE x counter\nx -1\n").is_err(),
        "negative counter"
    );
}
