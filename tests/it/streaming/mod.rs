//! Streaming (`stream: true`) behaviour of `POST /v1/chat/completions`, end to end against a real
//! `opencode serve` and the scripted mock model. Two beds, each one OpenCode shared by named
//! scenarios (see `tests/it/support/scenarios.rs`), running in parallel:
//! - [`streaming_through_one_event_connection`]: the OpenAI stream shape, real incremental
//!   streaming, reasoning, usage, keep-alives, client disconnects, failures, 50 concurrent
//!   streams over one upstream event connection, and OpenCode dying mid-stream;
//! - [`runs_end_when_clients_leave_deadlines_pass_or_the_gateway_stops`]: a non-streaming
//!   client leaving, a silent model hitting the deadline, and graceful shutdown.
//!
//! The stream adapter alone (no OpenCode) is tested on recorded events in
//! `tests/it/adapter_fixtures.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::gateway::FRAME_WAIT;
use support::mock_model::{self, FAILURE_MESSAGE};
use support::scenarios::scenario;
use support::schema;
use support::sse::{datas, final_error, streamed_content, Frame};
use support::{ask, streaming, ECHO, THINKER};
use support::{Gateway, GatewayOptions, MockModel, OpenCode, OpenCodeOptions, Scenarios, TestBed};

mod ending;
mod proxy;
mod stream_shape;

use ending::*;
use proxy::*;
use stream_shape::*;

// ---------------------------------------------------------------------------------------------
// One bed, the gateway behind a logging proxy
// ---------------------------------------------------------------------------------------------

const MAIN_CONFIG: &str =
    "[prompt]\nmax_model_retries = 1\ndeadline_secs = 20\nkeepalive_secs = 1\n";

/// Streams through one OpenCode, the gateway reaching it through a proxy that counts its
/// `GET /event` connections (retry budget 1, deadline 20 s, keep-alive every second).
#[tokio::test(flavor = "multi_thread")]
async fn streaming_through_one_event_connection() {
    let mock = MockModel::start().await;
    let opencode = OpenCode::start_with(&mock.base_url(), OpenCodeOptions::default()).await;
    let proxy = Proxy::start(opencode.port()).await;
    let gateway =
        Gateway::start_with(&proxy.url(), GatewayOptions::default().config(MAIN_CONFIG)).await;
    let mut bed = TestBed::assemble(mock, opencode, gateway);
    let mut s = Scenarios::new();
    scenario!(s, basic_stream_shape(&bed));
    scenario!(s, finish_reason_length(&bed));
    scenario!(s, stream_equals_non_stream(&bed));
    scenario!(s, real_streaming(&bed));
    scenario!(s, reasoning_content(&bed));
    scenario!(s, include_usage(&bed));
    scenario!(s, keepalive_comments(&bed));
    scenario!(s, client_disconnect_aborts(&bed));
    scenario!(s, model_failure_error_event(&bed));
    scenario!(s, fifty_streams(&bed, &proxy));
    // Last: it kills OpenCode.
    scenario!(s, opencode_killed_mid_stream(&mut bed));
    s.finish(&bed.gateway.logs());
}

// ---------------------------------------------------------------------------------------------
// Runs that end early: clients leaving, deadlines, shutdown
// ---------------------------------------------------------------------------------------------

/// How runs end other than by finishing, on one OpenCode: a non-streaming client leaving, a
/// silent model hitting the deadline, and graceful shutdown (a stream in flight at SIGTERM
/// finishes; one outliving the grace period is ended and aborted). Scenarios that need other
/// settings replace the bed's gateway.
#[tokio::test(flavor = "multi_thread")]
async fn runs_end_when_clients_leave_deadlines_pass_or_the_gateway_stops() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(s, non_streaming_disconnect_aborts(&bed));
    scenario!(s, stream_in_flight_at_sigterm_completes(&mut bed));
    scenario!(s, deadline_on_a_silent_model(&mut bed));
    scenario!(s, stream_outliving_the_grace_period(&mut bed));
    s.finish(&bed.gateway.logs());
}
