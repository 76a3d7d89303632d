//! Agent mode end to end, against a real `opencode serve` and the scripted mock model (which
//! calls OpenCode's own tools on cue: `[call:bash:{…}]`). One test per behaviour; the tests of a
//! group share a bed (a `BedPool`: one test at a time per bed), a test that restarts the gateway
//! has its own:
//! - [`keys_agents_and_directories`]: key roles (client 403 / admin 200 on an admin route, admin
//!   sees every session), keys given as SHA-256 digests, audit lines; the agent and the project
//!   directory chosen per request (headers and `metadata`) within the key's scope, and refused
//!   outside it; `GET /v1/agents`; two directories kept apart (pool affinity, concurrent runs,
//!   explicit sessions).
//! - [`permission_policies`]: OpenCode configured to *ask* before `bash` — a headless run that
//!   would wait forever — answered by each policy: `deny` (the model is told and carries on, in
//!   any project directory, questions too), `allow` (the allowlisted command really runs, others
//!   are refused), `client` (the request is shown on the stream and in
//!   `GET /v1/sessions/{id}/permissions`, answered through the API, or rejected after
//!   `permissions.timeout_secs`). Every run has a hard deadline in the test.
//! - [`agent_activity`]: OpenCode's tool runs as `: opencode-activity {json}` SSE comments in chat
//!   streams (opt-in, ignored by openai-node and openai-python), and as `mcp_call` output items
//!   of the Responses API (JSON and streamed, validated against OpenAI's Responses schema).
//! - [`event_stream`]: `GET /v1/events` filtered per key (admin: all, or one `?directory=`), and a
//!   consumer that never reads dropped with a final `error` event.
//!
//! Which directory a run really ran in is read from the model's side: OpenCode tells the model
//! its `Working directory:` in the system prompt; which agent ran it, from the agent's own prompt
//! there and from OpenCode's message records.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::api::send;
use support::gateway::FRAME_WAIT;
use support::mock_model::{content_text, last_user_text};
use support::opencode::event_session_id;
use support::sse::{check_ok_stream, is_event_stream, Frame, SseReader};
use support::{
    ask, assert_error, assistant, chat_body, eventually, node_sdk, python_sdk, responses_schema,
    streaming, user, ECHO,
};
use support::{BedPool, Gateway, GatewayOptions, Harness, TestBed};

mod activity;
mod agents_and_directories;
mod events;
mod helpers;
mod keys;
mod permissions;

use activity::*;
use agents_and_directories::*;
use events::*;
use helpers::*;
use keys::*;
use permissions::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Logs at debug for the gateway, plus the `audit` target (not under `portatek_gateway`).
const RUST_LOG: &str = "portatek_gateway=debug";

/// A bed whose OpenCode also serves extra project directories (`Harness::real().projects(…)`).
type Bed = TestBed;

/// Replaces the bed's gateway (the old one is killed first).
async fn restart_gateway(bed: &mut TestBed, opts: GatewayOptions) {
    bed.gateway.kill().await;
    bed.gateway = Gateway::start_with(&bed.opencode.url(), opts).await;
}

/// Gateway options from a TOML config, logging audit lines.
fn gateway_config(toml: &str) -> GatewayOptions {
    GatewayOptions::default()
        .config(toml)
        .env("RUST_LOG", RUST_LOG)
}

/// A request to the gateway as `key` (none: no `Authorization`), with extra headers.
fn request(
    bed: &TestBed,
    key: Option<&str>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut rb = bed.client.request(method, bed.url(path));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    for (name, value) in headers {
        rb = rb.header(*name, *value);
    }
    rb
}

/// `GET path` as `key` → (status, body).
async fn get_as(bed: &TestBed, key: Option<&str>, path: &str) -> (StatusCode, Value) {
    let (status, _, body) = send(request(bed, key, Method::GET, path, &[])).await;
    (status, body)
}

/// `POST path` with a JSON body as `key` and headers → (status, headers, body).
async fn post_as(
    bed: &TestBed,
    key: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, HeaderMap, Value) {
    send(request(bed, key, Method::POST, path, headers).json(body)).await
}

/// A non-streaming chat completion as `key` with headers → (status, headers, body).
async fn chat_as(
    bed: &TestBed,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, HeaderMap, Value) {
    post_as(bed, key, "/v1/chat/completions", headers, body).await
}

/// The OpenCode session a completion ran on (`x-opencode-session-id`).
#[track_caller]
fn session_of(headers: &HeaderMap) -> String {
    headers
        .get("x-opencode-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no x-opencode-session-id in {headers:?}"))
        .to_string()
}

/// A chat that must succeed: its answer text and session.
#[track_caller]
fn answered(
    what: &str,
    (status, headers, body): (StatusCode, HeaderMap, Value),
) -> (String, String) {
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no content in {body}"))
        .to_string();
    (text, session_of(&headers))
}

/// Roles, digests, audit lines, agent and directory selection, two directories kept apart.
mod keys_agents_and_directories {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn roles_and_digests() {
        BED.run(keys_bed, |bed| {
            super::roles_and_digests(bed, &bed.projects[0])
        });
    }

    #[test]
    fn status_shows_clients_no_internals() {
        BED.run(keys_bed, super::status_shows_clients_no_internals);
    }

    /// It reads the whole audit log, which the other tests write to (the admin's session
    /// lookup it looks for is `roles_and_digests`'): a bed of its own, with the calls that ran
    /// before it on the shared one.
    #[test]
    fn audit_lines_for_admin_and_tool_calls() {
        static OWN: BedPool<TestBed> = BedPool::new();
        OWN.run(keys_bed, |bed| async move {
            super::roles_and_digests(bed, &bed.projects[0]).await;
            super::status_shows_clients_no_internals(bed).await;
            super::audit_lines_for_admin_and_tool_calls(bed).await;
        });
    }

    #[test]
    fn agent_chosen_per_request_within_scope() {
        BED.run(keys_bed, super::agent_chosen_per_request_within_scope);
    }

    #[test]
    fn agents_listed_per_key() {
        BED.run(keys_bed, super::agents_listed_per_key);
    }

    #[test]
    fn directory_chosen_per_request_within_scope() {
        BED.run(keys_bed, |bed| {
            super::directory_chosen_per_request_within_scope(
                bed,
                &bed.projects[0],
                &bed.projects[1],
            )
        });
    }

    #[test]
    fn two_directories_kept_apart() {
        BED.run(keys_bed, |bed| {
            super::two_directories_kept_apart(bed, &bed.projects[0], &bed.projects[1])
        });
    }
}

/// OpenCode asks before every `bash` command (`"permission": {"bash": "ask"}`): without an
/// answer such a run waits forever. Each policy must end every such run, promptly.
mod permission_policies {
    use super::*;

    static DENY: BedPool<TestBed> = BedPool::new();
    static CLIENT: BedPool<TestBed> = BedPool::new();

    #[test]
    fn deny_tells_the_model_and_carries_on() {
        DENY.run(deny_bed, super::deny_tells_the_model_and_carries_on);
    }

    #[test]
    fn deny_works_in_another_project_directory() {
        DENY.run(deny_bed, |bed| {
            super::deny_works_in_another_project_directory(bed, &bed.projects[0])
        });
    }

    #[test]
    fn deny_rejects_a_question_at_once() {
        DENY.run(deny_bed, super::deny_rejects_a_question_at_once);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn allow_runs_only_the_allowlisted_command() {
        let bed = allow_bed().await;
        super::allow_runs_only_the_allowlisted_command(&bed).await;
    }

    #[test]
    fn client_answers_through_the_api() {
        CLIENT.run(client_bed, super::client_answers_through_the_api);
    }

    #[test]
    fn client_silence_is_a_rejection_after_the_timeout() {
        CLIENT.run(client_bed, |bed| {
            super::client_silence_is_a_rejection_after_the_timeout(bed, &bed.projects[0])
        });
    }

    #[test]
    fn always_holds_for_the_rest_of_its_run_only() {
        CLIENT.run(client_bed, super::always_holds_for_the_rest_of_its_run_only);
    }

    /// It restarts the gateway: a bed of its own.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_approval_saved_upstream_is_cleared_at_start() {
        let mut bed = client_bed().await;
        let b = bed.projects[0].clone();
        super::an_approval_saved_upstream_is_cleared_at_start(&mut bed, &b).await;
    }
}

/// The policies and activity in front of OpenCode 2.x (its `permission.asked`, replies that
/// name the session, questions as forms, `shell` for `bash`).
mod agent_mode_v2 {
    use super::*;

    static DENY: BedPool<TestBed> = BedPool::new();
    static CLIENT: BedPool<TestBed> = BedPool::new();
    static ACTIVITY: BedPool<TestBed> = BedPool::new();
    static KEYS: BedPool<TestBed> = BedPool::new();

    #[test]
    fn agent_chosen_per_request_within_scope() {
        KEYS.run(keys_bed_v2, super::agent_chosen_per_request_within_scope);
    }

    #[test]
    fn agents_listed_per_key() {
        KEYS.run(keys_bed_v2, super::agents_listed_per_key);
    }

    #[test]
    fn directory_chosen_per_request_within_scope() {
        KEYS.run(keys_bed_v2, |bed| {
            super::directory_chosen_per_request_within_scope(
                bed,
                &bed.projects[0],
                &bed.projects[1],
            )
        });
    }

    #[test]
    fn two_directories_kept_apart() {
        KEYS.run(keys_bed_v2, |bed| {
            super::two_directories_kept_apart(bed, &bed.projects[0], &bed.projects[1])
        });
    }

    #[test]
    fn deny_tells_the_model_and_carries_on() {
        DENY.run(deny_bed_v2, super::deny_tells_the_model_and_carries_on);
    }

    #[test]
    fn deny_rejects_a_question_at_once() {
        DENY.run(deny_bed_v2, super::deny_rejects_a_question_at_once);
    }

    #[test]
    fn client_answers_through_the_api() {
        CLIENT.run(client_bed_v2, super::client_answers_through_the_api);
    }

    #[test]
    fn client_silence_is_a_rejection_after_the_timeout() {
        CLIENT.run(client_bed_v2, |bed| {
            super::client_silence_is_a_rejection_after_the_timeout(bed, &bed.projects[0])
        });
    }

    #[test]
    fn always_holds_for_the_rest_of_its_run_only() {
        CLIENT.run(
            client_bed_v2,
            super::always_holds_for_the_rest_of_its_run_only,
        );
    }

    #[test]
    fn chat_stream_shows_tool_runs_as_comments() {
        ACTIVITY.run(
            activity_bed_v2,
            super::chat_stream_shows_tool_runs_as_comments,
        );
    }

    #[test]
    fn responses_show_tool_runs_as_mcp_calls() {
        ACTIVITY.run(
            activity_bed_v2,
            super::responses_show_tool_runs_as_mcp_calls,
        );
    }
}

/// OpenCode's tool runs as SSE comments of chat streams and `mcp_call` items of responses.
mod agent_activity {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn chat_stream_shows_tool_runs_as_comments() {
        BED.run(activity_bed, super::chat_stream_shows_tool_runs_as_comments);
    }

    #[test]
    fn sdks_parse_streams_with_activity() {
        BED.run(activity_bed, super::sdks_parse_streams_with_activity);
    }

    #[test]
    fn responses_show_tool_runs_as_mcp_calls() {
        BED.run(activity_bed, super::responses_show_tool_runs_as_mcp_calls);
    }

    #[test]
    fn streamed_responses_show_tool_runs_as_mcp_calls() {
        BED.run(
            activity_bed,
            super::streamed_responses_show_tool_runs_as_mcp_calls,
        );
    }

    #[test]
    fn a_failed_tool_run_is_a_failed_mcp_call() {
        BED.run(activity_bed, super::a_failed_tool_run_is_a_failed_mcp_call);
    }
}

/// OpenAI's Responses schema (tests/fixtures) types an `mcp_call`'s `error` as an object
/// (`MCPToolCallError`: `mcp_protocol_error`, `mcp_tool_execution_error` or `http_error`); the
/// gateway sends a string, as openai-python 2.8.1 and openai-node 6.49.0 type it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "known deviation: mcp_call.error is a string, the fixture schema wants MCPToolCallError"]
async fn mcp_call_error_follows_the_responses_schema() {
    let bed = Harness::real()
        .gateway(gateway_config("[prompt]\ntools_enabled = true\n"))
        .start()
        .await;
    let missing = bed.opencode.project_dir().join("missing.txt");
    let input = format!("read it [call:read:{}]", json!({"filePath": missing}));
    let (status, _, response) = post_as(
        &bed,
        None,
        "/v1/responses",
        &[],
        &json!({"model": ECHO, "input": input}),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(mcp_call(&response)["status"], "failed");
    responses_schema::assert_response(&response);
}

/// `GET /v1/events` per key and per directory, and a consumer too slow to keep up.
mod event_stream {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn events_are_filtered_per_key_and_directory() {
        BED.run(events_bed, |bed| {
            super::events_are_filtered_per_key_and_directory(bed, &bed.projects[0])
        });
    }

    #[test]
    fn a_consumer_that_never_reads_is_dropped() {
        BED.run(events_bed, super::a_consumer_that_never_reads_is_dropped);
    }
}
