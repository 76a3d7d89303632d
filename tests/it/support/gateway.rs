//! The gateway binary under test (`portatek-gateway`), spawned as a child process.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::api::read_json;
use super::mock_model::MockModel;
use super::opencode::{set_pdeathsig, tail_file, OpenCode, OpenCodeOptions};
use super::sse::{check_ok_stream, is_event_stream, read_payloads, SseReader, Streamed};

pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_portatek-gateway");
pub const READY_PREFIX: &str = "portatek-gateway listening on ";

/// Env vars the gateway understands; removed from the child's env unless a test sets them.
pub const GATEWAY_ENV_VARS: &[&str] = &[
    "OPENCODE_BASE_URL",
    "PORTATEK_LISTEN",
    "PORTATEK_API_KEYS",
    "OPENCODE_SERVER_PASSWORD",
    "OPENCODE_SERVER_USERNAME",
    "PORTATEK_CONFIG",
];

/// Upper bound for waiting on any single SSE frame (so a broken gateway fails instead of hanging).
pub const FRAME_WAIT: Duration = Duration::from_secs(30);

/// URL used for `--opencode-url` by [`Gateway::run_expect_exit`] (nothing listens there).
pub const UNUSED_OPENCODE_URL: &str = "http://127.0.0.1:9";

#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// Extra command-line args (after the defaults).
    pub args: Vec<String>,
    /// Extra env vars (override the defaults, e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Written to a temp file and passed as `--config <file>`.
    pub config_toml: Option<String>,
    /// Don't pass the default `--listen 127.0.0.1:0 --opencode-url <url>` (for env/config tests).
    /// Each default is also skipped on its own when `args` already contains that flag.
    pub no_default_args: bool,
    /// A cap on the gateway's data memory (`RLIMIT_DATA`, bytes): a regression that makes it
    /// grow without bound then fails its allocation and ends the gateway instead of exhausting
    /// the test machine.
    pub memory_limit: Option<u64>,
}

impl GatewayOptions {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn config(mut self, toml: impl Into<String>) -> Self {
        self.config_toml = Some(toml.into());
        self
    }

    /// Caps the gateway's data memory at `bytes` (see [`GatewayOptions::memory_limit`]).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }
}

/// Build the command (and the temp dir holding the config file / log) for `opencode_url`.
fn command(opencode_url: &str, opts: &GatewayOptions) -> (Command, TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("gateway-bed-")
        .tempdir()
        .expect("tempdir");
    // `PORTATEK_GATEWAY_WRAPPER="valgrind --tool=callgrind"` runs the gateway under a profiler
    // (BENCHMARKS.md says how); tests never set it.
    let wrapper = std::env::var("PORTATEK_GATEWAY_WRAPPER").unwrap_or_default();
    let mut wrapper = wrapper.split_whitespace();
    let mut cmd = match wrapper.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(wrapper).arg(GATEWAY_BIN);
            cmd
        }
        None => Command::new(GATEWAY_BIN),
    };
    if !opts.no_default_args {
        // A default is left out when the test passes that flag itself (clap refuses duplicates).
        let given = |flag: &str| {
            opts.args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        if !given("--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !given("--opencode-url") {
            cmd.args(["--opencode-url", opencode_url]);
        }
    }
    if let Some(toml) = &opts.config_toml {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, toml).expect("write gateway config");
        cmd.arg("--config").arg(&path);
    }
    cmd.args(&opts.args);
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if GATEWAY_ENV_VARS.contains(&k_str.as_ref()) || k_str.starts_with("PORTATEK_") {
            cmd.env_remove(&k);
        }
    }
    // Each gateway its own state dir (its instance id), unless the test shares one on purpose
    // (a restart that must know its previous life's sessions).
    cmd.env("RUST_LOG", "portatek_gateway=debug")
        .env("NO_COLOR", "1")
        .env("PORTATEK_STATE_DIR", dir.path().join("state"));
    // A test's 2.x OpenCode always wants its password (unless the test sets one itself).
    if let Some(pw) = super::opencode::password_for(opencode_url) {
        cmd.env("OPENCODE_SERVER_PASSWORD", pw);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    set_pdeathsig(&mut cmd);
    if let Some(bytes) = opts.memory_limit {
        limit_data(&mut cmd, bytes);
    }
    (cmd, dir)
}

/// Sets `RLIMIT_DATA` of the child to `bytes` (heap and private mappings count against it).
fn limit_data(cmd: &mut Command, bytes: u64) {
    // SAFETY: setrlimit is async-signal-safe; nothing else happens between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running gateway. Killed when dropped.
pub struct Gateway {
    child: Child,
    url: String,
    dir: TempDir,
    stdout: Arc<Mutex<String>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Gateway {
    pub async fn start(opencode_url: &str) -> Gateway {
        Self::start_with(opencode_url, GatewayOptions::default()).await
    }

    /// Spawn and wait (30 s) for `portatek-gateway listening on http://127.0.0.1:PORT` on stdout.
    pub async fn start_with(opencode_url: &str, opts: GatewayOptions) -> Gateway {
        let (mut cmd, dir) = command(opencode_url, &opts);
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("create gateway log");
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {GATEWAY_BIN}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let captured = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        {
            let captured = captured.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut ready_tx = Some(ready_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    captured.lock().unwrap().push_str(&line);
                    captured.lock().unwrap().push('\n');
                    if let Some(rest) = line.trim().strip_prefix(READY_PREFIX) {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(rest.trim().trim_end_matches('/').to_string());
                        }
                    }
                }
            });
        }
        let fail = |child: &mut Child, why: String| -> ! {
            let _ = child.start_kill();
            panic!(
                "gateway did not start: {why}\nstdout:\n{}\nstderr (tail):\n{}",
                captured.lock().unwrap(),
                tail_file(&log_path, 80)
            );
        };
        let url = match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => {
                // stdout closed without the ready line: most likely it exited.
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                fail(
                    &mut child,
                    format!("stdout closed before the ready line (exit: {status:?})"),
                )
            }
            Err(_) => fail(&mut child, "no ready line within 30 s".into()),
        };
        Gateway {
            child,
            url,
            dir,
            stdout: captured,
        }
    }

    /// `http://127.0.0.1:PORT` (as printed by the gateway, no trailing slash).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Everything the gateway wrote to stderr so far (its logs).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// Everything the gateway wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Exit status if the gateway has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Send SIGTERM and wait (up to `timeout`) for exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Run the gateway expecting it to exit by itself within 10 s (e.g. invalid config).
    /// Uses `--opencode-url` [`UNUSED_OPENCODE_URL`] unless `no_default_args`.
    pub async fn run_expect_exit(opts: GatewayOptions) -> (ExitStatus, String, String) {
        let (mut cmd, _dir) = command(UNUSED_OPENCODE_URL, &opts);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {GATEWAY_BIN}: {e}"));
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_task = tokio::spawn(async move {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s).await;
            String::from_utf8_lossy(&s).into_owned()
        });
        let err_task = tokio::spawn(async move {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s).await;
            String::from_utf8_lossy(&s).into_owned()
        });
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait gateway");
                let stdout = out_task.await.unwrap_or_default();
                let stderr = err_task.await.unwrap_or_default();
                (status, stdout, stderr)
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let stdout = out_task.await.unwrap_or_default();
                let stderr = err_task.await.unwrap_or_default();
                panic!("gateway did not exit within 10 s\nstdout:\n{stdout}\nstderr:\n{stderr}");
            }
        }
    }
}

/// Mock model + real OpenCode + gateway, wired together.
pub struct TestBed {
    // Field order = drop order: gateway first, then OpenCode, then the model.
    pub gateway: Gateway,
    pub opencode: OpenCode,
    pub mock: MockModel,
    pub client: reqwest::Client,
    /// Sent as `Authorization: Bearer <key>` by the helpers when set.
    pub api_key: Option<String>,
    /// Extra project directories OpenCode serves (see `Harness::real().projects(…)`), each with
    /// OpenCode's own `opencode.json`, in the order asked for.
    pub projects: Vec<String>,
    /// Holds [`TestBed::projects`].
    pub projects_root: Option<TempDir>,
}

impl TestBed {
    pub async fn start() -> TestBed {
        Self::start_with(OpenCodeOptions::default(), GatewayOptions::default()).await
    }

    pub async fn start_with(
        opencode_opts: OpenCodeOptions,
        gateway_opts: GatewayOptions,
    ) -> TestBed {
        let mock = MockModel::start().await;
        let opencode = OpenCode::start_with(&mock.base_url(), opencode_opts).await;
        let gateway = Gateway::start_with(&opencode.url(), gateway_opts).await;
        TestBed::assemble(mock, opencode, gateway)
    }

    /// A bed of parts started separately (no extra project directories).
    pub fn assemble(mock: MockModel, opencode: OpenCode, gateway: Gateway) -> TestBed {
        TestBed {
            gateway,
            opencode,
            mock,
            client: test_client(),
            api_key: None,
            projects: Vec::new(),
            projects_root: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// GET on the gateway → (status, JSON body or JSON string for non-JSON bodies).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .auth(self.client.get(self.url(path)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        read_json(resp).await
    }

    /// POST JSON on the gateway → (status, JSON body or JSON string for non-JSON bodies).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .auth(self.client.post(self.url(path)))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        read_json(resp).await
    }

    /// `POST /v1/chat/completions` (non-streaming).
    pub async fn chat(&self, body: Value) -> (StatusCode, Value) {
        self.post("/v1/chat/completions", &body).await
    }

    /// `POST /v1/chat/completions` returning the raw response (to read the stream incrementally).
    pub async fn chat_raw(&self, body: Value) -> reqwest::Response {
        self.auth(self.client.post(self.url("/v1/chat/completions")))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/chat/completions")
    }

    /// Streaming chat: (status, raw SSE `data:` payloads in order, including `[DONE]`).
    /// For a non-SSE answer (e.g. an error), the single element is the whole body.
    pub async fn chat_stream(&self, body: Value) -> (StatusCode, Vec<String>) {
        let resp = self.chat_raw(body).await;
        let (status, _, payloads) = read_payloads(resp, FRAME_WAIT).await;
        (status, payloads)
    }

    /// Starts a streaming chat and returns the reader of its 200 `text/event-stream` answer
    /// (frame times count from the request).
    pub async fn open_stream(&self, body: Value) -> SseReader {
        let started = Instant::now();
        let resp = self.chat_raw(body).await;
        assert_eq!(
            resp.status(),
            200,
            "streaming request answered {}",
            resp.status()
        );
        assert!(
            is_event_stream(resp.headers()),
            "content-type is {:?}, not text/event-stream",
            resp.headers().get(reqwest::header::CONTENT_TYPE)
        );
        SseReader::since(resp, started)
    }

    /// Reads a streaming chat to its end, checked for OpenAI conformance ([`check_ok_stream`]).
    pub async fn read_ok_stream(&self, body: Value) -> Streamed {
        let model = body["model"].as_str().unwrap().to_string();
        let frames = self.open_stream(body).await.rest(FRAME_WAIT).await;
        check_ok_stream(frames, &model)
    }
}

/// A reqwest client for loopback tests (no proxy, 120 s timeout).
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}
