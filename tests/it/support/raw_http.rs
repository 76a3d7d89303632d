//! HTTP/1.1 over a raw TCP socket, for requests no HTTP client will send (malformed framing,
//! lying or slow bodies, oversized heads) and for reading exactly what the server answers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::api::body_json;

/// One response read off the socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (a JSON string when not JSON, `null` when empty).
    pub body: Value,
    /// From the end of the request's head being written to the end of the response.
    pub elapsed: Duration,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `host:port` of a gateway URL (`http://127.0.0.1:PORT`).
pub fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// A whole response at the start of `buf`, if it has arrived (`Err` for a malformed head).
fn complete(buf: &[u8], started: Instant) -> Option<Result<RawResponse, String>> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let Some(status) = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()) else {
        return Some(Err(format!("bad status line {status_line:?}")));
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body = buf.get(end + 4..end + 4 + length)?;
    Some(Ok(RawResponse {
        status,
        headers,
        body: body_json(String::from_utf8_lossy(body).into_owned()),
        elapsed: started.elapsed(),
    }))
}

/// Reads one response (head, then a `content-length` body) within `wait`; `elapsed` counts
/// from `started`. An error (with the bytes read so far) when the connection ends or `wait`
/// passes before a whole response arrived.
pub async fn read_response<R: AsyncRead + Unpin>(
    rd: &mut R,
    started: Instant,
    wait: Duration,
) -> Result<RawResponse, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(done) = complete(&buf, started) {
            return done;
        }
        let why = match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Err(_) => format!("no whole response within {wait:?}"),
            Ok(Err(e)) => format!("read failed ({e})"),
            Ok(Ok(0)) => "connection closed".to_string(),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
        };
        return Err(format!("{why}; got {:?}", String::from_utf8_lossy(&buf)));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the server closes the connection within `within` (reads return 0 or fail).
pub async fn closed_within<R: AsyncRead + Unpin>(rd: &mut R, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends `request` (written by a separate task whose write errors are ignored: a server may
/// answer and close before reading all of it) and reads the response within `wait`.
pub async fn exchange(addr: &str, request: Vec<u8>, wait: Duration) -> Result<RawResponse, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut rd, mut wr) = tcp.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        // Keep the write half (and so the connection) open until the answer is read.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let answer = read_response(&mut rd, started, wait).await;
    writer.abort();
    answer
}
