//! Application wiring: the shared state every handler sees, and the router with its layers.
//! How connections are accepted and drained lives in [`crate::server`].

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{self, Keys};
use crate::body::{self, BodyLimits};
use crate::catalog::Catalog;
use crate::config::{Config, OpenCodeConfig, StoreKind};
use crate::error::ApiError;
use crate::hub::EventHub;
use crate::opencode::{OpenCodeClient, UpstreamError};
use crate::permissions::Permissions;
use crate::ratelimit::RateLimits;
use crate::responses::ResponseStore;
use crate::routes;
use crate::sessions::{Fingerprint, Identity, Sessions};
use crate::store::{Store, StoreSettings};
use crate::tools::ClientTools;
use crate::upstreams::{Backend, Breaker, BreakerState, Upstreams};

/// Everything a handler needs; cheap to clone.
///
/// The per-upstream fields (`client`, `hub`, `catalog`, `sessions`, `tools`, `responses`,
/// `permissions`) are those of *one* upstream: a handler whose request belongs to a session
/// first asks for the state [`on`](AppState::on) that session's upstream (see
/// [`crate::upstreams`]); everything below the handler then talks to that upstream without
/// knowing there are others.
#[derive(Clone)]
pub struct AppState {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// The upstream client.
    pub client: OpenCodeClient,
    /// The shared upstream event subscription.
    pub hub: EventHub,
    /// The model catalog.
    pub catalog: Catalog,
    /// Conversation → session pool and explicit sessions.
    pub sessions: Sessions,
    /// Client tools: MCP slots and runs waiting for tool results.
    pub tools: ClientTools,
    /// Stored responses of the Responses API.
    pub responses: ResponseStore,
    /// Per-key rate limits.
    pub rate_limits: RateLimits,
    /// Permission policy and the requests waiting for callers.
    pub permissions: Permissions,
    /// Client API keys.
    pub keys: Keys,
    /// Cancelled when the shutdown grace period is over: runs still going fail and abort.
    pub hard_stop: CancellationToken,
    /// Completions in progress (shutdown waits for them to wind down).
    pub live_runs: TaskTracker,
    /// Every upstream, and where sessions live.
    pub upstreams: Upstreams,
    /// Which upstream the per-upstream fields are.
    pub upstream: usize,
    /// Who this gateway is, as its pooled sessions record it.
    pub identity: Arc<Identity>,
}

/// Builds one upstream's backend and starts its background tasks.
fn backend(
    index: usize,
    config: &Config,
    opencode: &OpenCodeConfig,
    store: &Store,
    identity: &Arc<Identity>,
    shutdown: &CancellationToken,
) -> Result<Backend, UpstreamError> {
    let client = OpenCodeClient::new(opencode)?;
    let name = upstream_name(config, index);
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
    let responses = ResponseStore::new(
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
        admission: crate::upstreams::admission::Admission::new(&config.admission),
    })
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
            let backend = backend(i, &config, opencode, &store, &identity, shutdown)?;
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
        Ok(AppState {
            rate_limits: RateLimits::with_keys(&config.rate_limits, &config.auth)
                .with_store(upstreams.store().clone()),
            hard_stop: CancellationToken::new(),
            live_runs: TaskTracker::new(),
            keys: Keys::new(&config.auth),
            config: Arc::new(config),
            client: first.client.clone(),
            hub: first.hub.clone(),
            catalog: first.catalog.clone(),
            sessions: first.sessions.clone(),
            tools: first.tools.clone(),
            responses: first.responses.clone(),
            permissions: first.permissions.clone(),
            upstreams,
            upstream: 0,
            identity,
        })
    }

    /// At a clean shutdown: tells the other replicas (through Redis) that this gateway is gone,
    /// so that they sweep the pooled sessions it leaves them once those are idle past the TTL.
    pub async fn farewell(&self) {
        let store = self.upstreams.store();
        if store.is_shared() {
            let _ = store.forget_instance(self.identity.instance()).await;
        }
    }

    /// The same state, its per-upstream fields those of upstream `i`.
    pub fn on(&self, i: usize) -> AppState {
        if i == self.upstream || self.upstreams.is_single() {
            return self.clone();
        }
        let b = self.upstreams.get(i);
        AppState {
            client: b.client.clone(),
            hub: b.hub.clone(),
            catalog: b.catalog.clone(),
            sessions: b.sessions.clone(),
            tools: b.tools.clone(),
            responses: b.responses.clone(),
            permissions: b.permissions.clone(),
            upstream: b.index,
            ..self.clone()
        }
    }

    /// The state for requests not tied to a session (the model list, OpenCode's own routes):
    /// on the first available upstream.
    pub fn primary(&self) -> AppState {
        self.on(self.upstreams.primary())
    }

    /// The state on the upstream holding `session` (with none, the primary one: the caller's
    /// request then meets OpenCode's 404 there). An upstream known to hold it but drained is
    /// a 503: its session cannot be served elsewhere.
    pub async fn for_session(&self, session: &str) -> Result<AppState, ApiError> {
        if self.upstreams.is_single() {
            return Ok(self.clone());
        }
        match self.upstreams.session_home(session).await {
            Some(i) if self.upstreams.get(i).breaker.state() == BreakerState::Closed => {
                Ok(self.on(i))
            }
            Some(i) => Err(ApiError::Unavailable(format!(
                "Session {session} lives on upstream `{}`, which is failing its health checks.",
                self.upstreams.get(i).name
            ))),
            None => Ok(self.primary()),
        }
    }

    /// The state on the upstream remembering the conversation whose history is `prior`, when
    /// that one is available; else on the upstream a new conversation goes to.
    pub async fn for_conversation(&self, prior: &Fingerprint) -> AppState {
        if self.upstreams.is_single() {
            return self.clone();
        }
        match self.upstreams.conversation_home(prior).await {
            Some(i) if self.upstreams.get(i).available() => self.on(i),
            _ => self.on(self.upstreams.pick()),
        }
    }

    /// The state on the upstream a new conversation or session goes to.
    pub fn for_new(&self) -> AppState {
        self.on(self.upstreams.pick())
    }
}

/// The routes that need an API key (when keys are configured).
fn keyed_routes(keys: Keys, limits: RateLimits, metrics_here: bool) -> Router<AppState> {
    use routes::{agents, chat, code, commands, config, events, health, models, providers};
    use routes::{responses, session_extras as extras, sessions, tooling};
    let router = Router::new();
    let router = if metrics_here {
        router.route("/metrics", get(crate::metrics::render))
    } else {
        router
    };
    router
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/agents", get(agents::list))
        .route("/v1/events", get(events::stream))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .route("/v1/responses/{id}/cancel", post(responses::cancel))
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/v1/sessions/{id}/messages", get(sessions::messages))
        .route("/v1/sessions/{id}/fork", post(sessions::fork))
        .route("/v1/sessions/{id}/abort", post(sessions::abort))
        .route("/v1/sessions/{id}/permissions", get(sessions::permissions))
        .route(
            "/v1/sessions/{id}/permissions/{permission_id}",
            post(sessions::answer_permission),
        )
        .route("/v1/sessions/{id}/children", get(extras::children))
        .route("/v1/sessions/{id}/todo", get(extras::todo))
        .route("/v1/sessions/{id}/diff", get(extras::diff))
        .route(
            "/v1/sessions/{id}/messages/{message_id}",
            get(extras::message),
        )
        .route("/v1/sessions/{id}/summarize", post(extras::summarize))
        .route("/v1/sessions/{id}/revert", post(extras::revert))
        .route("/v1/sessions/{id}/unrevert", post(extras::unrevert))
        .route(
            "/v1/sessions/{id}/share",
            post(extras::share).delete(extras::unshare),
        )
        .route("/v1/sessions/{id}/command", post(commands::run_command))
        .route("/v1/sessions/{id}/shell", post(commands::run_shell))
        .route("/v1/commands", get(commands::list))
        .route("/v1/providers", get(providers::list))
        .route("/v1/providers/refresh", post(providers::refresh))
        .route("/v1/providers/{id}/auth", put(providers::set_auth))
        .route(
            "/v1/providers/{id}/oauth/authorize",
            post(providers::oauth_authorize),
        )
        .route(
            "/v1/providers/{id}/oauth/callback",
            post(providers::oauth_callback),
        )
        .route("/v1/find/text", get(code::find_text))
        .route("/v1/find/files", get(code::find_files))
        .route("/v1/find/symbols", get(code::find_symbols))
        .route("/v1/files", get(code::list_directory))
        .route("/v1/files/content", get(code::file_content))
        .route("/v1/files/status", get(code::file_status))
        .route("/v1/vcs", get(code::vcs))
        .route("/v1/project", get(code::project_info))
        .route("/v1/tools", get(tooling::tool_ids))
        .route("/v1/tools/definitions", get(tooling::tool_definitions))
        .route("/v1/lsp", get(tooling::lsp))
        .route("/v1/formatters", get(tooling::formatters))
        .route("/v1/mcp", get(tooling::mcp_status).post(tooling::mcp_add))
        .route("/v1/mcp/{name}/connect", post(tooling::mcp_connect))
        .route("/v1/mcp/{name}/disconnect", post(tooling::mcp_disconnect))
        .route("/v1/config", get(config::get).patch(config::patch))
        .route("/status", get(health::status))
        .route_layer(middleware::from_fn_with_state(
            limits,
            crate::ratelimit::enforce,
        ))
        .route_layer(middleware::from_fn_with_state(keys, auth::require_key))
}

/// `/metrics` alone, for its own listener (`metrics.listen`): no key, nothing else exposed.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(crate::metrics::render))
        .with_state(state)
}

/// The HTTP API.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let limits = &state.config.limits;
    let metrics = &state.config.metrics;
    let metrics_here = metrics.enabled && metrics.listen.is_none();
    if metrics.enabled {
        crate::metrics::handle();
    }
    Router::new()
        .route("/health", get(routes::health::ready))
        .route("/livez", get(routes::health::live))
        .route("/openapi.json", get(crate::openapi::serve))
        .merge(keyed_routes(
            state.keys.clone(),
            state.rate_limits.clone(),
            metrics_here,
        ))
        .route_layer(middleware::from_fn(crate::metrics::track))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            BodyLimits {
                max_bytes: limits.max_body_bytes,
                deadline: limits.body_timeout,
            },
            body::enforce,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
