//! Unit tests of the store: key and value formats, the memory store, an unreachable Redis.

use super::*;

#[test]
fn keys_and_values() {
    assert_eq!(hex(&[0, 15, 255]), "000fff");
    let entry = SharedConversation {
        upstream: "a".into(),
        session: "ses_1".into(),
        history_end: None,
        holder: None,
    };
    let text = serde_json::to_string(&entry).unwrap();
    assert_eq!(text, r#"{"upstream":"a","session":"ses_1","floor":null}"#);
    assert_eq!(
        serde_json::from_str::<SharedConversation>(&text).unwrap(),
        entry
    );
    let held = SharedConversation {
        holder: Some("i1".into()),
        ..entry
    };
    let text = serde_json::to_string(&held).unwrap();
    assert!(text.ends_with(r#","holder":"i1"}"#), "{text}");
    assert_eq!(
        serde_json::from_str::<SharedConversation>(&text).unwrap(),
        held
    );
    assert_eq!(ms(Duration::ZERO), 1, "never PX 0 (Redis refuses it)");
}

#[tokio::test]
async fn memory_store_answers_local() {
    let s = Store::memory();
    assert!(!s.is_shared() && !s.is_up());
    assert!(matches!(s.claim_run("ses_x").await, Err(StoreError::Local)));
}

#[tokio::test]
async fn unreachable_redis_fails_fast_and_quietly() {
    let s = Store::redis(StoreSettings {
        // Nothing listens on port 1.
        url: "redis://127.0.0.1:1/0".into(),
        key_prefix: "t:".into(),
        timeout: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(1),
    });
    let started = std::time::Instant::now();
    assert!(matches!(
        s.session_home("ses_x").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(!s.is_up());
    // Within the quiet second: no network at all.
    assert!(s.history_end("ses_x").await.is_err());
    assert!(started.elapsed() < Duration::from_millis(900));
}
