//! The shared store against a real `redis-server`: what each operation guarantees to the
//! replicas (exclusive takes, claims only their holder can renew or release, claims that lapse,
//! compare-and-delete), and that a dead Redis costs a fast error, never a wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use portatek_gateway::store::{Claim, SharedConversation, Store, StoreError, StoreSettings};
use support::redis::Redis;

fn store(redis: &Redis, lease_ttl: Duration) -> Store {
    Store::redis(StoreSettings {
        url: redis.url(),
        key_prefix: "test:".into(),
        timeout: Duration::from_millis(250),
        lease_ttl,
    })
}

fn entry(session: &str) -> SharedConversation {
    SharedConversation {
        upstream: "a".into(),
        session: session.into(),
        history_end: Some("msg_1".into()),
        holder: Some("i1".into()),
    }
}

#[tokio::test]
async fn shared_store_semantics() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let (one, two) = (
        store(&redis, Duration::from_millis(400)),
        store(&redis, Duration::from_millis(400)),
    );
    assert_ne!(
        one.holder(),
        two.holder(),
        "each process its own holder token"
    );

    // Run claims: one holder at a time; only it renews or releases; unrenewed, it lapses, and
    // the next claim learns that its last holder died mid-run.
    assert_eq!(one.claim_run("ses_a").await.unwrap(), Claim::Taken);
    assert_eq!(two.claim_run("ses_a").await.unwrap(), Claim::Held);
    assert!(one.renew_run("ses_a").await.unwrap());
    assert!(!two.renew_run("ses_a").await.unwrap(), "not its claim");
    two.release_run("ses_a").await.unwrap();
    assert_eq!(
        two.claim_run("ses_a").await.unwrap(),
        Claim::Held,
        "another holder's release does not free it"
    );
    one.release_run("ses_a").await.unwrap();
    assert_eq!(
        two.claim_run("ses_a").await.unwrap(),
        Claim::Taken,
        "free after a release, and nothing left running"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        one.claim_run("ses_a").await.unwrap(),
        Claim::TakenFromLapsed,
        "a claim nobody renews lapses; its run was never released"
    );
    one.release_run("ses_a").await.unwrap();
    assert_eq!(two.claim_run("ses_a").await.unwrap(), Claim::Taken);

    // Conversations: a take is exclusive; compare-and-delete only removes the same entry.
    let fp = [7u8; 32];
    one.put_conversation(&fp, &entry("ses_c"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        two.peek_conversation(&fp).await.unwrap(),
        Some(entry("ses_c"))
    );
    let (a, b) = tokio::join!(one.take_conversation(&fp), two.take_conversation(&fp));
    let taken: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(taken, vec![entry("ses_c")], "exactly one take gets it");
    one.put_conversation(&fp, &entry("ses_d"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!two
        .remove_conversation_if(&fp, &entry("ses_c"))
        .await
        .unwrap());
    assert!(two
        .remove_conversation_if(&fp, &entry("ses_d"))
        .await
        .unwrap());
    assert_eq!(one.peek_conversation(&fp).await.unwrap(), None);

    // Session homes, floors, counters.
    one.set_session_home("ses_h", "b", Duration::from_secs(60))
        .await
        .unwrap();
    one.set_history_end("ses_h", "msg_9", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        two.session_home("ses_h").await.unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(
        two.history_end("ses_h").await.unwrap().as_deref(),
        Some("msg_9")
    );
    two.forget_session("ses_h").await.unwrap();
    assert_eq!(one.session_home("ses_h").await.unwrap(), None);
    assert_eq!(one.history_end("ses_h").await.unwrap(), None);
    let ttl = Duration::from_millis(300);
    assert_eq!(one.add_to_counter("k:1", 1, ttl).await.unwrap(), 1);
    assert_eq!(two.add_to_counter("k:1", 5, ttl).await.unwrap(), 6);
    assert_eq!(two.add_to_counter("k:1", 0, ttl).await.unwrap(), 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        one.add_to_counter("k:1", 0, ttl).await.unwrap(),
        0,
        "counters expire"
    );
    assert!(one.is_up());

    // Instance heartbeats: alive while beating, gone when forgotten or not renewed.
    one.beat("inst_a", "dep", Duration::from_millis(300))
        .await
        .unwrap();
    two.beat("inst_b", "dep", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        two.alive(&["inst_a", "inst_b", "inst_c"]).await.unwrap(),
        vec![true, true, false]
    );
    assert_eq!(one.alive(&[]).await.unwrap(), Vec::<bool>::new());
    two.forget_instance("inst_b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        one.alive(&["inst_a", "inst_b"]).await.unwrap(),
        vec![false, false],
        "a heartbeat lapses unrenewed, and a forgotten one is gone"
    );

    // Redis gone: every call fails fast; the store says it is down.
    redis.kill().await;
    for _ in 0..5 {
        let started = Instant::now();
        let e = one.claim_run("ses_z").await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1), "fast failure");
    }
    assert!(!one.is_up());

    // Back: sharing resumes by itself within a few seconds.
    redis.restart().await;
    let started = Instant::now();
    loop {
        let last = one.claim_run("ses_z").await;
        if let Ok(Claim::Taken) = last {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the store did not reconnect: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(one.is_up());
    assert_eq!(two.claim_run("ses_z").await.unwrap(), Claim::Held);
}
