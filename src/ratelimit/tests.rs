//! Unit tests of the rate limits: per-key overrides, token debits, concurrent runs, reset texts.

use super::standing::reset_text;
use super::*;
use crate::config::KeyLimitsConfig;

fn limits(rpm: u32, tpm: u64, runs: u32) -> RateLimits {
    RateLimits::new(&RateLimitsConfig {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        concurrent_runs: runs,
        keys: vec![KeyLimitsConfig {
            key_id: "kbig".into(),
            requests_per_minute: Some(100),
            tokens_per_minute: None,
            concurrent_runs: None,
        }],
    })
}

#[tokio::test]
async fn requests_per_minute_per_key_with_overrides() {
    let l = limits(2, 0, 0);
    let a = ClientId("ka".into());
    assert!(l.admit(&a, true).is_ok());
    let second = l.admit(&a, true).unwrap();
    assert_eq!(second.requests.unwrap().1, 0, "none remaining");
    let (e, standing) = l.admit(&a, true).unwrap_err();
    assert!(matches!(
        e,
        ApiError::TooManyRequests {
            retry_after: Some(_),
            ..
        }
    ));
    let names: Vec<String> = standing
        .headers()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert!(names.contains(&"x-ratelimit-reset-requests".to_string()));
    assert!(
        l.admit(&ClientId("kb".into()), true).is_ok(),
        "another key is not affected"
    );
    for _ in 0..50 {
        assert!(l.admit(&ClientId("kbig".into()), true).is_ok(), "override");
    }
}

#[tokio::test]
async fn tokens_are_debited_after_the_run_and_block_until_refilled() {
    let l = limits(0, 600, 0);
    let a = ClientId("ka".into());
    assert!(l.admit(&a, true).is_ok());
    l.spend_tokens(&a, 700);
    let (e, standing) = l.admit(&a, true).unwrap_err();
    assert!(matches!(e, ApiError::TooManyRequests { .. }));
    assert_eq!(standing.tokens.unwrap().1, 0);
    assert!(
        l.admit(&a, false).is_ok(),
        "requests that run no model pass"
    );
}

#[tokio::test]
async fn concurrent_runs_are_capped_per_key() {
    let l = limits(0, 0, 1);
    let a = ClientId("ka".into());
    let first = l.start_run(&a).unwrap();
    assert!(l.start_run(&a).is_err());
    assert!(l.start_run(&ClientId("kb".into())).is_ok());
    drop(first);
    assert!(l.start_run(&a).is_ok());
}

#[test]
fn reset_texts() {
    assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
    assert_eq!(reset_text(Duration::from_secs(1)), "1s");
    assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
}
