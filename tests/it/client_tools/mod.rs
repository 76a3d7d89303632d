//! Client tools (OpenAI function calling) and structured outputs on `/v1/chat/completions`,
//! end to end: the scripted model calls tools through a real `opencode serve`, the gateway hands
//! the calls to the client and the client's results back to the *same* OpenCode run.
//!
//! One test per behaviour, on two beds (one OpenCode each); the tests are declared here, their
//! steps live in the submodules:
//! - [`tool_loop`]: the wire shape of calls (JSON and streamed), results reaching the model as
//!   tool results, follow-ups without replay, multi-round and parallel calls,
//!   `parallel_tool_calls: false`, `tool_choice`, names that collide with OpenCode's tools,
//!   structured outputs, bad tool requests, explicit sessions, seeding of histories the gateway
//!   never saw (also after a gateway restart), `prompt.tools_enabled`, and the official
//!   openai-node SDK running the whole loop;
//! - [`a_client_that_never_returns_frees_everything`]: a client that never brings its results
//!   (`result_timeout_secs = 2`, `max_runs = 1`): the held call errors, the run is aborted,
//!   nothing leaks.
//!
//! [`two_gateways_share_one_opencode`] runs tool loops on two gateways
//! in front of one OpenCode.
//!
//! The model never sees the client's tool names as they are: OpenCode shows it `ptk<tag>NN_<name>`
//! (the gateway's MCP slot), which the client must never see. Malformed tool requests are
//! checked in full in-process (`tests/http_api/validation.rs`); here only a smoke check.
//!
//! The scripted model's markers (`tests/it/support/mock_model.rs`): `[call:NAME:{args}]` makes it
//! call a tool (several: parallel calls), `[sticky:N]` for N rounds; after tool results it
//! answers `echo tool results: <its call id>=<content>; …`, so an answer proves what reached it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::api::send;
use support::gateway::{test_client, Gateway};
use support::mock_model::content_text;
use support::opencode::event_session_id;
use support::schema::assert_valid;
use support::sse::Streamed;
use support::{assert_error, content, user, BedPool, GatewayOptions, TestBed, ECHO};

mod abandoned;
mod helpers;
mod loop_steps;
mod outputs_and_sessions;

use abandoned::*;
use helpers::*;
use loop_steps::*;
use outputs_and_sessions::*;

// ---------------------------------------------------------------------------------------------
// The tool loop
// ---------------------------------------------------------------------------------------------

/// The client-tools loop, one test per behaviour (see the module docs): those that restart the
/// gateway have a bed of their own, the others share one.
mod tool_loop {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    async fn bed() -> TestBed {
        Harness::real().start().await
    }

    #[test]
    fn results_reach_the_model_as_tool_results() {
        BED.run(bed, super::results_reach_the_model_as_tool_results);
    }

    #[test]
    fn streamed_parallel_calls() {
        BED.run(bed, super::streamed_parallel_calls);
    }

    #[test]
    fn several_rounds_in_one_run() {
        BED.run(bed, super::several_rounds_in_one_run);
    }

    #[test]
    fn many_parallel_calls_all_come_back() {
        BED.run(bed, super::many_parallel_calls_all_come_back);
    }

    #[test]
    fn one_call_per_response_without_parallel_tool_calls() {
        BED.run(
            bed,
            super::one_call_per_response_without_parallel_tool_calls,
        );
    }

    #[test]
    fn tool_choice_decides_what_the_model_is_offered() {
        BED.run(bed, super::tool_choice_decides_what_the_model_is_offered);
    }

    #[test]
    fn names_of_opencode_tools_reach_the_client() {
        BED.run(bed, super::names_of_opencode_tools_reach_the_client);
    }

    #[test]
    fn structured_outputs() {
        BED.run(bed, super::structured_outputs);
    }

    #[test]
    fn bad_tool_requests_are_400() {
        BED.run(bed, super::bad_tool_requests_are_400);
    }

    #[test]
    fn explicit_session_runs_the_loop() {
        BED.run(bed, super::explicit_session_runs_the_loop);
    }

    #[test]
    fn unseen_history_is_seeded_with_calls_and_results() {
        BED.run(bed, super::unseen_history_is_seeded_with_calls_and_results);
    }

    #[test]
    fn sdk_runs_the_loop() {
        BED.run(bed, super::sdk_runs_the_loop);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn restarted_gateway_seeds_what_it_never_saw() {
        let mut bed = bed().await;
        super::restarted_gateway_seeds_what_it_never_saw(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn opencode_tools_on_leave_client_tools_alone() {
        let mut bed = bed().await;
        super::opencode_tools_on_leave_client_tools_alone(&mut bed).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Abandoned runs
// ---------------------------------------------------------------------------------------------

/// A client that never comes back, with one tool slot and a 2 s result timeout (a bed of its
/// own: the timeout and the single slot are the bed's config).
/// The same loop in front of OpenCode 2.x (its MCP servers registered with code mode off, the
/// turn's tools chosen by session permissions).
mod tool_loop_v2 {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    async fn bed() -> TestBed {
        Harness::real().v2().start().await
    }

    #[test]
    fn results_reach_the_model_as_tool_results() {
        BED.run(bed, super::results_reach_the_model_as_tool_results);
    }

    #[test]
    fn streamed_parallel_calls() {
        BED.run(bed, super::streamed_parallel_calls);
    }

    #[test]
    fn several_rounds_in_one_run() {
        BED.run(bed, super::several_rounds_in_one_run);
    }

    #[test]
    fn many_parallel_calls_all_come_back() {
        BED.run(bed, super::many_parallel_calls_all_come_back);
    }

    #[test]
    fn one_call_per_response_without_parallel_tool_calls() {
        BED.run(
            bed,
            super::one_call_per_response_without_parallel_tool_calls,
        );
    }

    #[test]
    fn tool_choice_decides_what_the_model_is_offered() {
        BED.run(bed, super::tool_choice_decides_what_the_model_is_offered);
    }

    #[test]
    fn names_of_opencode_tools_reach_the_client() {
        BED.run(bed, super::names_of_opencode_tools_reach_the_client);
    }

    #[test]
    fn bad_tool_requests_are_400() {
        BED.run(bed, super::bad_tool_requests_are_400);
    }

    #[test]
    fn explicit_session_runs_the_loop() {
        BED.run(bed, super::explicit_session_runs_the_loop);
    }

    #[test]
    fn unseen_history_is_seeded_with_calls_and_results() {
        BED.run(bed, super::unseen_history_is_seeded_with_calls_and_results);
    }

    #[test]
    fn sdk_runs_the_loop() {
        BED.run(bed, super::sdk_runs_the_loop);
    }

    #[test]
    fn structured_outputs() {
        BED.run(bed, super::structured_outputs);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_returns_frees_everything() {
    let config = "[client_tools]\nresult_timeout_secs = 2\nmax_runs = 1\n";
    let bed = Harness::real()
        .opencode(Default::default())
        .gateway(GatewayOptions::default().config(config))
        .start()
        .await;
    abandoned::a_client_that_never_returns_frees_everything(&bed).await;
}

/// Two gateways (replicas, or an old and a new process during a rolling restart) in front of
/// one OpenCode each run tool loops, one after the other: each gets its own calls.
/// With fixed slot names (`ptk00`, …) the second one's registration would replace the first
/// one's in OpenCode, and the first gateway's next call would go to the second; each start's
/// slot names carry their own tag.
#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_one_opencode() {
    let bed = Harness::real().start().await;
    let opts = GatewayOptions::default().config("[prompt]\nsession_title = \"replica\"\n");
    let other = Gateway::start_with(&bed.opencode.url(), opts).await;
    let first = loop_on(
        &bed.gateway,
        r#"one [call:get_weather:{"city":"Ulm"}]"#,
        "a",
    )
    .await;
    let second = loop_on(&other, r#"two [call:get_weather:{"city":"Gap"}]"#, "b").await;
    let third = loop_on(
        &bed.gateway,
        r#"three [call:get_weather:{"city":"Aix"}]"#,
        "c",
    )
    .await;
    let expected = |r: &str| Ok(format!("echo tool results: call_0_0={r}"));
    assert_eq!(
        (first, second, third),
        (expected("a"), expected("b"), expected("c")),
        "each gateway's tool loop works while the other also serves tools\nother gateway log:\n{}",
        other
            .logs()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A JSON Schema whose `$ref`s form a cycle is a 400 naming where it was given — chat's
/// `response_format`, Responses' `text.format`, a tool's `parameters` — before anything reaches
/// OpenCode; a schema whose validation of the model's answer would be too costly fails that
/// request with a clear 502 at once. The gateway runs with a 512 MiB data limit: before the fix
/// the structured answer made it grow by about 1 GB/s, so a regression now fails its
/// allocations and dies (the last check sees that) instead of exhausting the test machine.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_schemas_get_a_bounded_answer() {
    let bed = Harness::real().start().await;
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().memory_limit(512 << 20),
    )
    .await;
    let before = bed.mock.call_count();
    let structured = r#"[call:StructuredOutput:{"c":{}}]"#;

    let mut body = support::ask(ECHO, structured);
    body["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": cyclic_schema()}});
    let (s, v) = chat_on(&gw, &body).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("response_format.json_schema.schema"),
        "chat",
    );
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cycle"), "{message}");

    let responses = json!({"model": ECHO, "input": structured, "text": {"format":
        {"type": "json_schema", "name": "s", "schema": cyclic_schema()}}});
    let (s, _, v) = send(
        test_client()
            .post(format!("{}/v1/responses", gw.url()))
            .json(&responses),
    )
    .await;
    assert_error(s, &v, 400, None, Some("text.format.schema"), "responses");

    let mut parameters = cyclic_schema();
    parameters["type"] = json!("object");
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": parameters}});
    let mut body = support::ask(ECHO, "[call:f:{}]");
    body["tools"] = json!([tool]);
    let (s, v) = chat_on(&gw, &body).await;
    assert_error(
        s,
        &v,
        400,
        None,
        Some("tools[0].function.parameters"),
        "tool",
    );
    assert_eq!(
        bed.mock.call_count(),
        before,
        "a refused schema reached the model"
    );

    // Accepted, but the answer is 40 levels deep: 2^40 steps to validate.
    let mut deep = json!({});
    for _ in 0..40 {
        deep = json!({ "c": deep });
    }
    let mut body = support::ask(ECHO, &format!("[call:StructuredOutput:{deep}]"));
    body["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": doubling_schema()}});
    let started = Instant::now();
    let (s, v) = chat_on(&gw, &body).await;
    assert_error(
        s,
        &v,
        502,
        Some("upstream_error"),
        None,
        "too costly to validate",
    );
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not be checked"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let (s, v) = chat_on(&gw, &support::ask(ECHO, "still here?")).await;
    assert_eq!(s, StatusCode::OK, "the gateway is still serving: {v}");
}
