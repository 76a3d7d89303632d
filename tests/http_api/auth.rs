//! Client API keys (`PORTATEK_API_KEYS`): `Authorization: Bearer <key>` on the API, 401
//! `invalid_api_key` otherwise, and the probes stay open.

use crate::support::api::request_id;
use crate::support::fake_opencode::FAKE_ANSWER;
use crate::support::in_process::{App, Settings};
use crate::support::schema::assert_valid;
use crate::support::Harness;
use crate::support::{ask, content, ECHO};

async fn with_keys() -> App {
    Harness::in_process()
        .settings(Settings::default().env("PORTATEK_API_KEYS", "k1,k2"))
        .start()
        .await
}

/// Asserts a 401 `invalid_api_key` with a request id for `GET /v1/models` with these headers,
/// and that no session was created or prompted upstream so far.
async fn assert_refused(app: &App, headers: &[(&str, &str)], what: &str) {
    let r = app.call("GET", "/v1/models", headers).await;
    r.assert_error(401, Some("invalid_api_key"), None, what);
    assert!(request_id(&r.headers).is_some(), "no x-request-id on 401");
    app.fake.assert_untouched(what);
}

/// `/health` and `/livez` answer without a key.
#[tokio::test]
async fn probes_need_no_key() {
    let app = with_keys().await;
    for path in ["/health", "/livez"] {
        let r = app.get(path).await;
        assert_eq!(r.status, 200, "{path} must not need a key: {}", r.body);
    }
}

/// Without a key the API is 401 (models and chat), and nothing reaches OpenCode.
#[tokio::test]
async fn missing_key_is_401() {
    let app = with_keys().await;
    assert_refused(&app, &[], "no key").await;
    let r = app.chat(&ask(ECHO, "no key")).await;
    r.assert_error(401, Some("invalid_api_key"), None, "chat without key");
    app.fake.assert_untouched("a request without a key");
}

/// A key that is not configured is 401.
#[tokio::test]
async fn wrong_key_is_401() {
    let app = with_keys().await;
    assert_refused(&app, &[("authorization", "Bearer k3")], "wrong key").await;
}

/// Only the bearer scheme carries a key: Basic auth, another scheme, or `Bearer` without a key
/// are 401.
#[tokio::test]
async fn a_key_outside_a_bearer_token_is_401() {
    let app = with_keys().await;
    assert_refused(&app, &[("authorization", "Basic azE6azE=")], "basic auth").await;
    assert_refused(&app, &[("authorization", "Token k1")], "another scheme").await;
    assert_refused(&app, &[("authorization", "Bearer")], "no key after Bearer").await;
}

/// Every configured key works (the scheme's case does not matter): models listed, chats answered.
#[tokio::test]
async fn configured_keys_are_accepted() {
    let app = with_keys().await;
    let r = app
        .call("GET", "/v1/models", &[("authorization", "Bearer k1")])
        .await;
    assert_eq!(r.status, 200, "k1: {}", r.body);
    assert_valid("ListModelsResponse", &r.body);
    let r = app
        .call("GET", "/v1/models", &[("authorization", "bearer k1")])
        .await;
    assert_eq!(r.status, 200, "lower-case scheme: {}", r.body);
    let r = app
        .chat_with(&ask(ECHO, "with key"), &[("authorization", "Bearer k2")])
        .await;
    assert_eq!(r.status, 200, "k2: {}", r.body);
    assert_eq!(content(&r.body), FAKE_ANSWER);
}
