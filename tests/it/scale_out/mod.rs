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

mod failures;
mod helpers;
mod replicas;

use failures::*;
use helpers::*;
use replicas::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_and_redis_failures() {
    let Some(mut cluster) = Harness::cluster(2).config("").start().await else {
        return;
    };
    opencode_killed_under_load_loses_no_conversation(&mut cluster).await;
    redis_outage_costs_no_request(&mut cluster).await;
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
