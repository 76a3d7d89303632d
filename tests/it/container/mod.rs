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

mod helpers;

use helpers::*;

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
