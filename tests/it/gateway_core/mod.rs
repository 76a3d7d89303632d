//! The gateway core in front of a real `opencode serve` and the scripted mock model: only what
//! needs OpenCode. One test per behaviour, declared here (their steps live in the submodules);
//! the tests of a group share a bed (an OpenCode takes seconds to start, and its first prompt
//! more):
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
use support::schema::assert_valid;
use support::{ask, assert_error, assistant, chat_body, content, user, ECHO, THINKER, VISION};
use support::{BedPool, Gateway, GatewayOptions, OpenCodeOptions, TestBed};

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

/// The bed of [`chat_through_opencode`]: OpenCode defines the `chatty` agent (whose own config
/// allows `bash`) and reasoning-effort variants for `mock/thinker`.
async fn chat_bed() -> TestBed {
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
    Harness::real()
        .opencode(opencode_opts)
        .gateway(GatewayOptions::default())
        .start()
        .await
}

/// Chat completions through OpenCode, one test per behaviour on a shared bed: models and answers
/// come from it, conversations and images reach the model as they should, sessions are titled
/// without a model call, the model gets no tools, and concurrent chats do not mix. Then the
/// settings that change what OpenCode runs, and a failing model cut off by the retry budget
/// (these tests start their own gateways on the bed's OpenCode).
mod chat_through_opencode {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn first_chat() {
        BED.run(chat_bed, super::first_chat);
    }

    #[test]
    fn models_come_from_opencode() {
        BED.run(chat_bed, super::models_come_from_opencode);
    }

    #[test]
    fn completion_shape_and_usage() {
        BED.run(chat_bed, super::completion_shape_and_usage);
    }

    #[test]
    fn finish_reason_length() {
        BED.run(chat_bed, super::finish_reason_length);
    }

    #[test]
    fn unknown_model_stays_here() {
        BED.run(chat_bed, super::unknown_model_stays_here);
    }

    #[test]
    fn system_and_developer_prompts() {
        BED.run(chat_bed, super::system_and_developer_prompts);
    }

    #[test]
    fn unseen_history_in_one_call() {
        BED.run(chat_bed, super::unseen_history_in_one_call);
    }

    #[test]
    fn images() {
        BED.run(chat_bed, super::images);
    }

    #[test]
    fn concurrent_chats() {
        BED.run(chat_bed, super::concurrent_chats);
    }

    #[test]
    fn reasoning_effort() {
        BED.run(chat_bed, super::reasoning_effort);
    }

    #[test]
    fn agent_without_tools() {
        BED.run(chat_bed, super::agent_without_tools);
    }

    #[test]
    fn agent_with_tools() {
        BED.run(chat_bed, super::agent_with_tools);
    }

    #[test]
    fn opencode_directory() {
        BED.run(chat_bed, super::opencode_directory);
    }

    #[test]
    fn model_failure_retry_budget() {
        BED.run(chat_bed, super::model_failure_retry_budget);
    }
}

/// The bed of [`upstream_failures`]: a password-protected OpenCode, the gateway with its
/// credentials. One chat has run on it: OpenCode's first prompt takes seconds, which a test
/// with a 5 s deadline must not pay (whichever test gets the bed first).
async fn upstream_bed() -> TestBed {
    let bed = Harness::real()
        .opencode(OpenCodeOptions {
            password: Some(OC_PASSWORD.into()),
            username: Some(OC_USER.into()),
            ..OpenCodeOptions::default()
        })
        .gateway(with_credentials())
        .start()
        .await;
    let (status, v) = bed.chat(ask(ECHO, "warm up")).await;
    assert_eq!(status, 200, "the bed's first chat: {v}");
    bed
}

/// When OpenCode or the model fails, on a password-protected OpenCode (every gateway gets the
/// credentials unless the test is about not having them): basic auth and a failing model cut
/// off by the deadline share a bed; OpenCode dying has its own (it kills OpenCode).
mod upstream_failures {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn upstream_basic_auth() {
        BED.run(upstream_bed, super::upstream_basic_auth);
    }

    #[test]
    fn model_failure_deadline() {
        BED.run(upstream_bed, super::model_failure_deadline);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn opencode_dies() {
        let mut bed = upstream_bed().await;
        super::opencode_dies(&mut bed).await;
    }
}
