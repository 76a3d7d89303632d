//! Reading and validating the manifests, and scalars of their YAML.

use super::*;

pub(super) const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_portatek-gateway");
pub(super) const K8S_VERSION: &str = "1.30";

pub(super) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(super) fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every Kubernetes object file in deploy/k8s (all `*.yaml` but kustomization.yaml), sorted.
pub(super) fn manifests() -> Vec<PathBuf> {
    manifests_in("deploy/k8s")
}

/// Every Kubernetes object file in `rel` (all `*.yaml` but kustomization.yaml), sorted.
pub(super) fn manifests_in(rel: &str) -> Vec<PathBuf> {
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
pub(super) fn assert_all_validated(tool: &Path, files: &[PathBuf]) {
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
pub(super) fn assert_kustomization_lists_all(rel: &str) {
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
pub(super) fn kubernetes_validate() -> Option<PathBuf> {
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
pub(super) fn validate(tool: &Path, files: &[PathBuf]) -> Result<String, String> {
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
pub(super) fn block_scalar(yaml: &str, key: &str) -> Option<String> {
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
pub(super) fn scalars(yaml: &str, key: &str) -> Vec<String> {
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
pub(super) fn scalar(yaml: &str, key: &str) -> String {
    let values = scalars(yaml, key);
    assert_eq!(
        values.len(),
        1,
        "expected one `{key}:` value, found {values:?}"
    );
    values[0].clone()
}

/// The ConfigMap's gateway configuration (`config.toml`).
pub(super) fn configmap_toml() -> String {
    block_scalar(&read("deploy/k8s/configmap.yaml"), "config.toml")
        .expect("configmap.yaml has a `config.toml: |` block")
}

/// Runs the gateway binary with only `env` in its environment.
pub(super) fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(GATEWAY_BIN)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the gateway binary")
}
