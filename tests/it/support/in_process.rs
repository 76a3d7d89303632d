//! The gateway's router built in-process (no gateway binary, no real OpenCode) in front of a
//! [`FakeOpenCode`], driven with `tower::ServiceExt::oneshot`: fast checks of everything that
//! is decided before or without OpenCode (validation, auth, fallbacks, request ids, catalog).
//!
//! The gateway's public API used here, and nowhere else in the test bed:
//! `config::{Config, Cli}` (`Config::load_from(&Cli::default(), env)`), `app::AppState::start`
//! and `app::router`.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use portatek_gateway::app::{router, AppState};
use portatek_gateway::config::{Cli, Config};

use super::api::{assert_error, body_json};
use super::fake_opencode::{mock_models, FakeOpenCode};

/// Largest response body read (every answer here is small).
const BODY_LIMIT: usize = 1 << 20;

/// Settings of an in-process gateway: a config file and environment variables, as an operator
/// would give them (the base URL of the fake is added).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Contents of the TOML config file (none when empty).
    pub toml: String,
    /// Environment variables, e.g. `PORTATEK_API_KEYS`.
    pub env: Vec<(String, String)>,
}

impl Settings {
    pub fn config(mut self, toml: &str) -> Self {
        self.toml = toml.to_string();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// One answer: status, headers, and the body as JSON (a JSON string for a non-JSON body,
/// `null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts an OpenAI-shaped error answer (see [`assert_error`]).
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: Option<&str>, param: Option<&str>, what: &str) {
        assert_error(self.status, &self.body, status, code, param, what);
    }
}

/// The router and its fake upstream. Background tasks stop when it is dropped.
pub struct App {
    /// The stub upstream (its catalog: [`mock_models`]).
    pub fake: FakeOpenCode,
    router: axum::Router,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl App {
    /// Default settings (no keys, no config file).
    pub async fn start() -> App {
        Self::start_with(Settings::default()).await
    }

    pub async fn start_with(settings: Settings) -> App {
        let fake = FakeOpenCode::start_with_models(mock_models()).await;
        let dir = tempfile::Builder::new()
            .prefix("in-process-")
            .tempdir()
            .expect("tempdir");
        // Its own state dir (instance id), never the user's; settings may name another.
        let state_dir = dir.path().join("state").to_string_lossy().into_owned();
        let mut env = vec![("PORTATEK_STATE_DIR".to_string(), state_dir)];
        env.extend(settings.env.clone());
        env.push(("OPENCODE_BASE_URL".into(), fake.url().to_string()));
        if !settings.toml.is_empty() {
            let path = dir.path().join("gateway.toml");
            std::fs::write(&path, &settings.toml).expect("write the config file");
            env.push((
                "PORTATEK_CONFIG".into(),
                path.to_string_lossy().into_owned(),
            ));
        }
        let lookup = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let config = Config::load_from(&Cli::default(), lookup).expect("valid settings");
        let shutdown = CancellationToken::new();
        let state = AppState::start(config, &shutdown).expect("gateway state");
        App {
            fake,
            router: router(state),
            shutdown,
            _dir: dir,
        }
    }

    /// One request through the router.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), BODY_LIMIT)
            .await
            .expect("read the response body");
        let body = body_json(String::from_utf8_lossy(&bytes).into_owned());
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `method path` with `headers` and no body.
    pub async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(request(method, path, headers, Body::empty()))
            .await
    }

    /// `GET path`, no headers.
    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[]).await
    }

    /// `POST /v1/chat/completions` with a JSON body and extra `headers`.
    pub async fn chat_with(&self, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.post_raw("/v1/chat/completions", body.to_string(), headers)
            .await
    }

    /// `POST /v1/chat/completions` with a JSON body.
    pub async fn chat(&self, body: &Value) -> Reply {
        self.chat_with(body, &[]).await
    }

    /// `POST path` with `content-type: application/json` and `body` as given (even if not JSON).
    pub async fn post_raw(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(request("POST", path, &all, Body::from(body)))
            .await
    }
}

/// A request with headers.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body).expect("a valid request")
}
