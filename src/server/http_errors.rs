//! OpenAI-shaped bodies for the errors hyper answers by itself.
//!
//! A request that is not valid HTTP/1.1 (a space or control byte where none may be, a
//! `Content-Length` of `-1` or `1, 1`, `Transfer-Encoding: identity`), a URL over hyper's buffer
//! or headers too large never reach the router: hyper writes a canned `400`/`414`/`431` with an
//! empty body and closes the connection, and offers no hook to change it. [`OpenAiErrors`] wraps
//! the connection's I/O and replaces exactly those canned responses — recognised by their shape:
//! an error status, `connection: close`, `content-length: 0`, and no `x-request-id`, which every
//! response of the router carries — with the same status and an [`ApiError`] body.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;

pin_project! {
    /// A connection whose canned hyper error responses get OpenAI error bodies.
    pub struct OpenAiErrors<T> {
        #[pin]
        inner: T,
        // A replacement being written, how much of it is out, and how many bytes of the
        // caller's buffer it stands for.
        pending: Option<(Vec<u8>, usize, usize)>,
    }
}

impl<T> OpenAiErrors<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        OpenAiErrors {
            inner,
            pending: None,
        }
    }
}

/// The OpenAI error for a status hyper answers on its own.
fn error_for(status: StatusCode) -> ApiError {
    let (message, code) = match status.as_u16() {
        414 => ("The request URL is too long.", "url_too_long"),
        431 => ("The request headers are too large.", "headers_too_large"),
        505 => (
            "Only HTTP/1.1 and HTTP/2 are supported.",
            "http_version_not_supported",
        ),
        _ => (
            "The request is not valid HTTP: malformed request line, header, or body framing.",
            "invalid_http_request",
        ),
    };
    ApiError::Http {
        status,
        message,
        code,
    }
}

/// If `head` is one of hyper's canned error responses, the response to send instead.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    if !head.ends_with(b"\r\n\r\n") || head.len() > 512 {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    if !text.contains("\r\ncontent-length: 0\r\n")
        || !text.contains("\r\nconnection: close\r\n")
        || text.contains("\r\nx-request-id:")
    {
        return None;
    }
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let body = error_for(status).body().to_string();
    let reason = status.canonical_reason().unwrap_or("Error");
    let response = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        body.len()
    );
    Some(response.into_bytes())
}

impl<T: AsyncRead> AsyncRead for OpenAiErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for OpenAiErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        if this.pending.is_none() {
            match replacement(buf) {
                Some(bytes) => *this.pending = Some((bytes, 0, buf.len())),
                None => return this.inner.poll_write(cx, buf),
            }
        }
        // Write the whole replacement before reporting the canned bytes as written.
        while let Some((bytes, sent, stands_for)) = this.pending.as_mut() {
            if *sent == bytes.len() {
                let n = *stands_for;
                *this.pending = None;
                return Poll::Ready(Ok(n));
            }
            let n = ready!(this.inner.as_mut().poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(0))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty());
        match first {
            Some(head) if self.pending.is_some() || replacement(head).is_some() => {
                self.poll_write(cx, head)
            }
            _ => self.project().inner.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CANNED_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 18:37:50 GMT\r\n\r\n";

    async fn through(bytes: &[u8]) -> String {
        let (a, mut b) = tokio::io::duplex(64);
        let mut wrapped = OpenAiErrors::new(a);
        let bytes = bytes.to_vec();
        let writer = tokio::spawn(async move {
            wrapped.write_all(&bytes).await.unwrap();
            wrapped.shutdown().await.unwrap();
        });
        let mut out = String::new();
        b.read_to_string(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn canned_errors_get_an_openai_body() {
        let out = through(CANNED_431).await;
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn the_routers_own_responses_pass_untouched() {
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nx-request-id: 1\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(through(ours).await.as_bytes(), ours);
        let empty_ok = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(through(empty_ok).await.as_bytes(), empty_ok);
    }
}
