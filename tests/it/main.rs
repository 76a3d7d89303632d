//! The integration tests, as one binary (each test file used to be its own binary linking the
//! whole dependency tree and compiling `support/` again). Run one file's tests with
//! `cargo test --test it <module>::`, one test with `cargo test --test it <module>::<name>`.
//!
//! [`support`] is the test bed; [`support::harness::Harness`] starts every kind of bed.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

mod adapter_fixtures;
mod agent_mode;
mod bench_fake;
mod client_tools;
mod container;
mod deploy_manifests;
mod embedded;
mod faults;
mod gateway_core;
mod gateway_process;
mod hardening;
/// The HTTP API in-process (its files stay in `tests/http_api`).
#[path = "../http_api/main.rs"]
mod http_api;
mod layers;
mod metrics;
mod openapi_fuzz;
mod opencode_surface;
mod opencode_v2;
mod outages;
mod parsing_props;
mod rate_limits;
mod responses;
mod scale_out;
mod sessions;
mod store;
mod streaming;
mod testbed_selftest;
