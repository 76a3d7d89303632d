//! Embedded OpenCode: when no upstream URL is configured, the gateway runs `opencode serve`
//! itself and supervises it.
//!
//! - **Which binary:** `opencode.binary` (`OPENCODE_BIN`), else `opencode` on `PATH`, else the
//!   pinned version (`OPENCODE_VERSION`, OpenCode 2.x; `opencode.version` pins another, such
//!   as 1.18.34) installed with npm into a cache directory.
//! - **Nobody else can drive it:** a free loopback port and a random
//!   `OPENCODE_SERVER_PASSWORD` per gateway start; the gateway's client is the only one that
//!   knows it.
//! - **It lives and dies with the gateway:** restarted with backoff when it exits (in-flight runs
//!   fail when the event stream drops; the pool's sessions are let go), stopped with the
//!   gateway, and — being in its own process group with a parent-death signal — never left
//!   behind, not even when the gateway is killed outright.
//!
//! `command-group`/`process-wrap` were considered for the process group; the parent-death
//! signal needs `prctl` in the child anyway, so one small `pre_exec` does both.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::OpenCodeConfig;

/// The OpenCode version the gateway is tested with and installs when no binary is found
/// (2.x; 1.18.34, the last 1.x, is supported too).
pub const PINNED_VERSION: &str = include_str!("../OPENCODE_VERSION");

/// Longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long OpenCode may take to stop after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why the embedded OpenCode could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No binary, and no way to install one.
    #[error("OpenCode was not found. Set OPENCODE_BIN (or `opencode.binary`) to an `opencode` binary, put `opencode` on PATH, or install Node.js so that the gateway can run `npm install {package}@{version}` itself; or point the gateway at a running server with --opencode-url.")]
    NotFound {
        /// The npm package for this platform.
        package: String,
        /// The pinned version.
        version: String,
    },
    /// npm failed.
    #[error("installing {package}@{version} with npm failed: {message}")]
    Install {
        /// The npm package.
        package: String,
        /// The pinned version.
        version: String,
        /// npm's output.
        message: String,
    },
    /// The process could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No free port.
    #[error("cannot find a free loopback port for OpenCode: {0}")]
    Port(std::io::Error),
}

/// The running embedded OpenCode; stop it with [`Embedded::stop`].
pub struct Embedded {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The basic-auth password of this start.
    pub password: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Bumped each time OpenCode is started again after an exit.
    pub generation: watch::Receiver<u64>,
}

/// The npm package of OpenCode `version` for this platform: 2.x's `@opencode/cli-linux-x64`
/// (…), 1.x's `opencode-linux-x64` (…).
pub fn npm_package(version: &str) -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    };
    match version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
    {
        Some(major) if major >= 2 => format!("@opencode/cli-{os}-{arch}"),
        _ => format!("opencode-{os}-{arch}"),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn cache_dir(config: &OpenCodeConfig) -> PathBuf {
    if let Some(dir) = &config.cache_dir {
        return dir.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("portatek-gateway")
}

/// Finds (or installs) the `opencode` binary.
pub async fn locate(config: &OpenCodeConfig) -> Result<PathBuf, EmbeddedError> {
    if let Some(bin) = &config.binary {
        return Ok(bin.clone());
    }
    if let Some(bin) = on_path("opencode") {
        return Ok(bin);
    }
    let version = config
        .version
        .clone()
        .unwrap_or_else(|| PINNED_VERSION.trim().to_string());
    let package = npm_package(&version);
    let dir = cache_dir(config).join(format!("opencode-{version}"));
    let bin = dir
        .join("node_modules")
        .join(&package)
        .join("bin")
        .join("opencode");
    if bin.is_file() {
        return Ok(bin);
    }
    let Some(npm) = on_path("npm") else {
        return Err(EmbeddedError::NotFound { package, version });
    };
    tracing::info!(%package, %version, dir = %dir.display(), "OpenCode not found; installing the pinned version with npm");
    std::fs::create_dir_all(&dir).map_err(|e| EmbeddedError::Install {
        package: package.clone(),
        version: version.clone(),
        message: e.to_string(),
    })?;
    let out = Command::new(npm)
        .arg("install")
        .arg("--prefix")
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .arg(format!("{package}@{version}"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| EmbeddedError::Install {
            package: package.clone(),
            version: version.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() || !bin.is_file() {
        return Err(EmbeddedError::Install {
            package,
            version,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(bin)
}

fn free_port() -> Result<u16, EmbeddedError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(EmbeddedError::Port)
}

fn random_password() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How to start one OpenCode process.
#[derive(Clone)]
struct Launch {
    binary: PathBuf,
    port: u16,
    password: String,
    username: String,
    directory: Option<PathBuf>,
    config_file: Option<PathBuf>,
}

impl Launch {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--hostname")
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.directory {
            cmd.current_dir(dir);
        }
        // Provider API keys and the like pass through from the gateway's environment; the
        // gateway's own settings do not.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("PORTATEK_") || key == "OPENCODE_BASE_URL" {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd.env("OPENCODE_SERVER_PASSWORD", &self.password)
            .env("OPENCODE_SERVER_USERNAME", &self.username)
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1");
        if let Some(file) = &self.config_file {
            cmd.env("OPENCODE_CONFIG", file);
        }
        isolate(&mut cmd);
        cmd
    }

    fn spawn(&self) -> Result<Child, EmbeddedError> {
        let mut child = self
            .command()
            .spawn()
            .map_err(|source| EmbeddedError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        for (stream, name) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                "stdout",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                "stderr",
            ),
        ] {
            if let Some(stream) = stream {
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(target: "opencode", stream = name, "{line}");
                    }
                });
            }
        }
        Ok(child)
    }
}

/// Puts the child in its own process group and asks the kernel to kill it when the gateway
/// dies (Linux), so that no OpenCode outlives the gateway, however it ends.
#[allow(unsafe_code)]
fn isolate(cmd: &mut Command) {
    #[cfg(unix)]
    // SAFETY: only async-signal-safe calls (setpgid, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the child's whole process group.
#[allow(unsafe_code)]
fn signal_group(child: &Child, signal: i32) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the process group the child leads (set up in `isolate`).
        unsafe {
            libc::kill(-(pid as libc::pid_t), signal);
        }
    }
}

async fn stop_child(mut child: Child) {
    signal_group(&child, libc::SIGTERM);
    if tokio::time::timeout(STOP_WAIT, child.wait()).await.is_err() {
        tracing::warn!("embedded OpenCode did not stop in time; killing it");
        signal_group(&child, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

impl Embedded {
    /// Finds the binary and starts OpenCode; supervision runs until [`Embedded::stop`].
    pub async fn start(config: &OpenCodeConfig) -> Result<Embedded, EmbeddedError> {
        let binary = locate(config).await?;
        let launch = Launch {
            binary,
            port: free_port()?,
            password: random_password(),
            username: config.username.clone(),
            directory: config.directory.as_ref().map(PathBuf::from),
            config_file: config.config_file.clone(),
        };
        let child = launch.spawn()?;
        tracing::info!(binary = %launch.binary.display(), port = launch.port, "started the embedded OpenCode");
        let stop = CancellationToken::new();
        let (generation_tx, generation) = watch::channel(0);
        let task = tokio::spawn(supervise(
            launch.clone(),
            child,
            generation_tx,
            stop.clone(),
        ));
        Ok(Embedded {
            url: format!("http://127.0.0.1:{}", launch.port),
            password: launch.password,
            stop,
            task,
            generation,
        })
    }

    /// Stops OpenCode (SIGTERM to its process group, SIGKILL after a few seconds).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Restarts OpenCode whenever it exits, with backoff, until `stop`.
async fn supervise(
    launch: Launch,
    mut child: Child,
    generation: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = tokio::time::Instant::now();
        let status = tokio::select! {
            _ = stop.cancelled() => return stop_child(child).await,
            status = child.wait() => status,
        };
        tracing::warn!(?status, "the embedded OpenCode exited; restarting it");
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        match launch.spawn() {
            Ok(c) => {
                child = c;
                crate::metrics::opencode_restarted();
                generation.send_modify(|g| *g += 1);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot restart the embedded OpenCode");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_follows_the_major_version() {
        assert!(npm_package("2.1.2").starts_with("@opencode/cli-"));
        assert!(npm_package("1.18.34").starts_with("opencode-"));
        assert!(!npm_package(PINNED_VERSION.trim()).is_empty());
    }
}
