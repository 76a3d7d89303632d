//! The integration-test bed: a scripted model server ([`mock_model`]), a real `opencode serve`
//! ([`opencode`]), the gateway binary ([`gateway`]), a fault-injecting fake OpenCode
//! ([`fake_opencode`]), the router in-process ([`in_process`]), client helpers ([`api`], [`sse`]),
//! OpenAI schema validation ([`schema`]), processes in
//! `/proc` ([`procs`]), the Prometheus text format ([`prometheus`]) and HTTP over raw TCP
//! ([`raw_http`]).
//! [`harness::Harness`] starts every kind of bed; [`shared::BedPool`] shares one between tests.
//! The integration tests (`tests/it/main.rs`) use it as `crate::support`.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod cluster;
pub mod fake_opencode;
pub mod gateway;
pub mod harness;
pub mod in_process;
pub mod mock_model;
pub mod node_sdk;
pub mod opencode;
pub mod procs;
pub mod prometheus;
pub mod python_sdk;
pub mod raw_http;
pub mod redis;
pub mod responses_api;
pub mod responses_schema;
pub mod schema;
pub mod shared;
pub mod sse;

use std::future::Future;
use std::time::{Duration, Instant};

pub use api::{
    ask, assert_error, assistant, chat_body, content, reply_of, streaming, system, user,
};
pub use fake_opencode::FakeOpenCode;
pub use gateway::{Gateway, GatewayOptions, TestBed};
pub use harness::Harness;
pub use mock_model::MockModel;
pub use opencode::{opencode_v2_version, OpenCode, OpenCodeOptions};
pub use shared::BedPool;
pub use sse::parse_sse_data;

/// The mock provider's text model, as the gateway exposes it (`provider/model`).
pub const ECHO: &str = "mock/echo";
/// The mock provider's image-input model.
pub const VISION: &str = "mock/vision";
/// The mock provider's reasoning model.
pub const THINKER: &str = "mock/thinker";

/// Polls `cond` every 50 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether missing tools must fail the tests instead of skipping them (`PORTATEK_REQUIRE_TOOLS=1`,
/// as in CI).
pub fn tools_required() -> bool {
    std::env::var("PORTATEK_REQUIRE_TOOLS").as_deref() == Ok("1")
}
