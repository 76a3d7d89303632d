//! Reading OpenCode's event stream: Server-Sent Events bytes → the `data` of each event.
//!
//! Why not a crate: the gateway used `eventsource-stream`, and under load its nom-based line
//! parser and per-event allocations were the largest single cost of the whole gateway (about a
//! fifth of its instructions at saturation, measured with callgrind, see BENCHMARKS.md): every
//! event of every run passes through here, on one task. OpenCode's stream only needs the `data`
//! lines of each event, so this reader does just that, on bytes, with one scan per chunk.
//!
//! What it follows of the SSE format: lines end with `\n` or `\r\n`; a blank line ends an event;
//! `data:` lines (one optional space after the colon) are joined with `\n`; a comment (`:`…, 2.x's
//! heartbeat) between events is handed out as an empty event; other fields (`event`, `id`,
//! `retry`) are skipped; an event cut off by the end of the stream
//! is dropped. (Lines ended by a lone `\r` are not split: OpenCode never sends them.) A line
//! longer than [`MAX_LINE`] ends the stream with an error instead of growing memory.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::UpstreamError;

/// Longest line (and so longest event) accepted, bytes.
pub const MAX_LINE: usize = 64 * 1024 * 1024;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// The `data` of each event of an SSE byte stream; an error (connection lost, invalid UTF-8, a
/// line over [`MAX_LINE`]) ends it.
pub fn data_of_events<S>(bytes: S) -> impl Stream<Item = Result<String, UpstreamError>> + Send
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    let reader = Reader {
        bytes: Box::pin(bytes),
        lines: Lines::default(),
        done: false,
    };
    futures::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(data) = r.lines.ready.pop_front() {
                return Some((Ok(data), r));
            }
            if r.done {
                return None;
            }
            let failed = match r.bytes.next().await {
                Some(Ok(chunk)) => r.lines.feed(&chunk).err(),
                Some(Err(e)) => Some(UpstreamError::Unreachable(format!("event stream: {e}"))),
                None => {
                    r.done = true;
                    None
                }
            };
            if let Some(e) = failed {
                r.done = true;
                return Some((Err(e), r));
            }
        }
    })
}

struct Reader {
    bytes: ByteStream,
    lines: Lines,
    done: bool,
}

/// The parser's state between chunks.
#[derive(Default)]
struct Lines {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    /// The `data` of the event being read, and whether it has any `data` line yet.
    data: String,
    has_data: bool,
    /// Events complete and not yet handed out.
    ready: VecDeque<String>,
}

impl Lines {
    /// Takes one chunk of the stream.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), UpstreamError> {
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (head, tail) = rest.split_at(end);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(head)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line)?;
            }
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            return Err(UpstreamError::Decode(format!(
                "event stream: a line longer than {MAX_LINE} bytes"
            )));
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// One line, without its `\n`.
    fn line(&mut self, line: &[u8]) -> Result<(), UpstreamError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                self.ready.push_back(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return Ok(());
        }
        if line.first() == Some(&b':') {
            // A comment: OpenCode 2.x's heartbeat. Handed out as an empty event between
            // events, so that a reader watching for silence sees the stream alive.
            if !self.has_data {
                self.ready.push_back(String::new());
            }
            return Ok(());
        }
        let Some(value) = line.strip_prefix(b"data") else {
            return Ok(()); // another field
        };
        let value = match value {
            [] => value,
            [b':', b' ', v @ ..] | [b':', v @ ..] => v,
            _ => return Ok(()), // a field whose name only starts with "data"
        };
        let value = std::str::from_utf8(value)
            .map_err(|e| UpstreamError::Decode(format!("event stream: {e}")))?;
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::default();
        for c in chunks {
            lines.feed(c).unwrap();
        }
        lines.ready.into_iter().collect()
    }

    #[test]
    fn data_lines_are_joined_and_blank_lines_end_events() {
        assert_eq!(
            events(&[b"data: {\"a\":1}\n\ndata:x\ndata: y\n\n"]),
            vec!["{\"a\":1}".to_string(), "x\ny".to_string()]
        );
    }

    #[test]
    fn events_cut_anywhere_between_chunks_come_out_whole() {
        let stream: &[u8] =
            "data: {\"text\":\"é ü\"}\r\n\r\n: heartbeat\n\nevent: x\nid: 7\ndata: two\n\n"
                .as_bytes();
        let whole = events(&[stream]);
        assert_eq!(
            whole,
            vec![
                "{\"text\":\"é ü\"}".to_string(),
                String::new(),
                "two".to_string()
            ]
        );
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(events(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes), whole, "one byte at a time");
    }

    #[test]
    fn comments_are_heartbeats_and_other_fields_give_nothing() {
        assert_eq!(
            events(&[b": ping\n\nretry: 5\n\ndatax: no\n\n\n\n"]),
            vec![String::new()],
            "the comment, as an empty event"
        );
        assert_eq!(
            events(&[b"data: a\n: inside\ndata: b\n\n"]),
            vec!["a\nb".to_string()],
            "a comment inside an event is no heartbeat"
        );
        assert_eq!(events(&[b"data\n\n"]), vec![String::new()]);
    }

    #[test]
    fn an_event_cut_off_by_the_end_is_not_handed_out() {
        assert!(events(&[b"data: partial\n"]).is_empty());
    }

    #[test]
    fn invalid_utf8_and_endless_lines_are_errors() {
        let mut lines = Lines::default();
        assert!(lines.feed(b"data: \xff\xfe\n").is_err());
        let mut lines = Lines::default();
        let big = vec![b'a'; MAX_LINE / 4 + 1];
        let mut failed = false;
        for _ in 0..4 {
            failed |= lines.feed(&big).is_err();
        }
        assert!(failed, "a line over MAX_LINE must end the stream");
    }

    #[tokio::test]
    async fn the_stream_yields_each_event_then_ends() {
        let chunks: Vec<Result<Bytes, reqwest::Error>> = vec![
            Ok(Bytes::from_static(b"data: one\n\ndata: tw")),
            Ok(Bytes::from_static(b"o\n\ndata: cut")),
        ];
        let out: Vec<String> = data_of_events(futures::stream::iter(chunks))
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(out, vec!["one".to_string(), "two".to_string()]);
    }
}
