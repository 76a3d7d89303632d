//! Section `scale`: what routing costs. Closed-loop non-streaming completions (unique prompts:
//! every request a new conversation) through (a) one gateway over one fast fake OpenCode — the
//! baseline — (b) one gateway over two fakes (`[[upstreams]]`), (c) two gateway replicas over
//! one fake sharing a real `redis-server` (`[store] kind = "redis"`, the client alternating
//! replicas), (d) two replicas over two fakes with Redis. Each is reported as a ratio to (a) in
//! the same run. On one machine this shows the cost of placement and of the shared store, not
//! more capacity: the fakes, the replicas and the client share the same cores.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::fake::FastFake;
use super::load::{self, Outcome};
use super::report::{us, Report};
use super::support::opencode::free_port;
use super::support::{Gateway, GatewayOptions};
use super::{chat, pcts};

const S: &str = "scale";
const CLIENTS: usize = 32;
const RUN: Duration = Duration::from_secs(5);

/// A `redis-server` on a free port, killed on drop; `None` when it is not installed.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    async fn start() -> Option<RedisServer> {
        let dir = tempfile::tempdir().ok()?;
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(RedisServer {
                    child,
                    port,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A gateway over `fakes` (one: `--opencode-url`; more: `[[upstreams]]`), sharing `redis`.
async fn replica(http: &reqwest::Client, fakes: &[&FastFake], redis: Option<u16>) -> Gateway {
    let mut toml = String::new();
    if fakes.len() > 1 {
        for (i, f) in fakes.iter().enumerate() {
            toml.push_str(&format!(
                "[[upstreams]]\nname = \"u{i}\"\nurl = \"{}\"\n",
                f.url()
            ));
        }
    }
    if let Some(port) = redis {
        toml.push_str(&format!(
            "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\n"
        ));
    }
    let mut opts = GatewayOptions::default()
        .env("RUST_LOG", "warn")
        .config(toml);
    if fakes.len() > 1 {
        opts.no_default_args = true;
        opts = opts.args(["--listen", "127.0.0.1:0"]);
    }
    let gw = Gateway::start_with(fakes[0].url(), opts).await;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{}/health", gw.url())).send().await {
            if r.status().is_success() {
                return gw;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway did not become ready:\n{}", gw.logs());
}

/// The closed loop over `urls` (request i to `urls[i % n]`), after a warm-up.
async fn drive(http: &reqwest::Client, urls: Vec<String>, tag: &'static str) -> Outcome {
    let urls = Arc::new(urls);
    let make = |tag: &'static str| {
        let (http, urls) = (http.clone(), urls.clone());
        move |i: u64| {
            let url = urls[i as usize % urls.len()].clone();
            let http = http.clone();
            Box::pin(chat(http, url, format!("scale {tag} {i}")))
                as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        }
    };
    load::closed_loop_n(CLIENTS, Duration::from_secs(5), 1_000, make("warm")).await;
    load::closed_loop(CLIENTS, RUN, make(tag)).await
}

pub async fn run(report: &mut Report) {
    let http = load::client();
    let (f1, f2) = (FastFake::start(2), FastFake::start(2));
    let redis = RedisServer::start().await;
    let mut cases: Vec<(&str, Outcome)> = Vec::new();
    {
        let gw = replica(&http, &[&f1], None).await;
        cases.push((
            "1 gateway, 1 upstream",
            drive(&http, vec![gw.url()], "a").await,
        ));
    }
    {
        let gw = replica(&http, &[&f1, &f2], None).await;
        cases.push((
            "1 gateway, 2 upstreams",
            drive(&http, vec![gw.url()], "b").await,
        ));
    }
    match &redis {
        Some(r) => {
            let (g1, g2) = (
                replica(&http, &[&f1], Some(r.port)).await,
                replica(&http, &[&f1], Some(r.port)).await,
            );
            let urls = vec![g1.url(), g2.url()];
            cases.push((
                "2 replicas + Redis, 1 upstream",
                drive(&http, urls, "c").await,
            ));
            drop((g1, g2));
            let (g1, g2) = (
                replica(&http, &[&f1, &f2], Some(r.port)).await,
                replica(&http, &[&f1, &f2], Some(r.port)).await,
            );
            let urls = vec![g1.url(), g2.url()];
            cases.push((
                "2 replicas + Redis, 2 upstreams",
                drive(&http, urls, "d").await,
            ));
        }
        None => report.info(S, "replicas with Redis", "skipped: no redis-server".into()),
    }
    let base = (
        cases[0].1.throughput(),
        cases[0].1.pct(50.0),
        cases[0].1.pct(99.0),
    );
    for (name, o) in &cases {
        report.info(
            S,
            &format!("{name}: {CLIENTS} clients, p50 / p99 / p99.9"),
            format!(
                "{:.0} req/s ({:.2}× baseline); {}; added vs baseline p50 {} / p99 {}",
                o.throughput(),
                o.throughput() / base.0.max(1.0),
                pcts(o),
                us(o.pct(50.0) - base.1),
                us(o.pct(99.0) - base.2),
            ),
        );
    }
}
