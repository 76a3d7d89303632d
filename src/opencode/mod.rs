//! The protocol seam: everything the gateway asks of an OpenCode server (`opencode serve`),
//! and the only module that knows its wire — paths, JSON fields, event types.
//!
//! The core asks through [`OpenCodeClient`] (sessions, prompts, interrupts, permission and
//! question replies, MCP registration, the catalog, agents, health) and reads a run's events as
//! the gateway's own [`events::RunEvent`]s, decoded per run by [`RunDecoder`] from the session's
//! events that the [`hub`] demultiplexes.
//!
//! Two server APIs are spoken, chosen per upstream by what the server says it is (see
//! [`api`]): OpenCode 1.x (1.18: `transport`, `sessions`, `runs`, `server`, `surface` for the
//! calls; `types`, `sse`, `decode` for the events; `history` for stored messages) and OpenCode
//! 2.x (`v2/`: the same calls in `/api/*`, its events decoded by `v2::decode`, its messages
//! read into 1.18's form). Each public call asks which API the server speaks and goes to the
//! matching implementation; the core never knows which. The core holds the typed results
//! ([`Session`], [`Providers`], [`Prompt`] as an intent, [`events`]) and the raw event only as
//! an opaque value handed back to this module's decoder; `tests/it/layers.rs` fails any module
//! outside this one that spells a 1.18 path or event type.
//!
//! What 2.x lacks is either built above it (structured output: `run::answer_tool`) or an
//! [`UpstreamError::Unsupported`], answered as a 501 naming the version.
//!
//! Every call has a timeout; calls safe to repeat are retried with bounded backoff (health,
//! model list, session lookup/delete on any transient failure; session create and fork only
//! when the request surely created nothing), prompts never are.

mod api;
#[cfg(test)]
mod api_tests;
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
mod v2;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::config::OpenCodeConfig;

pub use api::Api;
use api::ApiCell;
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
    /// The API the server speaks (probed; shared by every clone).
    api: Arc<ApiCell>,
    /// 2.x: what was last set on each session (shared by every clone).
    settings: Arc<v2::state::SessionSettings>,
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
            api: Arc::new(ApiCell::default()),
            settings: Arc::default(),
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

    /// The API the server was last seen speaking (`None` before the first probe).
    pub fn detected_api(&self) -> Option<Api> {
        self.api.get()
    }

    /// The version the server last reported (`1.18.34`, `2.1.2`).
    pub fn detected_version(&self) -> Option<String> {
        self.api.version()
    }

    /// The API to speak: the one detected, probed now if none was yet (1.x when the probe
    /// fails: the call then fails on its own).
    pub(crate) async fn api(&self) -> Api {
        if let Some(api) = self.api.get() {
            return api;
        }
        let _ = self.health(self.timeout.min(Duration::from_secs(10))).await;
        self.api.get().unwrap_or_default()
    }

    /// Whether the server speaks 2.x (probing it first if unknown).
    pub(crate) async fn is_v2(&self) -> bool {
        self.api().await == Api::V2
    }
}
