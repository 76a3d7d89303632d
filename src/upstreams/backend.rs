//! One upstream: an OpenCode server and everything the gateway keeps about it (its client,
//! event hub, model catalog, conversation pool and explicit sessions, client-tool slots,
//! permission requests, stored responses, health and admission control), built and started
//! in one place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::client_tools::ClientTools;
use crate::config::{Config, OpenCodeConfig};
use crate::opencode::hub::EventHub;
use crate::opencode::{OpenCodeClient, UpstreamError};
use crate::permissions::Permissions;
use crate::responses::saved::SavedResponses;
use crate::sessions::{Identity, Sessions};
use crate::store::Store;

use super::admission;
use super::breaker::{Breaker, BreakerState};

/// One OpenCode server and everything the gateway keeps about it.
pub struct Backend {
    /// Position in the configuration.
    pub index: usize,
    /// Its name (`/status`, `/metrics`, the shared store).
    pub name: String,
    /// Its base URL (for `/status`).
    pub url: String,
    /// Relative share of new conversations.
    pub weight: u32,
    /// The protocol seam to this OpenCode: every call the gateway makes to it.
    pub client: OpenCodeClient,
    /// Its one shared event subscription, demultiplexed by session.
    pub hub: EventHub,
    /// Its model catalog.
    pub catalog: Catalog,
    /// Its conversation pool and explicit sessions.
    pub sessions: Sessions,
    /// Its client-tool slots (the MCP servers it knows the gateway by).
    pub tools: ClientTools,
    /// Its permission requests.
    pub permissions: Permissions,
    /// Its stored responses.
    pub responses: SavedResponses,
    /// Its health.
    pub breaker: Breaker,
    /// Runs in flight on it (see [`Upstreams::run_started`]).
    pub in_flight: AtomicUsize,
    /// How many new runs it takes at once ([`admission`]).
    pub admission: admission::Admission,
}

impl Backend {
    /// Builds upstream `index` (named `name`, reached with `opencode`'s settings) and starts
    /// its background tasks (event hub, catalog refresh, pool janitors, slot watch, the
    /// stored responses' sweeper), which stop when `shutdown` is cancelled.
    pub fn start(
        index: usize,
        name: String,
        config: &Config,
        opencode: &OpenCodeConfig,
        store: &Store,
        identity: &Arc<Identity>,
        shutdown: &CancellationToken,
    ) -> Result<Backend, UpstreamError> {
        let client = OpenCodeClient::new(opencode)?;
        let hub = EventHub::start(client.clone(), shutdown.child_token());
        let ttl = config.models.cache_ttl;
        let catalog = Catalog::new(client.clone(), config.models.allowlist.clone(), ttl);
        catalog.spawn_refresh(
            (ttl / 2).max(std::time::Duration::from_secs(1)),
            shutdown.child_token(),
        );
        let title = config.prompt.session_title.clone();
        let sessions = Sessions::new(
            client.clone(),
            store.clone(),
            name.clone(),
            title,
            identity.clone(),
            &config.sessions,
        );
        sessions.spawn_background(hub.watch_connected(), shutdown.child_token());
        let responses = SavedResponses::new(
            sessions.upstream().clone(),
            config.prompt.session_title.clone(),
            config.responses.ttl,
            config.responses.max_sessions,
            config.prompt.deadline * 2 + config.client_tools.result_timeout,
        );
        let sweep_every = (config.responses.ttl / 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(600),
        );
        responses.spawn_sweeper(sweep_every, shutdown.child_token());
        let tools = ClientTools::new(client.clone(), config);
        tools.spawn_watch(hub.watch_connected(), shutdown.child_token());
        let balancing = &config.balancing;
        Ok(Backend {
            index,
            url: opencode.base_url.clone().unwrap_or_default(),
            weight: config.upstreams.get(index).map_or(1, |u| u.weight.max(1)),
            permissions: Permissions::new(&config.permissions, client.clone()),
            breaker: Breaker::new(balancing.failure_threshold, balancing.open_for),
            name,
            client,
            hub,
            catalog,
            sessions,
            tools,
            responses,
            in_flight: Default::default(),
            admission: super::admission::Admission::new(&config.admission),
        })
    }

    /// Whether it takes new work: its breaker is closed and its event stream connected (the
    /// stream drops the moment OpenCode dies, long before a probe notices).
    pub fn available(&self) -> bool {
        self.breaker.state() == BreakerState::Closed && self.hub.is_connected()
    }

    /// Runs in flight on it.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A run's place in its upstream's in-flight count, given back on drop (`/metrics` reads the
/// counts at scrape time).
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub(super) fn new(backend: Arc<Backend>) -> InFlight {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(backend)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
