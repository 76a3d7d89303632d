//! The HTTP API in-process: the gateway's router driven with `tower::ServiceExt::oneshot`, in
//! front of the fake OpenCode of `tests/it/support/fake_opencode.rs` (see
//! `tests/it/support/in_process.rs`). Everything decided before or without OpenCode is checked
//! here, in milliseconds; the real-OpenCode suites keep what needs OpenCode.
//!
//! One file per feature: request validation, client auth, the catalog (`/v1/models`), and routing
//! (404/405 fallbacks, request ids, probes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod models;
mod openapi;
mod routing;
mod validation;
