#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Where OpenCode's extra CPU on the gateway's path goes (issue 13), measured at 64 concurrent
//! clients as OpenCode's own CPU time (utime + stime from `/proc/<pid>/stat`) per completion.
//!
//! `cargo bench --bench gap` starts the scripted model and a real `opencode serve` (a gateway
//! only for the gateway phases), then runs each variant `BENCH_ROUNDS` times (default 3),
//! interleaved, `BENCH_N` operations each (default 640) with `BENCH_C` clients (default 64).
//! `BENCH_ONLY=a,b` runs only the named variants. Variants:
//! - `direct`: `POST /session {title}` + synchronous `POST /session/:id/message`, no event
//!   subscriber connected;
//! - `direct+global`: the same while an idle `GET /global/event` subscriber is connected (the
//!   gateway's one subscription);
//! - `direct+delete`: `direct`, then `DELETE /session/:id`;
//! - `async`: create + `prompt_async`, the end read from one shared `GET /global/event`;
//! - `async+meta`: the same with the gateway's session metadata (its exact upstream calls);
//! - `async+delete`: `async`, then `DELETE /session/:id`;
//! - `gateway`: `POST /v1/chat/completions` (non-streaming), each request a new conversation;
//! - `gateway-same`: the same with one identical prompt for every request (as the overhead and
//!   suite benches do): every answer lands under the same pool fingerprint and replaces the
//!   previous one, whose session is deleted;
//! - `delete-only`, `delete-empty`, `get-only`, `create-only`: one call alone (`DELETE` of a
//!   session holding one exchange / of an empty one, `GET /session/:id`, `POST /session`).
//!
//! Before that (unless `BENCH_COUNT=0`), a counting proxy between a second gateway and OpenCode
//! prints the upstream calls per completion the gateway makes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{json, Value};
use support::Gateway;
use tokio::sync::oneshot;

/// CPU seconds (user + system) of `pid` so far, all threads.
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let ticks: u64 = f[11..15].iter().map(|v| v.parse::<u64>().unwrap()).sum();
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Direct client for OpenCode.
struct Direct {
    base: String,
    http: reqwest::Client,
}

impl Direct {
    async fn post(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "POST {path} -> {status}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    async fn create(&self) -> String {
        let v = self.post("/session", &json!({"title": "bench"})).await;
        v["id"].as_str().unwrap().to_string()
    }

    fn body(text: &str) -> Value {
        json!({"parts": [{"type": "text", "text": text}],
               "model": {"providerID": "mock", "modelID": "echo"},
               "tools": {"*": false}})
    }

    async fn sync(&self, text: &str) -> String {
        let id = self.create().await;
        let v = self
            .post(&format!("/session/{id}/message"), &Self::body(text))
            .await;
        assert!(v["info"]["error"].is_null(), "{v}");
        id
    }

    async fn delete(&self, id: &str) {
        let resp = self
            .http
            .delete(format!("{}/session/{id}", self.base))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
}

/// One shared `GET /global/event` subscription, demultiplexed: waits for a session's idle.
#[derive(Clone, Default)]
struct Waiters(Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>);

impl Waiters {
    async fn follow(&self, http: reqwest::Client, url: String) {
        let resp = http
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let this = self.clone();
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::<u8>::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let frame: Vec<u8> = buf.drain(..end + 2).collect();
                    let frame = String::from_utf8_lossy(&frame);
                    for line in frame.lines() {
                        let Some(data) = line.strip_prefix("data: ") else {
                            continue;
                        };
                        let Ok(v) = serde_json::from_str::<Value>(data) else {
                            continue;
                        };
                        let ev = if v.get("payload").is_some() {
                            &v["payload"]
                        } else {
                            &v
                        };
                        if ev["type"] == "session.idle" {
                            if let Some(id) = ev["properties"]["sessionID"].as_str() {
                                if let Some(tx) = this.0.lock().unwrap().remove(id) {
                                    let _ = tx.send(());
                                }
                            }
                        }
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An idle subscriber: reads and discards every byte of an event stream until dropped.
struct Idle(tokio::task::JoinHandle<()>);

impl Idle {
    async fn open(http: &reqwest::Client, url: String) -> Idle {
        let resp = http
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let task = tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            while let Some(Ok(_)) = stream.next().await {}
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        Idle(task)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `n` jobs on `c` concurrent workers; `job(i)` is the i-th completion.
async fn concurrently<F, Fut>(n: usize, c: usize, job: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let next = next.clone();
        let job = job.clone();
        tasks.push(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                job(i).await;
            }
        });
    }
    futures::future::join_all(tasks).await;
}

/// A reverse proxy that counts requests by method and path (session ids folded to `:id`).
async fn counting_proxy(upstream: String) -> (String, Arc<Mutex<BTreeMap<String, usize>>>) {
    let counts = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    #[derive(Clone)]
    struct S {
        upstream: String,
        http: reqwest::Client,
        counts: Arc<Mutex<BTreeMap<String, usize>>>,
    }
    async fn forward(State(s): State<S>, req: Request) -> Response {
        let path = req.uri().path().to_string();
        let key_path: Vec<String> = path
            .split('/')
            .map(|seg| {
                if seg.starts_with("ses_") {
                    ":id".to_string()
                } else {
                    seg.to_string()
                }
            })
            .collect();
        let key = format!("{} {}", req.method(), key_path.join("/"));
        *s.counts.lock().unwrap().entry(key).or_default() += 1;
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or(path);
        let method = req.method().clone();
        let headers = req.headers().clone();
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap();
        let mut rb = s.http.request(method, format!("{}{pq}", s.upstream));
        for (k, v) in headers.iter() {
            if k != "host" && k != "content-length" {
                rb = rb.header(k, v);
            }
        }
        let resp = rb.body(body).send().await.unwrap();
        let mut out = Response::builder().status(resp.status());
        for (k, v) in resp.headers().iter() {
            if k != "content-length" && k != "transfer-encoding" {
                out = out.header(k, v);
            }
        }
        out.body(Body::from_stream(resp.bytes_stream())).unwrap()
    }
    let app = axum::Router::new().fallback(forward).with_state(S {
        upstream,
        http,
        counts: counts.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, counts)
}

async fn gateway_chat(client: &reqwest::Client, url: &str, text: &str) {
    let body = json!({"model": "mock/echo", "messages": [{"role": "user", "content": text}]});
    let resp = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{v}");
}

const VARIANTS: &[&str] = &[
    "direct",
    "direct+global",
    "direct+delete",
    "async",
    "async+meta",
    "gateway",
    "async+delete",
    "gateway-same",
    "delete-only",
    "delete-empty",
    "get-only",
    "create-only",
];

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("BENCH_N", 640);
    let c = env("BENCH_C", 64);
    let rounds = env("BENCH_ROUNDS", 3);
    let only: Vec<String> = std::env::var("BENCH_ONLY")
        .map(|v| v.split(',').map(String::from).collect())
        .unwrap_or_default();
    let variants: Vec<&str> = VARIANTS
        .iter()
        .copied()
        .filter(|v| only.is_empty() || only.iter().any(|o| o == v))
        .collect();

    let mock = support::MockModel::start().await;
    let opencode = support::OpenCode::start(&mock.base_url()).await;
    let oc_url = opencode.url();
    let oc_pid = support::procs::opencode_on_port(opencode.port()).expect("opencode pid");
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let direct = Arc::new(Direct {
        base: oc_url.clone(),
        http: http.clone(),
    });
    let seq = Arc::new(AtomicUsize::new(0));
    let unique = {
        let seq = seq.clone();
        move || format!("bench hello {}", seq.fetch_add(1, Ordering::Relaxed))
    };

    // Warm-up.
    for _ in 0..5 {
        direct.sync(&unique()).await;
    }

    // Upstream calls per completion of the gateway (through a counting proxy).
    if std::env::var("BENCH_COUNT")
        .map(|v| v != "0")
        .unwrap_or(true)
    {
        let (proxy, counts) = counting_proxy(oc_url.clone()).await;
        let gw2 = Gateway::start(&proxy).await;
        for _ in 0..3 {
            gateway_chat(&http, &gw2.url(), &unique()).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        counts.lock().unwrap().clear();
        let k = 64;
        let url = gw2.url();
        let (h, u) = (http.clone(), unique.clone());
        concurrently(k, 16, move |_| {
            let (h, url, text) = (h.clone(), url.clone(), u());
            async move { gateway_chat(&h, &url, &text).await }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("upstream calls per gateway completion (new conversations, {k} completions):");
        for (key, count) in counts.lock().unwrap().iter() {
            println!("  {:40} {:.2}", key, *count as f64 / k as f64);
        }
        counts.lock().unwrap().clear();
        let (h, url) = (http.clone(), gw2.url());
        concurrently(k, 16, move |_| {
            let (h, url) = (h.clone(), url.clone());
            async move { gateway_chat(&h, &url, "bench hello").await }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("upstream calls per gateway completion (one identical prompt, {k} completions):");
        for (key, count) in counts.lock().unwrap().iter() {
            println!("  {:40} {:.2}", key, *count as f64 / k as f64);
        }
        drop(gw2);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut results: BTreeMap<&str, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
    println!("\n{n} completions per phase, {c} clients; OpenCode CPU ms / completion, gateway CPU ms / completion, completions/s, model calls / completion");
    for round in 0..rounds {
        for &variant in &variants {
            let gateway = if variant.starts_with("gateway") {
                let g = Gateway::start(&oc_url).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                for _ in 0..3 {
                    gateway_chat(&http, &g.url(), &unique()).await;
                }
                Some(g)
            } else {
                None
            };
            let gw_pid = gateway.as_ref().and_then(|g| g.pid());
            let gw_url = gateway.as_ref().map(|g| g.url()).unwrap_or_default();
            let _idle = match variant {
                "direct+global" => Some(Idle::open(&http, format!("{oc_url}/global/event")).await),
                _ => None,
            };
            let waiters = Waiters::default();
            if variant.starts_with("async") {
                waiters
                    .follow(http.clone(), format!("{oc_url}/global/event"))
                    .await;
            }
            // Sessions the delete-only variants delete (made before the measured phase).
            let doomed = Arc::new(Mutex::new(Vec::<String>::new()));
            if variant.starts_with("delete") || variant == "get-only" {
                let (d, u, doomed) = (direct.clone(), unique.clone(), doomed.clone());
                concurrently(n, c, move |_| {
                    let (d, doomed, text) = (d.clone(), doomed.clone(), u());
                    async move {
                        let id = if variant == "delete-empty" {
                            d.create().await
                        } else {
                            d.sync(&text).await
                        };
                        doomed.lock().unwrap().push(id);
                    }
                })
                .await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let calls0 = mock.call_count();
            let gw_cpu = move || gw_pid.map(cpu_secs).unwrap_or(0.0);
            let (oc0, gw0, t0) = (cpu_secs(oc_pid), gw_cpu(), Instant::now());
            let (d, b, h, u, w, doomed) = (
                direct.clone(),
                gw_url.clone(),
                http.clone(),
                unique.clone(),
                waiters.clone(),
                doomed.clone(),
            );
            concurrently(n, c, move |i| {
                let (d, b, h, w) = (d.clone(), b.clone(), h.clone(), w.clone());
                let doomed = doomed.lock().unwrap().get(i).cloned();
                let text = u();
                async move {
                    match variant {
                        "direct" | "direct+global" | "direct+event" => {
                            d.sync(&text).await;
                        }
                        "direct+delete" => {
                            let id = d.sync(&text).await;
                            d.delete(&id).await;
                        }
                        "async" | "async+meta" | "async+delete" => {
                            let id = if variant == "async+meta" {
                                let marker = uuid::Uuid::new_v4().simple().to_string();
                                let v = d
                                    .post(
                                        "/session",
                                        &json!({"title": "bench",
                                                "metadata": {"portatek": {"create": marker}}}),
                                    )
                                    .await;
                                v["id"].as_str().unwrap().to_string()
                            } else {
                                d.create().await
                            };
                            let (tx, rx) = oneshot::channel();
                            w.0.lock().unwrap().insert(id.clone(), tx);
                            d.post(&format!("/session/{id}/prompt_async"), &Direct::body(&text))
                                .await;
                            tokio::time::timeout(Duration::from_secs(120), rx)
                                .await
                                .unwrap()
                                .unwrap();
                            if variant == "async+delete" {
                                d.delete(&id).await;
                            }
                        }
                        "delete-only" | "delete-empty" => d.delete(&doomed.unwrap()).await,
                        "get-only" => {
                            let id = doomed.unwrap();
                            let resp = h
                                .get(format!("{}/session/{id}", d.base))
                                .send()
                                .await
                                .unwrap();
                            assert!(resp.status().is_success());
                            let _ = resp.bytes().await;
                        }
                        "create-only" => {
                            d.create().await;
                        }
                        "gateway" => gateway_chat(&h, &b, &text).await,
                        "gateway-same" => gateway_chat(&h, &b, "bench hello").await,
                        other => panic!("unknown variant {other}"),
                    }
                }
            })
            .await;
            // Background work the phase caused (deletes off the request path) counts too.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let wall = t0.elapsed().as_secs_f64() - 1.5;
            let oc = (cpu_secs(oc_pid) - oc0) * 1000.0 / n as f64;
            let gw = (gw_cpu() - gw0) * 1000.0 / n as f64;
            let rate = n as f64 / wall;
            let calls = (mock.call_count() - calls0) as f64 / n as f64;
            drop(gateway);
            println!(
                "  round {round} {variant:14} opencode {oc:6.2} ms  gateway {gw:5.2} ms  {rate:6.1}/s  model calls {calls:.2}"
            );
            results
                .entry(variant)
                .or_default()
                .push((oc, gw, rate, calls));
        }
    }
    println!("\nmedians over {rounds} rounds:");
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let base = results
        .get("direct")
        .map(|r| med(r.iter().map(|x| x.0).collect()));
    for (variant, r) in &results {
        let oc = med(r.iter().map(|x| x.0).collect());
        let gw = med(r.iter().map(|x| x.1).collect());
        let rate = med(r.iter().map(|x| x.2).collect());
        let all: Vec<String> = r.iter().map(|x| format!("{:.2}", x.0)).collect();
        println!(
            "  {variant:14} opencode {oc:6.2} ms ({}){}  gateway {gw:5.2} ms  {rate:6.1}/s",
            all.join(", "),
            base.map(|b| format!(" = {:.3} x direct", oc / b))
                .unwrap_or_default()
        );
    }
}
