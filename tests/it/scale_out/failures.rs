//! OpenCode killed under load, a Redis outage (the steps of `upstream_and_redis_failures`).

use super::*;

/// Conversations on both upstreams; `b` is killed while some run: every conversation's next
/// turn answers, those of `b` re-seeded on `a`; readiness holds; `/status` shows `b` down.
pub(super) async fn opencode_killed_under_load_loses_no_conversation(cluster: &mut Cluster) {
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
pub(super) async fn redis_outage_costs_no_request(cluster: &mut Cluster) {
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
