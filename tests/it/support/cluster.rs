//! A scaled-out bed: one scripted model, two real OpenCode servers (upstreams `a` and `b`), a
//! real `redis-server`, and two gateway replicas configured with both upstreams and the Redis
//! store — what an operator runs behind a load balancer, on loopback.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use super::api::send;
use super::gateway::{test_client, Gateway, GatewayOptions};
use super::mock_model::MockModel;
use super::opencode::OpenCode;
use super::redis::Redis;

/// The bed.
pub struct Cluster {
    pub mock: MockModel,
    /// Upstream `a`, then `b`.
    pub opencodes: Vec<OpenCode>,
    pub redis: Redis,
    pub gateways: Vec<Gateway>,
    pub http: reqwest::Client,
}

/// The gateway config of a replica: both upstreams, the Redis store, fast health checks and
/// short claims (so the tests see a dead replica's claim lapse).
pub fn replica_config(opencodes: &[OpenCode], redis_url: &str, extra: &str) -> String {
    let mut toml = String::new();
    for (name, oc) in ["a", "b"].iter().zip(opencodes) {
        toml.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nurl = \"{}\"\n",
            oc.url()
        ));
    }
    toml.push_str(&format!(
        "[balancing]\nhealth_interval_secs = 1\nfailure_threshold = 1\nopen_secs = 2\n\
         [store]\nkind = \"redis\"\nurl = \"{redis_url}\"\nlease_ttl_secs = 5\n{extra}"
    ));
    toml
}

impl Cluster {
    /// Starts everything with two replicas; `None` when redis-server is missing (and not
    /// required).
    pub async fn start(extra_config: &str) -> Option<Cluster> {
        Self::start_replicas(2, extra_config).await
    }

    /// Starts everything with `replicas` gateways; `None` when redis-server is missing (and
    /// not required).
    pub async fn start_replicas(replicas: usize, extra_config: &str) -> Option<Cluster> {
        let redis = Redis::start().await?;
        let mock = MockModel::start().await;
        let base = mock.base_url();
        let (a, b) = tokio::join!(OpenCode::start(&base), OpenCode::start(&base));
        let opencodes = vec![a, b];
        let config = replica_config(&opencodes, &redis.url(), extra_config);
        let mut gateways = Vec::new();
        for _ in 0..replicas {
            gateways.push(Self::replica(&config).await);
        }
        let cluster = Cluster {
            mock,
            opencodes,
            redis,
            gateways,
            http: test_client(),
        };
        for g in 0..replicas {
            cluster.wait_ready(g).await;
        }
        Some(cluster)
    }

    /// One gateway replica with `config`.
    pub async fn replica(config: &str) -> Gateway {
        let opts = GatewayOptions {
            no_default_args: true,
            ..GatewayOptions::default()
        }
        .args(["--listen", "127.0.0.1:0"])
        .config(config.to_string());
        Gateway::start_with("", opts).await
    }

    /// Waits (30 s) until replica `g`'s `/health` is 200 with both upstreams ready.
    pub async fn wait_ready(&self, g: usize) {
        let ok = super::eventually(Duration::from_secs(30), || async {
            let (status, body) = self.get(g, "/health").await;
            status == StatusCode::OK
                && body["upstreams"]
                    .as_array()
                    .is_some_and(|u| u.iter().all(|u| u["ready"] == true))
        })
        .await;
        assert!(ok, "replica {g} not ready:\n{}", self.gateways[g].logs());
    }

    /// `GET` on replica `g`.
    pub async fn get(&self, g: usize, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = send(
            self.http
                .get(format!("{}{path}", self.gateways[g].url()))
                .timeout(Duration::from_secs(60)),
        )
        .await;
        (status, body)
    }

    /// `POST` of `body` on replica `g`, with extra headers.
    pub async fn post(
        &self,
        g: usize,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.gateways[g].url()))
            .timeout(Duration::from_secs(90))
            .json(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        send(rb).await
    }

    /// Which upstream (0 = `a`, 1 = `b`) holds `session`.
    pub async fn upstream_of(&self, session: &str) -> Option<usize> {
        for (i, oc) in self.opencodes.iter().enumerate() {
            let ids: BTreeSet<String> = oc.session_ids().await;
            if ids.contains(session) {
                return Some(i);
            }
        }
        None
    }
}
