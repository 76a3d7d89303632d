//! A real `redis-server` on a free loopback port, for the shared-store tests: started in its own
//! temp dir without persistence, killed on drop. Missing `redis-server` skips the test with a
//! notice, unless `PORTATEK_REQUIRE_TOOLS=1` (as `.ci/run` sets, after installing it).
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::opencode::{free_port, set_pdeathsig};
use super::python_sdk::tools_required;

/// A running `redis-server`.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| Path::new(&p).join(program).is_file())
    })
}

/// Whether Redis answers `PING` on `port`.
async fn pong(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}

impl Redis {
    /// Starts one; `None` (after a notice) when `redis-server` is missing and not required.
    pub async fn start() -> Option<Redis> {
        if !on_path("redis-server") {
            let why =
                "redis-server is not on PATH (Debian package redis-server; .ci/prepare-redis.sh)";
            assert!(
                !tools_required(),
                "required by PORTATEK_REQUIRE_TOOLS=1: {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::Builder::new()
                .prefix("redis-bed-")
                .tempdir()
                .expect("tempdir"),
        };
        redis.spawn().await;
        Some(redis)
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        set_pdeathsig(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        let started = Instant::now();
        while !pong(self.port).await {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer PING within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}
