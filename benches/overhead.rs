#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Gateway overhead, measured as a ratio against calling OpenCode directly in the same run.
//!
//! `cargo bench --bench overhead` starts the scripted model, a real `opencode serve` and the
//! gateway (release build), then times N sequential completions both ways:
//! - direct: `POST /session` (with a title) + synchronous `POST /session/:id/message`;
//! - gateway: `POST /v1/chat/completions` (non-streaming, and streaming to `[DONE]`).
//!
//! It prints medians and p90s and the gateway/direct ratio. Set `BENCH_N` to change N (default 40).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::TestBed;

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
    (median, p90)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let bed = TestBed::start().await;
    let oc = &bed.opencode;

    let direct = || async {
        let t = Instant::now();
        let id = oc.create_session("bench").await;
        let (status, v) = oc
            .post_json(
                &format!("/session/{id}/message"),
                &json!({"parts": [{"type": "text", "text": "bench hello"}],
                        "model": {"providerID": "mock", "modelID": "echo"},
                        "tools": {"*": false}}),
            )
            .await;
        assert!(status.is_success(), "{v}");
        t.elapsed()
    };
    let gateway = |stream: bool| {
        let bed = &bed;
        async move {
            let body = json!({"model": "mock/echo", "stream": stream,
                              "messages": [{"role": "user", "content": "bench hello"}]});
            let t = Instant::now();
            if stream {
                let (status, data) = bed.chat_stream(body).await;
                assert!(status.is_success() && data.last().map(String::as_str) == Some("[DONE]"));
            } else {
                let (status, v) = bed.chat(body).await;
                assert!(status.is_success(), "{v}");
            }
            t.elapsed()
        }
    };

    // Warm up both paths (first prompts load the provider in OpenCode).
    for _ in 0..3 {
        direct().await;
        gateway(false).await;
    }
    let (mut d, mut g, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        // Interleaved so that drift affects all three alike.
        d.push(direct().await);
        g.push(gateway(false).await);
        s.push(gateway(true).await);
    }
    let (dm, dp) = stats(d);
    let (gm, gp) = stats(g);
    let (sm, sp) = stats(s);
    println!("completions, N = {n} each (median / p90, ms)");
    println!(
        "  direct OpenCode (create session + sync message): {:8.1} / {:8.1}",
        ms(dm),
        ms(dp)
    );
    println!(
        "  gateway, non-streaming:                          {:8.1} / {:8.1}   ratio {:.2}",
        ms(gm),
        ms(gp),
        ms(gm) / ms(dm)
    );
    println!(
        "  gateway, streaming to [DONE]:                    {:8.1} / {:8.1}   ratio {:.2}",
        ms(sm),
        ms(sp),
        ms(sm) / ms(dm)
    );
}
