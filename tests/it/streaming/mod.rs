//! Streaming (`stream: true`) behaviour of `POST /v1/chat/completions`, end to end against a real
//! `opencode serve` and the scripted mock model. One test per behaviour, declared here (their
//! steps live in the submodules); the tests of a group share a bed, those that kill OpenCode or
//! replace the gateway have their own:
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
use support::schema;
use support::shared::BedLogs;
use support::sse::{datas, final_error, streamed_content, Frame};
use support::BedPool;
use support::{ask, streaming, ECHO, THINKER};
use support::{Gateway, GatewayOptions, MockModel, OpenCode, OpenCodeOptions, TestBed};

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

/// A bed whose gateway reaches OpenCode through a [`Proxy`] that counts its `GET /event`
/// connections (retry budget 1, deadline 20 s, keep-alive every second).
struct ProxiedBed {
    bed: TestBed,
    proxy: Proxy,
}

impl BedLogs for ProxiedBed {
    fn logs(&self) -> String {
        self.bed.gateway.logs()
    }
}

async fn proxied_bed() -> ProxiedBed {
    let mock = MockModel::start().await;
    let opencode = OpenCode::start_with(&mock.base_url(), OpenCodeOptions::default()).await;
    let proxy = Proxy::start(opencode.port()).await;
    let gateway =
        Gateway::start_with(&proxy.url(), GatewayOptions::default().config(MAIN_CONFIG)).await;
    ProxiedBed {
        bed: TestBed::assemble(mock, opencode, gateway),
        proxy,
    }
}

/// Streams through one OpenCode behind the proxy, one test per behaviour on a shared bed;
/// OpenCode dying mid-stream has a bed of its own (it kills OpenCode).
mod streaming_through_one_event_connection {
    use super::*;

    static BED: BedPool<ProxiedBed> = BedPool::new();

    #[test]
    fn basic_stream_shape() {
        BED.run(proxied_bed, |b| super::basic_stream_shape(&b.bed));
    }

    #[test]
    fn finish_reason_length() {
        BED.run(proxied_bed, |b| super::finish_reason_length(&b.bed));
    }

    #[test]
    fn stream_equals_non_stream() {
        BED.run(proxied_bed, |b| super::stream_equals_non_stream(&b.bed));
    }

    #[test]
    fn real_streaming() {
        BED.run(proxied_bed, |b| super::real_streaming(&b.bed));
    }

    #[test]
    fn reasoning_content() {
        BED.run(proxied_bed, |b| super::reasoning_content(&b.bed));
    }

    #[test]
    fn include_usage() {
        BED.run(proxied_bed, |b| super::include_usage(&b.bed));
    }

    #[test]
    fn keepalive_comments() {
        BED.run(proxied_bed, |b| super::keepalive_comments(&b.bed));
    }

    #[test]
    fn client_disconnect_aborts() {
        BED.run(proxied_bed, |b| super::client_disconnect_aborts(&b.bed));
    }

    #[test]
    fn model_failure_error_event() {
        BED.run(proxied_bed, |b| super::model_failure_error_event(&b.bed));
    }

    #[test]
    fn fifty_streams() {
        BED.run(proxied_bed, |b| super::fifty_streams(&b.bed, &b.proxy));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn opencode_killed_mid_stream() {
        let mut b = proxied_bed().await;
        super::opencode_killed_mid_stream(&mut b.bed).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Runs that end early: clients leaving, deadlines, shutdown
// ---------------------------------------------------------------------------------------------

/// How runs end other than by finishing: a non-streaming client leaving (on a shared bed), a
/// silent model hitting the deadline, and graceful shutdown (a stream in flight at SIGTERM
/// finishes; one outliving the grace period is ended and aborted). Tests that need other
/// settings replace the gateway: each has a bed of its own.
mod runs_end_when_clients_leave_deadlines_pass_or_the_gateway_stops {
    use super::*;

    use support::shared::{plain_bed, PLAIN};

    #[test]
    fn non_streaming_disconnect_aborts() {
        PLAIN.run(plain_bed, super::non_streaming_disconnect_aborts);
    }

    /// Real beds these tests share one at a time: each starts a gateway of its own on it.
    static ENDINGS: BedPool<support::shared::Mutable> = BedPool::new();

    #[test]
    fn stream_in_flight_at_sigterm_completes() {
        ENDINGS.run(support::shared::mutable_bed, |b| async move {
            let bed = &mut *b.0.lock().await;
            replace_gateway(bed, "").await;
            super::stream_in_flight_at_sigterm_completes(bed).await
        });
    }

    #[test]
    fn deadline_on_a_silent_model() {
        ENDINGS.run(support::shared::mutable_bed, |b| async move {
            super::deadline_on_a_silent_model(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn stream_outliving_the_grace_period() {
        ENDINGS.run(support::shared::mutable_bed, |b| async move {
            super::stream_outliving_the_grace_period(&mut *b.0.lock().await).await
        });
    }
}

/// Streaming in front of OpenCode 2.x (no proxy: its one-connection and kill tests stay 1.x's).
mod streaming_v2 {
    use super::*;

    use support::shared::{mutable_bed_v2, plain_bed_v2, PLAIN_V2};

    static ENDINGS: BedPool<support::shared::Mutable> = BedPool::new();
    /// The 1.x group's gateway settings (retry budget 1, deadline 20 s, keep-alive every
    /// second), without the proxy.
    static MAIN: BedPool<TestBed> = BedPool::new();

    async fn main_bed() -> TestBed {
        support::Harness::real()
            .v2()
            .config(MAIN_CONFIG)
            .start()
            .await
    }

    #[test]
    fn basic_stream_shape() {
        MAIN.run(main_bed, super::basic_stream_shape);
    }

    #[test]
    fn finish_reason_length() {
        MAIN.run(main_bed, super::finish_reason_length);
    }

    #[test]
    fn stream_equals_non_stream() {
        MAIN.run(main_bed, super::stream_equals_non_stream);
    }

    #[test]
    fn real_streaming() {
        MAIN.run(main_bed, super::real_streaming);
    }

    #[test]
    fn reasoning_content() {
        MAIN.run(main_bed, super::reasoning_content);
    }

    #[test]
    fn include_usage() {
        MAIN.run(main_bed, super::include_usage);
    }

    #[test]
    fn keepalive_comments() {
        MAIN.run(main_bed, super::keepalive_comments);
    }

    #[test]
    fn client_disconnect_aborts() {
        MAIN.run(main_bed, super::client_disconnect_aborts);
    }

    #[test]
    fn model_failure_error_event() {
        MAIN.run(main_bed, super::model_failure_error_event);
    }

    #[test]
    fn non_streaming_disconnect_aborts() {
        PLAIN_V2.run(plain_bed_v2, super::non_streaming_disconnect_aborts);
    }

    #[test]
    fn deadline_on_a_silent_model() {
        ENDINGS.run(mutable_bed_v2, |b| async move {
            super::deadline_on_a_silent_model(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn stream_outliving_the_grace_period() {
        ENDINGS.run(mutable_bed_v2, |b| async move {
            super::stream_outliving_the_grace_period(&mut *b.0.lock().await).await
        });
    }
}
