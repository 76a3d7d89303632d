//! Reading server-sent events: the `data:` parser, one incremental reader (frames with their
//! arrival times), and the conformance check of a successful OpenAI chat-completion stream.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::schema;

/// The `data:` payloads of an SSE text, in order (multi-line data joined with `\n`; comments,
/// `event:`/`id:`/`retry:` lines ignored; a trailing frame without a blank line is included).
pub fn parse_sse_data(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    for frame in text.split("\n\n") {
        let mut data: Vec<&str> = Vec::new();
        for line in frame.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                data.push(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

/// Whether a response is `text/event-stream`.
pub fn is_event_stream(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// One SSE frame as it arrived.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When the frame was complete, relative to the reader's start.
    pub at: Duration,
    /// The raw frame text (without the blank line).
    pub raw: String,
}

impl Frame {
    /// Only `:` comment lines (keep-alives).
    pub fn is_comment(&self) -> bool {
        self.raw.lines().all(|l| l.starts_with(':') || l.is_empty())
            && self.raw.lines().any(|l| l.starts_with(':'))
    }

    /// The joined `data:` payload, if the frame has one.
    pub fn data(&self) -> Option<String> {
        parse_sse_data(&self.raw).into_iter().next()
    }

    /// The payload as JSON (`None` for `[DONE]`, comments and non-JSON).
    pub fn json(&self) -> Option<Value> {
        self.data()
            .filter(|d| d != "[DONE]")
            .and_then(|d| serde_json::from_str(&d).ok())
    }

    /// Non-empty `choices[0].delta.content` of a chunk.
    pub fn content(&self) -> Option<String> {
        self.json()
            .and_then(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .filter(|s| !s.is_empty())
    }
}

/// Reads an SSE response frame by frame, recording arrival times.
pub struct SseReader {
    started: Instant,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    /// Received text; frames before `start` are already handed out.
    buf: String,
    start: usize,
    raw: String,
    ended: bool,
}

impl SseReader {
    /// A reader whose frame times count from now.
    pub fn new(resp: reqwest::Response) -> SseReader {
        Self::since(resp, Instant::now())
    }

    /// A reader whose frame times count from `started` (e.g. when the request was sent).
    pub fn since(resp: reqwest::Response, started: Instant) -> SseReader {
        SseReader {
            started,
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            start: 0,
            raw: String::new(),
            ended: false,
        }
    }

    /// The next complete frame, however long it takes; `None` at the end of the body (a
    /// trailing partial frame is returned as a frame; a broken connection counts as the end).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            // Frames are cut from `start` on and the buffer compacted only when it holds no
            // whole frame: a reader that fell behind catches up in linear time (cutting each
            // frame off the front would move the rest every time).
            if let Some(pos) = self.buf[self.start..].find("\n\n") {
                let end = self.start + pos + 2;
                let frame = self.frame(&self.buf[self.start..end]);
                self.start = end;
                return Some(frame);
            }
            self.buf.drain(..self.start);
            self.start = 0;
            if self.ended {
                if self.buf.trim().is_empty() {
                    return None;
                }
                let rest = std::mem::take(&mut self.buf);
                return Some(self.frame(&rest));
            }
            match self.body.next().await {
                None => self.ended = true,
                Some(Err(e)) => {
                    eprintln!("stream body error: {e}");
                    self.ended = true;
                }
                Some(Ok(bytes)) => {
                    let s = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
                    self.raw.push_str(&s);
                    self.buf.push_str(&s);
                }
            }
        }
    }

    fn frame(&self, text: &str) -> Frame {
        Frame {
            at: self.started.elapsed(),
            raw: text.trim_end_matches('\n').to_string(),
        }
    }

    /// Like [`next_frame`](Self::next_frame), but panics after `wait` without a frame (so a
    /// broken gateway fails instead of hanging).
    pub async fn next(&mut self, wait: Duration) -> Option<Frame> {
        match tokio::time::timeout(wait, self.next_frame()).await {
            Ok(frame) => frame,
            Err(_) => panic!(
                "no SSE frame within {wait:?} (after {:?}); received so far:\n{}",
                self.started.elapsed(),
                self.raw
            ),
        }
    }

    /// Frames until the first one carrying answer content (included).
    pub async fn until_content(&mut self, wait_each: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self
                .next(wait_each)
                .await
                .expect("the stream ended before any content");
            let done = f.content().is_some();
            out.push(f);
            if done {
                return out;
            }
        }
    }

    /// Every remaining frame.
    pub async fn rest(&mut self, wait_each: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.next(wait_each).await {
            out.push(f);
        }
        out
    }
}

/// The `data:` payloads of frames, in order.
pub fn datas(frames: &[Frame]) -> Vec<String> {
    frames.iter().filter_map(Frame::data).collect()
}

/// A whole response: (status, whether it is SSE, its `data:` payloads in order — or, when it is
/// not SSE, the whole body as the one element).
pub async fn read_payloads(
    resp: reqwest::Response,
    wait_each: Duration,
) -> (StatusCode, bool, Vec<String>) {
    let status = resp.status();
    if !is_event_stream(resp.headers()) {
        let text = resp.text().await.expect("read the response body");
        return (status, false, vec![text]);
    }
    let frames = SseReader::new(resp).rest(wait_each).await;
    (status, true, datas(&frames))
}

/// The text of every `choices[0].delta.content` in `payloads`, concatenated.
pub fn streamed_content(payloads: &[String]) -> String {
    payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

/// The stream's last payload as an OpenAI error event `{"error":{…}}` (schema-checked); panics
/// when the stream ended with `[DONE]` or with anything else.
#[track_caller]
pub fn final_error(payloads: &[String]) -> Value {
    assert!(
        !payloads.iter().any(|d| d == "[DONE]"),
        "a failed stream must not carry [DONE]: {payloads:?}"
    );
    let last = payloads.last().expect("no data at all");
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last payload is not JSON ({e}): {last}"));
    assert!(
        v["error"]["message"].is_string(),
        "the stream must end with a data: {{\"error\":…}} event: {payloads:?}"
    );
    schema::assert_valid("ErrorResponse", &v);
    v
}

/// A whole successful stream, checked for OpenAI conformance by [`check_ok_stream`].
#[derive(Debug)]
pub struct Streamed {
    pub frames: Vec<Frame>,
    pub chunks: Vec<Value>,
    pub content: String,
    pub reasoning: String,
    /// Non-empty content deltas with their arrival times.
    pub content_pieces: Vec<(Duration, String)>,
    /// Non-empty reasoning deltas with their arrival times.
    pub reasoning_pieces: Vec<(Duration, String)>,
    pub finish_reason: String,
    pub usage_chunks: Vec<Value>,
}

/// Checks everything a successful OpenAI stream must satisfy: schema-valid chunks of `model`,
/// role first, one id/created, exactly one finish chunk (only a usage chunk after it), no error
/// event, and `[DONE]` exactly once, last.
pub fn check_ok_stream(frames: Vec<Frame>, model: &str) -> Streamed {
    let datas: Vec<(Duration, String)> = frames
        .iter()
        .filter_map(|f| f.data().map(|d| (f.at, d)))
        .collect();
    let dump = || {
        frames
            .iter()
            .map(|f| f.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    assert!(
        datas.last().is_some_and(|(_, d)| d == "[DONE]"),
        "the stream does not end with `data: [DONE]`:\n{}",
        dump()
    );
    assert_eq!(
        datas.iter().filter(|(_, d)| d == "[DONE]").count(),
        1,
        "[DONE] must appear exactly once:\n{}",
        dump()
    );
    let mut chunks = Vec::new();
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut content_pieces = Vec::new();
    let mut reasoning_pieces = Vec::new();
    let mut finishes = Vec::new();
    let mut usage_chunks = Vec::new();
    for (i, (at, d)) in datas[..datas.len() - 1].iter().enumerate() {
        let v: Value = serde_json::from_str(d)
            .unwrap_or_else(|e| panic!("chunk {i} is not JSON ({e}): {d}\nstream:\n{}", dump()));
        assert!(
            v.get("error").is_none(),
            "error event in a successful stream: {v}"
        );
        schema::assert_valid("CreateChatCompletionStreamResponse", &v);
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        assert_eq!(v["model"], model, "chunk model: {v}");
        if !v["usage"].is_null() {
            usage_chunks.push(v.clone());
        }
        if let Some(choice) = v["choices"].get(0) {
            if let Some(t) = choice["delta"]["content"].as_str() {
                content.push_str(t);
                if !t.is_empty() {
                    content_pieces.push((*at, t.to_string()));
                }
            }
            if let Some(t) = choice["delta"]["reasoning_content"].as_str() {
                reasoning.push_str(t);
                if !t.is_empty() {
                    reasoning_pieces.push((*at, t.to_string()));
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finishes.push((i, f.to_string()));
            }
        }
        chunks.push(v);
    }
    assert!(!chunks.is_empty(), "no chunk before [DONE]");
    let first = &chunks[0];
    assert_eq!(
        first["choices"][0]["delta"]["role"], "assistant",
        "the first chunk must carry delta.role = assistant: {first}"
    );
    for c in &chunks[1..] {
        assert_eq!(c["id"], first["id"], "all chunks share one id: {c}");
        assert_eq!(
            c["created"], first["created"],
            "all chunks share one created: {c}"
        );
    }
    assert_eq!(
        finishes.len(),
        1,
        "exactly one chunk carries a finish_reason: {finishes:?}\n{}",
        dump()
    );
    let (fi, finish_reason) = finishes.pop().unwrap();
    // The finish chunk is the last chunk with choices (only a usage chunk may follow it).
    for c in &chunks[fi + 1..] {
        assert_eq!(
            c["choices"],
            json!([]),
            "only a usage chunk may follow the finish chunk: {c}"
        );
    }
    Streamed {
        frames,
        chunks,
        content,
        reasoning,
        content_pieces,
        reasoning_pieces,
        finish_reason,
        usage_chunks,
    }
}
