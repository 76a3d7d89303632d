//! The Responses API (`/v1/responses`) end to end, against a real `opencode serve` and the
//! scripted model. Every response object, stream event and input-item page is validated against
//! OpenAI's Responses schemas (`src/openapi/openai-responses.schema.json`).
//!
//! One test per behaviour, declared here (their steps live in the submodules), on shared beds:
//! - [`responses_api`] (keys `k1`, `k2`; `prompt.max_model_retries = 0`): the response object
//!   and what it echoes, the typed stream, reasoning, `previous_response_id` (continuation
//!   without replay, branches), input items and their pages, function tools (`tool_choice`,
//!   `parallel_tool_calls`), incomplete responses, `text.format`, `store: false`, failures,
//!   delete, other keys and unknown ids, and the openai-node SDK;
//! - [`responses_lifecycle`]: cancelling a running response, and stored responses surviving a
//!   gateway restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::api::read_json;
use support::gateway::FRAME_WAIT;
use support::mock_model::content_text;
use support::responses_api::{
    check_structure, function_calls, items, output_text, read_stream, ResponseStream,
};
use support::responses_schema::{assert_response, assert_valid};
use support::sse::SseReader;
use support::{
    assert_error, BedPool, Gateway, GatewayOptions, OpenCodeOptions, TestBed, ECHO, THINKER, VISION,
};

mod helpers;
mod lifecycle;
mod objects_and_streams;
mod storage_and_failures;
mod tools_and_formats;

use helpers::*;
use lifecycle::*;
use objects_and_streams::*;
use storage_and_failures::*;
use tools_and_formats::*;

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

/// The Responses bed: the thinker with `reasoning_effort` variants, keys `k1` (used by the
/// helpers) and `k2`, no model retries.
async fn responses_bed() -> TestBed {
    responses_bed_on(Harness::real()).await
}

/// The Responses bed in front of OpenCode 2.x.
async fn responses_bed_v2() -> TestBed {
    responses_bed_on(Harness::real().v2()).await
}

async fn responses_bed_on(harness: support::harness::Real) -> TestBed {
    let mut bed = harness
        .opencode_config(json!({"provider": {"mock": {"models": {"thinker": {
            "variants": {"high": {"reasoningEffort": "high"}, "low": {"reasoningEffort": "low"}}
        }}}}}))
        .gateway(
            GatewayOptions::default()
                .env("PORTATEK_API_KEYS", "k1,k2")
                .config("[prompt]\nmax_model_retries = 0\n"),
        )
        .start()
        .await;
    bed.api_key = Some(K1.into());
    bed
}

/// The same behaviours in front of OpenCode 2.x.
mod responses_api_v2 {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn response_object_and_what_it_echoes() {
        BED.run(responses_bed_v2, super::response_object_and_what_it_echoes);
    }

    #[test]
    fn streamed_text_events() {
        BED.run(responses_bed_v2, super::streamed_text_events);
    }

    #[test]
    fn reasoning_becomes_a_summary() {
        BED.run(responses_bed_v2, super::reasoning_becomes_a_summary);
    }

    #[test]
    fn previous_response_id_continues_and_branches() {
        BED.run(
            responses_bed_v2,
            super::previous_response_id_continues_and_branches,
        );
    }

    #[test]
    fn input_items_parts_and_pages() {
        BED.run(responses_bed_v2, super::input_items_parts_and_pages);
    }

    #[test]
    fn function_tool_loop() {
        BED.run(responses_bed_v2, super::function_tool_loop);
    }

    #[test]
    fn streamed_function_tool_loop() {
        BED.run(responses_bed_v2, super::streamed_function_tool_loop);
    }

    #[test]
    fn tool_choice_and_parallel_calls() {
        BED.run(responses_bed_v2, super::tool_choice_and_parallel_calls);
    }

    #[test]
    fn output_limit_is_incomplete() {
        BED.run(responses_bed_v2, super::output_limit_is_incomplete);
    }

    #[test]
    fn text_formats() {
        BED.run(responses_bed_v2, super::text_formats);
    }

    #[test]
    fn store_false_is_stateless() {
        BED.run(responses_bed_v2, super::store_false_is_stateless);
    }

    #[test]
    fn failures_are_reported() {
        BED.run(responses_bed_v2, super::failures_are_reported);
    }

    #[test]
    fn delete_removes_it() {
        BED.run(responses_bed_v2, super::delete_removes_it);
    }

    #[test]
    fn other_keys_and_unknown_ids_get_404() {
        BED.run(responses_bed_v2, super::other_keys_and_unknown_ids_get_404);
    }

    #[test]
    fn sdk_drives_responses() {
        BED.run(responses_bed_v2, super::sdk_drives_responses);
    }
}

/// The Responses API, one test per behaviour on a shared bed (see the module docs).
mod responses_api {
    use super::*;

    static BED: BedPool<TestBed> = BedPool::new();

    #[test]
    fn response_object_and_what_it_echoes() {
        BED.run(responses_bed, super::response_object_and_what_it_echoes);
    }

    #[test]
    fn streamed_text_events() {
        BED.run(responses_bed, super::streamed_text_events);
    }

    #[test]
    fn reasoning_becomes_a_summary() {
        BED.run(responses_bed, super::reasoning_becomes_a_summary);
    }

    #[test]
    fn previous_response_id_continues_and_branches() {
        BED.run(
            responses_bed,
            super::previous_response_id_continues_and_branches,
        );
    }

    #[test]
    fn input_items_parts_and_pages() {
        BED.run(responses_bed, super::input_items_parts_and_pages);
    }

    #[test]
    fn function_tool_loop() {
        BED.run(responses_bed, super::function_tool_loop);
    }

    #[test]
    fn streamed_function_tool_loop() {
        BED.run(responses_bed, super::streamed_function_tool_loop);
    }

    #[test]
    fn tool_choice_and_parallel_calls() {
        BED.run(responses_bed, super::tool_choice_and_parallel_calls);
    }

    #[test]
    fn output_limit_is_incomplete() {
        BED.run(responses_bed, super::output_limit_is_incomplete);
    }

    #[test]
    fn text_formats() {
        BED.run(responses_bed, super::text_formats);
    }

    #[test]
    fn store_false_is_stateless() {
        BED.run(responses_bed, super::store_false_is_stateless);
    }

    #[test]
    fn failures_are_reported() {
        BED.run(responses_bed, super::failures_are_reported);
    }

    #[test]
    fn delete_removes_it() {
        BED.run(responses_bed, super::delete_removes_it);
    }

    #[test]
    fn other_keys_and_unknown_ids_get_404() {
        BED.run(responses_bed, super::other_keys_and_unknown_ids_get_404);
    }

    #[test]
    fn sdk_drives_responses() {
        BED.run(responses_bed, super::sdk_drives_responses);
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

/// Cancelling (on a shared plain bed) and restarts (on a bed of its own: it replaces the
/// gateway).
mod responses_lifecycle {
    use super::*;
    use support::shared::{plain_bed, PLAIN};

    #[test]
    fn cancel_stops_a_running_response() {
        PLAIN.run(plain_bed, super::cancel_stops_a_running_response);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stored_responses_survive_a_gateway_restart() {
        let mut bed = plain_bed().await;
        super::stored_responses_survive_a_gateway_restart(&mut bed).await;
    }
}

/// Cancelling and restarts in front of OpenCode 2.x.
mod responses_lifecycle_v2 {
    use super::*;
    use support::shared::{plain_bed_v2, PLAIN_V2};

    #[test]
    fn cancel_stops_a_running_response() {
        PLAIN_V2.run(plain_bed_v2, super::cancel_stops_a_running_response);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stored_responses_survive_a_gateway_restart() {
        let mut bed = plain_bed_v2().await;
        super::stored_responses_survive_a_gateway_restart(&mut bed).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Schema deviations (gateway bugs)
// ---------------------------------------------------------------------------------------------

/// Response objects whose usage is not known yet — the snapshot in `response.created` and
/// `response.in_progress`, and a failed response — follow OpenAI's `Response` schema strictly.
/// (`usage` is an object or absent, never `null`.)
#[tokio::test(flavor = "multi_thread")]
async fn response_snapshots_follow_the_schema() {
    let bed = Harness::real()
        .opencode(OpenCodeOptions::default())
        .gateway(GatewayOptions::default().config("[prompt]\nmax_model_retries = 0\n"))
        .start()
        .await;
    let stream = create_stream(&bed, &json!({"model": ECHO, "input": "snapshot"})).await;
    assert_valid("ResponseCreatedEvent", &stream.events[0]);
    assert_valid("ResponseInProgressEvent", &stream.events[1]);
    let failed = create_stream(&bed, &json!({"model": ECHO, "input": "snapshot [fail]"})).await;
    let (s, got) = bed.get(&format!("/v1/responses/{}", failed.id())).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_valid("Response", &got);
}

/// An earlier assistant message given as an input item is listed by `input_items` as a valid
/// item (an output message, whose `output_text` parts carry `annotations` and `logprobs`).
/// (A bare `output_text` part would match neither `OutputMessage` nor `InputMessageResource`.)
#[tokio::test(flavor = "multi_thread")]
async fn assistant_input_items_follow_the_schema() {
    let bed = Harness::real().start().await;
    let input = json!([
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "earlier answer"}]},
        {"role": "assistant", "content": "said as a string"},
        {"role": "user", "content": "next question"},
    ]);
    let (s, v) = create(&bed, &json!({"model": ECHO, "input": input})).await;
    let id = id_of(&completed(s, &v));
    let (s, page) = bed.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);
}

/// A model that calls tools in several rounds (`[sticky:2]`: call → output → call → output →
/// answer): each round's outputs continue the response that asked for them.
/// (A resumed run answers under a new response id and must park again under that one.)
#[tokio::test(flavor = "multi_thread")]
async fn function_calls_continue_from_the_latest_response() {
    let bed = Harness::real().start().await;
    let tools = json!([city_tool("get_weather")]);
    let prompt = r#"two rounds [sticky:2] [call:get_weather:{"city":"Pisa"}]"#;
    let (s, v) = create(
        &bed,
        &json!({"model": ECHO, "input": prompt, "tools": tools}),
    )
    .await;
    let mut previous = completed(s, &v);
    for (round, output) in ["warm", "warmer"].into_iter().enumerate() {
        let (call_id, name, _) = function_calls(&previous)
            .pop()
            .unwrap_or_else(|| panic!("round {round}: no function call in {previous}"));
        assert_eq!(name, "get_weather");
        let body = json!({"model": ECHO, "previous_response_id": previous["id"], "tools": tools,
                          "input": [call_output(&call_id, output)]});
        let (s, v) = create(&bed, &body).await;
        assert_eq!(s, StatusCode::OK, "round {round}'s outputs: {v}");
        previous = completed(s, &v);
    }
    assert_eq!(output_text(&previous), "echo tool results: call_1_0=warmer");
}
