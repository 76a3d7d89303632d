#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]
//! The deployment files, checked without a cluster or a registry: the Kubernetes manifests in
//! `deploy/k8s/` validate against the Kubernetes 1.30 schemas (kubernetes-validate, offline),
//! the ConfigMap's configuration is one the gateway accepts, the manifests agree with the image,
//! and the Dockerfile's build stages have what they need (the pinned OpenCode version, every
//! file cargo wants).
//!
//! kubernetes-validate comes from PyPI (`.ci/prepare-kubernetes-validate.sh`). Without it the
//! tests that need it print `skipped: …` and pass, unless `PORTATEK_REQUIRE_TOOLS=1` (as
//! `.ci/run` sets), where they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_portatek-gateway");
const K8S_VERSION: &str = "1.30";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every Kubernetes object file in deploy/k8s (all `*.yaml` but kustomization.yaml), sorted.
fn manifests() -> Vec<PathBuf> {
    manifests_in("deploy/k8s")
}

/// Every Kubernetes object file in `rel` (all `*.yaml` but kustomization.yaml), sorted.
fn manifests_in(rel: &str) -> Vec<PathBuf> {
    let dir = repo().join(rel);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("read a manifest directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

/// Asserts that kubernetes-validate passed at least one object of every file in `files`.
fn assert_all_validated(tool: &Path, files: &[PathBuf]) {
    let report = validate(tool, files).unwrap_or_else(|e| panic!("{e}"));
    for file in files {
        let shown = file.display().to_string();
        assert!(
            report
                .lines()
                .any(|l| l.contains(&shown) && l.contains("passed")),
            "no object of {shown} was validated:\n{report}"
        );
    }
}

/// Asserts that `rel`/kustomization.yaml lists every manifest of `rel` but the Secret template.
fn assert_kustomization_lists_all(rel: &str) {
    let kustomization = read(&format!("{rel}/kustomization.yaml"));
    let listed: Vec<String> = kustomization
        .lines()
        .skip_while(|l| !l.starts_with("resources:"))
        .skip(1)
        .take_while(|l| l.starts_with("  - "))
        .map(|l| l.trim_start_matches("  - ").trim().to_string())
        .collect();
    let expected: Vec<String> = manifests_in(rel)
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "secret.example.yaml")
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, expected,
        "{rel}/kustomization.yaml resources: {listed:?}"
    );
}

/// kubernetes-validate on PATH; `None` (after printing why) when the test should be skipped.
fn kubernetes_validate() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("kubernetes-validate"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = "kubernetes-validate is not on PATH \
                   (.ci/prepare-kubernetes-validate.sh DIR installs it from PyPI; put DIR on PATH)";
        assert!(
            !crate::support::tools_required(),
            "required by PORTATEK_REQUIRE_TOOLS=1: {why}"
        );
        eprintln!("skipped: {why}");
    }
    found
}

/// Validates `files` against the Kubernetes schemas, strictly (unknown fields are errors).
/// kubernetes-validate only warns, and exits 0, for an unknown kind or apiVersion: a `WARN`
/// line is a failure too. Ok: its report.
fn validate(tool: &Path, files: &[PathBuf]) -> Result<String, String> {
    // Options before the files: everything after the first file is taken as a file name.
    let out = Command::new(tool)
        .args(["-k", K8S_VERSION, "--strict"])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || report.lines().any(|l| l.contains("WARN")) {
        return Err(format!("kubernetes-validate: {}\n{report}", out.status));
    }
    Ok(report)
}

/// The text of the literal block scalar `key: |` in `yaml` (its first occurrence), dedented.
/// Enough for this repository's manifests; not a YAML parser.
fn block_scalar(yaml: &str, key: &str) -> Option<String> {
    let mut lines = yaml.lines();
    let key_indent = loop {
        let line = lines.next()?;
        let trimmed = line.trim_start();
        if trimmed == format!("{key}: |") {
            break line.len() - trimmed.len();
        }
    };
    let mut body: Vec<&str> = Vec::new();
    let mut indent = None;
    for line in lines {
        if line.trim().is_empty() {
            body.push("");
            continue;
        }
        let this = line.len() - line.trim_start().len();
        if this <= key_indent {
            break;
        }
        let indent = *indent.get_or_insert(this);
        assert!(
            this >= indent,
            "{key}: less indented line in a block: {line:?}"
        );
        body.push(&line[indent..]);
    }
    while body.last() == Some(&"") {
        body.pop();
    }
    Some(body.join("\n") + "\n")
}

/// The values of every `key: value` line in `yaml` (quotes and trailing comments removed).
fn scalars(yaml: &str, key: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| {
            let rest = l.trim_start().trim_start_matches("- ").strip_prefix(key)?;
            let value = rest.strip_prefix(':')?;
            let value = value.split(" #").next().unwrap_or_default().trim();
            // `key:` alone opens a block: no scalar.
            (!value.is_empty()).then(|| value.trim_matches('"').to_string())
        })
        .collect()
}

/// The one value of `key` in `yaml`.
fn scalar(yaml: &str, key: &str) -> String {
    let values = scalars(yaml, key);
    assert_eq!(
        values.len(),
        1,
        "expected one `{key}:` value, found {values:?}"
    );
    values[0].clone()
}

/// The ConfigMap's gateway configuration (`config.toml`).
fn configmap_toml() -> String {
    block_scalar(&read("deploy/k8s/configmap.yaml"), "config.toml")
        .expect("configmap.yaml has a `config.toml: |` block")
}

/// Runs the gateway binary with only `env` in its environment.
fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(GATEWAY_BIN)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the gateway binary")
}

/// The Dockerfile's stages by name (`FROM … AS name`), each as its instructions with line
/// continuations joined, in order.
fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
    let text = read("Dockerfile");
    let mut instructions: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(line);
            instructions.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = vec![("(global)".into(), Vec::new())];
    for ins in instructions {
        let words: Vec<&str> = ins.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("FROM") {
            let name = match words.as_slice() {
                [_, _, as_, name] if as_.eq_ignore_ascii_case("AS") => name.to_string(),
                _ => format!("(stage {})", stages.len()),
            };
            stages.push((name, Vec::new()));
        }
        stages
            .last_mut()
            .expect("at least the global stage")
            .1
            .push(ins);
    }
    stages
}

fn stage(name: &str) -> Vec<String> {
    dockerfile_stages()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("the Dockerfile has no stage `{name}`"))
        .1
}

/// Copies `from` (a file or a directory tree) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("create a directory");
        for entry in std::fs::read_dir(from).expect("list a directory") {
            let entry = entry.expect("read a directory entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("create a directory");
        }
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}

/// Does `.dockerignore` leave `name` (a top-level path of the build context) out?
fn docker_ignored(name: &str) -> bool {
    let first = name
        .trim_start_matches("./")
        .split('/')
        .next()
        .unwrap_or(name);
    std::fs::read_to_string(repo().join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|pattern| match pattern.strip_prefix('*') {
            Some(suffix) => first.ends_with(suffix),
            None => pattern.trim_end_matches('/') == first,
        })
}

/// The build context the gateway-build stage sees: what its COPY instructions copy (from the
/// repository, less `.dockerignore`), placed where they put it under the WORKDIR.
fn gateway_build_context(dest: &Path, skip: &str) {
    for ins in stage("gateway-build") {
        let words: Vec<&str> = ins.split_whitespace().collect();
        if !words[0].eq_ignore_ascii_case("COPY") {
            continue;
        }
        let args: Vec<&str> = words[1..]
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (target, sources) = args.split_last().expect("COPY has a destination");
        for source in sources {
            assert!(
                !docker_ignored(source),
                ".dockerignore leaves out `{source}`, which the gateway-build stage copies"
            );
            if *source == skip {
                continue;
            }
            let into = if target.ends_with('/') || sources.len() > 1 {
                dest.join(target).join(source)
            } else {
                dest.join(target)
            };
            copy_tree(&repo().join(source), &into);
        }
    }
}

/// Runs `cargo fetch --offline --locked` (for the host) in `dir`: it loads the manifest the way
/// `cargo build` does (every declared target must be there) and fails when Cargo.lock is stale.
fn cargo_fetch(dir: &Path) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    Command::new(cargo)
        .args(["fetch", "--offline", "--locked", "--target", &host])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo fetch")
}

// ---------------------------------------------------------------------------------------------

/// Every manifest is a valid Kubernetes 1.30 object, with no unknown field, kind or apiVersion,
/// and every file holds at least one object.
#[test]
fn manifests_are_valid_kubernetes_objects() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    assert_all_validated(&tool, &manifests());
}

/// The validation above can fail: a misspelt field (strict schemas) and an unknown kind (only a
/// warning from kubernetes-validate) in a copy of the manifests are both reported.
#[test]
fn validation_catches_unknown_fields_and_kinds() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let deployment = read("deploy/k8s/deployment.yaml");
    let pdb = read("deploy/k8s/poddisruptionbudget.yaml");
    for (name, original, from, to) in [
        (
            "typo.yaml",
            &deployment,
            "readOnlyRootFilesystem:",
            "readOnlyRootFS:",
        ),
        (
            "kind.yaml",
            &pdb,
            "kind: PodDisruptionBudget",
            "kind: PodDisruptionBudgt",
        ),
    ] {
        assert!(original.contains(from), "the manifest has no `{from}`");
        let path = dir.path().join(name);
        std::fs::write(&path, original.replacen(from, to, 1)).expect("write a broken manifest");
        assert!(
            validate(&tool, &[path]).is_err(),
            "kubernetes-validate accepted `{to}`"
        );
    }
}

/// `kubectl apply -k deploy/k8s` applies every manifest but the Secret template (which users
/// fill in and apply themselves), and every resource it names exists.
#[test]
fn kustomization_lists_every_manifest_but_the_secret_template() {
    assert_kustomization_lists_all("deploy/k8s");
}

/// The gateway accepts the ConfigMap's configuration (`--check-config`, exit 0) with keys from
/// the environment as the Secret gives them, and it means what the manifests assume: all
/// interfaces on 8080, JSON logs, embedded OpenCode with the ConfigMap's opencode.json, keys
/// masked when printed.
#[test]
fn configmap_config_is_accepted_by_the_gateway() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, configmap_toml()).expect("write the ConfigMap's config.toml");
    let file = file.to_str().expect("UTF-8 temp path");
    let out = gateway(
        &["--check-config", "--config", file],
        &[("PORTATEK_API_KEYS", "k8s-test-key-1,k8s-test-key-2")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--check-config rejected the ConfigMap's config ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Value = toml::from_str(&stdout).expect("--check-config prints TOML");
    assert_eq!(effective["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(effective["log_format"].as_str(), Some("json"));
    assert!(
        effective["opencode"].get("base_url").is_none(),
        "embedded OpenCode expected"
    );
    assert_eq!(
        effective["opencode"]["config_file"].as_str(),
        Some("/etc/portatek/opencode.json")
    );
    assert_eq!(
        effective["auth"]["api_keys"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        !stdout.contains("k8s-test-key"),
        "keys printed unmasked:\n{stdout}"
    );
}

/// The ConfigMap's configuration is config.example.toml (every key with its default) but for
/// the keys a cluster needs, each marked `k8s:` in the ConfigMap: a default changed or a key
/// added or removed in config.example.toml must be carried over.
#[test]
fn configmap_config_is_the_example_with_marked_changes() {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let parse = |name: &str, text: &str| {
        let value: toml::Value =
            toml::from_str(text).unwrap_or_else(|e| panic!("{name} is not TOML: {e}"));
        let mut flat = BTreeMap::new();
        flatten("", &value, &mut flat);
        flat
    };
    let example = parse("config.example.toml", &read("config.example.toml"));
    let configmap = parse("the ConfigMap's config.toml", &configmap_toml());
    let keys: std::collections::BTreeSet<&String> =
        example.keys().chain(configmap.keys()).collect();
    let changed: Vec<&str> = keys
        .into_iter()
        .filter(|k| example.get(*k) != configmap.get(*k))
        .map(String::as_str)
        .collect();
    assert_eq!(
        changed,
        ["listen", "log_format", "opencode.config_file"],
        "keys where the ConfigMap differs from config.example.toml"
    );
    let marks = configmap_toml().matches("# k8s:").count();
    assert!(
        marks >= changed.len(),
        "each changed key needs its `# k8s:` comment"
    );
}

/// The paths the manifests use meet: the ConfigMap is mounted where PORTATEK_CONFIG and
/// `opencode.config_file` point, and its opencode.json is a JSON object.
#[test]
fn configmap_is_mounted_where_the_config_points() {
    let deployment = read("deploy/k8s/deployment.yaml");
    let configmap = read("deploy/k8s/configmap.yaml");
    let mounts = scalars(&deployment, "mountPath");
    assert!(
        mounts.contains(&"/etc/portatek".to_string()),
        "mounts: {mounts:?}"
    );
    let env_value = deployment
        .lines()
        .skip_while(|l| !l.contains("name: PORTATEK_CONFIG"))
        .nth(1)
        .and_then(|l| l.trim().strip_prefix("value: "))
        .expect("PORTATEK_CONFIG is set in the Deployment");
    assert_eq!(env_value, "/etc/portatek/config.toml");
    let json = block_scalar(&configmap, "opencode.json").expect("an opencode.json key");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("opencode.json is JSON");
    assert!(parsed.is_object(), "opencode.json: {parsed}");
}

/// An unedited Secret template cannot expose an open gateway: with its empty
/// PORTATEK_API_KEYS the ConfigMap's configuration is refused (exit 2, naming the key).
#[test]
fn unedited_secret_template_keeps_the_gateway_closed() {
    let template = read("deploy/k8s/secret.example.yaml");
    let keys = scalar(&template, "PORTATEK_API_KEYS");
    let dir = tempfile::tempdir().expect("create a temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, configmap_toml()).expect("write the ConfigMap's config.toml");
    let out = gateway(
        &[
            "--check-config",
            "--config",
            file.to_str().expect("UTF-8 temp path"),
        ],
        &[("PORTATEK_API_KEYS", keys.as_str())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "template keys {keys:?}: {stderr}"
    );
    assert!(stderr.contains("auth.api_keys"), "{stderr}");
}

/// The Deployment fits the image and the gateway: the image's user (10001) and port (8080),
/// probes on /livez (startup, liveness) and /health (readiness), and a termination grace period
/// longer than the preStop pause + `shutdown_grace_secs` + OpenCode's stop (5 s).
#[test]
fn deployment_fits_the_image_and_the_gateway() {
    let deployment = read("deploy/k8s/deployment.yaml");
    let base = stage("runtime-base").join("\n");
    assert!(
        base.contains("useradd --uid 10001 "),
        "runtime-base: {base}"
    );
    assert!(base.contains("USER 10001:10001"), "runtime-base: {base}");
    assert!(base.contains("EXPOSE 8080"), "runtime-base: {base}");
    assert!(
        base.contains("PORTATEK_LISTEN=0.0.0.0:8080"),
        "runtime-base: {base}"
    );
    assert_eq!(scalars(&deployment, "runAsUser"), ["10001", "10001"]);
    assert_eq!(scalar(&deployment, "containerPort"), "8080");
    for key in ["runAsNonRoot", "readOnlyRootFilesystem"] {
        assert!(
            scalars(&deployment, key).iter().all(|v| v == "true"),
            "{key} must be true"
        );
    }
    assert_eq!(scalar(&deployment, "allowPrivilegeEscalation"), "false");
    assert_eq!(
        scalars(&deployment, "path"),
        ["/livez", "/livez", "/health"]
    );
    let grace: u64 = scalar(&deployment, "terminationGracePeriodSeconds")
        .parse()
        .expect("a number of seconds");
    let pre_stop: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: [\"sleep\", \""))
        .and_then(|rest| rest.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("a preStop sleep");
    let drain: u64 = toml::from_str::<toml::Value>(&configmap_toml())
        .expect("TOML")
        .get("shutdown_grace_secs")
        .and_then(toml::Value::as_integer)
        .and_then(|s| u64::try_from(s).ok())
        .expect("shutdown_grace_secs");
    assert!(
        grace > pre_stop + drain + 5,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + shutdown_grace_secs \
         {drain} + 5"
    );
}

/// The Dockerfile installs the OpenCode version the gateway is tested with: its
/// `ARG OPENCODE_VERSION` default equals the OPENCODE_VERSION file (an ARG cannot read it).
#[test]
fn dockerfile_pins_the_opencode_version_file() {
    let pinned = read("OPENCODE_VERSION").trim().to_string();
    let global = &dockerfile_stages()[0].1;
    let defaults: Vec<&str> = global
        .iter()
        .filter_map(|i| i.strip_prefix("ARG OPENCODE_VERSION="))
        .collect();
    assert_eq!(
        defaults,
        [pinned.as_str()],
        "ARG OPENCODE_VERSION=… before the first FROM"
    );
    let opencode = stage("opencode-build").join("\n");
    assert!(
        opencode.contains("ARG OPENCODE_VERSION")
            && opencode.contains("opencode-linux-x64@${OPENCODE_VERSION}"),
        "the opencode-build stage installs the ARG's version: {opencode}"
    );
}

/// The gateway-build stage copies everything cargo needs to build (so `docker build` works for
/// users, although CI cannot pull its rust image): with exactly the files its COPY instructions
/// take, Cargo loads the manifest (every declared target is there) and Cargo.lock is current
/// (`--locked`). Leaving out one copied path (benches/, which Cargo.toml's `[[bench]]` needs)
/// fails the same check.
#[test]
fn dockerfile_build_stage_has_what_cargo_needs() {
    let build = stage("gateway-build").join("\n");
    assert!(
        build.contains("cargo build --release --locked --bin portatek-gateway"),
        "gateway-build: {build}"
    );
    let dir = tempfile::tempdir().expect("create a temp dir");
    gateway_build_context(dir.path(), "");
    let out = cargo_fetch(dir.path());
    assert!(
        out.status.success(),
        "cargo cannot load the project from the files the gateway-build stage copies: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let without = tempfile::tempdir().expect("create a temp dir");
    gateway_build_context(without.path(), "benches");
    let out = cargo_fetch(without.path());
    assert!(
        !out.status.success(),
        "the check cannot see a missing benches/ (is the [[bench]] still declared?)"
    );
}

/// `docker build .` builds the shipped image: the last stage is `runtime`, built from the
/// shared `runtime-base` with both binaries from the build stages, and the base runs the
/// gateway (under tini) in embedded mode with its own `--healthcheck` as HEALTHCHECK.
#[test]
fn dockerfile_default_stage_is_the_runtime_image() {
    let stages = dockerfile_stages();
    let (last, instructions) = stages.last().expect("a stage");
    assert_eq!(last, "runtime");
    let runtime = instructions.join("\n");
    assert!(
        runtime.starts_with("FROM runtime-base AS runtime"),
        "{runtime}"
    );
    for from in ["--from=gateway-build", "--from=opencode-build"] {
        assert!(runtime.contains(from), "runtime copies {from}: {runtime}");
    }
    let base = stage("runtime-base").join("\n");
    for needed in [
        "OPENCODE_BIN=/usr/local/bin/opencode",
        "PORTATEK_LOG_FORMAT=json",
        "HOME=/home/app",
        "CMD [\"/usr/local/bin/portatek-gateway\", \"--healthcheck\"]",
        "ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/portatek-gateway\"]",
    ] {
        assert!(
            base.contains(needed),
            "runtime-base lacks `{needed}`: {base}"
        );
    }
    assert!(
        !base.contains("OPENCODE_BASE_URL"),
        "the image must default to the embedded OpenCode"
    );
}

// ---------------------------------------------------------------------------------------------
// The scale-out example (deploy/k8s/scale-out): replicas, upstreams, Redis
// ---------------------------------------------------------------------------------------------

/// The scale-out manifests validate, and kustomization.yaml lists every one of them (but the
/// Secret example, which the operator fills in and applies first).
#[test]
fn scale_out_manifests_are_valid_and_listed() {
    assert_kustomization_lists_all("deploy/k8s/scale-out");
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    assert_all_validated(&tool, &manifests_in("deploy/k8s/scale-out"));
}

/// The pieces of the scale-out example meet: the gateway accepts its config (two upstreams, the
/// Redis store); the upstream URLs name the OpenCode StatefulSet's pods through its headless
/// Service and port; the store URL names the Redis Service and port; the gateway runs more than
/// one replica, under a PodDisruptionBudget; every Secret reference names the example Secret.
#[test]
fn scale_out_example_is_consistent() {
    let configmap = read("deploy/k8s/scale-out/configmap.yaml");
    let toml_text = block_scalar(&configmap, "config.toml").expect("a config.toml block");
    let dir = tempfile::tempdir().expect("create a temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &toml_text).expect("write the config");
    let out = gateway(
        &["--check-config", "--config", file.to_str().unwrap()],
        &[
            ("PORTATEK_API_KEYS", "k8s-test-key"),
            ("OPENCODE_SERVER_PASSWORD", "pw"),
        ],
    );
    assert!(
        out.status.success(),
        "--check-config rejected the scale-out config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Value =
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("TOML");
    let upstreams = effective["upstreams"].as_array().expect("upstreams");
    assert_eq!(upstreams.len(), 2);
    assert_eq!(effective["store"]["kind"].as_str(), Some("redis"));

    let opencode = read("deploy/k8s/scale-out/opencode.yaml");
    let service = scalar(&opencode, "serviceName");
    let set = scalars(&opencode, "name")[0].clone();
    let replicas: usize = scalars(&opencode, "replicas")[0].parse().unwrap();
    assert_eq!(replicas, upstreams.len(), "one upstream per OpenCode pod");
    let port = scalar(&opencode, "containerPort");
    for (i, u) in upstreams.iter().enumerate() {
        assert_eq!(
            u["url"].as_str(),
            Some(format!("http://{set}-{i}.{service}:{port}").as_str()),
            "upstream {i}"
        );
    }

    let redis = read("deploy/k8s/scale-out/redis.yaml");
    let redis_service = scalars(&redis, "name")
        .into_iter()
        .find(|n| n == "portatek-redis")
        .expect("the Redis Service");
    let redis_port = scalar(&redis, "containerPort");
    assert_eq!(
        effective["store"]["url"].as_str(),
        Some(format!("redis://{redis_service}:{redis_port}/0").as_str())
    );

    let gateway_yaml = read("deploy/k8s/scale-out/gateway.yaml");
    let replicas: usize = scalar(&gateway_yaml, "replicas").parse().unwrap();
    assert!(replicas >= 2, "a scale-out example with {replicas} replica");
    let pdb = read("deploy/k8s/scale-out/poddisruptionbudget.yaml");
    assert!(pdb.contains("kind: PodDisruptionBudget"));
    assert!(scalars(&pdb, "app.kubernetes.io/name").contains(&"portatek-gateway".to_string()));

    let secret = read("deploy/k8s/scale-out/secret.example.yaml");
    let secret_name = scalar(&secret, "name");
    for (file, text) in [
        ("gateway.yaml", &gateway_yaml),
        ("opencode.yaml", &opencode),
    ] {
        for name in scalars(text, "name")
            .into_iter()
            .filter(|n| n.starts_with("portatek-scale") || n.contains("secret"))
        {
            assert_eq!(name, secret_name, "{file} names Secret {name}");
        }
    }
    for key in ["OPENCODE_SERVER_PASSWORD", "PORTATEK_API_KEYS"] {
        assert!(
            secret.contains(&format!("{key}:")),
            "the Secret lacks {key}"
        );
    }
}
