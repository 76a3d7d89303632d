//! Application wiring: shared state, the router with its layers, and the server lifecycle
//! (TCP_NODELAY on accepted sockets, graceful shutdown with a bounded grace period).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{self, Keys};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::hub::EventHub;
use crate::opencode::{OpenCodeClient, UpstreamError};
use crate::pool::SessionPool;
use crate::routes;

/// Everything a handler needs; cheap to clone.
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
    /// Conversation → session pool and pinned sessions.
    pub pool: SessionPool,
    /// Client API keys.
    pub keys: Keys,
    /// Cancelled when the shutdown grace period is over: runs still going fail and abort.
    pub hard_stop: CancellationToken,
    /// Completions in progress (shutdown waits for them to wind down).
    pub live_runs: TaskTracker,
}

impl AppState {
    /// Builds the state and starts its background tasks (event hub, catalog refresh, pool janitor),
    /// which stop when `shutdown` is cancelled.
    pub fn start(config: Config, shutdown: &CancellationToken) -> Result<AppState, UpstreamError> {
        let client = OpenCodeClient::new(&config.opencode)?;
        let hub = EventHub::start(client.clone(), shutdown.child_token());
        let ttl = Duration::from_secs(config.models.cache_ttl_secs);
        let catalog = Catalog::new(client.clone(), config.models.allowlist.clone(), ttl);
        catalog.spawn_refresh(
            (ttl / 2).max(Duration::from_secs(1)),
            shutdown.child_token(),
        );
        let pool = SessionPool::new(
            client.clone(),
            config.prompt.session_title.clone(),
            &config.sessions,
        );
        pool.spawn_janitor(shutdown.child_token());
        Ok(AppState {
            hard_stop: CancellationToken::new(),
            live_runs: TaskTracker::new(),
            keys: Keys::new(config.auth.api_keys.clone()),
            config: Arc::new(config),
            client,
            hub,
            catalog,
            pool,
        })
    }
}

/// The HTTP API.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = Router::new()
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{*id}", get(routes::models::get))
        .route("/v1/chat/completions", post(routes::chat::completions))
        .route(
            "/v1/sessions",
            post(routes::sessions::create).get(routes::sessions::list),
        )
        .route(
            "/v1/sessions/{id}",
            get(routes::sessions::get).delete(routes::sessions::delete),
        )
        .route(
            "/v1/sessions/{id}/messages",
            get(routes::sessions::messages),
        )
        .route("/v1/sessions/{id}/fork", post(routes::sessions::fork))
        .route("/v1/sessions/{id}/abort", post(routes::sessions::abort))
        .route("/status", get(routes::health::status))
        .route_layer(middleware::from_fn_with_state(
            state.keys.clone(),
            auth::require_key,
        ));
    Router::new()
        .route("/health", get(routes::health::ready))
        .route("/livez", get(routes::health::live))
        .merge(api)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            state.config.limits.body_timeout_secs,
        )))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Accepts connections until `stop` (TCP_NODELAY on each, and a deadline for a client to send
/// its request headers: hyper's `header_read_timeout`, which `axum::serve` does not set).
/// Returns the open connections, to be shut down gracefully.
async fn accept(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    stop: &CancellationToken,
) -> GracefulShutdown {
    let connections = GracefulShutdown::new();
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => return connections,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        let conn = connections.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains for at most the
/// configured grace period.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UpstreamError> {
    // Two stages: `stop` ends accepting and starts the drain; `background` (event hub, catalog
    // refresh, pool janitor) keeps running until in-flight requests are done, so they can finish.
    let stop = CancellationToken::new();
    let background = CancellationToken::new();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let delete_on_shutdown = config.sessions.delete_on_shutdown;
    let state = AppState::start(config, &background)?;
    let app = router(state.clone());
    let header_timeout = Duration::from_secs(state.config.limits.header_timeout_secs);
    let signalled = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        signalled.cancel();
    });
    let connections = accept(listener, app, header_timeout, &stop).await;
    tokio::select! {
        _ = connections.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            // Connections run in their own tasks: make the completions still going end (with an
            // error to their clients) and abort upstream, rather than be cut off at exit.
            tracing::warn!(?grace, "grace period over; ending the remaining completions");
            state.hard_stop.cancel();
            state.live_runs.close();
            if tokio::time::timeout(Duration::from_secs(5), state.live_runs.wait()).await.is_err() {
                tracing::warn!("some completions did not end in time");
            }
        }
    }
    // Requests cut off above abort their runs through the pool's clean-up tasks: wait for those.
    state
        .pool
        .shutdown(delete_on_shutdown, Duration::from_secs(5))
        .await;
    background.cancel();
    Ok(())
}
