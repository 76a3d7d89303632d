//! Against the REAL OpenCode (`opencode serve` 1.18.34 and 2.x, each with the scripted model of
//! the test bed): does the gateway keep up with OpenCode itself? The same client drives both
//! sides: the gateway's `POST /v1/chat/completions`, and OpenCode's own API directly (1.x:
//! create a session, then a synchronous `POST /session/:id/message`; 2.x: create a session,
//! select the model, deny its tools, prompt, then wait for it to go idle), at 1, 4, 16 and 64
//! concurrent clients, in
//! alternating slices so that drift (other processes, OpenCode's growing storage) hits both
//! sides alike. OpenCode's CPU time per completion is compared too: the gateway must not make
//! OpenCode work harder (its one shared event stream, session reuse).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::json;

use super::load::{self, Outcome};
use super::procfs;
use super::report::{us, Report};
use super::support::{GatewayOptions, OpenCodeOptions, TestBed};

const LEVELS: [usize; 4] = [1, 4, 16, 64];
/// Slices per side and level.
const ROUNDS: usize = 3;

/// How long one slice runs at `clients` concurrent clients. A closed loop counts until its last
/// request answers; at 64 clients one request takes seconds (OpenCode works through 64 at once),
/// so a short slice would time little more than one batch and its tail.
fn slice(clients: usize) -> Duration {
    if clients >= 64 {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(4)
    }
}

const SECTION: &str = "real OpenCode";
const SECTION_V2: &str = "real OpenCode 2.x";

/// Every request of the section asks something new, on both sides: the gateway remembers a
/// conversation by its history, so a repeated prompt (with the scripted model's repeated answer)
/// would replace the previous conversation and delete its session on every request, a cost
/// (≈ 5 ms of OpenCode's CPU) the direct side never pays.
static PROMPTS: AtomicU64 = AtomicU64::new(0);

fn prompt() -> String {
    format!("bench hello {}", PROMPTS.fetch_add(1, Relaxed))
}

/// One completion on OpenCode's own API; with `delete`, the session is deleted afterwards, as
/// the gateway deletes each session it stops remembering (idle past its TTL, or pushed out of
/// a full pool: past 1,000 conversations, one per new conversation).
async fn direct(http: reqwest::Client, oc: String, delete: bool) -> bool {
    let Ok(resp) = http
        .post(format!("{oc}/session"))
        .json(&json!({"title": "bench direct"}))
        .send()
        .await
    else {
        return false;
    };
    let Ok(session) = resp.json::<serde_json::Value>().await else {
        return false;
    };
    let Some(id) = session["id"].as_str() else {
        return false;
    };
    let body = json!({"parts": [{"type": "text", "text": prompt()}],
                      "model": {"providerID": "mock", "modelID": "echo"},
                      "tools": {"*": false}});
    let ok = match http
        .post(format!("{oc}/session/{id}/message"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            ok
        }
        Err(_) => false,
    };
    if delete {
        let deleted = http.delete(format!("{oc}/session/{id}")).send().await;
        return ok && deleted.is_ok_and(|r| r.status().is_success());
    }
    ok
}

/// The same on OpenCode 2.x's API (which wants its password).
async fn direct_v2(http: reqwest::Client, oc: String, password: String, delete: bool) -> bool {
    let call = |rb: reqwest::RequestBuilder| rb.basic_auth("opencode", Some(&password)).send();
    let Ok(resp) = call(
        http.post(format!("{oc}/api/session"))
            .json(&json!({"title": "bench direct"})),
    )
    .await
    else {
        return false;
    };
    let Ok(session) = resp.json::<serde_json::Value>().await else {
        return false;
    };
    let Some(id) = session["data"]["id"].as_str() else {
        return false;
    };
    let steps = [
        (
            reqwest::Method::POST,
            format!("{oc}/api/session/{id}/model"),
            json!({"model": {"id": "echo", "providerID": "mock"}}),
        ),
        (
            reqwest::Method::PATCH,
            format!("{oc}/api/session/{id}"),
            json!({"permissions": [{"action": "*", "resource": "*", "effect": "deny"}]}),
        ),
        (
            reqwest::Method::POST,
            format!("{oc}/api/session/{id}/prompt"),
            json!({"text": prompt()}),
        ),
        (
            reqwest::Method::POST,
            format!("{oc}/api/experimental/session/{id}/wait"),
            json!({}),
        ),
    ];
    let mut ok = true;
    for (method, url, body) in steps {
        ok &= match call(http.request(method, url).json(&body)).await {
            Ok(r) => {
                let fine = r.status().is_success();
                let _ = r.bytes().await;
                fine
            }
            Err(_) => false,
        };
    }
    if delete {
        let deleted = call(http.delete(format!("{oc}/api/session/{id}"))).await;
        return ok && deleted.is_ok_and(|r| r.status().is_success());
    }
    ok
}

fn merge(into: &mut Outcome, o: Outcome) {
    into.latencies_us.extend(o.latencies_us);
    into.errors += o.errors;
    into.elapsed += o.elapsed;
}

/// The section against OpenCode 1.18.34, then against 2.x.
pub async fn run(report: &mut Report) {
    run_on(report, false).await;
    run_on(report, true).await;
}

async fn run_on(report: &mut Report, v2: bool) {
    const PASSWORD: &str = "bench-v2";
    let (opencode, section) = match v2 {
        true => (OpenCodeOptions::v2(PASSWORD), SECTION_V2),
        false => (OpenCodeOptions::default(), SECTION),
    };
    let bed =
        TestBed::start_with(opencode, GatewayOptions::default().env("RUST_LOG", "warn")).await;
    let oc_pid = bed.opencode.pid().expect("OpenCode's pid");
    let oc = bed.opencode.url();
    let gw = bed.gateway.url();
    let http = load::client();
    let via_direct = {
        let (http, oc) = (http.clone(), oc.clone());
        move |_: u64| {
            let (http, oc) = (http.clone(), oc.clone());
            async move {
                match v2 {
                    true => direct_v2(http, oc, PASSWORD.into(), false).await,
                    false => direct(http, oc, false).await,
                }
            }
        }
    };
    let via_direct_deleting = {
        let (http, oc) = (http.clone(), oc.clone());
        move |_: u64| {
            let (http, oc) = (http.clone(), oc.clone());
            async move {
                match v2 {
                    true => direct_v2(http, oc, PASSWORD.into(), true).await,
                    false => direct(http, oc, true).await,
                }
            }
        }
    };
    let via_gateway = {
        let (http, gw) = (http.clone(), gw.clone());
        move |_: u64| super::chat(http.clone(), gw.clone(), prompt())
    };
    // Warm up both paths (the first prompts load the provider in OpenCode).
    for _ in 0..3 {
        assert!(via_direct(0).await, "direct OpenCode completion failed");
        assert!(via_gateway(0).await, "gateway completion failed");
    }
    for c in LEVELS {
        let (mut d, mut g) = (Outcome::default(), Outcome::default());
        let (mut cpu_d, mut cpu_g) = (0.0, 0.0);
        // At 64 clients the gateway's pool is full (1,000 conversations): each new one pushes
        // an old one out and deletes its session. A third side shows what that costs: the
        // direct client deleting its own sessions.
        let (mut dd, mut cpu_dd) = (Outcome::default(), 0.0);
        for _ in 0..ROUNDS {
            if c == 64 {
                let t = procfs::cpu_secs(oc_pid);
                merge(
                    &mut dd,
                    load::closed_loop(c, slice(c), via_direct_deleting.clone()).await,
                );
                cpu_dd += procfs::cpu_secs(oc_pid) - t;
            }
            let t = procfs::cpu_secs(oc_pid);
            merge(
                &mut d,
                load::closed_loop(c, slice(c), via_direct.clone()).await,
            );
            let t2 = procfs::cpu_secs(oc_pid);
            cpu_d += t2 - t;
            merge(
                &mut g,
                load::closed_loop(c, slice(c), via_gateway.clone()).await,
            );
            cpu_g += procfs::cpu_secs(oc_pid) - t2;
        }
        let ratio = g.throughput() / d.throughput();
        let errors = if d.errors + g.errors > 0 {
            format!(" (errors: {} direct, {} gateway)", d.errors, g.errors)
        } else {
            String::new()
        };
        let result = format!(
            "gateway {:.1}/s vs direct {:.1}/s = {ratio:.2}×{errors}",
            g.throughput(),
            d.throughput()
        );
        let who = match c {
            1 => "1 client (sequential)".to_string(),
            c => format!("{c} clients"),
        };
        let measure = format!("{who}: throughput");
        if c == 64 {
            report.target(section, &measure, result, "≥ 0.97 × direct", ratio >= 0.97);
        } else {
            report.info(section, &measure, result);
        }
        report.info(
            section,
            &format!("{who}: p50 / p99 latency"),
            format!(
                "gateway {} / {} vs direct {} / {} (p50 {:.2}×, p99 {:.2}×)",
                us(g.pct(50.0)),
                us(g.pct(99.0)),
                us(d.pct(50.0)),
                us(d.pct(99.0)),
                g.pct(50.0) / d.pct(50.0),
                g.pct(99.0) / d.pct(99.0)
            ),
        );
        report.info(
            section,
            &format!("{who}: OpenCode CPU per completion"),
            format!(
                "via gateway {:.1} ms vs direct {:.1} ms",
                cpu_g * 1000.0 / g.ok().max(1) as f64,
                cpu_d * 1000.0 / d.ok().max(1) as f64
            ),
        );
        if c == 64 {
            report.info(
                section,
                "64 clients: direct deleting each session after its completion",
                format!(
                    "{:.1}/s, gateway = {:.2}× of it; OpenCode CPU per completion {:.1} ms",
                    dd.throughput(),
                    g.throughput() / dd.throughput(),
                    cpu_dd * 1000.0 / dd.ok().max(1) as f64
                ),
            );
        }
    }
}
