//! A real `opencode serve`, isolated in a temp dir, pointed at a [`MockModel`](super::mock_model).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use super::sse::SseReader;

mod events;
mod install;
mod sessions;

pub use events::*;
pub use install::*;

#[derive(Debug, Clone, Default)]
pub struct OpenCodeOptions {
    /// `OPENCODE_SERVER_PASSWORD`: when set, every route wants HTTP basic auth.
    pub password: Option<String>,
    /// `OPENCODE_SERVER_USERNAME` (OpenCode's default is `opencode`).
    pub username: Option<String>,
    /// Deep-merged into `opencode.json` at top level (e.g. `{"agent": {...}}`).
    pub extra_config: Value,
    /// OpenCode 2.x (`@opencode/cli`, [`opencode_v2_version`]) instead of the pinned 1.x;
    /// it always wants a password (one is made up when none is set).
    pub v2: bool,
}

impl OpenCodeOptions {
    /// OpenCode 2.x with the password `password`.
    pub fn v2(password: &str) -> OpenCodeOptions {
        OpenCodeOptions {
            password: Some(password.into()),
            v2: true,
            ..OpenCodeOptions::default()
        }
    }
}

/// The passwords of the 2.x servers the tests started, by URL: a gateway started on one of
/// them gets it (2.x always wants a password) unless the test gives its own.
static PASSWORDS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The password of the 2.x server the tests started at `url`, if any.
pub fn password_for(url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    PASSWORDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(u, _)| u == url)
        .map(|(_, p)| p.clone())
}

/// A running `opencode serve`. Killed when dropped.
pub struct OpenCode {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    opts: OpenCodeOptions,
    child: Option<Child>,
    client: reqwest::Client,
}

impl Drop for OpenCode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// The `opencode.json` written for a mock model server at `mock_base_url`.
pub fn opencode_config(mock_base_url: &str, extra: &Value) -> Value {
    let mut cfg = json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "mock": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Mock",
                "options": { "baseURL": mock_base_url, "apiKey": "x" },
                "models": {
                    "echo": { "name": "Echo" },
                    "vision": {
                        "name": "Vision",
                        "modalities": { "input": ["text", "image"], "output": ["text"] },
                        "attachment": true
                    },
                    "thinker": { "name": "Thinker", "reasoning": true }
                }
            }
        },
        "model": "mock/echo",
        "small_model": "mock/echo",
        "autoupdate": false,
        "share": "disabled"
    });
    if !extra.is_null() {
        merge_json(&mut cfg, extra);
    }
    cfg
}

impl OpenCode {
    pub async fn start(mock_base_url: &str) -> OpenCode {
        Self::start_with(mock_base_url, OpenCodeOptions::default()).await
    }

    pub async fn start_with(mock_base_url: &str, mut opts: OpenCodeOptions) -> OpenCode {
        let bin = match opts.v2 {
            true => tokio::task::spawn_blocking(opencode_v2_bin).await,
            false => tokio::task::spawn_blocking(opencode_bin).await,
        }
        .expect("install opencode");
        if opts.v2 && opts.password.is_none() {
            opts.password = Some("v2-test-password".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("opencode-bed-")
            .tempdir()
            .expect("tempdir");
        let home = dir.path().join("home");
        let project = dir.path().join("project");
        for d in [&home, &project] {
            std::fs::create_dir_all(d).unwrap();
        }
        let cfg = opencode_config(mock_base_url, &opts.extra_config);
        std::fs::write(
            project.join("opencode.json"),
            serde_json::to_vec_pretty(&cfg).unwrap(),
        )
        .unwrap();

        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(pw) = opts.password.as_deref().filter(|p| !p.is_empty()) {
            let user = opts.username.as_deref().unwrap_or("opencode");
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Basic {token}").parse().unwrap(),
            );
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .build()
            .unwrap();

        let mut oc = OpenCode {
            dir,
            bin,
            port: free_port(),
            opts,
            child: None,
            client,
        };
        if let (true, Some(pw)) = (oc.opts.v2, oc.opts.password.clone()) {
            PASSWORDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((oc.url(), pw));
        }
        oc.spawn_and_wait().await;
        oc
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("opencode.log")
    }

    pub fn home_dir(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The working directory OpenCode serves (holds `opencode.json`).
    pub fn project_dir(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// Everything OpenCode printed so far (stdout + stderr, all runs).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn spawn_and_wait(&mut self) {
        let home = self.home_dir();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open opencode log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--hostname")
            .arg("127.0.0.1")
            .current_dir(self.project_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OPENCODE_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1");
        if let Some(pw) = &self.opts.password {
            cmd.env("OPENCODE_SERVER_PASSWORD", pw);
        }
        if let Some(user) = &self.opts.username {
            cmd.env("OPENCODE_SERVER_USERNAME", user);
        }
        if self.opts.v2 {
            // 2.x's config is per location: the mock provider must be seen in every directory.
            cmd.env("OPENCODE_CONFIG", self.project_dir().join("opencode.json"));
        }
        set_pdeathsig(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawn {}: {e}", self.bin.display());
        });
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(60);
        let health_path = if self.opts.v2 {
            "/api/info"
        } else {
            "/global/health"
        };
        let url = format!("{}{health_path}", self.url());
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "opencode exited during startup ({status}); log tail:\n{}",
                    tail_file(&self.log_path(), 60)
                );
            }
            let ok = match self
                .client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => resp
                    .json::<Value>()
                    .await
                    .map(|v| v["healthy"] == json!(true) || v["version"].is_string())
                    .unwrap_or(false),
                _ => false,
            };
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.as_mut().unwrap().start_kill();
                panic!(
                    "opencode not healthy at {url} within 60 s; log tail:\n{}",
                    tail_file(&self.log_path(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `opencode serve` process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn password(&self) -> Option<&str> {
        self.opts.password.as_deref()
    }

    pub fn username(&self) -> &str {
        self.opts.username.as_deref().unwrap_or("opencode")
    }

    /// A reqwest client with basic auth applied when a password is set.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// GET `path` (e.g. `/config/providers`), panicking unless 2xx + JSON. A transport error
    /// (a pooled connection to a server that was just killed and restarted) is retried twice,
    /// half a second apart: the GET is idempotent, and an answer still has to come.
    pub async fn get_json(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.url());
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match self
                .client
                .get(&url)
                .timeout(Duration::from_secs(30))
                .send()
                .await
            {
                Ok(resp) => break resp,
                Err(e) if attempt < 3 && !e.is_timeout() => {
                    eprintln!("[testbed] GET {path}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("GET {path}: {e}"),
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path} -> {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// POST JSON to `path`; returns status and body (JSON, or a JSON string for non-JSON bodies,
    /// `null` for an empty body).
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url()))
            .json(body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// Subscribe to `GET /event` (project-scoped SSE). Subscribe *before* prompting: no replay.
    pub async fn subscribe_events(&self) -> EventStream {
        let resp = self
            .client
            .get(format!("{}/event", self.url()))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("GET /event");
        assert!(
            resp.status().is_success(),
            "GET /event -> {}",
            resp.status()
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut reader = SseReader::new(resp);
            while let Some(frame) = reader.next_frame().await {
                if let Some(v) = frame.json() {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        EventStream { rx, task }
    }

    /// Kill the server (for "upstream down" tests). The port stays reserved for [`restart`](Self::restart).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Kill (if running) and start again on the same port with the same HOME/data dir.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn_and_wait().await;
    }
}
