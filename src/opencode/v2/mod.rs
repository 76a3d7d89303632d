//! OpenCode 2.x's server API (`/api/*`, 2.1.2 tested): the same calls as 1.18's, spoken in
//! 2.x's routes and bodies, and 2.x's events decoded into the same [`RunEvent`]s.
//!
//! What differs, and how each call bridges it (the facts: `OPENCODE-V2.md` in the project's
//! shared notes, checked by `tests/it/opencode_v2`):
//! - Answers come in envelopes (`{data}`, `{location, data}`, pages `{data, cursor}`); many
//!   writes answer 204 with no body. [`Data`] and [`OpenCodeClient::v2_write`] unwrap them.
//! - Model, agent, tool permissions and system text are *session state*: a prompt carries
//!   only text and files, so [`OpenCodeClient::v2_prompt`] sets the model, the agent, the
//!   session's permission rules (the 1.18 tool switches, renamed) and the system text (an
//!   instruction entry) before posting the turn.
//! - Sessions get a client-chosen id (`ses_…`), which makes a create safe to resend.
//! - Stored messages are typed items; [`messages`] turns them into 1.18's `{info, parts}` so
//!   the history readers stay one.
//! - Events are `{type, data, location?}` frames on `GET /api/event`, heartbeats are SSE
//!   comments (see [`super::sse`]); [`decode::Decoder`] reads a run from them.
//! - Gone in 2.x: structured output (refused with a 501 until the gateway serves it itself),
//!   todo, share, text and symbol search, LSP, formatter status, tool ids and definitions,
//!   instance disposal ([`UpstreamError::Unsupported`], a 501 naming the version).
//!
//! [`RunEvent`]: super::events::RunEvent

pub mod decode;
mod messages;
mod runs;
mod server;
mod sessions;
pub(crate) mod state;
mod surface;

pub(crate) use surface::SurfaceCall;

use std::time::Duration;

use rand::Rng;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{Api, Health, OpenCodeClient, UpstreamError};

/// `{data: T}`, 2.x's envelope of single resources and location-scoped reads.
#[derive(Debug, Deserialize)]
pub(super) struct Data<T> {
    /// The resource.
    pub data: T,
}

/// `GET /api/info`.
#[derive(Debug, Deserialize)]
struct Info {
    version: String,
}

impl OpenCodeClient {
    /// A 2.x read answering `{data: T}`, retried on transient failures.
    pub(super) async fn v2_read<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, UpstreamError> {
        self.retrying(what, || async {
            let env: Data<T> = self
                .json(
                    what,
                    self.request(Method::GET, path).query(query),
                    self.timeout,
                )
                .await?;
            Ok(env.data)
        })
        .await
    }

    /// A 2.x write whose answer nobody reads (most answer 204 with no body), within the
    /// client's timeout; never retried here.
    pub(super) async fn v2_write(
        &self,
        what: &str,
        rb: RequestBuilder,
    ) -> Result<(), UpstreamError> {
        let fut = async {
            let resp = self.send(what, rb).await?;
            // Read to the end, so that the connection goes back to the pool.
            let _ = resp.bytes().await;
            Ok(())
        };
        let result = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| {
                UpstreamError::Timeout(format!("{what} took longer than {:?}", self.timeout))
            })
            .and_then(|r| r);
        if let Err(e) = &result {
            crate::metrics::upstream_error(e.kind());
        }
        result
    }

    /// `GET /api/info` as a health answer (it answers JSON only when the server is up).
    pub(super) async fn v2_info(&self, timeout: Duration) -> Result<Health, UpstreamError> {
        let info: Info = self
            .retrying("health", || {
                self.json("health", self.request(Method::GET, "api/info"), timeout)
            })
            .await?;
        Ok(Health {
            healthy: true,
            version: Some(info.version),
            api: Api::V2,
        })
    }

    /// The 501 of a call 2.x does not have.
    pub(super) fn v2_gone(&self, what: &str) -> UpstreamError {
        let version = self.detected_version().unwrap_or_else(|| "2.x".into());
        UpstreamError::Unsupported(format!(
            "{what} is not available: the upstream runs OpenCode {version}, whose server API has no such feature (it needs OpenCode 1.x)."
        ))
    }
}

/// A new id in OpenCode's form (`<prefix>_` + 12 hex digits of time and counter + 14 base-62
/// characters), as 2.x accepts from clients for idempotent creates; `descending` (sessions:
/// the newest sorts first) inverts the time part.
pub(super) fn new_id(prefix: &str, descending: bool) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Time × 4096 + a counter, strictly increasing within this process.
    let mut value = now * 0x1000 + 1;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        if value <= last {
            value = last + 1;
        }
        match LAST.compare_exchange_weak(last, value, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(seen) => last = seen,
        }
    }
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let tail: String = (0..14)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    let value = if descending { !value } else { value };
    format!("{prefix}_{:012x}{tail}", value & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_opencodes_form_and_order() {
        let a = new_id("msg", false);
        let b = new_id("msg", false);
        assert!(a.starts_with("msg_") && a.len() == 4 + 26, "{a}");
        assert!(a[4..16].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert!(b[..16] > a[..16], "{a} < {b}");
        let (c, d) = (new_id("ses", true), new_id("ses", true));
        assert!(d[..16] < c[..16], "sessions descend: {c} > {d}");
    }
}
