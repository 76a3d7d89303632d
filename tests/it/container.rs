#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]
//! The container image, built and run for real with podman.
//!
//! No container registry is reachable from CI, so the `runtime-prebuilt` stage of the
//! Dockerfile is built: it is the shipped `runtime` stage with the two binaries taken from the
//! build context (this test's gateway binary and the pinned OpenCode) instead of the rust and
//! node build stages. Its base, `docker.io/library/debian:bookworm-slim`, is made locally from
//! Debian's packages by `.ci/prepare-containers.sh` (debootstrap).
//!
//! Where podman or that base image is missing the test prints `skipped: …` and passes, unless
//! `PORTATEK_REQUIRE_CONTAINERS=1` (as `.ci/run` sets), where it fails.
//! Podman's settings for these machines come from `CONTAINERS_CONF` (`.ci/containers.conf`);
//! the ulimits are also passed on the command line, so a plain `cargo test` works too.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

const BASE_IMAGE: &str = "docker.io/library/debian:bookworm-slim";
const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_portatek-gateway");
const API_KEY: &str = "container-test-key";
/// Below these machines' hard limits (podman's defaults are above them).
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=10000:10000",
    "--ulimit",
    "nproc=1000:1000",
];

use crate::support::opencode::opencode_bin;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `podman ARGS` with a time bound; the process is killed when the bound passes.
async fn podman(args: &[&str], bound: Duration) -> Output {
    let child = Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"));
    match tokio::time::timeout(bound, child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("podman {args:?}: {e}")),
        Err(_) => panic!("podman {args:?} did not finish within {bound:?}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Why containers cannot run here, if they cannot.
async fn missing_prerequisite() -> Option<String> {
    let version = Command::new("podman")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    if !matches!(&version, Ok(o) if o.status.success()) {
        return Some("podman is not installed (Debian: apt-get install podman runc)".into());
    }
    let exists = podman(&["image", "exists", BASE_IMAGE], Duration::from_secs(60)).await;
    if !exists.status.success() {
        return Some(format!(
            "the base image {BASE_IMAGE} is not in podman's storage \
             (no registry here: .ci/prepare-containers.sh makes it with debootstrap)"
        ));
    }
    None
}

/// Removes what the test made (container, image) however it ends.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = std::process::Command::new("podman")
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["rm", "--force", "--time", "0", &self.container]);
        quiet(&["rmi", "--force", &self.image]);
    }
}

/// Copies the gateway binary without its debug info (130 MB → about 30 MB) when objcopy exists.
fn copy_gateway(dest: &Path) {
    let stripped = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(GATEWAY_BIN)
        .arg(dest)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(GATEWAY_BIN, dest).expect("copy the gateway binary into the build context");
    }
}

/// The build context of the `runtime-prebuilt` stage: the files its stages COPY.
fn build_context(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).expect("create dist/ in the build context");
    copy_gateway(&dist.join("portatek-gateway"));
    let opencode = opencode_bin();
    std::fs::copy(&opencode, dist.join("opencode"))
        .unwrap_or_else(|e| panic!("copy {} into the build context: {e}", opencode.display()));
    for bin in ["portatek-gateway", "opencode"] {
        std::fs::set_permissions(dist.join(bin), std::fs::Permissions::from_mode(0o755))
            .expect("make the binaries executable");
    }
    std::fs::copy(
        repo().join("config.example.toml"),
        dir.join("config.example.toml"),
    )
    .expect("copy config.example.toml into the build context");
}

/// Every process of the container (its PID 1 and all descendants), by host PID.
fn process_tree(root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// `(name, real/effective/saved/fs uids, resident KiB)` of a host process.
fn process_status(pid: u32) -> Option<(String, Vec<u32>, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let uids = field("Uid:")
        .split_whitespace()
        .filter_map(|u| u.parse().ok())
        .collect();
    let rss = field("VmRSS:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0);
    Some((field("Name:"), uids, rss))
}

/// GET `url` (with the key when given): status and body; `None` while nothing answers.
async fn get(client: &reqwest::Client, url: &str, key: Option<&str>) -> Option<(u16, String)> {
    let mut req = client.get(url).timeout(Duration::from_secs(5));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.unwrap_or_default()))
}

/// Polls `url` until it answers 200, up to `bound`; returns how long it took, or the last answer.
async fn wait_for_200(
    client: &reqwest::Client,
    url: &str,
    bound: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = "no answer".to_string();
    while start.elapsed() < bound {
        match get(client, url, None).await {
            Some((200, _)) => return Ok(start.elapsed()),
            Some((status, body)) => last = format!("{status} {body}"),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// The image builds from the Dockerfile and works as shipped, in a container run the way the
/// README and the Kubernetes manifests run it (read-only root file system, tmpfs HOME, non-root,
/// API keys from the environment, no OpenCode configured): `/livez` answers from the host
/// through the published port; `/health` turns 200, so the gateway started its embedded OpenCode
/// inside the container and found it healthy; `/v1/models` is 401 without the key and lists
/// OpenCode's models with it; the image's HEALTHCHECK (`portatek-gateway --healthcheck`)
/// passes; every process runs as uid 10001; the root file system is read-only; logs are JSON
/// lines that say OpenCode is embedded; and `podman stop` (SIGTERM) ends it promptly with
/// exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_and_serves_from_a_container() {
    if let Some(why) = missing_prerequisite().await {
        if std::env::var("PORTATEK_REQUIRE_CONTAINERS").as_deref() == Ok("1") {
            panic!(
                "containers are required (PORTATEK_REQUIRE_CONTAINERS=1) but {why}; \
                 run .ci/prepare-containers.sh"
            );
        }
        eprintln!("skipped: container image test: {why}");
        return;
    }
    let started = Instant::now();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let cleanup = Cleanup {
        container: format!("portatek-container-test-{unique}"),
        image: format!("localhost/portatek-gateway-test:{unique}"),
    };
    let (name, image) = (cleanup.container.as_str(), cleanup.image.as_str());

    // Build.
    let ctx = tempfile::Builder::new()
        .prefix("container-test-ctx-")
        .tempdir_in(std::env::temp_dir())
        .expect("create the build context dir");
    build_context(ctx.path());
    let dockerfile = repo().join("Dockerfile");
    let dockerfile = dockerfile.to_str().expect("UTF-8 repository path");
    let context = ctx.path().to_str().expect("UTF-8 temp path");
    let mut args = vec![
        "build",
        // HEALTHCHECK exists only in the docker image format.
        "--format",
        "docker",
        "--target",
        "runtime-prebuilt",
        // No cached intermediate images left behind (nothing to prune afterwards).
        "--layers=false",
        "--pull=never",
        "-f",
        dockerfile,
        "-t",
        image,
    ];
    args.extend(ULIMITS);
    args.push(context);
    let build_start = Instant::now();
    let out = podman(&args, Duration::from_secs(600)).await;
    assert!(
        out.status.success(),
        "podman build failed ({}):\n{}",
        out.status,
        tail(&text(&out), 40)
    );
    let build_time = build_start.elapsed();
    drop(ctx);
    let out = podman(
        &[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{json .HealthCheck}}",
            image,
        ],
        Duration::from_secs(30),
    )
    .await;
    let inspect = text(&out);
    assert!(
        inspect.starts_with("10001:10001 ") && inspect.contains("--healthcheck"),
        "the image should run as 10001:10001 with the --healthcheck HEALTHCHECK: {inspect}"
    );

    // Run as the docs and the Deployment do: read-only root with exactly two writable paths,
    // HOME and /tmp (podman would add /var/tmp and /run; Docker and Kubernetes do not), keys
    // from the environment.
    let key_env = format!("PORTATEK_API_KEYS={API_KEY}");
    let mut args = vec![
        "run",
        "--detach",
        "--name",
        name,
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/home/app:rw,size=256m,mode=0700,U",
        "--tmpfs",
        "/tmp:rw,size=256m,mode=1777",
        "--publish",
        "127.0.0.1::8080",
        "--env",
        &key_env,
        // OpenCode takes its model list from its bundled snapshot, not from the internet.
        "--env",
        "OPENCODE_DISABLE_MODELS_FETCH=1",
    ];
    args.extend(ULIMITS);
    args.push(image);
    let out = podman(&args, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "podman run failed ({}):\n{}",
        out.status,
        tail(&text(&out), 20)
    );
    let run_start = Instant::now();
    let logs = || async {
        let out = podman(&["logs", name], Duration::from_secs(30)).await;
        tail(&text(&out), 60)
    };
    let out = podman(&["port", name, "8080/tcp"], Duration::from_secs(30)).await;
    let published = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port = published
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no published port for 8080/tcp: {}", text(&out)));
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build an HTTP client");

    // Liveness, then readiness (the embedded OpenCode started and is healthy).
    let livez = match wait_for_200(&client, &format!("{url}/livez"), Duration::from_secs(60)).await
    {
        Ok(t) => t,
        Err(last) => panic!(
            "/livez did not answer 200 from the container within 60 s (last: {last}); logs:\n{}",
            logs().await
        ),
    };
    let health =
        match wait_for_200(&client, &format!("{url}/health"), Duration::from_secs(120)).await {
            Ok(_) => run_start.elapsed(),
            Err(last) => panic!(
                "/health did not turn 200 within 120 s (last: {last}); logs:\n{}",
                logs().await
            ),
        };

    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };

    // Keys.
    let models_url = format!("{url}/v1/models");
    let anonymous = get(&client, &models_url, None).await;
    check(
        matches!(&anonymous, Some((401, _))),
        format!("GET /v1/models without a key should be 401: {anonymous:?}"),
    );
    match get(&client, &models_url, Some(API_KEY)).await {
        Some((200, body)) => {
            let ids: Vec<String> = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["data"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m["id"].as_str().map(String::from))
                .collect();
            check(
                ids.iter().any(|id| id.starts_with("opencode/")),
                format!("/v1/models should list OpenCode's opencode/* models: {body}"),
            );
        }
        other => check(
            false,
            format!("GET /v1/models with the key should be 200: {other:?}"),
        ),
    }

    // The image's HEALTHCHECK, as docker would run it.
    let out = podman(&["healthcheck", "run", name], Duration::from_secs(60)).await;
    check(
        out.status.success(),
        format!(
            "podman healthcheck run should pass ({}): {}",
            out.status,
            text(&out)
        ),
    );

    // Non-root, seen by the host kernel: the whole process tree (tini, gateway, OpenCode).
    let out = podman(
        &["inspect", "--format", "{{.State.Pid}}", name],
        Duration::from_secs(30),
    )
    .await;
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no PID for the container: {}", text(&out)));
    let processes: Vec<(String, Vec<u32>, u64)> = process_tree(pid)
        .into_iter()
        .filter_map(process_status)
        .collect();
    let names: Vec<&str> = processes.iter().map(|p| p.0.as_str()).collect();
    check(
        names.iter().any(|n| n.starts_with("portatek-gatewa"))
            && names.iter().any(|n| n.starts_with("opencode")),
        format!("the container should run the gateway and OpenCode: {names:?}"),
    );
    for (process, uids, _) in &processes {
        check(
            !uids.is_empty() && uids.iter().all(|&u| u == 10001),
            format!("process {process} should run as uid 10001, runs as {uids:?}"),
        );
    }
    let memory: Vec<String> = processes
        .iter()
        .map(|(process, _, kib)| format!("{process} {} MiB", kib / 1024))
        .collect();

    // Read-only root file system (and no writable paths beyond HOME and /tmp).
    for path in ["/usr/local/bin/written", "/etc/written", "/var/tmp/written"] {
        let out = podman(&["exec", name, "touch", path], Duration::from_secs(30)).await;
        check(
            !out.status.success(),
            format!("{path} should not be writable"),
        );
    }

    // JSON logs (the image sets PORTATEK_LOG_FORMAT=json), embedded OpenCode by default.
    let out = podman(&["logs", name], Duration::from_secs(30)).await;
    let log_text = String::from_utf8_lossy(&out.stderr).to_string();
    let starting = log_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "starting");
    check(
        starting
            .as_ref()
            .is_some_and(|v| v["fields"]["opencode"] == "embedded"),
        format!(
            "a JSON `starting` log line with opencode=embedded expected; stderr:\n{}",
            tail(&log_text, 20)
        ),
    );

    // SIGTERM: drained and stopped well before podman's SIGKILL (20 s).
    let stop_start = Instant::now();
    let out = podman(&["stop", "--time", "20", name], Duration::from_secs(60)).await;
    let stop_time = stop_start.elapsed();
    check(
        out.status.success() && stop_time < Duration::from_secs(15),
        format!(
            "podman stop should end the container promptly: {} in {stop_time:?}",
            text(&out)
        ),
    );
    let out = podman(
        &["inspect", "--format", "{{.State.ExitCode}}", name],
        Duration::from_secs(30),
    )
    .await;
    let exit_code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    check(
        exit_code == "0",
        format!("the gateway should exit 0 on SIGTERM, exited {exit_code}"),
    );

    eprintln!(
        "[container] build {build_time:.1?}, /livez after {livez:.1?}, /health 200 {health:.1?} \
         after start, resident memory: {}; stop {stop_time:.1?}, total {:.1?}",
        memory.join(", "),
        started.elapsed()
    );
    if !failures.is_empty() {
        panic!(
            "{} container check(s) failed:\n- {}\nlogs:\n{}",
            failures.len(),
            failures.join("\n- "),
            logs().await
        );
    }
}
