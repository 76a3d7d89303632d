//! Recording OpenCode's events as fixtures, and probing its retries (ignored, run by hand).

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixture recorder: `cargo test --test it testbed_selftest::record -- --ignored`

pub(super) fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

pub(super) enum Stop {
    /// until `session.idle` of the session (or timeout)
    Idle,
    /// record for exactly this long
    For(Duration),
}

/// Subscribe to `/event`, run `prompt` (which gets the session id), and record the session's events.
pub(super) async fn record_one(
    oc: &OpenCode,
    name: &str,
    body: Value,
    stop: Stop,
    abort_after_deltas: Option<usize>,
) -> Vec<Value> {
    let mut events = oc.subscribe_events().await;
    let first = events
        .next(Duration::from_secs(10))
        .await
        .expect("server.connected");
    assert_eq!(first["type"], "server.connected");
    let sid = oc.create_session(&format!("fixture {name}")).await;
    let (status, v) = oc
        .post_json(&format!("/session/{sid}/prompt_async"), &body)
        .await;
    assert!(status.is_success(), "prompt_async -> {status}: {v}");

    let (limit, idle_stops) = match stop {
        Stop::Idle => (Duration::from_secs(60), true),
        Stop::For(d) => (d, false),
    };
    let deadline = std::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut deltas = 0usize;
    let mut aborted = false;
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        let Some(ev) = events.next(deadline - now).await else {
            break;
        };
        let ty = ev["type"].as_str().unwrap_or("").to_string();
        if ty == "server.heartbeat" || ty == "server.connected" {
            continue;
        }
        // Only this session's events (global ones such as plugin.added / catalog.updated,
        // which carry no session id, are dropped too).
        if event_session_id(&ev) != Some(sid.as_str()) {
            continue;
        }
        if ty == "message.part.delta" {
            deltas += 1;
        }
        out.push(ev);
        if let Some(n) = abort_after_deltas {
            if !aborted && deltas >= n {
                aborted = true;
                let (st, v) = oc
                    .post_json(&format!("/session/{sid}/abort"), &json!({}))
                    .await;
                eprintln!("[record {name}] abort -> {st} {v}");
            }
        }
        if idle_stops && ty == "session.idle" {
            // collect stragglers for a moment
            let extra_deadline = std::time::Instant::now() + Duration::from_millis(500);
            while let Some(ev) = events
                .next(extra_deadline.saturating_duration_since(std::time::Instant::now()))
                .await
            {
                if event_session_id(&ev) == Some(sid.as_str()) && ev["type"] != "server.heartbeat" {
                    out.push(ev);
                }
            }
            break;
        }
    }
    if !idle_stops {
        // stop the retry loop so it doesn't outlive the recording
        let _ = oc
            .post_json(&format!("/session/{sid}/abort"), &json!({}))
            .await;
    }
    let mut text = String::new();
    for ev in &out {
        text.push_str(&serde_json::to_string(ev).unwrap());
        text.push('\n');
    }
    std::fs::create_dir_all(fixture_dir()).unwrap();
    std::fs::write(fixture_dir().join(format!("{name}.jsonl")), text).unwrap();
    eprintln!("[record {name}] {} events", out.len());
    out
}

/// Re-records the adapter fixtures (`tests/fixtures/events/*.jsonl`) from a real OpenCode.
#[tokio::test]
#[ignore = "re-records tests/fixtures/events/*.jsonl (slow)"]
pub(super) async fn record_event_fixtures() {
    let mock = MockModel::start().await;
    let oc = OpenCode::start(&mock.base_url()).await;
    let prompt = |text: &str, model: &str| {
        json!({"parts": [{"type": "text", "text": text}],
               "model": {"providerID": "mock", "modelID": model}, "tools": {"*": false}})
    };
    record_one(&oc, "text", prompt("hello", "echo"), Stop::Idle, None).await;
    record_one(
        &oc,
        "reasoning",
        prompt("why [reasoning]", "thinker"),
        Stop::Idle,
        None,
    )
    .await;
    record_one(
        &oc,
        "model_failure",
        prompt("boom [fail]", "echo"),
        Stop::For(Duration::from_secs(10)),
        None,
    )
    .await;
    record_one(
        &oc,
        "abort",
        prompt("one two three four five six [slow:300] [chunks:6]", "echo"),
        Stop::Idle,
        Some(2),
    )
    .await;
    record_one(
        &oc,
        "unknown_model",
        prompt("hello", "nope"),
        Stop::Idle,
        None,
    )
    .await;
    for (i, r) in mock.requests().iter().enumerate() {
        let mut r = r.clone();
        let msgs = r["messages"].take();
        let roles: Vec<&str> = msgs
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["role"].as_str()).collect())
            .unwrap_or_default();
        eprintln!(
            "[record] model request {i}: roles {roles:?}, last user {:?}, rest {}",
            mock_model::last_user_text(&json!({ "messages": msgs })),
            serde_json::to_string(&r).unwrap()
        );
    }
}

/// How long does OpenCode keep retrying a failing model? (`--ignored probe_fail --nocapture`)
#[tokio::test]
#[ignore = "manual probe (several minutes)"]
pub(super) async fn probe_fail_retry_duration() {
    let mock = MockModel::start().await;
    let oc = OpenCode::start(&mock.base_url()).await;
    let mut events = oc.subscribe_events().await;
    let sid = oc.create_session("probe").await;
    let started = std::time::Instant::now();
    let (st, _) = oc
        .post_json(
            &format!("/session/{sid}/prompt_async"),
            &json!({"parts": [{"type": "text", "text": "x [fail]"}],
                    "model": {"providerID": "mock", "modelID": "echo"}, "tools": {"*": false}}),
        )
        .await;
    assert!(st.is_success());
    let limit = Duration::from_secs(
        std::env::var("PROBE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    while started.elapsed() < limit {
        let Some(ev) = events.next(Duration::from_secs(15)).await else {
            continue;
        };
        if event_session_id(&ev) != Some(sid.as_str()) {
            continue;
        }
        let ty = ev["type"].as_str().unwrap_or("");
        if ty != "session.updated" && ty != "session.diff" {
            eprintln!(
                "[probe] t={:>6.1}s calls={} {ty} {}",
                started.elapsed().as_secs_f64(),
                mock.call_count(),
                ev["properties"]
            );
        }
        if ty == "session.idle" {
            break;
        }
    }
    // what follows the idle
    let tail = events
        .collect_until(Duration::from_secs(2), |_| false)
        .await;
    for ev in tail
        .iter()
        .filter(|ev| event_session_id(ev) == Some(sid.as_str()))
    {
        eprintln!("[probe] after idle: {} {}", ev["type"], ev["properties"]);
    }
    let msgs = oc.messages(&sid).await;
    eprintln!(
        "[probe] last message info: {}",
        msgs.last().map(|m| m["info"].clone()).unwrap_or_default()
    );
    eprintln!(
        "[probe] end t={:.1}s calls={}",
        started.elapsed().as_secs_f64(),
        mock.call_count()
    );
}
