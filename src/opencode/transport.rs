//! The transport under every call to OpenCode: building a request (base URL, basic auth, the
//! project directory header), sending it and turning a failure status into an
//! [`UpstreamError`], decoding a JSON answer within a timeout, and retrying calls that are safe
//! to repeat with bounded backoff. Kept apart so the calls themselves (sessions, runs, the
//! server) read as one line of wire each.

use std::future::Future;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::{upstream_message, OpenCodeClient, UpstreamError};

impl OpenCodeClient {
    /// A request to `path` (relative to the base URL) with the client's credentials and
    /// project directory.
    pub(super) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone());
        let mut rb = self.http.request(method, url);
        if let Some(password) = &self.password {
            rb = rb.basic_auth(&self.username, Some(password));
        }
        if let Some(dir) = &self.directory {
            rb = rb.header("x-opencode-directory", dir);
        }
        rb
    }

    /// Sends a request; a non-success status becomes an [`UpstreamError`] carrying
    /// OpenCode's message (a 404 is [`UpstreamError::NotFound`]).
    pub(super) async fn send(
        &self,
        what: &str,
        rb: RequestBuilder,
    ) -> Result<reqwest::Response, UpstreamError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| UpstreamError::from_reqwest(what, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = upstream_message(&body).unwrap_or_else(|| {
            // Not OpenCode's JSON error (a proxy page, a stack trace): log it, don't forward it.
            if !body.is_empty() {
                tracing::debug!(what, %status, body = %body.chars().take(2000).collect::<String>(), "non-JSON upstream error body");
            }
            status.canonical_reason().unwrap_or("error").to_string()
        });
        Err(match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound(message),
            _ => UpstreamError::Status {
                status: status.as_u16(),
                message: format!("{what}: {message}"),
            },
        })
    }

    /// Sends a request and decodes its JSON answer, all within `timeout` (failures are
    /// counted in the metrics).
    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        rb: RequestBuilder,
        timeout: Duration,
    ) -> Result<T, UpstreamError> {
        let fut = async {
            let resp = self.send(what, rb).await?;
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| UpstreamError::from_reqwest(what, e))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| UpstreamError::Decode(format!("{what}: {e}")))
        };
        let result = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| UpstreamError::Timeout(format!("{what} took longer than {timeout:?}")))
            .and_then(|r| r);
        if let Err(e) = &result {
            crate::metrics::upstream_error(e.kind());
        }
        result
    }

    /// Runs an idempotent call up to `retry_attempts` times with exponential backoff.
    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, f: F) -> Result<T, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.retrying_if(what, UpstreamError::is_transient, f).await
    }

    /// Like [`retrying`](Self::retrying) for calls that create something (session create,
    /// fork): never resent after a timeout or a broken exchange, which may have created it.
    pub(super) async fn retrying_creation<T, F, Fut>(
        &self,
        what: &str,
        f: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.retrying_if(what, UpstreamError::is_safe_to_resend, f)
            .await
    }

    /// Runs `f` up to `retry_attempts` times while `retry` says its error may be retried,
    /// backing off from 100 ms (×3 each time, 2 s at most).
    pub(super) async fn retrying_if<T, F, Fut>(
        &self,
        what: &str,
        retry: fn(&UpstreamError) -> bool,
        f: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if retry(&e) && attempt < self.retry_attempts => {
                    tracing::debug!(what, attempt, error = %e, "retrying upstream call");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 3).min(Duration::from_secs(2));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}
