//! The catalog at `/v1/models`, from OpenCode's `GET /config/providers` (here the fake's:
//! `mock/echo`, `mock/vision`, `mock/thinker`), filtered by `models.allowlist`.

use crate::support::fake_opencode::FAKE_ANSWER;
use crate::support::in_process::{App, Settings};
use crate::support::schema::assert_valid;
use crate::support::Harness;
use crate::support::{ask, content, ECHO, THINKER};

/// Asserts a 404 `model_not_found` for `GET path`.
async fn assert_no_model(app: &App, path: &str) {
    let r = app.get(path).await;
    r.assert_error(404, Some("model_not_found"), None, path);
}

/// `GET /v1/models/{id}` of a model OpenCode does not list, or of an id without a provider, is
/// a 404 `model_not_found`.
#[tokio::test]
async fn unknown_model_id_is_404() {
    let app = Harness::in_process().start().await;
    assert_no_model(&app, "/v1/models/mock/nope").await;
    assert_no_model(&app, "/v1/models/nope").await;
}

/// With an allowlist only the listed models exist: listed, fetched and chatted with; any other
/// is a 404 for `GET` and for chat (naming `model`), and the refused chat reaches nothing.
#[tokio::test]
async fn allowlist_hides_other_models() {
    let app = Harness::in_process()
        .settings(Settings::default().config("[models]\nallowlist = [\"mock/echo\"]\n"))
        .start()
        .await;
    let r = app.get("/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_valid("ListModelsResponse", &r.body);
    let ids: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![ECHO], "allowlist not applied: {}", r.body);
    let r = app.get("/v1/models/mock/echo").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_valid("Model", &r.body);
    assert_no_model(&app, "/v1/models/mock/thinker").await;

    let r = app.chat(&ask(THINKER, "hidden")).await;
    r.assert_error(
        404,
        Some("model_not_found"),
        Some("model"),
        "chat hidden model",
    );
    app.fake.assert_untouched("a chat with a hidden model");
    let r = app.chat(&ask(ECHO, "allowed")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(content(&r.body), FAKE_ANSWER);
}
