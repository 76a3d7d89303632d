//! Slow, oversized and idle connections cut off at the deadlines.

use super::*;

// ---------------------------------------------------------------------------------------------
// Request bodies: total deadline, size up front
// ---------------------------------------------------------------------------------------------

/// Sends `head`, then `piece` every second (30 times at most), and reads the answer (10 s at
/// most): the answer and whether the connection was closed within 3 s after it.
pub(super) async fn trickle(addr: &str, head: String, piece: &'static [u8]) -> (RawResponse, bool) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(head.as_bytes()).await.expect("write head");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            if wr.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let r = read_response(&mut rd, started, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("a trickled body must be answered within 10 s: {e}"));
    let closed = closed_within(&mut rd, Duration::from_secs(3)).await;
    writer.abort();
    (r, closed)
}

/// The body deadline is total, not per read: a client declaring 100,000 bytes and sending one
/// every second (so no gap ever reaches the timeout) gets a 408 in OpenAI's shape when
/// `limits.body_timeout_secs = 3` have passed since its headers — not never — and the
/// connection is closed soon after. The same for a chunked body sent one 1-byte chunk a second,
/// and for `/v1/responses`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn a_trickled_body_is_cut_off_at_the_total_deadline() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nbody_timeout_secs = 3\n"),
    )
    .await;
    let addr = addr_of(&gw.url());
    let head = |path: &str, framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             {framing}\r\n\r\n"
        )
    };
    let chat = "/v1/chat/completions";
    let (sized, chunked, responses) = tokio::join!(
        trickle(&addr, head(chat, "content-length: 100000"), b" "),
        trickle(
            &addr,
            head(chat, "transfer-encoding: chunked"),
            b"1\r\n \r\n"
        ),
        trickle(&addr, head("/v1/responses", "content-length: 100000"), b" "),
    );
    let cases = [
        (sized, "content-length"),
        (chunked, "chunked"),
        (responses, "/v1/responses"),
    ];
    for ((r, closed), what) in cases {
        assert_openai_error(&r, 408, Some("request_timeout"), what);
        assert!(
            r.elapsed >= Duration::from_millis(2500) && r.elapsed <= Duration::from_secs(6),
            "{what}: 408 after {:?}, expected about 3 s",
            r.elapsed
        );
        assert!(closed, "{what}: the connection stayed open after the 408");
    }
}

/// A `Content-Length` over `limits.max_body_bytes` (11 MiB against the default 10 MiB, and
/// 2^63, beyond any signed 64-bit length) with no body sent is a 413 in OpenAI's shape at once,
/// not after waiting for a body that never comes; and the bytes after the head are not taken
/// for a next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn an_oversized_content_length_is_413_at_once() {
    let gw = Gateway::start(UNUSED_OPENCODE_URL).await;
    let addr = addr_of(&gw.url());
    for length in ["11534336", "9223372036854775808"] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n"
        );
        let r = exchange(&addr, req.into_bytes(), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("content-length {length}: {e}"));
        let what = format!("content-length {length}");
        assert_openai_error(&r, 413, Some("request_too_large"), &what);
        assert!(
            r.elapsed < Duration::from_millis(500),
            "{what}: 413 after {:?}",
            r.elapsed
        );
    }
    // What follows the refused head is never read as a request of its own: the connection is
    // closed after the 413 (a request "smuggled" in the body gets no answer).
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    let smuggled =
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 11534336\r\n\r\n\
                    GET /livez HTTP/1.1\r\nhost: x\r\n\r\n";
    tcp.write_all(smuggled.as_bytes()).await.expect("write");
    let r = read_response(&mut tcp, Instant::now(), Duration::from_secs(5))
        .await
        .expect("the 413");
    assert_eq!(r.status, 413);
    let next = read_response(&mut tcp, Instant::now(), Duration::from_secs(2)).await;
    assert!(
        next.is_err(),
        "the body was answered as a request: {next:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Request heads: a deadline from the connection's start
// ---------------------------------------------------------------------------------------------

/// Sends `bytes` on a new connection and says whether the gateway closed it within `within`.
pub(super) async fn closed_after_sending(addr: &str, bytes: &[u8], within: Duration) -> bool {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    closed_within(&mut tcp, within).await
}

/// With `limits.header_timeout_secs = 1`, a keep-alive connection that stays silent after its
/// first request is closed within a few seconds, as is one that starts a request line and
/// stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn idle_keep_alive_connections_are_closed_at_the_header_deadline() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nheader_timeout_secs = 1\n"),
    )
    .await;
    let addr = addr_of(&gw.url());
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    tcp.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let r = read_response(&mut tcp, Instant::now(), Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(r.status, 200);
    let (idle, stalled) = tokio::join!(
        closed_within(&mut tcp, Duration::from_secs(4)),
        closed_after_sending(&addr, b"GET /livez HT", Duration::from_secs(4)),
    );
    assert!(
        idle,
        "an idle keep-alive connection stayed open 4 s into a 1 s header deadline"
    );
    assert!(
        stalled,
        "a stalled request line stayed open 4 s into a 1 s header deadline"
    );
}

/// With `limits.header_timeout_secs = 1`, a connection that sends nothing at all, or only the
/// first bytes of something (`P`, the start of HTTP/2's preface), is closed within a few
/// seconds too, like one stalling in a request line: else a client can hold any number of
/// connections open forever without sending a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(super) async fn silent_connections_are_closed_at_the_header_deadline() {
    let gw = Gateway::start_with(
        UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nheader_timeout_secs = 1\n"),
    )
    .await;
    let addr = addr_of(&gw.url());
    let wait = Duration::from_secs(4);
    let (silent, p, preface) = tokio::join!(
        closed_after_sending(&addr, b"", wait),
        closed_after_sending(&addr, b"P", wait),
        closed_after_sending(&addr, b"PRI * HTTP/2.0\r\n", wait),
    );
    let open: Vec<&str> = [
        (silent, "nothing"),
        (p, "`P`"),
        (preface, "half an HTTP/2 preface"),
    ]
    .into_iter()
    .filter(|(closed, _)| !closed)
    .map(|(_, what)| what)
    .collect();
    assert!(
        open.is_empty(),
        "still open 4 s into a 1 s header deadline after sending: {open:?}"
    );
}
