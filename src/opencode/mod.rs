//! The protocol seam: everything the gateway asks of an OpenCode server (`opencode serve`),
//! and the only module that knows its wire — paths, JSON fields, event types.
//!
//! The core asks through [`OpenCodeClient`] (sessions, prompts, interrupts, permission and
//! question replies, MCP registration, the catalog, agents, health) and reads a run's events as
//! the gateway's own [`events::RunEvent`]s, decoded per run by [`RunDecoder`] from the session's
//! events that the [`hub`] demultiplexes. OpenCode 1.18 is the implementation spoken today.
//!
//! What stays of 1.18 here and nowhere else: the paths and bodies of each call (`transport`,
//! `sessions`, `runs`, `server`, `surface`), the event frames and their decoding (`types`,
//! `sse`, `decode`), the stored message form (`history`). The core holds the typed results
//! ([`Session`], [`Providers`], [`Prompt`] as an intent, [`events`]) and the raw event only as
//! an opaque value handed back to this module's decoder. A second server API (OpenCode 2.x)
//! is a second implementation of these same calls and a second decoder, chosen per upstream
//! by what the server says it is; `tests/it/layers.rs` fails any module outside this one that
//! spells a 1.18 path or event type.
//!
//! Every call has a timeout; calls safe to repeat are retried with bounded backoff (health,
//! model list, session lookup/delete on any transient failure; session create and fork only
//! when the request surely created nothing), prompts never are.

mod decode;
mod error;
pub mod events;
pub mod history;
pub mod hub;
mod runs;
mod server;
mod sessions;
mod sse;
mod surface;
mod transport;
mod types;

use std::time::Duration;

use reqwest::Url;

use crate::config::OpenCodeConfig;

pub use decode::RunDecoder;
pub use error::{error_message, public_message, upstream_message, UpstreamError};
pub use server::McpConnection;
pub use sessions::SessionPage;
pub use types::{
    is_sync_frame, Capabilities, Event, Frame, Health, InputCapabilities, ModelRef, PartInput,
    Prompt, Provider, ProviderModel, Providers, Session, ToolSwitches,
};

/// A cheap-to-clone client for one OpenCode server.
#[derive(Clone)]
pub struct OpenCodeClient {
    http: reqwest::Client,
    base: Url,
    username: String,
    password: Option<String>,
    directory: Option<String>,
    timeout: Duration,
    retry_attempts: u32,
}

impl OpenCodeClient {
    /// Builds a client (TCP_NODELAY on, connect timeout from config).
    pub fn new(config: &OpenCodeConfig) -> Result<Self, UpstreamError> {
        let base_url = config
            .base_url
            .as_deref()
            .ok_or_else(|| UpstreamError::Unreachable("no OpenCode URL configured".into()))?;
        let mut base = Url::parse(base_url)
            .map_err(|e| UpstreamError::Unreachable(format!("bad base URL: {e}")))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| UpstreamError::Unreachable(format!("cannot build HTTP client: {e}")))?;
        Ok(OpenCodeClient {
            http,
            base,
            username: config.username.clone(),
            password: config.password.clone(),
            directory: config.directory.clone(),
            timeout: config.request_timeout,
            retry_attempts: config.retry_attempts.max(1),
        })
    }

    /// The same client for project directory `dir` (sent as `x-opencode-directory`; `None`
    /// keeps the configured one).
    pub fn in_directory(&self, dir: Option<&str>) -> OpenCodeClient {
        let mut scoped = self.clone();
        if let Some(dir) = dir {
            scoped.directory = Some(dir.to_string());
        }
        scoped
    }
}
