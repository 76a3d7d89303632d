//! The gateway core in front of a real `opencode serve` and the scripted mock model: only what
//! needs OpenCode. Two beds, each one OpenCode shared by named scenarios (an OpenCode takes
//! seconds to start, and its first prompt more; the two beds run in parallel):
//! - [`chat_through_opencode`]: models, completions, conversation seeding, images, titles, tools
//!   off, concurrency; then settings that reach OpenCode: `reasoning_effort` variants,
//!   `prompt.agent`, `prompt.tools_enabled`, `opencode.directory`; a failing model cut off by
//!   the retry budget;
//! - [`upstream_failures`]: basic auth towards OpenCode, a failing model cut off by the
//!   deadline, OpenCode dying.
//!
//! Validation, client auth, fallbacks, request ids and the catalog's filtering are checked
//! in-process (`tests/http_api`); the binary without OpenCode in `tests/it/gateway_process.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::api::{read_json, send};
use support::gateway::test_client;
use support::mock_model::{self, content_text, expected_reply, last_user_text, FAILURE_MESSAGE};
use support::opencode::opencode_version;
use support::scenarios::scenario;
use support::schema::assert_valid;
use support::{ask, assert_error, assistant, chat_body, content, user, ECHO, THINKER, VISION};
use support::{Gateway, GatewayOptions, OpenCodeOptions, Scenarios, TestBed};

mod chat;
mod settings;
mod upstream;

use chat::*;
use settings::*;
use upstream::*;

/// A 1x1 transparent PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
/// The title the gateway gives its sessions by default.
const TITLE: &str = "PorTaTek Gateway";

/// Every message text of a model request with one of `roles` (all roles when empty), joined.
fn texts(req: &Value, roles: &[&str]) -> String {
    req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| roles.is_empty() || roles.iter().any(|r| m["role"] == *r))
        .map(|m| content_text(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `POST /v1/chat/completions` on another gateway than the bed's → (status, JSON body).
async fn chat_via(gw: &Gateway, body: &Value) -> (StatusCode, Value) {
    let resp = test_client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(body)
        .send()
        .await
        .expect("chat");
    read_json(resp).await
}

/// Panics unless OpenCode has no busy or retrying session within 2 s.
async fn assert_quiet_upstream(bed: &TestBed, after: &str) {
    if let Err(busy) = bed.opencode.wait_not_busy(Duration::from_secs(2)).await {
        panic!("OpenCode still running the prompt after {after}: {busy:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Chat through OpenCode
// ---------------------------------------------------------------------------------------------

/// Chat completions through OpenCode: models and answers come from it, conversations and images
/// reach the model as they should, sessions are titled without a model call, the model gets no
/// tools, and concurrent chats do not mix. Then the settings that change what OpenCode runs,
/// and a failing model cut off by the retry budget (these scenarios start their own gateways).
/// OpenCode defines the `chatty` agent (whose own config allows `bash`) and reasoning-effort
/// variants for `mock/thinker`.
#[tokio::test(flavor = "multi_thread")]
async fn chat_through_opencode() {
    let opencode_opts = OpenCodeOptions {
        extra_config: json!({
            "agent": {"chatty": {
                "mode": "primary",
                "prompt": "You are the chatty test agent.",
                "tools": {"bash": true}
            }},
            "provider": {"mock": {"models": {"thinker": {
                "variants": {"high": {"reasoningEffort": "high"}, "low": {"reasoningEffort": "low"}}
            }}}}
        }),
        ..OpenCodeOptions::default()
    };
    let bed = Harness::real()
        .opencode(opencode_opts)
        .gateway(GatewayOptions::default())
        .start()
        .await;
    let mut s = Scenarios::new();
    // First: it counts every model call and session so far.
    scenario!(s, first_chat(&bed));
    scenario!(s, models_come_from_opencode(&bed));
    scenario!(s, completion_shape_and_usage(&bed));
    scenario!(s, finish_reason_length(&bed));
    scenario!(s, unknown_model_stays_here(&bed));
    scenario!(s, system_and_developer_prompts(&bed));
    scenario!(s, unseen_history_in_one_call(&bed));
    scenario!(s, images(&bed));
    scenario!(s, concurrent_chats(&bed));
    // Settings that reach OpenCode.
    scenario!(s, reasoning_effort(&bed));
    scenario!(s, agent_without_tools(&bed));
    scenario!(s, agent_with_tools(&bed));
    scenario!(s, opencode_directory(&bed));
    scenario!(s, model_failure_retry_budget(&bed));
    s.finish(&bed.gateway.logs());
}

/// When OpenCode or the model fails, on one password-protected OpenCode (every gateway gets the
/// credentials unless the scenario is about not having them): basic auth, a failing model cut
/// off by the deadline, and last OpenCode dying.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures() {
    let mut bed = Harness::real()
        .opencode(OpenCodeOptions {
            password: Some(OC_PASSWORD.into()),
            username: Some(OC_USER.into()),
            ..OpenCodeOptions::default()
        })
        .gateway(with_credentials())
        .start()
        .await;
    let mut s = Scenarios::new();
    scenario!(s, upstream_basic_auth(&bed));
    scenario!(s, model_failure_deadline(&bed));
    // Last: it kills OpenCode.
    scenario!(s, opencode_dies(&mut bed));
    s.finish(&bed.gateway.logs());
}
