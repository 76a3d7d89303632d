//! The official openai-node SDK as a client of the gateway: `tests/node/*.mjs` scripts run with
//! `node`, against the `openai` version pinned in `tests/node/package.json` (and its lock file),
//! installed with `npm ci` once into `<target>/openai-node-<version>` under an exclusive file lock,
//! the way [`super::opencode`] installs OpenCode. So an SDK, not our own parser, judges the wire
//! format.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::opencode::set_pdeathsig;

const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");

use super::opencode::target_dir;

/// The `openai` version `tests/node/package.json` pins.
pub fn sdk_version() -> String {
    let text = std::fs::read_to_string(Path::new(NODE_DIR).join("package.json"))
        .expect("read tests/node/package.json");
    let v: Value = serde_json::from_str(&text).expect("tests/node/package.json is JSON");
    v["dependencies"]["openai"]
        .as_str()
        .expect("tests/node/package.json pins `openai`")
        .to_string()
}

/// The directory holding `node_modules/openai` (installed on first use). Blocking.
pub fn sdk_dir() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

fn installed(dir: &Path, version: &str) -> bool {
    std::fs::read_to_string(dir.join("node_modules/openai/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|p| p["version"] == version)
}

fn install() -> PathBuf {
    use fs2::FileExt;
    let version = sdk_version();
    let target = target_dir();
    let dir = target.join(format!("openai-node-{version}"));
    if installed(&dir, &version) {
        return dir;
    }
    std::fs::create_dir_all(&dir).expect("create the openai-node install dir");
    let lock_path = target.join(format!("openai-node-{version}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .expect("open the openai-node install lock");
    lock.lock_exclusive().expect("lock the openai-node install");
    if !installed(&dir, &version) {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(Path::new(NODE_DIR).join(file), dir.join(file))
                .unwrap_or_else(|e| panic!("copy tests/node/{file}: {e}"));
        }
        eprintln!(
            "[testbed] installing openai@{version} (npm ci) into {}",
            dir.display()
        );
        let out = std::process::Command::new("npm")
            .arg("ci")
            .arg("--no-audit")
            .arg("--no-fund")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run npm (is node/npm installed?)");
        if !out.status.success() || !installed(&dir, &version) {
            let _ = fs2::FileExt::unlock(&lock);
            panic!(
                "npm ci (openai@{version}) failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = fs2::FileExt::unlock(&lock);
    dir
}

/// Runs `tests/node/<script>` with `node` against the gateway at `gateway_url` (as `api_key`,
/// when given) and returns the JSON object it prints last. Panics with its output when it fails
/// or takes longer than `timeout`.
pub async fn run_script(
    script: &str,
    gateway_url: &str,
    api_key: Option<&str>,
    timeout: Duration,
) -> Value {
    let sdk = tokio::task::spawn_blocking(sdk_dir)
        .await
        .expect("install openai-node");
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(NODE_DIR).join(script))
        .current_dir(NODE_DIR)
        .env("OPENAI_SDK_DIR", &sdk)
        .env("GATEWAY_URL", gateway_url)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match api_key {
        Some(k) => cmd.env("API_KEY", k),
        None => cmd.env_remove("API_KEY"),
    };
    set_pdeathsig(&mut cmd);
    let child = cmd.spawn().expect("spawn node (is Node.js installed?)");
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.expect("wait for node"),
        Err(_) => panic!("node {script} did not finish within {timeout:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node {script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("node {script} did not print JSON last ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}")
    })
}
