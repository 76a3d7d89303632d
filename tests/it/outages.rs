//! Sessions do not leak around OpenCode outages (issue 14), with a real OpenCode:
//!
//! - OpenCode killed during 20 concurrent streams and restarted (same data dir and port): the
//!   sessions of the broken runs, whose deletes failed while it was down, are deleted once it is
//!   back, leaving only sessions the gateway remembers;
//! - OpenCode frozen (SIGSTOP) while chats create sessions with a 2 s upstream timeout: the
//!   creates time out, OpenCode performs them once resumed (SIGCONT), and the gateway finds
//!   and deletes every one of them.
//!
//! "Sessions the gateway knows" are `/status`'s `pool.remembered` + `pool.explicit`; with no
//! other activity, every other session with the gateway's title must go, and
//! `pool.pending_cleanup` must drain to 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use support::api::read_json;
use support::procs;
use support::sse::{read_payloads, streamed_content};
use support::ECHO;
use support::{ask, eventually, reply_of, streaming, GatewayOptions, OpenCodeOptions, TestBed};

/// The title of every session this bed's gateway creates (searchable: no spaces).
const TITLE: &str = "portatek-outage-bed";

/// What the gateway says it holds, from `/status`: (remembered + explicit, pending clean-up).
async fn known(bed: &TestBed) -> (u64, u64) {
    let (status, v) = bed.get("/status").await;
    assert_eq!(status, 200, "{v}");
    let pool = &v["pool"];
    let held = pool["remembered"].as_u64().unwrap() + pool["explicit"].as_u64().unwrap();
    (held, pool["pending_cleanup"].as_u64().unwrap())
}

/// Ids of OpenCode's sessions titled [`TITLE`], by OpenCode's own search.
async fn titled(bed: &TestBed) -> BTreeSet<String> {
    let listed = bed
        .opencode
        .get_json(&format!("/session?search={TITLE}&limit=1000"))
        .await;
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["title"].as_str() == Some(TITLE))
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Polls (up to `within`) until OpenCode holds no session of the gateway's but those it
/// remembers, and nothing is left to clean up; panics with the counts otherwise.
async fn assert_no_leak(bed: &TestBed, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let upstream = titled(bed).await;
        let (held, pending) = known(bed).await;
        if upstream.len() as u64 == held && pending == 0 {
            return started.elapsed();
        }
        if started.elapsed() > within {
            panic!(
                "{what}: after {within:?} OpenCode still holds {} session(s) titled {TITLE} while \
                 the gateway remembers {held}, pending clean-up {pending}: {upstream:?}",
                upstream.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A request that ended in failure must have failed cleanly: an OpenAI error body, or (for a
/// stream that had started) a final error event and no `[DONE]`.
#[track_caller]
fn assert_failed_cleanly(status: StatusCode, is_sse: bool, payloads: &[String], what: &str) {
    if is_sse {
        assert_eq!(status, 200, "{what}");
        support::sse::final_error(payloads);
    } else {
        assert!(status.is_server_error(), "{what}: {status} {payloads:?}");
        let v: Value = serde_json::from_str(&payloads[0]).unwrap();
        support::schema::assert_valid("ErrorResponse", &v);
    }
}

/// OpenCode killed (SIGKILL) while 20 streams run (`[slow:200] [chunks:50]`): every stream ends
/// with an error event; after OpenCode's restart, within 15 s, it holds no session the gateway
/// does not remember (the failed deletes were retried), and a chat works again.
async fn killed_during_streams_then_restarted(bed: &mut TestBed) {
    const STREAMS: usize = 20;
    let calls_before = bed.mock.call_count();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let client = bed.client.clone();
            let url = bed.url("/v1/chat/completions");
            let body = streaming(ask(ECHO, &format!("stream {i} [slow:200] [chunks:50]")));
            tokio::spawn(async move {
                let resp = client.post(url).json(&body).send().await.unwrap();
                read_payloads(resp, Duration::from_secs(30)).await
            })
        })
        .collect();
    let all_running = bed
        .mock
        .wait_for_calls(calls_before + STREAMS, Duration::from_secs(60))
        .await;
    assert!(
        all_running,
        "the {STREAMS} streams did not all reach the model"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = titled(bed).await.len();
    assert!(
        before >= STREAMS,
        "{before} sessions upstream during the streams"
    );

    // A control: a session of no gateway's, which must survive the crash (OpenCode keeps its
    // sessions on disk), so that the gateway's vanishing ones are known to be deleted, not lost.
    let control = bed.opencode.create_session("outage control").await;
    bed.opencode.kill().await;
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, is_sse, payloads) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap_or_else(|_| panic!("stream {i} did not end after OpenCode died"))
            .unwrap();
        assert!(
            streamed_content(&payloads).len() < "echo: stream 0 [slow:200] [chunks:50]".len(),
            "stream {i} finished despite the kill"
        );
        assert_failed_cleanly(status, is_sse, &payloads, &format!("stream {i}"));
    }
    bed.opencode.restart().await;
    let took = assert_no_leak(bed, Duration::from_secs(15), "after the kill").await;
    assert!(
        bed.opencode.session_ids().await.contains(&control),
        "OpenCode lost its sessions in the crash: the clean-up proves nothing"
    );
    bed.opencode.delete_session(&control).await;
    eprintln!("[outages] {before} sessions of broken runs cleaned up {took:?} after the restart");
    let (status, v) = bed.chat(ask(ECHO, "after the restart")).await;
    assert_eq!(reply_of(status, &v), "echo: after the restart");
}

/// OpenCode frozen (SIGSTOP) for 6 s while 6 chats start (`opencode.request_timeout_ms =
/// 2000`): each fails cleanly (its session create timed out); once OpenCode resumes (SIGCONT)
/// it creates those sessions late, and within 20 s every one of them is deleted (none titled
/// with the gateway's title is left but those it remembers) and `pending_cleanup` is 0.
async fn frozen_while_creating_sessions(bed: &mut TestBed) {
    assert_no_leak(bed, Duration::from_secs(15), "before the freeze").await;
    let pid = procs::opencode_on_port(bed.opencode.port()).expect("the OpenCode process");
    let mut events = bed.opencode.subscribe_events().await;
    let chat = |i: usize| {
        let client = bed.client.clone();
        let url = bed.url("/v1/chat/completions");
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .json(&ask(ECHO, &format!("frozen {i}")))
                .send()
                .await
                .unwrap();
            read_json(resp).await
        })
    };
    procs::signal(pid, libc::SIGSTOP);
    let frozen_at = Instant::now();
    let mut chats: Vec<_> = (0..4).map(chat).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    chats.extend((4..6).map(chat));
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(frozen_at.elapsed())).await;
    procs::signal(pid, libc::SIGCONT);

    for (i, task) in chats.into_iter().enumerate() {
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("chat {i} hung"))
            .unwrap();
        assert!(status.is_server_error(), "chat {i}: {status} {body}");
        support::schema::assert_valid("ErrorResponse", &body);
    }
    let took = assert_no_leak(bed, Duration::from_secs(20), "after the freeze").await;

    // OpenCode did create sessions late, and each was deleted.
    let seen = events
        .collect_until(Duration::from_secs(2), |_| false)
        .await;
    let of_type = |kind: &str| -> BTreeSet<String> {
        seen.iter()
            .filter(|e| e["type"] == kind && e["properties"]["info"]["title"] == TITLE)
            .filter_map(|e| e["properties"]["info"]["id"].as_str().map(String::from))
            .collect()
    };
    let created = of_type("session.created");
    let deleted = of_type("session.deleted");
    eprintln!(
        "[outages] {} session(s) created late by the resumed OpenCode, none left {took:?} after the chats failed",
        created.len()
    );
    assert!(
        !created.is_empty(),
        "OpenCode created no session after the freeze: the test did not exercise late creates"
    );
    let left: Vec<&String> = created.difference(&deleted).collect();
    assert!(left.is_empty(), "created late and never deleted: {left:?}");
    let (status, v) = bed.chat(ask(ECHO, "after the freeze")).await;
    assert_eq!(reply_of(status, &v), "echo: after the freeze");
}

/// A real OpenCode behind a gateway with a short request timeout, ready.
async fn outage_bed() -> TestBed {
    let bed = Harness::real()
        .opencode(OpenCodeOptions::default())
        .gateway(GatewayOptions::default().config(format!(
            "[opencode]\nrequest_timeout_ms = 2000\n[prompt]\nsession_title = \"{TITLE}\"\n"
        )))
        .start()
        .await;
    let ready = eventually(Duration::from_secs(30), || async {
        bed.get("/health").await.0 == 200
    })
    .await;
    assert!(ready, "the gateway is not ready");
    bed
}

/// OpenCode killed while streams run, then restarted: no session leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_leak_when_opencode_is_killed_and_restarted() {
    killed_during_streams_then_restarted(&mut outage_bed().await).await;
}

/// OpenCode frozen while sessions are being created: no session leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_leak_when_opencode_freezes() {
    let mut bed = outage_bed().await;
    // A warm OpenCode (its project instance up, as after any earlier traffic): the freeze
    // then catches session creates in flight rather than the instance's first start.
    let (status, v) = bed.chat(ask(ECHO, "warm up")).await;
    assert_eq!(reply_of(status, &v), "echo: warm up");
    frozen_while_creating_sessions(&mut bed).await;
}
