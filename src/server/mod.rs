//! The server lifecycle: an accept loop on hyper-util (TCP_NODELAY on every connection, a
//! deadline for request headers — `axum::serve` sets neither) and a two-stage shutdown: stop
//! accepting and let requests finish for the grace period, then end what still runs (with an
//! error to its client and an abort upstream) and clean up sessions. Errors hyper answers by
//! itself get OpenAI-shaped bodies too ([`http_errors`]).

mod http_errors;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{router, AppState};
use crate::config::Config;
use crate::embedded::{Embedded, EmbeddedError};
use crate::opencode::UpstreamError;

/// Why the gateway could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The embedded OpenCode could not be started.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
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
        let (builder, watcher, stop) = (builder.clone(), connections.watcher(), stop.clone());
        tokio::spawn(async move {
            // The auto builder reads the first bytes to pick HTTP/1 or HTTP/2 before hyper's
            // header deadline starts; a client that sends nothing (or a piece of the HTTP/2
            // preface) would hold the connection for ever. It gets the header deadline too.
            tokio::select! {
                decidable = protocol_decidable(&tcp, header_timeout) => if !decidable {
                    return;
                },
                _ = stop.cancelled() => return,
            }
            let io = TokioIo::new(http_errors::OpenAiErrors::new(tcp));
            let conn = builder.serve_connection_with_upgrades(io, service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client sent, `within` the deadline, enough to tell HTTP/1 from HTTP/2: any
/// byte that leaves the HTTP/2 preface, or the whole preface. Peeks, so nothing is consumed.
async fn protocol_decidable(tcp: &tokio::net::TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return false,
        };
        if n == 0 {
            return false; // closed before a byte
        }
        if buf[..n] != H2_PREFACE[..n] || n == H2_PREFACE.len() {
            return true;
        }
        // A piece of the preface so far: peek again shortly (peek does not wait for more).
        let pause = tokio::time::sleep(Duration::from_millis(20));
        if tokio::time::timeout_at(deadline, pause).await.is_err() {
            return false;
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains for at most the
/// configured grace period.
pub async fn serve(
    mut config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let embedded = match config.opencode.base_url {
        Some(_) => None,
        None if !config.upstreams.is_empty() => None,
        None => {
            let embedded = Embedded::start(&config.opencode).await?;
            config.opencode.base_url = Some(embedded.url.clone());
            config.opencode.password = Some(embedded.password.clone());
            Some(embedded)
        }
    };
    // Two stages: `stop` ends accepting and starts the drain; `background` (event hub, catalog
    // refresh, pool janitor) keeps running until in-flight requests are done, so they can finish.
    let stop = CancellationToken::new();
    let background = CancellationToken::new();
    let grace = config.shutdown_grace;
    let delete_on_shutdown = config.sessions.delete_on_shutdown;
    if embedded.is_none() {
        reset_saved_approvals(&config).await;
    }
    let state = AppState::start(config, &background)?;
    crate::memory::spawn_trimmer(background.clone());
    match &embedded {
        Some(embedded) => forget_on_restart(&state, embedded.generation.clone()),
        None => warn_if_unreachable(&state),
    }
    let app = router(state.clone());
    let header_timeout = state.config.limits.header_timeout;
    let signalled = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        signalled.cancel();
    });
    let mcp = start_mcp_endpoint(&state, background.clone()).await;
    start_metrics_listener(&state, background.clone()).await;
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
    // Runs still waiting for tool results are abandoned (aborted upstream, sessions freed).
    state.parked.clear();
    // Requests cut off above abort their runs through the pool's clean-up tasks: wait for those.
    let cleanups = state.upstreams.all().iter().map(|b| {
        b.sessions
            .shutdown(delete_on_shutdown, Duration::from_secs(5))
    });
    futures::future::join_all(cleanups).await;
    background.cancel();
    state.farewell().await;
    if let Some(mcp) = mcp {
        let _ = tokio::time::timeout(Duration::from_secs(2), mcp).await;
    }
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    Ok(())
}

/// Before serving, on each OpenCode the gateway did not start: clears (or reports) permission
/// approvals saved there, in every project directory the gateway may use
/// ([`crate::permissions::reset_saved_approvals`]).
async fn reset_saved_approvals(config: &Config) {
    let mut directories: Vec<Option<String>> = vec![None];
    for key in &config.auth.keys {
        directories.extend(key.directories.iter().cloned().map(Some));
    }
    let upstreams = crate::app::upstream_settings(config);
    let names = crate::app::upstream_names(config);
    let resets = upstreams.iter().zip(names).map(|(settings, name)| {
        let mut dirs = directories.clone();
        if settings.directory.is_some() {
            dirs.push(settings.directory.clone());
        }
        dirs.sort();
        dirs.dedup();
        let reset = config.permissions.reset_on_start;
        async move {
            match crate::opencode::OpenCodeClient::new(settings) {
                Ok(client) => {
                    crate::permissions::reset_saved_approvals(&client, &name, &dirs, reset).await
                }
                Err(e) => tracing::warn!(upstream = %name, error = %e, "no OpenCode client"),
            }
        }
    });
    futures::future::join_all(resets).await;
}

/// When the embedded OpenCode restarts, the runs it held are gone: runs waiting for tool
/// results are abandoned and the pool's sessions let go (deleted once it is back).
fn forget_on_restart(state: &AppState, mut generation: tokio::sync::watch::Receiver<u64>) {
    let state = state.clone();
    tokio::spawn(async move {
        while generation.changed().await.is_ok() {
            tracing::info!("embedded OpenCode restarted; forgetting the sessions of the old one");
            state.parked.clear();
            state.backend.sessions.conversations.delete_all();
        }
    });
}

/// Says at start when the configured OpenCode does not answer (readiness stays 503 until it
/// does), rather than leaving the operator to find out from the first request.
fn warn_if_unreachable(state: &AppState) {
    let client = state.backend.client.clone();
    let timeout = state.config.opencode.health_timeout;
    let url = state.config.opencode.base_url.clone().unwrap_or_default();
    tokio::spawn(async move {
        if let Err(e) = client.health(timeout).await {
            tracing::warn!(opencode = %url, error = %e, "OpenCode is not reachable; /health answers 503 until it is");
        }
    });
}

/// Serves `/metrics` on its own address when `metrics.listen` is set.
async fn start_metrics_listener(state: &AppState, stop: CancellationToken) {
    let Some(addr) = state
        .config
        .metrics
        .listen
        .filter(|_| state.config.metrics.enabled)
    else {
        return;
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for metrics (`metrics.listen`)");
            return;
        }
    };
    tracing::info!(addr = %listener.local_addr().map_or(addr, |a| a), "metrics listening");
    let app = crate::app::metrics_router(state.clone());
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics listener stopped");
        }
    });
}

/// Binds the MCP endpoint OpenCode calls back for client tools (see [`crate::client_tools`]). A bind
/// failure disables client tools (requests with `tools` get 503) rather than the gateway.
async fn start_mcp_endpoint(
    state: &AppState,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let config = &state.config.client_tools;
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen for the MCP endpoint (`client_tools.listen`); client tools are off");
            return None;
        }
    };
    let local = listener.local_addr().ok()?;
    let url = config
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    tracing::info!(%local, %url, "MCP endpoint for client tools listening");
    let slots: Vec<_> = state
        .upstreams
        .all()
        .iter()
        .map(|b| {
            b.tools.slots.set_endpoint(format!(
                "{url}{}",
                crate::client_tools::mcp::prefix(b.index)
            ));
            b.tools.slots.clone()
        })
        .collect();
    Some(tokio::spawn(crate::client_tools::mcp::serve(
        listener,
        slots,
        async move { stop.cancelled().await },
    )))
}
