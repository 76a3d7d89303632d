//! Helpers of the container test: podman, the build context, processes in the container.

use super::*;

pub(super) const BASE_IMAGE: &str = "docker.io/library/debian:bookworm-slim";
pub(super) const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_portatek-gateway");
pub(super) const API_KEY: &str = "container-test-key";
/// Below these machines' hard limits (podman's defaults are above them).
pub(super) const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=10000:10000",
    "--ulimit",
    "nproc=1000:1000",
];

use crate::support::opencode::opencode_v2_bin;

pub(super) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `podman ARGS` with a time bound; the process is killed when the bound passes.
pub(super) async fn podman(args: &[&str], bound: Duration) -> Output {
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

pub(super) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(super) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Why containers cannot run here, if they cannot.
pub(super) async fn missing_prerequisite() -> Option<String> {
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
pub(super) struct Cleanup {
    pub(super) container: String,
    pub(super) image: String,
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
pub(super) fn copy_gateway(dest: &Path) {
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
pub(super) fn build_context(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).expect("create dist/ in the build context");
    copy_gateway(&dist.join("portatek-gateway"));
    let opencode = opencode_v2_bin();
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
pub(super) fn process_tree(root: u32) -> Vec<u32> {
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
pub(super) fn process_status(pid: u32) -> Option<(String, Vec<u32>, u64)> {
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
pub(super) async fn get(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> Option<(u16, String)> {
    let mut req = client.get(url).timeout(Duration::from_secs(5));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.unwrap_or_default()))
}

/// Polls `url` until it answers 200, up to `bound`; returns how long it took, or the last answer.
pub(super) async fn wait_for_200(
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
