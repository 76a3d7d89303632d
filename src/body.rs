//! Request-body limits that hold against slow and lying clients.
//!
//! - **Size, up front.** A `Content-Length` above `limits.max_body_bytes` is a 413 before a byte
//!   of the body is read (axum's `DefaultBodyLimit` only notices once that much has arrived;
//!   it stays in place for chunked bodies, which carry no length).
//! - **Time, in total.** `limits.body_timeout_secs` is a deadline for the whole body, counted
//!   from when the request headers were read. tower-http's `RequestBodyTimeoutLayer` restarts
//!   its timer on every frame, so a client sending one byte every few seconds could hold a
//!   connection forever; [`DeadlineBody`] never restarts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::ApiError;

/// The limits [`enforce`] applies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest accepted body, bytes.
    pub max_bytes: usize,
    /// Time allowed for the whole body.
    pub deadline: Duration,
}

pub use crate::error::BodyDeadlineExceeded;

/// Middleware: 413 for a declared length over the limit, and a total deadline on the body.
pub async fn enforce(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        // Before routing, so the metrics layer never sees it: counted here.
        crate::metrics::unmatched(req.method().as_str(), 413);
        return ApiError::PayloadTooLarge(limits.max_bytes).into_response();
    }
    let req = req.map(|body| Body::new(DeadlineBody::new(body, limits.deadline)));
    next.run(req).await
}

pin_project! {
    /// A body that fails with [`BodyDeadlineExceeded`] once `deadline` has passed since it was
    /// wrapped, however its frames are spaced.
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: Sleep,
    }
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, within: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: tokio::time::sleep(within),
        }
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        // Checked before every frame: a steady trickle must not outlive the deadline either.
        if this.deadline.poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyDeadlineExceeded))));
        }
        this.inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// A body that yields one byte every `gap`, `n` times.
    fn trickle(n: usize, gap: Duration) -> Body {
        let frames = futures::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
        });
        Body::from_stream(frames)
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_that_outlasts_the_deadline_fails_even_though_no_gap_does() {
        let body = DeadlineBody::new(
            trickle(100, Duration::from_secs(5)),
            Duration::from_secs(30),
        );
        let err = body.collect().await.unwrap_err();
        assert!(err.is::<BodyDeadlineExceeded>(), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_within_the_deadline_passes() {
        let body = DeadlineBody::new(trickle(5, Duration::from_secs(5)), Duration::from_secs(30));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.as_ref(), b"xxxxx");
    }
}
