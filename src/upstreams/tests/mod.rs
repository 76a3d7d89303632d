//! Placement and the conversation pool against a fake OpenCode ([`fake`]): real
//! backends, real event hubs and HTTP, nothing but OpenCode faked.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod fake;

use super::{Backend, Upstreams};
use crate::auth::ClientId;
use crate::config::{Config, OpenCodeConfig};
use crate::openai::{Message, Role};
use crate::sessions::{Fingerprint, Identity, Outcome, Seed};
use crate::store::Store;
use fake::Fake;

/// Backends on `fakes` (weights as given), once each one's event stream is up.
async fn upstreams(fakes: &[&Fake], weights: &[u32], shutdown: &CancellationToken) -> Upstreams {
    let config = Config::default();
    let identity = Arc::new(Identity::load(&config));
    let store = Store::memory();
    let mut list = Vec::new();
    for (i, fake) in fakes.iter().enumerate() {
        let opencode = OpenCodeConfig {
            base_url: Some(fake.url.clone()),
            ..OpenCodeConfig::default()
        };
        let mut backend = Backend::start(
            i,
            format!("u{i}"),
            &config,
            &opencode,
            &store,
            &identity,
            shutdown,
        )
        .unwrap();
        backend.weight = weights[i];
        assert!(
            backend.hub.wait_connected(Duration::from_secs(5)).await,
            "the fake's event stream"
        );
        list.push(Arc::new(backend));
    }
    Upstreams::new(list, store)
}

fn fingerprint(turns: &[&str]) -> Fingerprint {
    let turns: Vec<Message> = turns
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            Message::text_only(role, *t)
        })
        .collect();
    Fingerprint::of(&ClientId::of_key("k"), "mock/echo", None, &turns)
}

#[tokio::test]
async fn new_conversations_take_turns_and_avoid_the_loaded_upstream() {
    let shutdown = CancellationToken::new();
    let (a, b) = (Fake::start().await, Fake::start().await);
    let ups = upstreams(&[&a, &b], &[1, 1], &shutdown).await;
    let picks: Vec<usize> = (0..4).map(|_| ups.pick()).collect();
    assert!(
        picks.contains(&0) && picks.contains(&1),
        "ties take turns: {picks:?}"
    );
    let _busy = ups.run_started(0);
    for _ in 0..4 {
        assert_eq!(ups.pick(), 1, "the idle upstream takes new conversations");
    }
    let _busy2 = ups.run_started(1);
    let _busy3 = ups.run_started(1);
    assert_eq!(ups.pick(), 0, "fewest runs per unit of weight");
    shutdown.cancel();
}

#[tokio::test]
async fn weight_buys_a_larger_share() {
    let shutdown = CancellationToken::new();
    let (a, b) = (Fake::start().await, Fake::start().await);
    let ups = upstreams(&[&a, &b], &[3, 1], &shutdown).await;
    // Runs per unit of weight: three runs on the weight-3 upstream weigh as one on the other.
    let _two: Vec<_> = (0..2).map(|_| ups.run_started(0)).collect();
    assert_eq!(ups.pick(), 1, "2/3 of a run against none");
    let _one = ups.run_started(1);
    assert_eq!(ups.pick(), 0, "2/3 against 1");
    let _more: Vec<_> = (0..2).map(|_| ups.run_started(0)).collect();
    assert_eq!(ups.pick(), 1, "4/3 against 1");
    shutdown.cancel();
}

#[tokio::test]
async fn an_upstream_whose_event_stream_dropped_gets_nothing_new() {
    let shutdown = CancellationToken::new();
    let (a, b) = (Fake::start().await, Fake::start().await);
    let ups = upstreams(&[&a, &b], &[1, 1], &shutdown).await;
    a.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ups.get(0).hub.is_connected() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !ups.get(0).hub.is_connected(),
        "the hub notices the stream end"
    );
    assert!(!ups.get(0).available());
    for _ in 0..4 {
        assert_eq!(ups.pick(), 1);
    }
    assert_eq!(
        ups.default_upstream(),
        1,
        "requests not tied to a session go there too"
    );
    assert_eq!(
        ups.pick_other(1),
        None,
        "no other upstream to retry a turn on"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn the_pool_remembers_an_answered_conversation_and_continues_it() {
    let shutdown = CancellationToken::new();
    let a = Fake::start().await;
    let ups = upstreams(&[&a], &[1], &shutdown).await;
    let pool = &ups.get(0).sessions.conversations;
    let first = pool.acquire(fingerprint(&["hi"]), None).await.unwrap();
    assert_eq!(
        first.seed,
        Seed::WholeHistory,
        "a new conversation seeds a new session"
    );
    let session = first.session_id.clone();
    let after = fingerprint(&["hi", "hello"]);
    first
        .release(Outcome::Answered { fingerprint: after })
        .await;
    assert!(pool.holds(&after));
    let next = pool.acquire(after, None).await.unwrap();
    assert_eq!(
        next.session_id, session,
        "the follow-up continues the same session"
    );
    assert_eq!(next.seed, Seed::NewTurnOnly, "and sends only the new turn");
    assert_eq!(a.creates.load(std::sync::atomic::Ordering::SeqCst), 1);
    let other = pool.acquire(fingerprint(&["another"]), None).await.unwrap();
    assert_ne!(
        other.session_id, session,
        "an unknown history gets its own session"
    );
    shutdown.cancel();
}
