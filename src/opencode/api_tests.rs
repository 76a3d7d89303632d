//! Version detection against small in-process servers that answer like 1.18, like 2.x, and
//! like 2.x's web app (HTML on every path, what a 1.x client would have taken for health).

use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{Api, OpenCodeClient, UpstreamError};
use crate::config::OpenCodeConfig;

const PAGE: &str = "<!doctype html><html><body>OpenCode</body></html>";

async fn serve(app: Router) -> OpenCodeClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    OpenCodeClient::new(&OpenCodeConfig {
        base_url: Some(url),
        retry_attempts: 1,
        ..OpenCodeConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_1_x_server_is_told_by_its_health_json() {
    let client = serve(Router::new().route(
        "/global/health",
        get(|| async { Json(json!({"healthy": true, "version": "1.18.34"})) }),
    ))
    .await;
    let health = client.health(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (health.api, health.version.as_deref()),
        (Api::V1, Some("1.18.34"))
    );
    assert_eq!(client.detected_api(), Some(Api::V1));
}

#[tokio::test]
async fn a_2_x_server_is_told_by_api_info_even_though_its_1_x_paths_answer_200() {
    let client = serve(
        Router::new()
            .route("/global/health", get(|| async { Html(PAGE) }))
            .route(
                "/api/info",
                get(|| async { Json(json!({"version": "2.1.2", "pid": 1})) }),
            ),
    )
    .await;
    let health = client.health(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (health.api, health.version.as_deref()),
        (Api::V2, Some("2.1.2"))
    );
    assert_eq!(client.detected_version().as_deref(), Some("2.1.2"));
    assert!(client.is_v2().await);
    // Known now: asked first next time, and still right.
    let again = client.health(Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.api, Api::V2);
}

#[tokio::test]
async fn an_html_page_is_never_health() {
    let client = serve(Router::new().fallback(|| async { Html(PAGE) })).await;
    let err = client.health(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Decode(_)), "{err}");
    assert!(err.to_string().contains("HTML"), "{err}");
    assert_eq!(client.detected_api(), None, "nothing was detected");
}

/// A 2.x server that answers every write with 204 and counts the requests per path.
async fn counting_v2() -> (
    OpenCodeClient,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::extract::Request;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new()
        .route(
            "/api/info",
            get(|| async { Json(json!({"version": "2.1.2"})) }),
        )
        .fallback(move |req: Request| {
            let log = log.clone();
            async move {
                log.lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.uri().path()));
                axum::http::StatusCode::NO_CONTENT
            }
        });
    (serve(app).await, seen)
}

#[tokio::test]
async fn a_follow_up_turn_on_2_x_sends_only_what_changed() {
    use crate::opencode::{ModelRef, PartInput, Prompt, ToolSwitches};
    let (client, seen) = counting_v2().await;
    let prompt = |model: &str, system: Option<&str>| Prompt {
        parts: vec![PartInput::Text { text: "hi".into() }],
        model: ModelRef {
            provider_id: "mock".into(),
            model_id: model.into(),
        },
        agent: None,
        system: system.map(String::from),
        tools: ToolSwitches(vec![("*".into(), false)]),
        variant: None,
        output_schema: None,
    };
    let sent = |from: usize| seen.lock().unwrap()[from..].to_vec();
    client.health(Duration::from_secs(5)).await.unwrap();
    let n = seen.lock().unwrap().len();
    client
        .prompt_async("ses_1", &prompt("echo", Some("be brief")))
        .await
        .unwrap();
    assert_eq!(
        sent(n),
        [
            "POST /api/session/ses_1/model",
            "POST /api/session/ses_1/agent",
            "PATCH /api/session/ses_1",
            "PUT /api/experimental/session/ses_1/instructions/entries/portatek-system",
            "POST /api/session/ses_1/prompt"
        ]
    );
    let n = seen.lock().unwrap().len();
    client
        .prompt_async("ses_1", &prompt("echo", Some("be brief")))
        .await
        .unwrap();
    assert_eq!(
        sent(n),
        ["POST /api/session/ses_1/prompt"],
        "nothing changed"
    );
    let n = seen.lock().unwrap().len();
    client
        .prompt_async("ses_1", &prompt("thinker", None))
        .await
        .unwrap();
    assert_eq!(
        sent(n),
        [
            "POST /api/session/ses_1/model",
            "DELETE /api/experimental/session/ses_1/instructions/entries/portatek-system",
            "POST /api/session/ses_1/prompt"
        ],
        "the model and the system text changed"
    );
    client.delete_session("ses_1").await.unwrap();
    let n = seen.lock().unwrap().len();
    client
        .prompt_async("ses_1", &prompt("thinker", None))
        .await
        .unwrap();
    assert_eq!(
        sent(n).len(),
        5,
        "a deleted session is forgotten: {:?}",
        sent(n)
    );
}
