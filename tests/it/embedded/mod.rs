//! Operations (issue 10): the embedded OpenCode the gateway starts when no `--opencode-url` is
//! given (readiness, models and chat through it; loopback and a password; restarted when it
//! dies, counted in the metrics; never outliving the gateway, however the gateway ends), and
//! the start-up checks (`--check-config` with secrets masked, exit 2 naming a bad key, a
//! warning for an unreachable OpenCode).
//!
//! The embedded OpenCode is the pinned binary (`OPENCODE_BIN`), with HOME and XDG_* in a temp
//! dir and an `opencode.json` for the scripted model (`opencode.config_file`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use support::gateway::{test_client, UNUSED_OPENCODE_URL};
use support::opencode::{opencode_bin, opencode_config};
use support::procs;
use support::sse::{final_error, SseReader};
use support::{ask, eventually, reply_of, streaming, Gateway, GatewayOptions, MockModel};
use support::{ECHO, THINKER, VISION};

/// A gateway running its own OpenCode, and what that OpenCode needs.
struct Embedded {
    /// OpenCode 2.x (the default the gateway installs) rather than 1.x.
    v2: bool,
    gw: Gateway,
    _mock: MockModel,
    _dir: TempDir,
    client: reqwest::Client,
}

/// Starts a gateway without `--opencode-url`: it starts OpenCode (1.x) itself.
async fn start_embedded() -> Embedded {
    start_embedded_version(false).await
}

/// The same with OpenCode 2.x (`v2`) or 1.x.
async fn start_embedded_version(v2: bool) -> Embedded {
    let mock = MockModel::start().await;
    let bin = match v2 {
        true => tokio::task::spawn_blocking(support::opencode::opencode_v2_bin).await,
        false => tokio::task::spawn_blocking(opencode_bin).await,
    }
    .expect("the opencode binary");
    let dir = tempfile::Builder::new()
        .prefix("embedded-")
        .tempdir()
        .expect("tempdir");
    let home = dir.path().join("home");
    let project = dir.path().join("project");
    for d in [&home, &project] {
        std::fs::create_dir_all(d).unwrap();
    }
    let config_file = dir.path().join("opencode.json");
    let cfg = opencode_config(&mock.base_url(), &Value::Null);
    std::fs::write(&config_file, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let toml = format!(
        "[opencode]\nconfig_file = {:?}\ndirectory = {:?}\n",
        config_file.display().to_string(),
        project.display().to_string()
    );
    let path = |p: &Path| p.display().to_string();
    let opts = GatewayOptions {
        no_default_args: true,
        ..GatewayOptions::default()
            .args(["--listen", "127.0.0.1:0"])
            .config(toml)
            .env("OPENCODE_BIN", path(&bin))
            .env("HOME", path(&home))
            .env("XDG_CONFIG_HOME", path(&home.join(".config")))
            .env("XDG_DATA_HOME", path(&home.join(".local/share")))
            .env("XDG_CACHE_HOME", path(&home.join(".cache")))
            .env("XDG_STATE_HOME", path(&home.join(".local/state")))
    };
    let gw = Gateway::start_with(UNUSED_OPENCODE_URL, opts).await;
    Embedded {
        v2,
        gw,
        _mock: mock,
        _dir: dir,
        client: test_client(),
    }
}

impl Embedded {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        support::api::read_json(resp).await
    }

    async fn chat(&self, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url("/v1/chat/completions"))
            .json(body)
            .send()
            .await
            .expect("POST");
        support::api::read_json(resp).await
    }

    fn gateway_pid(&self) -> u32 {
        self.gw.pid().expect("the gateway runs")
    }

    /// The gateway's OpenCode child, waiting up to 30 s for one.
    async fn opencode_pid(&self) -> u32 {
        let gw = self.gateway_pid();
        let found = eventually(Duration::from_secs(30), || async move {
            procs::opencode_child(gw).is_some()
        })
        .await;
        assert!(found, "the gateway has no `opencode serve` child");
        procs::opencode_child(gw).unwrap()
    }

    /// Polls `/health` until 200 (60 s at most): the statuses seen, in order, deduplicated.
    async fn wait_ready(&self) -> Vec<u16> {
        let mut seen: Vec<u16> = Vec::new();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.get("/health").await.0.as_u16();
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if status == 200 || Instant::now() > until {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let (m, _) = support::prometheus::scrape(&self.client, &self.url("/metrics"), None).await;
        m.sum(name, &[])
    }
}

// ---------------------------------------------------------------------------------------------
// The embedded OpenCode
// ---------------------------------------------------------------------------------------------

/// `/v1/models` lists the scripted provider's models from the embedded OpenCode's config.
async fn models_come_from_the_embedded_opencode(e: &Embedded) {
    let (status, v) = e.get("/v1/models").await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for id in [ECHO, VISION, THINKER] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
}

/// A chat completes through the embedded OpenCode and the scripted model.
async fn a_chat_completes(e: &Embedded) {
    let (status, v) = e.chat(&ask(ECHO, "hello embedded")).await;
    assert_eq!(reply_of(status, &v), "echo: hello embedded");
}

/// The embedded OpenCode listens on loopback only (`--hostname 127.0.0.1`, and so does its
/// socket), and wants a password: a request to its port without one is a 401.
async fn opencode_is_loopback_and_password_protected(e: &Embedded) {
    let pid = e.opencode_pid().await;
    let cmd = procs::cmdline(pid);
    assert_eq!(
        procs::arg_after(&cmd, "--hostname").as_deref(),
        Some("127.0.0.1"),
        "{cmd:?}"
    );
    let port: u16 = procs::arg_after(&cmd, "--port")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no --port in {cmd:?}"));
    let addrs = procs::listening_addresses(port);
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a == "127.0.0.1"),
        "OpenCode's port {port} listens on {addrs:?}"
    );
    let paths = match e.v2 {
        true => ["/api/session", "/api/model", "/api/event"],
        false => ["/session", "/config/providers", "/event"],
    };
    for path in paths {
        let resp = test_client()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("OpenCode answers");
        assert_eq!(
            resp.status(),
            401,
            "GET {path} on the embedded OpenCode without its password"
        );
    }
    // The password is a random one of this start, which the gateway keeps to itself: it opens
    // OpenCode, and shows nowhere in the gateway's logs or answers.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("OpenCode's environment");
    let password = environ
        .split(|&b| b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix("OPENCODE_SERVER_PASSWORD="))
        .expect("OPENCODE_SERVER_PASSWORD in OpenCode's environment")
        .to_string();
    assert!(
        password.len() >= 32,
        "a weak password: {} characters",
        password.len()
    );
    let resp = test_client()
        .get(format!("http://127.0.0.1:{port}{}", paths[0]))
        .basic_auth("opencode", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "with the password");
    for path in ["/status", "/health", "/metrics", "/v1/models"] {
        let (_, body) = e.get(path).await;
        assert!(
            !body.to_string().contains(&password),
            "{path} shows the password"
        );
    }
    assert!(
        !e.gw.logs().contains(&password) && !e.gw.stdout().contains(&password),
        "the gateway logged OpenCode's password"
    );
}

/// SIGKILL of the embedded OpenCode mid-run: the in-flight stream ends with an OpenAI error
/// event (no `[DONE]`) and the in-flight non-streaming request with a 5xx in OpenAI's shape;
/// OpenCode comes back (a new pid), the gateway is ready again, a chat works, and
/// `portatek_opencode_restarts_total` counts the restart.
async fn a_killed_opencode_is_restarted_on(e: &Embedded) {
    let old = e.opencode_pid().await;
    let restarts_before = e.metric("portatek_opencode_restarts_total").await;

    let resp = e
        .client
        .post(e.url("/v1/chat/completions"))
        .json(&streaming(ask(ECHO, "stream [slow:200] [chunks:40]")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let first = reader.until_content(Duration::from_secs(30)).await;
    assert!(
        first.iter().any(|f| f.content().is_some()),
        "no content before the kill: {first:?}"
    );
    let plain = {
        let client = e.client.clone();
        let url = e.url("/v1/chat/completions");
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .json(&ask(ECHO, "plain [slow:200] [chunks:40]"))
                .send()
                .await
                .unwrap();
            support::api::read_json(resp).await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    procs::signal(old, libc::SIGKILL);

    let rest = tokio::time::timeout(
        Duration::from_secs(30),
        reader.rest(Duration::from_secs(30)),
    )
    .await
    .expect("the stream must end after OpenCode died");
    let payloads = support::sse::datas(&rest);
    final_error(&payloads);
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), plain)
        .await
        .expect("the non-streaming request must end after OpenCode died")
        .unwrap();
    assert!(status.is_server_error(), "{status}: {body}");
    support::schema::assert_valid("ErrorResponse", &body);

    assert!(
        procs::wait_gone(old, Duration::from_secs(5)).await,
        "the old OpenCode still runs"
    );
    let gw = e.gateway_pid();
    let back = eventually(Duration::from_secs(30), || async move {
        procs::opencode_child(gw).is_some_and(|p| p != old)
    })
    .await;
    assert!(back, "no new OpenCode within 30 s");
    let seen = e.wait_ready().await;
    assert_eq!(
        seen.last(),
        Some(&200),
        "/health after the restart: {seen:?}"
    );
    let (status, v) = e.chat(&ask(ECHO, "after the restart")).await;
    assert_eq!(reply_of(status, &v), "echo: after the restart");
    let restarts = e.metric("portatek_opencode_restarts_total").await;
    assert_eq!(restarts, restarts_before + 1.0, "restarts counted");
}

/// An embedded OpenCode's gateway, started and waited for: `readiness` is what `/health` said
/// while it started.
struct ReadyEmbedded {
    e: Embedded,
    readiness: Vec<u16>,
}

impl support::shared::BedLogs for ReadyEmbedded {
    fn logs(&self) -> String {
        self.e.gw.logs()
    }
}

async fn ready_embedded() -> ReadyEmbedded {
    ready_embedded_version(false).await
}

async fn ready_embedded_v2() -> ReadyEmbedded {
    ready_embedded_version(true).await
}

async fn ready_embedded_version(v2: bool) -> ReadyEmbedded {
    let e = start_embedded_version(v2).await;
    let readiness = e.wait_ready().await;
    ReadyEmbedded { e, readiness }
}

/// What one embedded OpenCode does while it runs, on a bed the tests share (started once):
/// ready after it, models and chats from it, loopback and password-protected.
mod an_embedded_opencode {
    use super::*;

    static BED: support::BedPool<ReadyEmbedded> = support::BedPool::new();

    /// Started without `--opencode-url`, the gateway is not ready (503) until its own
    /// OpenCode is, then ready (200), and never flips back while starting.
    #[test]
    fn readiness_goes_from_503_to_200() {
        BED.run(ready_embedded, |b| async move {
            assert_eq!(
                b.readiness,
                [503, 200],
                "statuses of /health while the embedded OpenCode started"
            );
        });
    }

    #[test]
    fn models_come_from_the_embedded_opencode() {
        BED.run(ready_embedded, |b| {
            super::models_come_from_the_embedded_opencode(&b.e)
        });
    }

    #[test]
    fn a_chat_completes() {
        BED.run(ready_embedded, |b| super::a_chat_completes(&b.e));
    }

    #[test]
    fn opencode_is_loopback_and_password_protected() {
        BED.run(ready_embedded, |b| {
            super::opencode_is_loopback_and_password_protected(&b.e)
        });
    }
}

/// The same with OpenCode 2.x, the version the gateway installs by default.
mod an_embedded_opencode_2 {
    use super::*;

    static BED: support::BedPool<ReadyEmbedded> = support::BedPool::new();

    #[test]
    fn readiness_goes_from_503_to_200() {
        // 2.x starts in well under a second: the first look may already find it ready.
        BED.run(ready_embedded_v2, |b| async move {
            assert!(
                b.readiness == [503, 200] || b.readiness == [200],
                "statuses of /health while the embedded OpenCode started: {:?}",
                b.readiness
            );
        });
    }

    #[test]
    fn models_come_from_the_embedded_opencode() {
        BED.run(ready_embedded_v2, |b| {
            super::models_come_from_the_embedded_opencode(&b.e)
        });
    }

    #[test]
    fn a_chat_completes() {
        BED.run(ready_embedded_v2, |b| super::a_chat_completes(&b.e));
    }

    #[test]
    fn opencode_is_loopback_and_password_protected() {
        BED.run(ready_embedded_v2, |b| {
            super::opencode_is_loopback_and_password_protected(&b.e)
        });
    }
}

/// A killed embedded OpenCode is restarted, ready again, counted (a bed of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_opencode_is_restarted() {
    let b = ready_embedded().await;
    assert_eq!(b.readiness.last(), Some(&200), "{:?}", b.readiness);
    self::a_killed_opencode_is_restarted_on(&b.e).await;
}

/// SIGTERM of the gateway stops its OpenCode, and nothing of OpenCode's process group is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_gateway_leaves_no_opencode() {
    let mut b = ready_embedded().await;
    assert_eq!(b.readiness.last(), Some(&200), "{:?}", b.readiness);
    let oc = b.e.opencode_pid().await;
    let status = b.e.gw.terminate(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway did not exit cleanly after SIGTERM: {status:?}"
    );
    assert!(
        procs::wait_gone(oc, Duration::from_secs(5)).await,
        "OpenCode {oc} still runs after the gateway exited"
    );
    let left = procs::group_members(oc);
    assert!(
        left.is_empty(),
        "left in OpenCode's process group: {left:?}"
    );
}

/// SIGKILL of the gateway (no chance to clean up) still takes its OpenCode down: the parent-
/// death signal kills it, and nothing of its process group is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_gateway_leaves_no_opencode() {
    let mut e = start_embedded().await;
    let ready = e.wait_ready().await;
    assert_eq!(ready.last(), Some(&200), "{ready:?}\n{}", e.gw.logs());
    let oc = e.opencode_pid().await;
    e.gw.kill().await;
    assert!(
        procs::wait_gone(oc, Duration::from_secs(5)).await,
        "OpenCode {oc} outlived its SIGKILLed gateway"
    );
    let left = procs::group_members(oc);
    assert!(
        left.is_empty(),
        "left in OpenCode's process group: {left:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Start-up checks
// ---------------------------------------------------------------------------------------------

mod startup_checks;
