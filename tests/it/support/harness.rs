//! The one entry point to every bed the integration tests use:
//! - [`Harness::real`]: the scripted mock model, a real `opencode serve` and the gateway binary
//!   ([`TestBed`]), optionally with extra project directories;
//! - [`Harness::fake`]: the fault-injecting fake OpenCode ([`FakeOpenCode`]) with the gateway
//!   binary in front of it;
//! - [`Harness::in_process`]: the gateway's router in-process in front of the fake ([`App`]);
//! - [`Harness::cluster`]: gateway replicas over two real OpenCode servers and a real
//!   `redis-server` ([`Cluster`]).
//!
//! A bed several tests share lives in a `static` [`BedPool`](super::shared::BedPool):
//! `POOL.run(|| Harness::real().config(TOML).start(), |bed| async move { … })`.
#![allow(dead_code)]

use serde_json::Value;

use super::cluster::Cluster;
use super::fake_opencode::{echo_only, FakeOpenCode};
use super::gateway::{Gateway, GatewayOptions, TestBed};
use super::in_process::{App, Settings};
use super::mock_model::MockModel;
use super::opencode::{opencode_config, OpenCode, OpenCodeOptions};

/// Builders of every kind of bed.
pub struct Harness;

impl Harness {
    /// Mock model + real OpenCode + gateway.
    pub fn real() -> Real {
        Real::default()
    }

    /// The fake OpenCode (listing [`echo_only`] unless told otherwise), and gateways in front.
    pub fn fake() -> Fake {
        Fake {
            models: echo_only(),
        }
    }

    /// The router in-process in front of the fake OpenCode.
    pub fn in_process() -> InProcess {
        InProcess {
            settings: Settings::default(),
        }
    }

    /// `replicas` gateways sharing Redis, over two real OpenCode servers.
    pub fn cluster(replicas: usize) -> ClusterBuilder {
        ClusterBuilder {
            replicas,
            config: String::new(),
        }
    }
}

/// Gateway options given the extra project directories' paths.
type GatewayFor = Box<dyn FnOnce(&[String]) -> GatewayOptions + Send>;

/// [`Harness::real`].
#[derive(Default)]
pub struct Real {
    opencode: OpenCodeOptions,
    gateway: GatewayOptions,
    gateway_for: Option<GatewayFor>,
    projects: Vec<String>,
}

impl Real {
    /// OpenCode's options.
    pub fn opencode(mut self, opts: OpenCodeOptions) -> Self {
        self.opencode = opts;
        self
    }

    /// OpenCode 2.x instead of 1.x (with a password, which 2.x always wants; every gateway
    /// started on it gets it, see `opencode::password_for`).
    pub fn v2(mut self) -> Self {
        let extra = std::mem::take(&mut self.opencode.extra_config);
        self.opencode = OpenCodeOptions {
            extra_config: extra,
            ..OpenCodeOptions::v2("v2-test-password")
        };
        self
    }

    /// Deep-merged into OpenCode's `opencode.json` (and the extra projects' ones).
    pub fn opencode_config(mut self, extra: Value) -> Self {
        self.opencode.extra_config = extra;
        self
    }

    /// The gateway's options.
    pub fn gateway(mut self, opts: GatewayOptions) -> Self {
        self.gateway = opts;
        self
    }

    /// The gateway's config file.
    pub fn config(mut self, toml: impl Into<String>) -> Self {
        self.gateway = self.gateway.config(toml);
        self
    }

    /// Extra project directories named `names` (in one temp dir), each with the same
    /// `opencode.json` as OpenCode's own, so the mock provider and agents exist there too.
    pub fn projects(mut self, names: &[&str]) -> Self {
        self.projects = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The gateway's options given the extra projects' paths (replaces [`Real::gateway`]).
    pub fn gateway_for(
        mut self,
        f: impl FnOnce(&[String]) -> GatewayOptions + Send + 'static,
    ) -> Self {
        self.gateway_for = Some(Box::new(f));
        self
    }

    /// Only OpenCode, in front of `mock` (for beds that put their own gateways in front).
    pub async fn start_opencode(self, mock: &MockModel) -> OpenCode {
        OpenCode::start_with(&mock.base_url(), self.opencode).await
    }

    pub async fn start(self) -> TestBed {
        let mock = MockModel::start().await;
        let opencode = OpenCode::start_with(&mock.base_url(), self.opencode.clone()).await;
        let (dirs, root) = if self.projects.is_empty() {
            (Vec::new(), None)
        } else {
            let root = tempfile::Builder::new()
                .prefix("projects-")
                .tempdir()
                .expect("tempdir");
            let config = serde_json::to_vec_pretty(&opencode_config(
                &mock.base_url(),
                &self.opencode.extra_config,
            ))
            .unwrap();
            let dirs: Vec<String> = self
                .projects
                .iter()
                .map(|name| {
                    let dir = root.path().join(name);
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(dir.join("opencode.json"), &config).unwrap();
                    dir.to_str().unwrap().to_string()
                })
                .collect();
            (dirs, Some(root))
        };
        // (A 2.x OpenCode's password reaches the gateway by `opencode::password_for`.)
        let opts = match self.gateway_for {
            Some(f) => f(&dirs),
            None => self.gateway,
        };
        let gateway = Gateway::start_with(&opencode.url(), opts).await;
        let mut bed = TestBed::assemble(mock, opencode, gateway);
        bed.projects = dirs;
        bed.projects_root = root;
        bed
    }
}

/// [`Harness::fake`].
pub struct Fake {
    models: Value,
}

impl Fake {
    /// The `mock` provider's models (e.g. `fake_opencode::mock_models()`).
    pub fn models(mut self, models: Value) -> Self {
        self.models = models;
        self
    }

    /// The fake alone (set its faults, then start gateways with `gateway`/`gateway_with`).
    pub async fn start(self) -> FakeOpenCode {
        FakeOpenCode::start_with_models(self.models).await
    }

    /// The fake and one gateway in front of it with `opts`.
    pub async fn start_with_gateway(self, opts: GatewayOptions) -> (FakeOpenCode, Gateway) {
        let fake = self.start().await;
        let gateway = Gateway::start_with(fake.url(), opts).await;
        (fake, gateway)
    }
}

/// [`Harness::in_process`].
pub struct InProcess {
    settings: Settings,
}

impl InProcess {
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.settings = self.settings.config(toml);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.settings = self.settings.env(key, value);
        self
    }

    pub async fn start(self) -> App {
        App::start_with(self.settings).await
    }
}

/// [`Harness::cluster`].
pub struct ClusterBuilder {
    replicas: usize,
    config: String,
}

impl ClusterBuilder {
    /// Appended to every replica's config.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_string();
        self
    }

    /// `None` when redis-server is missing (and not required).
    pub async fn start(self) -> Option<Cluster> {
        Cluster::start_replicas(self.replicas, &self.config).await
    }
}
