//! Installing the pinned OpenCode, and what starting one needs (ports, parent death, configs).

use super::*;

/// The OpenCode 1.x version tested (from `/OPENCODE_V1_VERSION`, the last 1.x).
pub fn opencode_version() -> &'static str {
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/OPENCODE_V1_VERSION")).trim()
}

/// The OpenCode 2.x version tested, the embedded default (from `/OPENCODE_VERSION`, the single
/// place that pin lives).
pub fn opencode_v2_version() -> &'static str {
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/OPENCODE_VERSION")).trim()
}

/// Path of OpenCode 2.x's binary: `$OPENCODE_V2_BIN` when set, else `@opencode/cli-linux-x64`
/// at [`opencode_v2_version`] installed (once, under a file lock) into
/// `<target>/opencode-<version>`. Blocking.
pub fn opencode_v2_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENCODE_V2_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            install_package(
                "@opencode/cli-linux-x64",
                opencode_v2_version(),
                "node_modules/@opencode/cli-linux-x64/bin/opencode",
            )
        })
        .clone()
}

/// Cargo's target directory (where the pinned OpenCode is installed).
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = option_env!("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// Path of the `opencode` binary: `$OPENCODE_BIN` when set, else the pinned version installed
/// (once, under an exclusive file lock) with npm into `<target>/opencode-<version>`.
/// Blocking: call it from `spawn_blocking` in async code (as [`OpenCode::start_with`] does).
pub fn opencode_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENCODE_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(install_pinned).clone()
}

pub(super) fn install_pinned() -> PathBuf {
    install_package(
        "opencode-linux-x64",
        opencode_version(),
        "node_modules/opencode-linux-x64/bin/opencode",
    )
}

/// Installs `package@ver` with npm into `<target>/opencode-<ver>` (once, under a file lock);
/// the path of `bin_in` there.
fn install_package(package: &str, ver: &str, bin_in: &str) -> PathBuf {
    use fs2::FileExt;
    let target = target_dir();
    let dir = target.join(format!("opencode-{ver}"));
    let bin = dir.join(bin_in);
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&dir).expect("create opencode install dir");
    let lock_path = target.join(format!("opencode-{ver}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .expect("open opencode install lock");
    lock.lock_exclusive().expect("lock opencode install");
    if !bin.exists() {
        eprintln!(
            "[testbed] installing {package}@{ver} into {}",
            dir.display()
        );
        let out = std::process::Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&dir)
            .arg("--no-audit")
            .arg("--no-fund")
            .arg(format!("{package}@{ver}"))
            .stdin(Stdio::null())
            .output()
            .expect("run npm (is node/npm installed?)");
        if !out.status.success() || !bin.exists() {
            let _ = fs2::FileExt::unlock(&lock);
            panic!(
                "npm install {package}@{ver} failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = fs2::FileExt::unlock(&lock);
    bin
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// Make the child die with SIGKILL when the spawning thread/process goes away.
pub(crate) fn set_pdeathsig(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else happens between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Last `n` lines of a text file (empty if unreadable).
pub fn tail_file(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Deep-merge `extra` into `base` (objects merge recursively, anything else replaces).
pub fn merge_json(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, e) => *b = e.clone(),
    }
}
