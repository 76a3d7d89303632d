//! Keeps the benchmark suite's fast fake OpenCode (`benches/suite/fake.rs`) honest: what it
//! emits for a text answer must mean to the gateway's stream adapter exactly what a recorded
//! real OpenCode text answer (`tests/fixtures/events/text.jsonl`) means, over the wire as well
//! as in memory, and the gateway binary must answer chat completions in front of it. Were an
//! event type or field misspelled, the adapter would produce other outputs and these fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

#[path = "../../benches/suite/fake.rs"]
mod fake;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::adapter_fixtures::Pipe;
use futures::StreamExt;
use portatek_gateway::adapter::Output;
use portatek_gateway::opencode::Event;
use serde_json::{json, Value};
use support::api::send;
use support::{Gateway, GatewayOptions};

fn recorded_text() -> Vec<Event> {
    let path = format!(
        "{}/tests/fixtures/events/text.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The run's outputs as the gateway's adapter sees them (a session created for the run).
fn adapt(events: &[Event]) -> Vec<Output> {
    let mut a = Pipe::new(2, true);
    events.iter().flat_map(|e| a.feed(e)).collect()
}

/// The kind of each output, with the finish reason and completion tokens of the end.
fn kinds(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Output::Content(_) => "content".to_string(),
            Output::Reasoning(_) => "reasoning".to_string(),
            Output::ToolCall(_) => "tool_call".to_string(),
            Output::Activity(_) => "activity".to_string(),
            Output::Finished { finish_reason, .. } => format!("finished:{finish_reason}"),
            Output::Failed(e) => format!("failed:{e}"),
        })
        .collect()
}

fn contents(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Content(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn deltas_in(events: &[Event]) -> u32 {
    events
        .iter()
        .filter(|e| e.kind == "message.part.delta")
        .count() as u32
}

/// Only event types a real OpenCode sends, and a run the adapter reads like the recording.
fn assert_like_recording(events: &[Event], recorded: &[Event]) {
    let known: BTreeSet<&str> = recorded
        .iter()
        .map(|e| e.kind.as_str())
        .chain(["server.connected", "server.heartbeat"])
        .collect();
    for e in events {
        assert!(
            known.contains(e.kind.as_str()),
            "the fake emits {:?}, which the recorded OpenCode run never sends",
            e.kind
        );
        assert!(
            e.session_id().is_some() || e.kind.starts_with("server."),
            "event without a session id: {e:?}"
        );
    }
    let (want, got) = (adapt(recorded), adapt(events));
    assert_eq!(
        kinds(&got),
        kinds(&want),
        "the adapter reads the fake's run otherwise than the recorded one"
    );
    let usage = |out: &[Output]| match out.last() {
        Some(Output::Finished { usage, .. }) => usage.completion_tokens,
        other => panic!("no Finished at the end: {other:?}"),
    };
    assert!(
        usage(&got) > 0,
        "the fake's run reports no completion tokens"
    );
    for piece in contents(&got) {
        assert_eq!(
            fake::stamps(&piece).count(),
            1,
            "each delta carries one send time: {piece:?}"
        );
    }
}

#[test]
fn a_scripted_run_reads_like_a_recorded_opencode_text_answer() {
    let recorded = recorded_text();
    let n = deltas_in(&recorded);
    assert!(n >= 2, "the recording has {n} deltas");
    let script = fake::Script::new("ses_00000000000000aa");
    let events: Vec<Event> = script
        .whole_run("hello", n)
        .into_iter()
        .map(|v| serde_json::from_str(&v).unwrap_or_else(|e| panic!("{e}: {v}")))
        .collect();
    assert_like_recording(&events, &recorded);
}

#[test]
fn prompt_markers_choose_the_run() {
    let spec = fake::RunSpec::from_prompt("hi [deltas:1000] [gap_us:250]");
    assert_eq!(spec.deltas, 1000);
    assert_eq!(spec.gap, Duration::from_micros(250));
    assert_eq!(
        fake::RunSpec::from_prompt("plain").deltas,
        fake::DEFAULT_DELTAS
    );
}

/// The frames of `/event` up to `session.idle` of `sid`.
async fn events_until_idle(resp: reqwest::Response, sid: &str) -> Vec<Event> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let read = async {
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let data = frame
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not an SSE data frame: {frame:?}"));
                let ev: Event = serde_json::from_str(data.trim()).unwrap();
                let idle = ev.kind == "session.idle" && ev.session_id() == Some(sid);
                out.push(ev);
                if idle {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("session.idle within 10 s");
    out
}

#[tokio::test]
async fn over_http_a_run_reads_like_the_recording() {
    let recorded = recorded_text();
    let n = deltas_in(&recorded);
    let fake = fake::FastFake::start(1);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let events = http
        .get(format!("{}/event", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        events.headers()["content-type"],
        "text/event-stream",
        "/event content type"
    );
    let (status, _, session) = send(
        http.post(format!("{}/session", fake.url()))
            .json(&json!({"title": "t"})),
    )
    .await;
    assert!(status.is_success(), "POST /session: {status} {session}");
    let sid = session["id"].as_str().unwrap().to_string();
    let (status, _, got) = send(http.get(format!("{}/session/{sid}", fake.url()))).await;
    assert!(status.is_success(), "GET /session/{sid}: {status} {got}");
    assert_eq!(got["id"], sid.as_str());
    let resp = http
        .post(format!("{}/session/{sid}/prompt_async", fake.url()))
        .json(&json!({"parts": [{"type": "text", "text": format!("hello [deltas:{n}] [gap_us:1000]")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let frames = events_until_idle(events, &sid).await;
    assert_eq!(frames[0].kind, "server.connected");
    let run: Vec<Event> = frames
        .into_iter()
        .filter(|e| e.session_id() == Some(sid.as_str()))
        .collect();
    assert_like_recording(&run, &recorded);
    let c = fake.counters();
    assert_eq!(c.event_connections_open.load(Relaxed), 1);
    assert_eq!(c.frames_lost.load(Relaxed), 0);
}

#[tokio::test]
async fn the_gateway_answers_in_front_of_the_fast_fake() {
    let fake = fake::FastFake::start(1);
    let gw = Gateway::start_with(fake.url(), GatewayOptions::default()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/v1/chat/completions", gw.url());
    let mut answer = None;
    for _ in 0..50 {
        let resp = http
            .post(&url)
            .json(
                &json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hello"}]}),
            )
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            answer = Some(resp.json::<Value>().await.unwrap());
            break;
        }
        // Not connected to the fake's event stream yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.unwrap_or_else(|| panic!("no 200; gateway logs:\n{}", gw.logs()));
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        fake::stamps(content).count(),
        fake::DEFAULT_DELTAS as usize,
        "{answer}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    // Streaming: every delta arrives, stamped.
    let resp = http
        .post(&url)
        .json(&json!({"model": "mock/echo", "stream": true,
                      "messages": [{"role": "user", "content": "hi [deltas:50] [gap_us:200]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let payloads = support::parse_sse_data(&text);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    assert_eq!(fake::stamps(&streamed).count(), 50, "{text}");
    let (code, _, status) = send(http.get(format!("{}/status", gw.url()))).await;
    assert!(code.is_success(), "GET /status: {code} {status}");
    assert_eq!(status["events"]["connections_opened"], 1, "{status}");
    assert_eq!(fake.counters().event_connections_open.load(Relaxed), 1);
}
