#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The benchmark suite: `cargo bench --bench suite` (release build of the gateway binary).
//!
//! Prints a markdown table of every measurement beside its target:
//! 1. `open_loop`: non-streaming completions at fixed arrival rates (500 – 5,000 req/s) through
//!    gateway → fast fake OpenCode, latency from the SCHEDULED send time; the same rates against
//!    the fake alone; added latency = gateway − fake alone.
//! 2. `saturation`: closed-loop throughput through the gateway, and the gateway's CPU time per
//!    completion (`/proc/<pid>/stat`).
//! 3. `streaming`: 1,000-delta streams (time to first chunk, per-chunk added latency, stalls),
//!    then 500 concurrent streams, then the gateway's `/status`: one upstream event connection
//!    held throughout.
//! 4. `memory`: the gateway's RSS idle, after 10,000 and 100,000 remembered conversations, and
//!    with 1,000 open streams.
//! 5. `real`: the real OpenCode with the scripted model, gateway vs calling OpenCode directly.
//! 6. `scale`: 1 vs 2 upstreams and 1 vs 2 replicas sharing Redis, against the fast fake: the
//!    cost of routing and of the shared store, as ratios to one gateway over one upstream.
//! 7. `overload`: 1,000 clients for 60 s against the real OpenCode beside its best concurrency
//!    (admission control: completions kept, refusals at once, nothing failing after it started).
//!
//! `BENCH_ONLY=open_loop,streaming` runs only those sections (`open_loop`, `saturation`,
//! `streaming`, `memory`, `real`, `scale`, `overload`; default: all). The real and overload
//! sections install the pinned OpenCode into `target/` unless `OPENCODE_BIN` names one. The whole suite takes about 9 minutes on two
//! cores. Every section starts its own fake, gateway process and client connection pool.
//!
//! The fast fake (`suite/fake.rs`) runs in this process on its own runtime; the gateway is the
//! release binary as a child process (`tests/it/support/gateway.rs`), logging at `warn`.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "suite/alone.rs"]
mod alone;
#[path = "suite/fake.rs"]
mod fake;
#[path = "suite/load.rs"]
mod load;
#[path = "suite/overload.rs"]
mod overload;
#[path = "suite/procfs.rs"]
mod procfs;
#[path = "suite/real.rs"]
mod real;
#[path = "suite/report.rs"]
mod report;
#[path = "suite/scale.rs"]
mod scale;
#[path = "suite/streams.rs"]
mod streams;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fake::FastFake;
use report::{us, Report};
use support::{Gateway, GatewayOptions};

/// Arrival rates of the open loop, and how long each runs.
const RATES: [f64; 4] = [500.0, 1_000.0, 2_000.0, 5_000.0];
const RATE_RUN: Duration = Duration::from_secs(5);
/// Concurrency and length of the saturation run.
const SATURATION_CLIENTS: usize = 128;
const SATURATION_RUN: Duration = Duration::from_secs(10);

/// The 1-minute load average (how busy the machine was besides this run).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

fn selected(section: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|s| s.trim() == section),
        _ => true,
    }
}

/// One non-streaming chat completion; whether it answered 200.
pub async fn chat(http: reqwest::Client, url: String, content: String) -> bool {
    let body = json!({"model": "mock/echo",
                      "messages": [{"role": "user", "content": content}]});
    match http
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => {
            let ok = r.status().is_success();
            ok & r.bytes().await.is_ok()
        }
        Err(_) => false,
    }
}

/// A request maker for [`load`] sending `content(i)` as the user message.
fn chats(
    http: &reqwest::Client,
    url: &str,
    content: impl Fn(u64) -> String + Send + Sync + 'static,
) -> impl Fn(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
       + Send
       + Sync
       + Clone
       + 'static {
    let (http, url) = (http.clone(), url.to_string());
    let content = Arc::new(content);
    move |i| Box::pin(chat(http.clone(), url.clone(), content(i)))
}

/// The gateway in front of `fake` (logging at `warn`), ready (`/health` 200).
async fn gateway(http: &reqwest::Client, fake: &FastFake, toml: Option<&str>) -> Gateway {
    let mut opts = GatewayOptions::default().env("RUST_LOG", "warn");
    if let Some(t) = toml {
        opts = opts.config(t);
    }
    let gw = Gateway::start_with(fake.url(), opts).await;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{}/health", gw.url())).send().await {
            if r.status().is_success() {
                return gw;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway did not become ready");
}

/// A section's own fake, gateway (fresh process) and client (fresh connection pool), warmed
/// up, so that no section inherits another's state (idle connections, remembered sessions).
struct Bed {
    // Field order = drop order: the gateway goes before its fake.
    gw: Gateway,
    fake: FastFake,
    http: reqwest::Client,
}

impl Bed {
    async fn start() -> Bed {
        let http = load::client();
        let fake = FastFake::start(2);
        let gw = gateway(&http, &fake, None).await;
        // Warm up: connections, the model catalog, allocator.
        load::closed_loop_n(
            16,
            Duration::from_secs(10),
            2_000,
            chats(&http, &gw.url(), |_| "warm up".to_string()),
        )
        .await;
        Bed { gw, fake, http }
    }

    /// The row showing the gateway held one upstream event connection all section long.
    async fn event_connection(&self, report: &mut Report, section: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let st = status(&self.http, &self.gw.url()).await;
        let opened = st["events"]["connections_opened"].as_u64().unwrap_or(0);
        let connected = st["events"]["connected"].as_bool().unwrap_or(false);
        let c = self.fake.counters();
        let fake_opened = c.event_connections_opened.load(Relaxed);
        let fake_open = c.event_connections_open.load(Relaxed);
        let lost = c.frames_lost.load(Relaxed);
        report.target(
            section,
            "upstream event connections, whole section",
            format!(
                "gateway /status: opened {opened}, connected {connected}; fake: {fake_opened} opened, {fake_open} open, {lost} frames lost"
            ),
            "one, held throughout",
            opened == 1 && connected && fake_opened == 1 && fake_open == 1 && lost == 0,
        );
    }
}

async fn status(http: &reqwest::Client, url: &str) -> Value {
    http.get(format!("{url}/status"))
        .send()
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("/status JSON")
}

pub fn pcts(o: &load::Outcome) -> String {
    let mut s = format!(
        "{} / {} / {}",
        us(o.pct(50.0)),
        us(o.pct(99.0)),
        us(o.pct(99.9))
    );
    if o.errors > 0 || o.shed > 0 {
        s.push_str(&format!(" ({} errors, {} shed)", o.errors, o.shed));
    }
    s
}

async fn open_loop(report: &mut Report, http: &reqwest::Client, gw: &Gateway) {
    const S: &str = "open loop";
    let alone_fake = FastFake::start(2);
    for rate in RATES {
        let alone = Arc::new(alone::Alone::connect(http.clone(), alone_fake.url()).await);
        let a = {
            let alone = alone.clone();
            load::open_loop(rate, RATE_RUN, move |_| {
                let alone = alone.clone();
                async move { alone.complete("bench hello").await }
            })
            .await
        };
        drop(alone);
        let g = load::open_loop(
            rate,
            RATE_RUN,
            // A new conversation each (a repeated one would replace and delete its
            // predecessor's session on every request).
            chats(http, &gw.url(), move |i| format!("open loop {rate} {i}")),
        )
        .await;
        let r = format!("{rate:.0} req/s");
        report.info(S, &format!("{r}: gateway p50 / p99 / p99.9"), pcts(&g));
        report.info(S, &format!("{r}: fake alone p50 / p99 / p99.9"), pcts(&a));
        let added = g.pct(99.0) - a.pct(99.0);
        let result = format!(
            "p50 {} / p99 {} / p99.9 {}",
            us(g.pct(50.0) - a.pct(50.0)),
            us(added),
            us(g.pct(99.9) - a.pct(99.9))
        );
        let clean = g.errors == 0 && g.shed == 0;
        if rate == 2_000.0 {
            report.target(
                S,
                &format!("{r}: added latency"),
                result,
                "added p99 ≤ 1 ms",
                clean && added <= 1_000.0,
            );
        } else {
            report.info(S, &format!("{r}: added latency"), result);
        }
    }
}

async fn saturation(report: &mut Report, http: &reqwest::Client, gw: &Gateway) {
    const S: &str = "saturation";
    let pid = gw.pid().expect("gateway pid");
    let (cpu, own, fake_cpu) = (
        procfs::cpu_secs(pid),
        procfs::own_cpu_secs(),
        procfs::own_threads_cpu_secs("fast-fake"),
    );
    let o = load::closed_loop(
        SATURATION_CLIENTS,
        SATURATION_RUN,
        chats(http, &gw.url(), |i| format!("saturation {i}")),
    )
    .await;
    let cpu = procfs::cpu_secs(pid) - cpu;
    let fake_cpu = procfs::own_threads_cpu_secs("fast-fake") - fake_cpu;
    let client = procfs::own_cpu_secs() - own - fake_cpu;
    let tput = o.throughput();
    let errors = if o.errors > 0 {
        format!(" ({} errors)", o.errors)
    } else {
        String::new()
    };
    report.target(
        S,
        &format!("throughput, {SATURATION_CLIENTS} clients, gateway → fake"),
        format!("{tput:.0} completions/s{errors}"),
        "≥ 5,000/s on two cores",
        tput >= 5_000.0 && o.errors == 0,
    );
    report.info(S, "latency p50 / p99 / p99.9 at saturation", pcts(&o));
    report.info(
        S,
        "gateway CPU per completion",
        format!(
            "{} ({:.2} cores busy)",
            us(cpu * 1e6 / o.ok().max(1) as f64),
            cpu / o.elapsed.as_secs_f64()
        ),
    );
    let per = |secs: f64| us(secs * 1e6 / o.ok().max(1) as f64);
    report.info(
        S,
        "bench process CPU per completion (same cores)",
        format!("fake {}, load client {}", per(fake_cpu), per(client)),
    );
    // For context: the same load against the fake alone (its ceiling with this client).
    let fake2 = FastFake::start(2);
    let alone = Arc::new(alone::Alone::connect(http.clone(), fake2.url()).await);
    let a = load::closed_loop(SATURATION_CLIENTS, Duration::from_secs(5), move |_| {
        let alone = alone.clone();
        async move { alone.complete("bench hello").await }
    })
    .await;
    report.info(
        S,
        "throughput, fake alone (same client)",
        format!("{:.0} completions/s", a.throughput()),
    );
}

/// Where the gateway's time goes: runs it follows none of, but whose events all pass its one
/// event stream (read, parsed, demultiplexed to nobody), at a rate it keeps up with.
async fn event_stream_cost(report: &mut Report, bed: &Bed) {
    let pid = bed.gw.pid().expect("gateway pid");
    let alone = Arc::new(alone::Alone::connect(bed.http.clone(), bed.fake.url()).await);
    let cpu = procfs::cpu_secs(pid);
    let o = load::open_loop(1_000.0, Duration::from_secs(4), move |_| {
        let alone = alone.clone();
        async move { alone.complete("bench hello").await }
    })
    .await;
    let cpu = procfs::cpu_secs(pid) - cpu;
    report.info(
        "saturation",
        "gateway CPU per run it only sees on its event stream (1,000 runs/s beside it)",
        format!(
            "{} ({} runs, {} errors)",
            us(cpu * 1e6 / o.ok().max(1) as f64),
            o.ok(),
            o.errors
        ),
    );
}

async fn streaming(report: &mut Report, http: &reqwest::Client, gw: &Gateway) {
    const S: &str = "streaming";
    let url = gw.url();
    let stall = streams::STALL.as_micros() as u64;
    // Sequential 1,000-delta streams, a delta every millisecond.
    let mut seq = streams::Summary::default();
    for i in 0..3 {
        let body = streams::body(1_000, 1_000, &format!("stream {i}"));
        seq.add(streams::one(http, &url, &body, stall).await, 1_000);
    }
    streams_rows(report, S, "1,000-delta streams (1 ms apart) ×3", &seq);
    // On a fake of its own: the gateway's fake must keep exactly one event subscriber.
    let floor_fake = FastFake::start(2);
    let floor = alone::stream_floor(http, floor_fake.url(), 1_000, 1_000).await;
    drop(floor_fake);
    report.info(
        S,
        "floor: the same deltas read from the fake's /event directly, p50 / p99 / max",
        format!(
            "{} / {} / {} over {} deltas",
            us(load::percentile(&floor, 50.0)),
            us(load::percentile(&floor, 99.0)),
            us(floor.iter().copied().max().unwrap_or(0) as f64),
            floor.len()
        ),
    );
    // 500 concurrent streams of 200 deltas, 20 ms apart.
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let body = streams::body(200, 20_000, &format!("concurrent {i}"));
                streams::one(&http, &url, &body, 20_000 + stall).await
            })
        })
        .collect();
    let mut conc = streams::Summary::default();
    for t in tasks {
        conc.add(t.await.ok().flatten(), 200);
    }
    streams_rows(
        report,
        S,
        "500 concurrent streams (200 deltas, 20 ms apart)",
        &conc,
    );
}

fn streams_rows(report: &mut Report, s: &str, what: &str, sum: &streams::Summary) {
    let broken = if sum.failed + sum.incomplete > 0 {
        format!(" ({} failed, {} incomplete)", sum.failed, sum.incomplete)
    } else {
        String::new()
    };
    report.info(
        s,
        &format!("{what}: time to first chunk p50 / p99"),
        format!(
            "{} / {}{broken}",
            us(load::percentile(&sum.first_chunk_us, 50.0)),
            us(load::percentile(&sum.first_chunk_us, 99.0))
        ),
    );
    let p99 = load::percentile(&sum.added_us, 99.0);
    report.target(
        s,
        &format!("{what}: per-chunk added latency p50 / p99 / max"),
        format!(
            "{} / {} / {} over {} deltas",
            us(load::percentile(&sum.added_us, 50.0)),
            us(p99),
            us(sum.added_us.iter().copied().max().unwrap_or(0) as f64),
            sum.added_us.len()
        ),
        "p99 ≤ 100 µs",
        p99 <= 100.0,
    );
    report.target(
        s,
        &format!("{what}: stalls (gap ≥ 30 ms beyond the delta spacing)"),
        format!(
            "{} (longest gap {})",
            sum.stalls,
            us(sum.longest_gap_us as f64)
        ),
        "0",
        sum.stalls == 0,
    );
}

async fn memory(report: &mut Report, http: &reqwest::Client) {
    const S: &str = "memory";
    let fake = FastFake::start(2);
    let gw = gateway(
        http,
        &fake,
        Some("[sessions]\nmax_capacity = 250000\nttl_secs = 7200\n"),
    )
    .await;
    let pid = gw.pid().expect("gateway pid");
    let url = gw.url();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = |what: &str, report: &mut Report| {
        let kib = procfs::rss_kib(pid);
        report.info(S, what, format!("{:.1} MiB", procfs::mib(kib)));
        kib
    };
    rss("gateway RSS, idle", report);
    let mut done = 0u64;
    for (upto, label) in [(10_000u64, "10,000"), (100_000u64, "100,000")] {
        let t = Instant::now();
        let start = done;
        let o = load::closed_loop_n(
            128,
            Duration::from_secs(300),
            upto - done,
            chats(http, &url, move |i| format!("conversation {}", start + i)),
        )
        .await;
        done = upto;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let remembered = status(http, &url).await["pool"]["remembered"]
            .as_u64()
            .unwrap_or(0);
        let kib = procfs::rss_kib(pid);
        let result = format!(
            "{:.1} MiB ({remembered} remembered; {} completions in {:.1} s, {} errors)",
            procfs::mib(kib),
            o.ok(),
            t.elapsed().as_secs_f64(),
            o.errors
        );
        let measure = format!("gateway RSS after {label} conversations");
        if upto == 100_000 {
            report.target(S, &measure, result, "≤ 64 MiB", kib <= 64 * 1024);
        } else {
            report.info(S, &measure, result);
        }
    }
    // 1,000 open streams: slow deltas (every 50 ms), held open until measured.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(1_000);
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    for i in 0..1_000 {
        let (http, url, ready, mut close) = (
            http.clone(),
            url.clone(),
            ready_tx.clone(),
            close_rx.clone(),
        );
        tokio::spawn(async move {
            let body = streams::body(1_000, 50_000, &format!("open {i}"));
            let Some(mut resp) = streams::open(&http, &url, &body).await else {
                let _ = ready.send(false).await;
                return;
            };
            let mut seen = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("\"content\":\"t") {
                    break;
                }
            }
            let _ = ready.send(true).await;
            let _ = close.wait_for(|c| *c).await;
            drop(resp);
        });
    }
    drop(ready_tx);
    let (mut open, mut failed) = (0, 0);
    while let Ok(Some(ok)) = tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
        if ok {
            open += 1;
        } else {
            failed += 1;
        }
    }
    let kib = procfs::rss_kib(pid);
    report.info(
        S,
        "gateway RSS with 1,000 open streams",
        format!(
            "{:.1} MiB ({open} streaming, {failed} failed)",
            procfs::mib(kib)
        ),
    );
    let _ = close_tx.send(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    fake::epoch();
    let began = Instant::now();
    let mut report = Report::default();
    let load_at_start = loadavg();
    if selected("open_loop") {
        let bed = Bed::start().await;
        open_loop(&mut report, &bed.http, &bed.gw).await;
        bed.event_connection(&mut report, "open loop").await;
    }
    if selected("saturation") {
        let bed = Bed::start().await;
        saturation(&mut report, &bed.http, &bed.gw).await;
        bed.event_connection(&mut report, "saturation").await;
        event_stream_cost(&mut report, &bed).await;
    }
    if selected("streaming") {
        let bed = Bed::start().await;
        streaming(&mut report, &bed.http, &bed.gw).await;
        bed.event_connection(&mut report, "streaming").await;
    }
    if selected("memory") {
        memory(&mut report, &load::client()).await;
    }
    if selected("real") {
        real::run(&mut report).await;
    }
    if selected("scale") {
        scale::run(&mut report).await;
    }
    if selected("overload") {
        overload::run(&mut report).await;
    }
    report.info(
        "machine",
        "load average (1 min) at start / end",
        format!("{load_at_start} / {}", loadavg()),
    );
    println!(
        "\n## PorTaTek Gateway benchmark suite ({} cores, {:.0} s)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        began.elapsed().as_secs_f64()
    );
    println!("{}", report.markdown());
}
