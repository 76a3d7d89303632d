//! Overload against the REAL OpenCode (issue 23): 1,000 concurrent clients for 60 s, every
//! request a new conversation, each refused client waiting out `Retry-After` (plus a little
//! jitter, as real clients are never in step) before trying again. Measured beside the rate the
//! same OpenCode sustains at its best concurrency (16 clients, no refusals): every request must
//! complete or be refused at once, none may fail after it started, and completions must stay
//! near the best rate.

use std::time::{Duration, Instant};

use serde_json::json;

use super::report::{us, Report};
use super::support::{GatewayOptions, OpenCodeOptions, TestBed};

const SECTION: &str = "overload";
const BEST_CLIENTS: usize = 16;
const BEST_RUN: Duration = Duration::from_secs(20);
const OVERLOAD_CLIENTS: usize = 1_000;
const OVERLOAD_RUN: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Tally {
    completed: usize,
    refusals_us: Vec<f64>,
    failed: usize,
}

async fn closed_loop(http: &reqwest::Client, gw: &str, clients: usize, run: Duration) -> Tally {
    let end = Instant::now() + run;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, url) = (http.clone(), format!("{gw}/v1/chat/completions"));
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut n = 0usize;
                while Instant::now() < end {
                    n += 1;
                    let body = json!({"model": "mock/echo", "messages":
                        [{"role": "user", "content": format!("overload {c} {n}")}]});
                    let started = Instant::now();
                    let Ok(resp) = http.post(&url).json(&body).send().await else {
                        t.failed += 1;
                        continue;
                    };
                    let status = resp.status().as_u16();
                    let wait = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    let _ = resp.bytes().await;
                    match status {
                        200 => t.completed += 1,
                        503 => {
                            t.refusals_us.push(started.elapsed().as_secs_f64() * 1e6);
                            let jitter =
                                Duration::from_millis(((c * 7919 + n * 104_729) % 1000) as u64);
                            let left = end.saturating_duration_since(Instant::now());
                            tokio::time::sleep((Duration::from_secs(wait) + jitter).min(left))
                                .await;
                        }
                        _ => t.failed += 1,
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            all.completed += t.completed;
            all.refusals_us.extend(t.refusals_us);
            all.failed += t.failed;
        }
    }
    all
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p / 100.0) as usize).min(v.len() - 1)]
}

pub async fn run(report: &mut Report) {
    let bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().env("RUST_LOG", "warn"),
    )
    .await;
    let gw = bed.gateway.url();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client");
    let best = closed_loop(&http, &gw, BEST_CLIENTS, BEST_RUN).await;
    let best_rate = best.completed as f64 / BEST_RUN.as_secs_f64();
    let mut over = closed_loop(&http, &gw, OVERLOAD_CLIENTS, OVERLOAD_RUN).await;
    let rate = over.completed as f64 / OVERLOAD_RUN.as_secs_f64();
    let ratio = rate / best_rate.max(1e-9);
    report.target(
        SECTION,
        "1,000 clients for 60 s: completions/s vs 16 clients (OpenCode's best)",
        format!(
            "{rate:.1}/s vs {best_rate:.1}/s = {ratio:.2}× ({} completed, {} refused; {} refused at 16 clients)",
            over.completed,
            over.refusals_us.len(),
            best.refusals_us.len()
        ),
        "≥ 0.90×",
        ratio >= 0.90,
    );
    let (p50, p99) = (
        pct(&mut over.refusals_us, 50.0),
        pct(&mut over.refusals_us, 99.0),
    );
    report.target(
        SECTION,
        "1,000 clients: time to a refusal, p50 / p99 (client side, same cores)",
        format!("{} / {}", us(p50), us(p99)),
        "≤ 100 ms",
        p99 <= 100_000.0,
    );
    report.target(
        SECTION,
        "1,000 clients: requests that failed after they started",
        format!("{} (16 clients: {})", over.failed, best.failed),
        "0",
        over.failed == 0 && best.failed == 0,
    );
    let (_, status) = bed.get("/status").await;
    report.info(
        SECTION,
        "admission at the end",
        status["upstreams"][0]["admission"].to_string(),
    );
}
