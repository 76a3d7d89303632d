//! The `portatek-gateway` binary: load config, bind, serve until SIGTERM/SIGINT.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use portatek_gateway::config::{Cli, Config, LogFormat};
use portatek_gateway::server;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Before the runtime's threads exist, so they share the few arenas it allows.
    portatek_gateway::memory::tune();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("portatek-gateway: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    if cli.openapi {
        println!("{:#}", portatek_gateway::openapi::document());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portatek-gateway: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        print!("{}", config.masked_toml());
        eprintln!("portatek-gateway: configuration is valid");
        return ExitCode::SUCCESS;
    }
    if cli.healthcheck {
        return healthcheck(&config).await;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let addr = config.listen;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("portatek-gateway: cannot listen on {addr} (`listen`): {e}");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().map_or(addr, |a| a);
    tracing::info!(%local, opencode = config.opencode.base_url.as_deref().unwrap_or("embedded"), "starting");
    println!("portatek-gateway listening on http://{local}");
    let _ = std::io::stdout().flush();

    match server::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portatek-gateway: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--healthcheck`: is a gateway answering `/livez` on the configured address?
async fn healthcheck(config: &Config) -> ExitCode {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build();
    let answered = match client {
        Ok(c) => c.get(format!("http://{addr}/livez")).send().await,
        Err(e) => {
            eprintln!("portatek-gateway: {e}");
            return ExitCode::from(1);
        }
    };
    match answered {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("portatek-gateway: /livez answered {}", r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("portatek-gateway: /livez: {e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
