//! Routing: unknown routes (404) and wrong methods (405) in OpenAI's error shape, request ids
//! (generated, or echoed when the client sends one) on every answer, and `/livez`.

use crate::support::api::request_id;
use crate::support::Harness;
use crate::support::{ask, ECHO};

/// An unknown route is a 404 `unknown_url` in error shape, with a request id.
#[tokio::test]
async fn unknown_route_is_404() {
    let app = Harness::in_process().start().await;
    for path in ["/v1/nope", "/", "/v2/chat/completions"] {
        let r = app.get(path).await;
        r.assert_error(404, Some("unknown_url"), None, path);
        assert!(
            request_id(&r.headers).is_some(),
            "no x-request-id on 404 {path}"
        );
    }
}

/// A known route with the wrong method is a 405 in error shape, with a request id.
#[tokio::test]
async fn wrong_method_is_405() {
    let app = Harness::in_process().start().await;
    let r = app.get("/v1/chat/completions").await;
    r.assert_error(405, None, None, "GET /v1/chat/completions");
    assert!(request_id(&r.headers).is_some(), "no x-request-id on 405");
    let r = app.call("DELETE", "/v1/models", &[]).await;
    r.assert_error(405, None, None, "DELETE /v1/models");
}

/// Without a client id every answer gets a generated `x-request-id`, a new one each time.
#[tokio::test]
async fn request_ids_are_generated_per_request() {
    let app = Harness::in_process().start().await;
    let first = app.get("/v1/models").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let generated = request_id(&first.headers).expect("x-request-id on 200");
    let second = app.get("/v1/models").await;
    assert_ne!(
        Some(generated),
        request_id(&second.headers),
        "request ids must differ per request"
    );
}

/// A client's `x-request-id` is echoed back: on a probe, on a completed chat, on an error.
#[tokio::test]
async fn client_request_ids_are_echoed() {
    let app = Harness::in_process().start().await;
    let r = app
        .call("GET", "/livez", &[("x-request-id", "client-req-42")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(request_id(&r.headers).as_deref(), Some("client-req-42"));
    let r = app
        .chat_with(
            &ask(ECHO, "with my id"),
            &[("x-request-id", "client-req-43")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(request_id(&r.headers).as_deref(), Some("client-req-43"));
    let r = app
        .chat_with(
            &ask("mock/unknown", "x"),
            &[("x-request-id", "client-req-44")],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(request_id(&r.headers).as_deref(), Some("client-req-44"));
}

/// `/livez` answers `{"status": "ok"}`.
#[tokio::test]
async fn livez_is_ok() {
    let app = Harness::in_process().start().await;
    let r = app.get("/livez").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ok", "{}", r.body);
}
