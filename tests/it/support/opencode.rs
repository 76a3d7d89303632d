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

/// The pinned OpenCode version (from `/OPENCODE_VERSION`, the single place the pin lives).
pub fn opencode_version() -> &'static str {
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/OPENCODE_VERSION")).trim()
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

fn install_pinned() -> PathBuf {
    use fs2::FileExt;
    let ver = opencode_version();
    let target = target_dir();
    let dir = target.join(format!("opencode-{ver}"));
    let bin = dir.join("node_modules/opencode-linux-x64/bin/opencode");
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
            "[testbed] installing opencode-linux-x64@{ver} into {}",
            dir.display()
        );
        let out = std::process::Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&dir)
            .arg("--no-audit")
            .arg("--no-fund")
            .arg(format!("opencode-linux-x64@{ver}"))
            .stdin(Stdio::null())
            .output()
            .expect("run npm (is node/npm installed?)");
        if !out.status.success() || !bin.exists() {
            let _ = fs2::FileExt::unlock(&lock);
            panic!(
                "npm install opencode-linux-x64@{ver} failed ({}):\n{}\n{}",
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

#[derive(Debug, Clone, Default)]
pub struct OpenCodeOptions {
    /// `OPENCODE_SERVER_PASSWORD`: when set, every route wants HTTP basic auth.
    pub password: Option<String>,
    /// `OPENCODE_SERVER_USERNAME` (OpenCode's default is `opencode`).
    pub username: Option<String>,
    /// Deep-merged into `opencode.json` at top level (e.g. `{"agent": {...}}`).
    pub extra_config: Value,
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

    pub async fn start_with(mock_base_url: &str, opts: OpenCodeOptions) -> OpenCode {
        let bin = tokio::task::spawn_blocking(opencode_bin)
            .await
            .expect("install opencode");
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
        set_pdeathsig(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawn {}: {e}", self.bin.display());
        });
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/global/health", self.url());
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
                    .map(|v| v["healthy"] == json!(true))
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

    /// `POST /session {"title"}` → the session id.
    pub async fn create_session(&self, title: &str) -> String {
        let (status, v) = self.post_json("/session", &json!({ "title": title })).await;
        assert!(status.is_success(), "POST /session -> {status}: {v}");
        v["id"].as_str().expect("session id").to_string()
    }

    /// `GET /session` (list of sessions).
    pub async fn sessions(&self) -> Vec<Value> {
        match self.get_json("/session").await {
            Value::Array(a) => a,
            other => panic!("GET /session: expected array, got {other}"),
        }
    }

    /// `DELETE /session/:id`, panicking unless it succeeds.
    pub async fn delete_session(&self, id: &str) {
        let resp = self
            .client
            .delete(format!("{}/session/{id}", self.url()))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE /session/{id}: {e}"));
        assert!(
            resp.status().is_success(),
            "DELETE /session/{id} -> {}",
            resp.status()
        );
    }

    /// Deletes every session `GET /session` lists.
    pub async fn delete_all_sessions(&self) {
        for id in self.session_ids().await {
            self.delete_session(&id).await;
        }
    }

    /// Ids of every session `GET /session` lists.
    pub async fn session_ids(&self) -> std::collections::BTreeSet<String> {
        self.sessions()
            .await
            .iter()
            .map(|s| s["id"].as_str().expect("session id").to_string())
            .collect()
    }

    /// Ids of the sessions whose title starts with `prefix` (each gateway of a bed shared by
    /// several gateways gets its own `prompt.session_title`).
    pub async fn session_ids_titled(&self, prefix: &str) -> std::collections::BTreeSet<String> {
        self.sessions()
            .await
            .iter()
            .filter(|s| s["title"].as_str().is_some_and(|t| t.starts_with(prefix)))
            .map(|s| s["id"].as_str().expect("session id").to_string())
            .collect()
    }

    /// Sessions OpenCode reports as busy or retrying.
    pub async fn busy_sessions(&self) -> Vec<(String, Value)> {
        self.session_status()
            .await
            .into_iter()
            .filter(|(_, v)| matches!(v["type"].as_str(), Some("busy") | Some("retry")))
            .collect()
    }

    /// Polls until no session is busy or retrying: how long it took, or the busy ones after
    /// `within`.
    pub async fn wait_not_busy(&self, within: Duration) -> Result<Duration, Vec<(String, Value)>> {
        let start = Instant::now();
        loop {
            let busy = self.busy_sessions().await;
            if busy.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= within {
                return Err(busy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /session/status` → `{sessionID: {"type": "busy"|"retry"|"idle", ...}}`.
    pub async fn session_status(&self) -> serde_json::Map<String, Value> {
        match self.get_json("/session/status").await {
            Value::Object(m) => m,
            other => panic!("GET /session/status: expected object, got {other}"),
        }
    }

    /// `GET /session/:id/message` → `[{info, parts}]`.
    pub async fn messages(&self, session_id: &str) -> Vec<Value> {
        match self
            .get_json(&format!("/session/{session_id}/message"))
            .await
        {
            Value::Array(a) => a,
            other => panic!("GET /session/{session_id}/message: expected array, got {other}"),
        }
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

/// Parsed `GET /event` frames (`{"id","type","properties"}`), in order.
pub struct EventStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventStream {
    /// Next event, or `None` on timeout / end of stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collect events until `stop` returns true for one (included) or `timeout` elapses overall.
    pub async fn collect_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return out;
            }
            match self.next(deadline - now).await {
                Some(ev) => {
                    let done = stop(&ev);
                    out.push(ev);
                    if done {
                        return out;
                    }
                }
                None => return out,
            }
        }
    }
}

/// The session id an event refers to, wherever OpenCode puts it.
pub fn event_session_id(ev: &Value) -> Option<&str> {
    let p = &ev["properties"];
    p["sessionID"]
        .as_str()
        .or_else(|| p["info"]["sessionID"].as_str())
        .or_else(|| p["part"]["sessionID"].as_str())
        .or_else(|| {
            // session.* events carry the Session as `info` (its id is the session id)
            if ev["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("session."))
            {
                p["info"]["id"].as_str()
            } else {
                None
            }
        })
}
