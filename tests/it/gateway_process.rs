//! The gateway binary on its own, with no OpenCode behind it: start-up checks, the JSON log
//! format, and clients too slow to send their request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::gateway::{test_client, READY_PREFIX, UNUSED_OPENCODE_URL};
use support::schema::assert_valid;
use support::{eventually, Gateway, GatewayOptions};

// ---------------------------------------------------------------------------------------------
// Start-up checks
// ---------------------------------------------------------------------------------------------

/// Runs the gateway expecting it to refuse to start: its stderr, checked to name `key`.
async fn assert_refuses_to_start(opts: GatewayOptions, key: &[&str], what: &str) {
    let (status, out, err) = Gateway::run_expect_exit(opts).await;
    assert!(!status.success(), "{what} started: {status}\n{out}\n{err}");
    assert!(
        key.iter().any(|k| err.contains(k)),
        "stderr should name {key:?}: {err}"
    );
    assert!(!out.contains(READY_PREFIX), "{out}");
}

/// Listening on a non-loopback address without API keys is refused, naming `auth.api_keys`.
#[tokio::test]
async fn public_address_without_keys_is_refused() {
    let opts = GatewayOptions::default().args(["--listen", "0.0.0.0:0"]);
    assert_refuses_to_start(opts, &["auth.api_keys"], "0.0.0.0 without keys").await;
}

/// An invalid value in the config file exits non-zero naming the key.
#[tokio::test]
async fn invalid_file_value_is_refused() {
    let opts = GatewayOptions::default().config("[prompt]\ndeadline_secs = \"x\"\n");
    assert_refuses_to_start(opts, &["deadline_secs"], "bad deadline_secs").await;
}

/// An invalid value in the environment exits non-zero naming the key.
#[tokio::test]
async fn invalid_environment_value_is_refused() {
    let opts = GatewayOptions {
        no_default_args: true,
        ..GatewayOptions::default().env("PORTATEK_LISTEN", "nonsense")
    };
    let keys = ["`listen`", "PORTATEK_LISTEN"];
    assert_refuses_to_start(opts, &keys, "PORTATEK_LISTEN=nonsense").await;
}

/// Starts the gateway on 0.0.0.0 and checks `/livez` over loopback.
async fn assert_starts_on_a_public_address(opts: GatewayOptions) {
    let gw = Gateway::start_with(UNUSED_OPENCODE_URL, opts.args(["--listen", "0.0.0.0:0"])).await;
    let port = gw
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {}", gw.url()));
    let resp = test_client()
        .get(format!("http://127.0.0.1:{port}/livez"))
        .send()
        .await
        .expect("livez over loopback");
    assert_eq!(resp.status(), 200);
}

/// With API keys, a non-loopback address is fine.
#[tokio::test]
async fn public_address_with_keys_starts() {
    assert_starts_on_a_public_address(GatewayOptions::default().env("PORTATEK_API_KEYS", "k1"))
        .await;
}

/// Explicitly unauthenticated (`auth.disabled = true`), a non-loopback address is fine too.
#[tokio::test]
async fn public_address_with_auth_disabled_starts() {
    assert_starts_on_a_public_address(
        GatewayOptions::default().config("[auth]\ndisabled = true\n"),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// `PORTATEK_LOG_FORMAT=json` writes one JSON object per line, and a request's lines carry its
/// request id (the one the client sent in `x-request-id`).
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().env("PORTATEK_LOG_FORMAT", "json"),
    )
    .await;
    let resp = test_client()
        .get(format!("{}/no/such/route", gw.url()))
        .header("x-request-id", "req-json-42")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let logged = eventually(Duration::from_secs(5), || async {
        let logs = gw.logs();
        let lines: Vec<Value> = logs
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        lines.iter().any(|l| l.to_string().contains("req-json-42"))
    })
    .await;
    assert!(logged, "no log line carries the request id:\n{}", gw.logs());
}

// ---------------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------------

/// A client that stalls while sending its body gets 408 in OpenAI's error shape after
/// `limits.body_timeout_secs`, instead of holding the connection and its buffer forever.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_request_body_is_408() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nbody_timeout_secs = 1\n"),
    )
    .await;
    let addr = gw.url().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{\"model\":"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("the gateway must answer a stalled body, not wait forever")
            .expect("read");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if n == 0 || text.contains("\r\n\r\n") && text.contains('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = &text[text.find("\r\n\r\n").expect("head end") + 4..];
    let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_valid("ErrorResponse", &v);
    assert_eq!(v["error"]["code"], "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A client that never finishes its request headers (slowloris) is disconnected after
/// `limits.header_timeout_secs`, instead of holding a connection forever.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_request_headers_are_cut_off() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nheader_timeout_secs = 1\n"),
    )
    .await;
    let addr = gw.url().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection was still open 5 s into a 1 s header timeout"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
}
