//! The official openai-python SDK as a client of the gateway: `tests/python/*.py` scripts run
//! with the interpreter of the pinned venv that `.ci/prepare-python.sh` makes (`PORTATEK_PYTHON`,
//! else `portatek-python` on `PATH`, else `<repo>/target/ci-bin/portatek-python`). Without it the
//! check is skipped with a printed notice — unless `PORTATEK_REQUIRE_TOOLS=1` (as `.ci/run`
//! sets), which makes a missing interpreter a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::opencode::set_pdeathsig;

const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");

/// The venv interpreter behind `path`. `.ci/prepare-python.sh` links `portatek-python` to
/// `<venv>/bin/python`, and Python finds its venv (`pyvenv.cfg`) next to the path it was
/// started by, without resolving links: started through the link it would not see the venv's
/// packages. So links are followed one at a time to the first path with `../pyvenv.cfg`.
fn venv_interpreter(path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    for _ in 0..8 {
        let in_venv = current
            .parent()
            .and_then(Path::parent)
            .is_some_and(|root| root.join("pyvenv.cfg").is_file());
        if in_venv {
            return current;
        }
        match std::fs::read_link(&current) {
            Ok(target) => {
                current = match current.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                }
            }
            Err(_) => break,
        }
    }
    path.to_path_buf()
}

/// The interpreter to use, if any (see the module docs for where it is looked for).
pub fn interpreter() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PORTATEK_PYTHON").filter(|p| !p.is_empty()) {
        return Some(venv_interpreter(Path::new(&p)));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("portatek-python");
            if candidate.is_file() {
                return Some(venv_interpreter(&candidate));
            }
        }
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-bin/portatek-python");
    local.is_file().then(|| venv_interpreter(&local))
}

pub use super::tools_required;

/// Runs `tests/python/<script>` against the gateway at `gateway_url` (as `api_key`, when given)
/// and returns the JSON object it prints last; `None` (after printing why) when no interpreter
/// with openai-python is found and the tools are not required. Panics with its output when it
/// fails or takes longer than `timeout`.
pub async fn run_script(
    script: &str,
    gateway_url: &str,
    api_key: Option<&str>,
    timeout: Duration,
) -> Option<Value> {
    let python = match interpreter() {
        Some(p) => p,
        None => {
            let why = "no openai-python interpreter (PORTATEK_PYTHON, portatek-python on PATH, \
                       target/ci-bin/portatek-python); run .ci/prepare-python.sh target/ci-bin";
            assert!(
                !tools_required(),
                "required by PORTATEK_REQUIRE_TOOLS=1: {why}"
            );
            eprintln!("skipped: openai-python check of {script}: {why}");
            return None;
        }
    };
    let mut cmd = Command::new(&python);
    cmd.arg(Path::new(PYTHON_DIR).join(script))
        .current_dir(PYTHON_DIR)
        .env("GATEWAY_URL", gateway_url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("PYTHONPATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match api_key {
        Some(k) => cmd.env("API_KEY", k),
        None => cmd.env_remove("API_KEY"),
    };
    set_pdeathsig(&mut cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.expect("wait for python"),
        Err(_) => panic!("python {script} did not finish within {timeout:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("No module named 'openai'") && !tools_required() {
        eprintln!(
            "skipped: openai-python check of {script}: {} has no openai package",
            python.display()
        );
        return None;
    }
    assert!(
        out.status.success(),
        "python {script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Some(serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "python {script} did not print JSON last ({e}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )
    }))
}
