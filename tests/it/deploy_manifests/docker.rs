//! The Dockerfile: its stages, its build context, what `cargo` needs in it.

use super::*;

/// The Dockerfile's stages by name (`FROM … AS name`), each as its instructions with line
/// continuations joined, in order.
pub(super) fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
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

pub(super) fn stage(name: &str) -> Vec<String> {
    dockerfile_stages()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("the Dockerfile has no stage `{name}`"))
        .1
}

/// Copies `from` (a file or a directory tree) to `to`.
pub(super) fn copy_tree(from: &Path, to: &Path) {
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
pub(super) fn docker_ignored(name: &str) -> bool {
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
pub(super) fn gateway_build_context(dest: &Path, skip: &str) {
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
pub(super) fn cargo_fetch(dir: &Path) -> Output {
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

/// The Dockerfile installs the OpenCode version the gateway is tested with: its
/// `ARG OPENCODE_VERSION` default equals the OPENCODE_VERSION file (an ARG cannot read it).
#[test]
pub(super) fn dockerfile_pins_the_opencode_version_file() {
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
            && opencode.contains("@opencode/cli-linux-x64@${OPENCODE_VERSION}"),
        "the opencode-build stage installs the ARG's version: {opencode}"
    );
}

/// The gateway-build stage copies everything cargo needs to build (so `docker build` works for
/// users, although CI cannot pull its rust image): with exactly the files its COPY instructions
/// take, Cargo loads the manifest (every declared target is there) and Cargo.lock is current
/// (`--locked`). Leaving out one copied path (benches/, which Cargo.toml's `[[bench]]` needs)
/// fails the same check.
#[test]
pub(super) fn dockerfile_build_stage_has_what_cargo_needs() {
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
pub(super) fn dockerfile_default_stage_is_the_runtime_image() {
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
