//! Streaming chat completions read as they arrive, timed per network read.
//!
//! Every delta the fast fake sends carries its send time (`t<µs> `, see `fake.rs`); the reader
//! notes when the bytes holding it arrived, so a chunk's ADDED latency is receive − send: the
//! fake's `/event` write, the gateway's hub, adapter and SSE writer, and loopback TCP. Gaps of
//! 30 ms or more between reads while deltas are due every few ms are the signature of Nagle's
//! algorithm meeting delayed ACKs (a 40 ms stall on Linux): there must be none.

use std::time::Duration;

use serde_json::{json, Value};

use super::fake::{now_us, stamps};

/// A gap between two reads this long counts as a stall.
pub const STALL: Duration = Duration::from_millis(30);

/// What one stream showed.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Request sent → first content byte, µs.
    pub first_chunk_us: Option<u64>,
    /// Added latency of every delta, µs.
    pub added_us: Vec<u64>,
    /// Gaps ≥ the stall limit between reads carrying content.
    pub stalls: u32,
    pub longest_gap_us: u64,
    pub deltas: usize,
    pub done: bool,
}

/// The chat request for a streamed answer of `deltas` deltas `gap_us` apart.
pub fn body(deltas: u32, gap_us: u64, tag: &str) -> Value {
    json!({"model": "mock/echo", "stream": true,
           "messages": [{"role": "user", "content": format!("{tag} [deltas:{deltas}] [gap_us:{gap_us}]")}]})
}

/// Opens a streaming completion; `None` unless it answers 200.
pub async fn open(http: &reqwest::Client, url: &str, body: &Value) -> Option<reqwest::Response> {
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(resp)
}

/// Reads a stream to `[DONE]` (or its end), timing every read; a gap of `stall_us` or more
/// between reads carrying content counts as a stall.
pub async fn read(mut resp: reqwest::Response, sent_us: u64, stall_us: u64) -> StreamStats {
    let mut st = StreamStats::default();
    let mut buf = String::new();
    let mut last_read: Option<u64> = None;
    while let Ok(Some(chunk)) = resp.chunk().await {
        let at = now_us();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        let mut carried = false;
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    st.done = true;
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                let Some(content) = v
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                for sent in stamps(content) {
                    carried = true;
                    st.deltas += 1;
                    st.added_us.push(at.saturating_sub(sent));
                }
            }
        }
        if carried {
            if st.first_chunk_us.is_none() {
                st.first_chunk_us = Some(at.saturating_sub(sent_us));
            }
            if let Some(prev) = last_read {
                let gap = at - prev;
                st.longest_gap_us = st.longest_gap_us.max(gap);
                if gap >= stall_us {
                    st.stalls += 1;
                }
            }
            last_read = Some(at);
        }
    }
    st
}

/// Opens and reads one stream.
pub async fn one(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    stall_us: u64,
) -> Option<StreamStats> {
    let sent = now_us();
    let resp = open(http, url, body).await?;
    Some(read(resp, sent, stall_us).await)
}

/// Many streams summed up.
#[derive(Debug, Default)]
pub struct Summary {
    pub streams: usize,
    pub failed: usize,
    pub incomplete: usize,
    pub first_chunk_us: Vec<u64>,
    pub added_us: Vec<u64>,
    pub stalls: u32,
    pub longest_gap_us: u64,
}

impl Summary {
    pub fn add(&mut self, s: Option<StreamStats>, expected_deltas: usize) {
        self.streams += 1;
        let Some(s) = s else {
            self.failed += 1;
            return;
        };
        if !s.done || s.deltas != expected_deltas {
            self.incomplete += 1;
        }
        self.first_chunk_us.extend(s.first_chunk_us);
        self.added_us.extend(s.added_us);
        self.stalls += s.stalls;
        self.longest_gap_us = self.longest_gap_us.max(s.longest_gap_us);
    }
}
