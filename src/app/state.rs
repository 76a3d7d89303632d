//! The HTTP layer's state: the core's [`Gateway`] built from the configuration (every
//! upstream's [`Backend`] with its background tasks), the upstream a request talks to, and the
//! key table. Built once at start ([`AppState::start`]); handlers get it from axum.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Keys;
use crate::config::{Config, OpenCodeConfig, StoreKind};
use crate::error::ApiError;
use crate::opencode::UpstreamError;
use crate::ratelimit::RateLimits;
use crate::run::Gateway;
use crate::sessions::Identity;
use crate::store::{Store, StoreSettings};
use crate::upstreams::{Backend, Upstreams};

/// Everything a handler needs; cheap to clone: the core's [`Gateway`] (reachable through
/// `Deref`), the upstream this request talks to, and the key table the middleware checks.
///
/// A handler whose request belongs to a session first asks for the state
/// [`on`](AppState::on) that session's upstream (see [`crate::upstreams`]); the core below it
/// is handed that [`Backend`] explicitly and never sees this type.
#[derive(Clone)]
pub struct AppState {
    /// The core's shared handles.
    pub gateway: Gateway,
    /// The upstream this request talks to.
    pub backend: Arc<Backend>,
    /// Client API keys.
    pub keys: Keys,
}

impl std::ops::Deref for AppState {
    type Target = Gateway;

    fn deref(&self) -> &Gateway {
        &self.gateway
    }
}

/// With Redis: records that this gateway is alive (`instance:<id>`, lapsing after
/// `store.lease_ttl_secs`), renewed every third of that until `shutdown`. The sweeps of the
/// other replicas spare the pooled sessions of live instances.
fn spawn_heartbeat(store: &Store, identity: &Arc<Identity>, shutdown: CancellationToken) {
    if !store.is_shared() {
        return;
    }
    let (store, identity) = (store.clone(), identity.clone());
    let ttl = store.lease_ttl();
    let every = (ttl / 3).max(std::time::Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            // A failure is the store's to report (it warns once when Redis goes away).
            let _ = store
                .beat(identity.instance(), identity.deployment(), ttl)
                .await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// The label of upstream `index` (`default` when `[opencode]` alone names it).
pub(crate) fn upstream_name(config: &Config, index: usize) -> String {
    match config.upstreams.is_empty() {
        true => "default".to_string(),
        false => config.upstream_name(index),
    }
}

/// The labels of every upstream, in order.
pub(crate) fn upstream_names(config: &Config) -> Vec<String> {
    (0..config.upstreams.len().max(1))
        .map(|i| upstream_name(config, i))
        .collect()
}

/// The `[opencode]` settings of each upstream: the configured `[[upstreams]]` over
/// `[opencode]`'s defaults, or `[opencode]` alone.
pub(crate) fn upstream_settings(config: &Config) -> Vec<OpenCodeConfig> {
    if config.upstreams.is_empty() {
        return vec![config.opencode.clone()];
    }
    config
        .upstreams
        .iter()
        .map(|u| {
            let mut c = config.opencode.clone();
            c.base_url = Some(u.url.clone());
            if let Some(name) = &u.username {
                c.username = name.clone();
            }
            if u.password.is_some() {
                c.password = u.password.clone();
            }
            if u.directory.is_some() {
                c.directory = u.directory.clone();
            }
            c
        })
        .collect()
}

impl AppState {
    /// Builds the state and starts its background tasks (event hubs, catalog refresh, pool
    /// janitors, health probes), which stop when `shutdown` is cancelled.
    pub fn start(config: Config, shutdown: &CancellationToken) -> Result<AppState, UpstreamError> {
        let store = match (&config.store.kind, &config.store.url) {
            (StoreKind::Redis, Some(url)) => Store::redis(StoreSettings {
                url: url.clone(),
                key_prefix: config.store.key_prefix.clone(),
                timeout: config.store.timeout,
                lease_ttl: config.store.lease_ttl,
            }),
            _ => Store::memory(),
        };
        let identity = Arc::new(Identity::load(&config));
        spawn_heartbeat(&store, &identity, shutdown.child_token());
        let mut list = Vec::new();
        for (i, opencode) in upstream_settings(&config).iter().enumerate() {
            let name = upstream_name(&config, i);
            let backend = Backend::start(i, name, &config, opencode, &store, &identity, shutdown)?;
            list.push(Arc::new(backend));
        }
        let upstreams = Upstreams::new(list, store);
        if !upstreams.is_single() {
            upstreams.spawn_health(
                config.balancing.health_interval,
                config.opencode.health_timeout,
                shutdown.child_token(),
            );
        }
        let first = upstreams.get(0).clone();
        let rate_limits = RateLimits::with_keys(&config.rate_limits, &config.auth)
            .with_store(upstreams.store().clone());
        Ok(AppState {
            keys: Keys::new(&config.auth),
            backend: first,
            gateway: Gateway {
                rate_limits,
                parked: Default::default(),
                hard_stop: CancellationToken::new(),
                live_runs: TaskTracker::new(),
                config: Arc::new(config),
                upstreams,
                identity,
            },
        })
    }

    /// The same state on upstream `i`.
    pub fn on_upstream(&self, i: usize) -> AppState {
        if i == self.backend.index || self.upstreams.is_single() {
            return self.clone();
        }
        self.with(self.gateway.backend(i))
    }

    /// The same state on `backend`.
    pub fn with(&self, backend: Arc<Backend>) -> AppState {
        AppState {
            backend,
            ..self.clone()
        }
    }

    /// The state for requests not tied to a session (the model list, OpenCode's own routes):
    /// on the first available upstream.
    pub fn on_default_upstream(&self) -> AppState {
        self.on_upstream(self.upstreams.default_upstream())
    }

    /// The state on the upstream holding `session` (see [`Gateway::backend_of_session`]).
    pub async fn for_session(&self, session: &str) -> Result<AppState, ApiError> {
        if self.upstreams.is_single() {
            return Ok(self.clone());
        }
        Ok(self.with(self.gateway.backend_of_session(session).await?))
    }

    /// The state on the upstream a new conversation or session goes to.
    pub fn for_new(&self) -> AppState {
        self.on_upstream(self.upstreams.pick())
    }
}
