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
/// Slices per case, and the length of one.
const ROUNDS: usize = 3;
const SLICE: Duration = Duration::from_secs(2);

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

/// The closed loop over `urls` (request i to `urls[i % n]`) for `run`.
async fn drive(http: &reqwest::Client, urls: &[String], tag: String, run: Duration) -> Outcome {
    let urls = Arc::new(urls.to_vec());
    let http = http.clone();
    let make = move |i: u64| {
        let url = urls[i as usize % urls.len()].clone();
        Box::pin(chat(http.clone(), url, format!("scale {tag} {i}")))
            as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
    };
    load::closed_loop(CLIENTS, run, make).await
}

fn merge(into: &mut Outcome, o: Outcome) {
    into.latencies_us.extend(o.latencies_us);
    into.errors += o.errors;
    into.elapsed += o.elapsed;
}

pub async fn run(report: &mut Report) {
    let http = load::client();
    let (f1, f2) = (FastFake::start(2), FastFake::start(2));
    let redis = RedisServer::start().await;
    // Every case's gateways up at once (idle ones cost nothing), then the cases in alternating
    // slices, so that drift on a busy machine hits them alike.
    let mut cases: Vec<(&str, Vec<Gateway>)> = vec![
        (
            "1 gateway, 1 upstream",
            vec![replica(&http, &[&f1], None).await],
        ),
        (
            "1 gateway, 2 upstreams",
            vec![replica(&http, &[&f1, &f2], None).await],
        ),
    ];
    match &redis {
        Some(r) => {
            for (name, fakes) in [
                ("2 replicas + Redis, 1 upstream", vec![&f1]),
                ("2 replicas + Redis, 2 upstreams", vec![&f1, &f2]),
            ] {
                let pair = vec![
                    replica(&http, &fakes, Some(r.port)).await,
                    replica(&http, &fakes, Some(r.port)).await,
                ];
                cases.push((name, pair));
            }
        }
        None => report.info(S, "replicas with Redis", "skipped: no redis-server".into()),
    }
    let urls: Vec<Vec<String>> = cases
        .iter()
        .map(|(_, gws)| gws.iter().map(Gateway::url).collect())
        .collect();
    for (c, u) in urls.iter().enumerate() {
        drive(&http, u, format!("warm {c}"), Duration::from_secs(2)).await;
    }
    let mut outcomes: Vec<Outcome> = cases.iter().map(|_| Outcome::default()).collect();
    for round in 0..ROUNDS {
        for (c, u) in urls.iter().enumerate() {
            let o = drive(&http, u, format!("{c} {round}"), SLICE).await;
            merge(&mut outcomes[c], o);
        }
    }
    let base = (
        outcomes[0].throughput(),
        outcomes[0].pct(50.0),
        outcomes[0].pct(99.0),
    );
    for ((name, _), o) in cases.iter().zip(&outcomes) {
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
