//! The gateway fuzzed from its own OpenAPI description: the description validates as OpenAPI
//! 3.1 (`openapi-spec-validator`), and schemathesis, generating requests for every documented
//! operation against a gateway over a real OpenCode, finds no 5xx, no undocumented status,
//! content type or response shape.
//!
//! Both tools come from PyPI (`.ci/prepare-python.sh`, pinned); without them the test says so
//! and passes, unless `PORTATEK_REQUIRE_TOOLS=1` (as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::python_sdk::{interpreter, tools_required};
use support::{GatewayOptions, OpenCodeOptions};

const ADMIN: &str = "fuzz-admin-key";

/// `schemathesis` next to the Python tools (same venv), if present.
fn schemathesis() -> Option<PathBuf> {
    let python = interpreter()?;
    let text = std::fs::read_to_string(&python).unwrap_or_default();
    // The wrapper `portatek-python` names the venv's interpreter; its `schemathesis` is beside it.
    let venv_python = text
        .lines()
        .find_map(|l| l.strip_prefix("exec \"").and_then(|l| l.split('"').next()))
        .map(PathBuf::from)
        .unwrap_or(python);
    let candidate = venv_python.parent()?.join("schemathesis");
    candidate.is_file().then_some(candidate)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_description_validates_and_fuzzing_finds_nothing() {
    let (Some(python), Some(schemathesis)) = (interpreter(), schemathesis()) else {
        assert!(
            !tools_required(),
            "PORTATEK_REQUIRE_TOOLS=1 but no portatek-python/schemathesis: run .ci/prepare-python.sh"
        );
        eprintln!(
            "skipped: no portatek-python / schemathesis (run .ci/prepare-python.sh target/ci-bin)"
        );
        return;
    };
    let keys = format!(
        "[[auth.keys]]\nname = \"fuzz\"\nkey = \"{ADMIN}\"\nrole = \"admin\"\n\
         [prompt]\nmax_model_retries = 0\n"
    );
    let bed = Harness::real()
        .opencode(OpenCodeOptions::default())
        .gateway(GatewayOptions::default().config(keys))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let doc_path = dir.path().join("openapi.json");
    let doc = bed
        .client
        .get(bed.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(&doc_path, &doc).unwrap();

    let validated = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import sys; from openapi_spec_validator import validate; \
             from openapi_spec_validator.readers import read_from_filename; \
             d, _ = read_from_filename(sys.argv[1]); validate(d); print(d['openapi'])",
        ])
        .arg(&doc_path)
        .output()
        .await
        .unwrap();
    assert!(
        validated.status.success(),
        "not valid OpenAPI 3.1:\n{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&validated.stdout).trim(), "3.1.0");

    // Operations left out: the endless event stream, and adding MCP servers (a local one is a
    // command OpenCode spawns).
    let mut cmd = tokio::process::Command::new(&schemathesis);
    cmd.arg("run")
        .arg(&doc_path)
        .args(["--url", &bed.gateway.url()])
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "12", "--seed", "7", "--workers", "4"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "20", "--no-color"])
        .args(["--exclude-path", "/v1/events"])
        .args(["--exclude-path", "/v1/mcp"])
        .args(["--suppress-health-check", "all"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut run = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("schemathesis finished within 240 s")
        .unwrap();
    // A run that failed on schemathesis's own error while *generating* a case (seen once:
    // CPython's "AST constructor recursion depth mismatch" inside hypothesis), with no finding
    // about the gateway, is run once more; any finding fails at once.
    let tool_error_only = |out: &str| out.contains("Runtime Error") && !out.contains("FAILURES");
    if !run.status.success() && tool_error_only(&String::from_utf8_lossy(&run.stdout)) {
        eprintln!("[openapi_fuzz] schemathesis failed on its own error, not a finding; once more");
        run = tokio::time::timeout(Duration::from_secs(240), cmd.output())
            .await
            .expect("schemathesis finished within 240 s")
            .unwrap();
    }
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{out}\n{}\ngateway logs:\n{}",
        String::from_utf8_lossy(&run.stderr),
        support::opencode::tail_file(&bed.gateway.log_path(), 40)
    );
}
