//! Scale-out: two gateway replicas over two real OpenCode servers, sharing state through a real
//! `redis-server` (tests/it/support/cluster.rs), behave as one gateway to every client.
//!
//! Two beds run in parallel:
//! - [`replicas_behave_as_one_gateway`]: conversations, Responses chains and explicit sessions
//!   continue on the other replica without replay; two replicas never prompt one session at
//!   once; a client-tool follow-up on the other replica is re-driven; a replica killed
//!   mid-stream leaves no session claimed forever.
//! - [`upstream_and_redis_failures`]: an OpenCode killed under load loses no conversation; Redis
//!   killed and restarted costs no request, and sharing resumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::cluster::Cluster;
use support::mock_model::content_text;
use support::{assistant, chat_body, user, ECHO};

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
const TRANSCRIPT_MARK: &str = "The conversation so far";
const SESSION_HEADER: &str = "x-opencode-session-id";

/// The model request whose last user message contains `marker` (the newest one).
fn model_request_with(cluster: &Cluster, marker: &str) -> Value {
    cluster
        .mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| {
            r["messages"].as_array().is_some_and(|m| {
                m.iter()
                    .rev()
                    .find(|m| m["role"] == "user")
                    .is_some_and(|m| content_text(&m["content"]).contains(marker))
            })
        })
        .unwrap_or_else(|| panic!("no model request with {marker:?}"))
}

/// Asserts the turn carrying `marker` reached the model as a continued session: its earlier
/// turns are real messages, not a transcript replayed into one prompt.
fn assert_no_replay(cluster: &Cluster, marker: &str, turns_before: usize) {
    let req = model_request_with(cluster, marker);
    let messages: Vec<&Value> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .collect();
    let text: String = messages
        .iter()
        .map(|m| content_text(&m["content"]))
        .collect();
    assert!(
        !text.contains(TRANSCRIPT_MARK),
        "{marker}: the history was replayed: {text}"
    );
    assert!(
        messages.len() > turns_before,
        "{marker}: the model saw {} messages, expected the {turns_before} earlier ones too",
        messages.len()
    );
}

/// One chat turn on the gateway at `url` (not a cluster's) → (session id, answer).
async fn chat_at(http: &reqwest::Client, url: String, messages: Vec<Value>) -> (String, String) {
    let rb = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(ECHO, messages));
    let (status, headers, body) = support::api::send(rb).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = headers[SESSION_HEADER].to_str().unwrap().to_string();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    (session, answer)
}

/// One chat turn on replica `g` → (session id, answer).
async fn turn(
    cluster: &Cluster,
    g: usize,
    messages: Vec<Value>,
    headers: &[(&str, &str)],
) -> (String, String) {
    let (status, h, body) = cluster
        .post(
            g,
            "/v1/chat/completions",
            &chat_body(ECHO, messages),
            headers,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "replica {g}: {body}\n{}",
        cluster.gateways[g].logs()
    );
    let session = h
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (session, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_behave_as_one_gateway() {
    let Some(mut cluster) = Harness::cluster(2).config("").start().await else {
        return;
    };
    conversation_moves_between_replicas(&cluster).await;
    new_conversations_spread_over_both_upstreams(&cluster).await;
    responses_chain_moves_between_replicas(&cluster).await;
    a_running_response_is_read_on_either_replica(&cluster).await;
    replicas_never_prompt_one_session_at_once(&cluster).await;
    tool_results_on_the_other_replica_are_re_driven(&cluster).await;
    dead_replica_claim_lapses(&mut cluster).await;
}

/// Turn 1 on replica 0, turn 2 on replica 1, turn 3 on replica 0: one session throughout, and
/// only the new message sent each time.
async fn conversation_moves_between_replicas(cluster: &Cluster) {
    let mut history = vec![user("moving conversation one")];
    let (s1, a1) = turn(cluster, 0, history.clone(), &[]).await;
    assert_eq!(a1, "echo: moving conversation one");
    history.extend([assistant(&a1), user("moving conversation two")]);
    let (s2, a2) = turn(cluster, 1, history.clone(), &[]).await;
    assert_eq!(a2, "echo: moving conversation two");
    assert_eq!(s2, s1, "replica 1 continued replica 0's session");
    assert_no_replay(cluster, "moving conversation two", 2);
    history.extend([assistant(&a2), user("moving conversation three")]);
    let (s3, _) = turn(cluster, 0, history, &[]).await;
    assert_eq!(s3, s1, "and back");
    assert_no_replay(cluster, "moving conversation three", 4);
}

/// New conversations go to both upstreams (the least loaded, ties taking turns).
async fn new_conversations_spread_over_both_upstreams(cluster: &Cluster) {
    let mut on = [0, 0];
    for i in 0..4 {
        let (session, _) = turn(cluster, 0, vec![user(&format!("spread {i}"))], &[]).await;
        let upstream = cluster
            .upstream_of(&session)
            .await
            .expect("session upstream");
        on[upstream] += 1;
    }
    assert!(on[0] > 0 && on[1] > 0, "all on one upstream: {on:?}");
    let (_, status) = cluster.get(0, "/status").await;
    let names: Vec<&str> = status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "{status}");
    assert_eq!(status["store"], json!({"kind": "redis", "up": true}));
    let (_, metrics) = cluster.get(0, "/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for series in [
        "portatek_upstream_up{upstream=\"a\"} 1",
        "portatek_upstream_up{upstream=\"b\"} 1",
        "portatek_upstream_in_flight{upstream=\"b\"} 0",
        "portatek_store_up 1",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
}

/// A Responses chain started on replica 0 continues on replica 1, in the same session, and
/// each replica reads the other's stored responses.
async fn responses_chain_moves_between_replicas(cluster: &Cluster) {
    let body = json!({"model": ECHO, "input": "chain one"});
    let (status, h1, first) = cluster.post(0, "/v1/responses", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let id = first["id"].as_str().unwrap();
    let body = json!({"model": ECHO, "input": "chain two", "previous_response_id": id});
    let (status, h2, second) = cluster.post(1, "/v1/responses", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        second["output_text"]
            .as_str()
            .or_else(|| second["output"][0]["content"][0]["text"].as_str()),
        Some("echo: chain two"),
        "{second}"
    );
    assert_eq!(
        h1.get(SESSION_HEADER),
        h2.get(SESSION_HEADER),
        "one session"
    );
    assert_no_replay(cluster, "chain two", 2);
    let (status, got) = cluster.get(1, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["id"], first["id"]);
}

/// A response still running on replica 0 is `in_progress` to `GET` on replica 1 (it used to
/// be a 404 until stored: the running map is per process, now shared through Redis), then
/// `completed` once it is stored.
async fn a_running_response_is_read_on_either_replica(cluster: &Cluster) {
    let body = json!({"model": ECHO, "input": "running across [slow:400] [chunks:6]",
        "stream": true});
    let resp = cluster
        .http
        .post(format!("{}/v1/responses", cluster.gateways[0].url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut reader = support::sse::SseReader::new(resp);
    let id = loop {
        let frame = reader
            .next(Duration::from_secs(30))
            .await
            .expect("response.created");
        if let Some(v) = frame.json() {
            if v["type"] == "response.created" {
                break v["response"]["id"].as_str().unwrap().to_string();
            }
        }
    };
    let (status, got) = cluster.get(1, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["status"], "in_progress", "{got}");
    let _ = reader.rest(Duration::from_secs(30)).await;
    let (status, got) = cluster.get(1, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["status"], "completed", "{got}");
}

/// The same explicit session asked on both replicas at once: one runs, the other is told 409;
/// afterwards the session takes the next request again.
async fn replicas_never_prompt_one_session_at_once(cluster: &Cluster) {
    let (status, _, created) = cluster.post(0, "/v1/sessions", &json!({}), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let headers = [("x-session-id", id.as_str())];
    let slow = |text: &str| chat_body(ECHO, vec![user(&format!("[slow:400] {text}"))]);
    let (zero, one) = (slow("race zero"), slow("race one"));
    let (first, second) = tokio::join!(
        cluster.post(0, "/v1/chat/completions", &zero, &headers),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster
                .post(1, "/v1/chat/completions", &one, &headers)
                .await
        }
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        first.2,
        second.2
    );
    let prompts = cluster
        .mock
        .requests()
        .iter()
        .filter(|r| r.to_string().contains("[slow:400] race"))
        .count();
    assert_eq!(prompts, 1, "the refused request never reached the model");
    let (session, _) = turn(cluster, 1, vec![user("after the race")], &headers).await;
    assert_eq!(session, id);
}

/// Replica 0 ends a response with a tool call; the results arrive at replica 1, which does not
/// hold the waiting run: it answers through a session seeded with the calls and results.
async fn tool_results_on_the_other_replica_are_re_driven(cluster: &Cluster) {
    let tools = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    let ask = user(r#"[call:lookup:{"q":"capital"}] look it up"#);
    let mut body = chat_body(ECHO, vec![ask.clone()]);
    body["tools"] = tools.clone();
    let (status, _, first) = cluster.post(0, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let message = &first["choices"][0]["message"];
    assert_eq!(
        first["choices"][0]["finish_reason"], "tool_calls",
        "{first}"
    );
    let call_id = message["tool_calls"][0]["id"].as_str().unwrap();
    let result = json!({"role": "tool", "tool_call_id": call_id, "content": "Paris"});
    let mut body = chat_body(ECHO, vec![ask, message.clone(), result]);
    body["tools"] = tools;
    let (status, _, second) = cluster.post(1, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let req = model_request_with(cluster, "<tool_result");
    let text = req.to_string();
    assert!(
        text.contains(TRANSCRIPT_MARK) && text.contains("Paris"),
        "the results went into a seeded prompt: {text}"
    );
}

/// Replica 0 dies mid-stream on an explicit session: replica 1 is refused while the dead
/// replica's claim lasts, then runs on the session (its claim lapsed, the orphaned run aborted).
async fn dead_replica_claim_lapses(cluster: &mut Cluster) {
    let (status, _, created) = cluster.post(1, "/v1/sessions", &json!({}), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let body = support::streaming(chat_body(
        ECHO,
        vec![user("[slow:500] [chunks:40] a long answer cut short")],
    ));
    let url = format!("{}/v1/chat/completions", cluster.gateways[0].url());
    let mut resp = cluster
        .http
        .post(url)
        .header("x-session-id", &id)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _first = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("a first chunk");
    cluster.gateways[0].kill().await;
    let headers = [("x-session-id", id.as_str())];
    let next = chat_body(ECHO, vec![user("after the crash")]);
    let (status, _, body) = cluster
        .post(1, "/v1/chat/completions", &next, &headers)
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the dead replica's claim still holds: {body}"
    );
    let started = Instant::now();
    loop {
        let (status, _, body) = cluster
            .post(1, "/v1/chat/completions", &next, &headers)
            .await;
        if status == StatusCode::OK {
            assert_eq!(
                body["choices"][0]["message"]["content"],
                "echo: after the crash"
            );
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the claim never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_and_redis_failures() {
    let Some(mut cluster) = Harness::cluster(2).config("").start().await else {
        return;
    };
    opencode_killed_under_load_loses_no_conversation(&mut cluster).await;
    redis_outage_costs_no_request(&mut cluster).await;
}

/// Conversations on both upstreams; `b` is killed while some run: every conversation's next
/// turn answers, those of `b` re-seeded on `a`; readiness holds; `/status` shows `b` down.
async fn opencode_killed_under_load_loses_no_conversation(cluster: &mut Cluster) {
    // Conversations until at least two live on b (placement alternates; a turn that b fails
    // on a busy machine moves to a, so the count is not fixed).
    let (mut histories, mut was_on_b) = (Vec::new(), Vec::new());
    for i in 0..16 {
        let first = user(&format!("survivor {i} turn one"));
        let (session, answer) = turn(cluster, i % 2, vec![first.clone()], &[]).await;
        was_on_b.push(cluster.upstream_of(&session).await == Some(1));
        histories.push((vec![first, assistant(&answer)], session));
        if histories.len() >= 6 && was_on_b.iter().filter(|b| **b).count() >= 2 {
            break;
        }
    }
    assert!(
        was_on_b.contains(&true),
        "no conversation on b: {:?}\n{}",
        cluster.get(0, "/status").await.1,
        cluster.gateways[0].logs()
    );
    // Load in flight while b dies: slow turns of fresh conversations on both replicas.
    let load: Vec<_> = (0..4)
        .map(|i| {
            let http = cluster.http.clone();
            let url = format!("{}/v1/chat/completions", cluster.gateways[i % 2].url());
            tokio::spawn(async move {
                let body = chat_body(ECHO, vec![user(&format!("[slow:300] in flight {i}"))]);
                http.post(url).json(&body).send().await.map(|r| r.status())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.opencodes[1].kill().await;
    for l in load {
        // In-flight runs on b may fail (502/503); none may hang.
        let _ = tokio::time::timeout(Duration::from_secs(60), l)
            .await
            .expect("in-flight requests end");
    }
    for (i, (history, _)) in histories.iter_mut().enumerate() {
        let next = format!("survivor {i} turn two");
        history.push(user(&next));
        let (session, answer) = turn(cluster, (i + 1) % 2, history.clone(), &[]).await;
        if was_on_b[i] {
            // Re-seeded: the mock echoes the whole prompt, the history written out first.
            assert!(
                answer.contains(TRANSCRIPT_MARK) && answer.ends_with(&next),
                "{answer}"
            );
        } else {
            assert_eq!(answer, format!("echo: {next}"));
            assert_no_replay(cluster, &next, 2);
        }
        assert!(
            cluster.opencodes[0].session_ids().await.contains(&session),
            "turn two runs on the surviving upstream"
        );
    }
    for g in 0..2 {
        let (status, health) = cluster.get(g, "/health").await;
        assert_eq!(status, StatusCode::OK, "{health}");
        let (_, status) = cluster.get(g, "/status").await;
        let b = &status["upstreams"][1];
        assert_eq!(b["name"], "b");
        assert_ne!(b["state"], "up", "{status}");
    }
}

/// Redis killed: requests keep answering (each replica on its own state); Redis back: sharing
/// resumes, and a conversation moves between replicas without replay again.
async fn redis_outage_costs_no_request(cluster: &mut Cluster) {
    cluster.redis.kill().await;
    for i in 0..4 {
        let (_, answer) = turn(cluster, i % 2, vec![user(&format!("no redis {i}"))], &[]).await;
        assert_eq!(answer, format!("echo: no redis {i}"));
        let (status, _, created) = cluster.post(i % 2, "/v1/sessions", &json!({}), &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let (_, status) = cluster.get(0, "/status").await;
    assert_eq!(status["store"]["up"], false, "{status}");
    assert!(cluster.gateways[0].logs().contains("Redis unreachable"));
    cluster.redis.restart().await;
    for g in 0..2 {
        // Any request touching the store brings it back (each replica tries at most once a
        // second while it is down).
        let back = support::eventually(Duration::from_secs(15), || async {
            let _ = turn(cluster, g, vec![user(&format!("knock knock {g}"))], &[]).await;
            cluster.get(g, "/status").await.1["store"]["up"] == true
        })
        .await;
        assert!(back, "replica {g}: sharing did not resume");
    }
    let mut history = vec![user("after redis one")];
    let (s1, a1) = turn(cluster, 0, history.clone(), &[]).await;
    history.extend([assistant(&a1), user("after redis two")]);
    let (s2, _) = turn(cluster, 1, history, &[]).await;
    assert_eq!(s1, s2, "shared again");
    assert_no_replay(cluster, "after redis two", 2);
}

/// A small bed: two replicas sharing a real `redis-server`, over one real OpenCode.
struct ReplicaPair {
    gateways: [support::Gateway; 2],
    opencode: support::OpenCode,
    _mock: support::MockModel,
    _redis: support::redis::Redis,
}

impl ReplicaPair {
    /// With `extra` appended to both replicas' config; `None` without redis-server.
    async fn start(extra: &str) -> Option<ReplicaPair> {
        Self::start_each([extra, extra]).await
    }

    /// With `extra[i]` appended to replica `i`'s config (right after the `[store]` keys).
    async fn start_each(extra: [&str; 2]) -> Option<ReplicaPair> {
        let redis = support::redis::Redis::start().await?;
        let mock = support::MockModel::start().await;
        let opencode = support::OpenCode::start(&mock.base_url()).await;
        let opts = |extra: &str| {
            let config = format!(
                "[store]\nkind = \"redis\"\nurl = \"{}\"\n{extra}",
                redis.url()
            );
            support::GatewayOptions::default().config(config)
        };
        let gateways = [
            support::Gateway::start_with(&opencode.url(), opts(extra[0])).await,
            support::Gateway::start_with(&opencode.url(), opts(extra[1])).await,
        ];
        Some(ReplicaPair {
            gateways,
            opencode,
            _mock: mock,
            _redis: redis,
        })
    }
}

/// With the Redis store, a key's requests per minute are counted across replicas: 5 allowed in
/// all, not 5 per replica. (Each replica alone would let all 8 through.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_replicas() {
    let Some(bed) = ReplicaPair::start("[rate_limits]\nrequests_per_minute = 5\n").await else {
        return;
    };
    let gateways = &bed.gateways;
    // Not across a minute boundary (the shared window is the clock's minute).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    if now.as_secs() % 60 > 50 {
        tokio::time::sleep(Duration::from_secs(61 - now.as_secs() % 60)).await;
    }
    let http = support::gateway::test_client();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let url = format!("{}/v1/models", gateways[i % 2].url());
        let resp = http.get(url).send().await.unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429],
        "5 per minute for the key, whichever replica counts"
    );
}

/// Evictions delete upstream exactly once: a conversation answered on replica 0, then continued
/// on replica 1, expires on replica 0 first — which must not delete the session now replica 1's
/// — and then on replica 1, which deletes it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_a_moved_session_exactly_once() {
    let Some(bed) = ReplicaPair::start("[sessions]\nttl_secs = 6\n").await else {
        return;
    };
    let (gateways, opencode) = (&bed.gateways, &bed.opencode);
    let http = support::gateway::test_client();
    let ask = |g: usize, messages: Vec<Value>| chat_at(&http, gateways[g].url(), messages);
    let first = user("expiring conversation one");
    let (session, answer) = ask(0, vec![first.clone()]).await;
    let (moved, _) = ask(
        1,
        vec![first, assistant(&answer), user("expiring conversation two")],
    )
    .await;
    assert_eq!(moved, session, "continued on replica 1");
    let deleted = format!("deleted OpenCode session session={session} why=\"expired\"");
    let moved_on = |g: usize| {
        gateways[g]
            .logs()
            .lines()
            .any(|l| l.contains(&session) && l.contains("moved on with another replica"))
    };
    let ended_here = support::eventually(Duration::from_secs(20), || async { moved_on(0) }).await;
    assert!(
        ended_here,
        "replica 0's entry never expired:\n{}",
        gateways[0].logs()
    );
    assert!(
        !gateways[0].logs().contains(&deleted),
        "replica 0 deleted a session replica 1 holds"
    );
    let gone = support::eventually(Duration::from_secs(20), || async {
        !opencode.session_ids().await.contains(&session)
    })
    .await;
    assert!(gone, "replica 1 never deleted it:\n{}", gateways[1].logs());
    let deletes: usize = gateways
        .iter()
        .map(|g| g.logs().matches(&deleted).count())
        .sum();
    assert_eq!(deletes, 1, "deleted exactly once");
    assert_eq!(gateways[1].logs().matches(&deleted).count(), 1);
}

/// The instance id a gateway logged at start.
fn instance_of(gateway: &support::Gateway) -> String {
    let logs = gateway.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("gateway instance"))
        .unwrap_or_else(|| panic!("no instance logged:\n{logs}"));
    let at = line.find("instance=").unwrap() + "instance=".len();
    line[at..at + 32].to_string()
}

/// With Redis, replicas know each other's liveness. Replica 0 (30 s TTL) holds two
/// conversations idle for 8 s while replica 1 (2 s TTL) sweeps every second: replica 0's
/// heartbeat spares them. Replica 1 continues one of them without replay and stamps its session
/// as its own. Replica 0 is SIGKILLed: once its heartbeat lapses (2 s), replica 1 deletes the
/// session it left, counts it, and OpenCode ends with no session at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_sessions_are_swept_by_the_live_one() {
    let sweep = "lease_ttl_secs = 2\n[sessions]\nsweep_interval_secs = 1\n";
    let Some(mut bed) = ReplicaPair::start_each([
        &format!("{sweep}ttl_secs = 30\n"),
        &format!("{sweep}ttl_secs = 2\n"),
    ])
    .await
    else {
        return;
    };
    let http = support::gateway::test_client();
    let ask = |url: String, messages: Vec<Value>| chat_at(&http, url, messages);
    let (zero, one) = (bed.gateways[0].url(), bed.gateways[1].url());
    let (kept, moving) = (user("sweep kept"), user("sweep moving"));
    let (left, _) = ask(zero.clone(), vec![kept]).await;
    let (moved, answer) = ask(zero, vec![moving.clone()]).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ids = bed.opencode.session_ids().await;
    assert!(
        ids.contains(&left) && ids.contains(&moved),
        "a live replica's idle sessions were swept: {ids:?}\n{}",
        bed.gateways[1].logs()
    );

    let next = vec![moving, assistant(&answer), user("sweep moved")];
    let (continued, _) = ask(one.clone(), next).await;
    assert_eq!(continued, moved, "continued on replica 1");
    let session = bed.opencode.get_json(&format!("/session/{moved}")).await;
    assert_eq!(
        session["metadata"]["portatek"]["instance"],
        instance_of(&bed.gateways[1]).as_str(),
        "taken over: stamped as replica 1's"
    );

    bed.gateways[0].kill().await;
    let swept = support::eventually(Duration::from_secs(15), || async {
        bed.opencode.session_ids().await.is_empty()
    })
    .await;
    assert!(
        swept,
        "left behind: {:?}\n{}",
        bed.opencode.session_ids().await,
        bed.gateways[1].logs()
    );
    let logs = bed.gateways[1].logs();
    assert!(
        logs.contains(&format!(
            "deleted an orphaned pooled session session={left}"
        )),
        "the dead replica's session went by the sweep:\n{logs}"
    );
    let (metrics, text) = support::prometheus::scrape(&http, &format!("{one}/metrics"), None).await;
    let counted = metrics.sum("portatek_sessions_swept_total", &[("upstream", "default")]);
    assert!(counted >= 1.0, "swept: {counted}\n{text}");
}

/// An upstream that passes its health checks but fails what a turn needs (here: every session
/// create answers 503) costs no request: the turn goes once to the other upstream. (The fault
/// needs the fake OpenCode: a real one cannot be made to fail just that.)
#[tokio::test]
async fn a_failing_upstream_fails_over_before_anything_ran() {
    let (good, bad) = (Harness::fake().start().await, Harness::fake().start().await);
    bad.faults().session_failures.store(
        support::fake_opencode::ALWAYS,
        std::sync::atomic::Ordering::SeqCst,
    );
    let config = format!(
        "[[upstreams]]\nname = \"good\"\nurl = \"{}\"\n[[upstreams]]\nname = \"bad\"\nurl = \"{}\"\n",
        good.url(),
        bad.url()
    );
    let opts = support::GatewayOptions {
        no_default_args: true,
        ..support::GatewayOptions::default()
    }
    .args(["--listen", "127.0.0.1:0"])
    .config(config);
    let gateway = support::Gateway::start_with("", opts).await;
    let http = support::gateway::test_client();
    for i in 0..4 {
        let rb = http
            .post(format!("{}/v1/chat/completions", gateway.url()))
            .json(&chat_body(ECHO, vec![user(&format!("failover {i}"))]));
        let (status, _, body) = support::api::send(rb).await;
        assert_eq!(status, StatusCode::OK, "{body}\n{}", gateway.logs());
        assert_eq!(
            body["choices"][0]["message"]["content"],
            support::fake_opencode::FAKE_ANSWER
        );
    }
    let tried = bad
        .seen()
        .session_creates
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(tried > 0, "no turn was placed on the failing upstream");
    assert_eq!(good.prompts().len(), 4, "every turn ran on the good one");
}
