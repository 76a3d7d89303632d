//! The MCP endpoint OpenCode calls back: one streamable-HTTP MCP server per slot, at
//! `POST /mcp/{slot}`, on its own listener (loopback unless configured).
//!
//! It is a door into the gateway, so: every request must carry this start's secret
//! (`Authorization: Bearer …`, set in the server config the gateway gives OpenCode), calls go
//! only to the run holding the slot, and a held call never outlives its run (the run's end drops
//! the call's reply, answered here with an error).
//!
//! Hand-written rather than built on `rmcp`: OpenCode uses six methods (`initialize`,
//! `notifications/initialized`, `notifications/cancelled`, `ping`, `tools/list`, `tools/call`),
//! and rmcp's session manager expires idle sessions after five minutes, after which OpenCode marks
//! the server failed — a slot must stay usable for as long as the gateway runs. This server is
//! stateless: any `mcp-session-id` is accepted.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::slots::{CallResult, Slots};
use crate::sync::lock;

/// Protocol versions spoken (OpenCode 1.18.34 asks for 2025-11-25 and accepts older answers).
const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Held calls by (slot, JSON-RPC id), to release on `notifications/cancelled`.
type Cancels = Arc<Mutex<HashMap<(String, String), oneshot::Sender<()>>>>;

#[derive(Clone)]
struct Endpoint {
    slots: Slots,
    cancels: Cancels,
}

/// The MCP endpoint's routes.
pub fn router(slots: Slots) -> Router {
    let endpoint = Endpoint {
        slots,
        cancels: Arc::default(),
    };
    Router::new()
        .route(
            "/mcp/{slot}",
            post(handle).get(no_stream).delete(end_session),
        )
        .with_state(endpoint)
}

/// The path prefix of upstream `i`'s slots on the shared listener: none for the first (the
/// single-upstream layout), `/u<i>` for the others, each with its own secret.
pub fn prefix(i: usize) -> String {
    match i {
        0 => String::new(),
        i => format!("/u{i}"),
    }
}

/// Serves the MCP endpoint of every upstream's slots (see [`prefix`]) on `listener` until
/// `shutdown`.
pub async fn serve(
    listener: TcpListener,
    slots: Vec<Slots>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut app = Router::new();
    for (i, slots) in slots.into_iter().enumerate() {
        app = match i {
            0 => app.merge(router(slots)),
            i => app.nest(&prefix(i), router(slots)),
        };
    }
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "MCP endpoint stopped");
    }
}

fn result(id: &Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
        .into_response()
}

fn tool_result(id: &Value, r: CallResult) -> Response {
    result(
        id,
        json!({"content": [{"type": "text", "text": r.text}], "isError": r.is_error}),
    )
}

fn authorized(slots: &Slots, headers: &HeaderMap) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|secret| slots.check_secret(secret.trim()))
}

/// No server-initiated stream: the slot's tools change only by re-registration.
async fn no_stream() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

/// Session end: nothing to forget (the server is stateless), but behind the secret like every
/// other route of the door.
async fn end_session(State(endpoint): State<Endpoint>, headers: HeaderMap) -> StatusCode {
    if authorized(&endpoint.slots, &headers) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

async fn handle(
    State(endpoint): State<Endpoint>,
    Path(slot): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&endpoint.slots, &headers) {
        tracing::warn!(%slot, "MCP request without this start's secret refused");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(&Value::Null, -32700, "parse error");
    };
    let method = message["method"].as_str().unwrap_or_default();
    let params = &message["params"];
    let Some(id) = message.get("id").filter(|id| !id.is_null()) else {
        // A notification (or a response to us): accepted, no body.
        if method == "notifications/cancelled" {
            endpoint.cancel(&slot, &params["requestId"]);
        }
        return StatusCode::ACCEPTED.into_response();
    };
    match method {
        "initialize" => initialize(id, &slot, params),
        "ping" => result(id, json!({})),
        "tools/list" => {
            tracing::debug!(slot = %slot, "MCP tools/list");
            list_tools(&endpoint.slots, id, &slot)
        }
        "tools/call" => endpoint.call(id, &slot, params).await,
        _ => rpc_error(id, -32601, "method not found"),
    }
}

fn initialize(id: &Value, slot: &str, params: &Value) -> Response {
    let asked = params["protocolVersion"].as_str().unwrap_or_default();
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == asked)
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    // Only tools: declaring resources or prompts (or sending instructions) would add to what
    // OpenCode puts before the model.
    let mut response = result(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "portatek-gateway", "version": env!("CARGO_PKG_VERSION")},
        }),
    );
    if let Ok(value) = format!("{slot}-{}", uuid::Uuid::new_v4().simple()).parse() {
        response.headers_mut().insert("mcp-session-id", value);
    }
    response
}

fn list_tools(slots: &Slots, id: &Value, slot: &str) -> Response {
    let tools: Vec<Value> = slots
        .tools_of(slot)
        .map(|tools| {
            tools
                .iter()
                .map(|t| {
                    json!({
                        "name": t.mcp_name,
                        "description": t.description.clone().unwrap_or_default(),
                        "inputSchema": t.schema,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    result(id, json!({ "tools": tools }))
}

impl Endpoint {
    /// Hands the call to the slot's run and waits for the client's result (or the run's end,
    /// or OpenCode cancelling the call).
    async fn call(&self, id: &Value, slot: &str, params: &Value) -> Response {
        let name = params["name"].as_str().unwrap_or_default().to_string();
        let arguments = match &params["arguments"] {
            Value::Null => json!({}),
            args => args.clone(),
        };
        let Some(answer) = self.slots.deliver(slot, name.clone(), arguments) else {
            tracing::warn!(%slot, tool = %name, "a tool call came for a slot no run holds; refused");
            let refused = CallResult {
                text: "This tool is not available: no request is waiting for its result.".into(),
                is_error: true,
            };
            return tool_result(id, refused);
        };
        let key = (slot.to_string(), id.to_string());
        let (cancel_tx, cancelled) = oneshot::channel();
        lock(&self.cancels).insert(key.clone(), cancel_tx);
        let outcome = tokio::select! {
            r = answer => r.ok(),
            _ = cancelled => None,
        };
        lock(&self.cancels).remove(&key);
        let r = outcome.unwrap_or_else(|| CallResult {
            text: "The tool call was abandoned before the client returned a result.".into(),
            is_error: true,
        });
        tool_result(id, r)
    }

    /// OpenCode gave up on a call (its run was aborted, or its timeout passed). It also sends
    /// this after every call that completed normally: unknown ids are ignored.
    fn cancel(&self, slot: &str, request_id: &Value) {
        let key = (slot.to_string(), request_id.to_string());
        if let Some(tx) = lock(&self.cancels).remove(&key) {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OpenCodeConfig;
    use crate::opencode::OpenCodeClient;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use std::time::Duration;
    use tower::ServiceExt;

    fn slots() -> Slots {
        let client = OpenCodeClient::new(&OpenCodeConfig {
            base_url: Some("http://127.0.0.1:9".into()),
            ..OpenCodeConfig::default()
        })
        .unwrap();
        Slots::new(client, 2, Duration::from_secs(1))
    }

    async fn status_of(app: Router, method: Method, auth: Option<&str>) -> StatusCode {
        let mut req = Request::builder().method(method).uri("/mcp/s0");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let req = req
            .header("content-type", "application/json")
            .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
            .unwrap();
        app.oneshot(req).await.unwrap().status()
    }

    /// Every route of the door wants this start's secret, session end included.
    #[tokio::test]
    async fn every_route_needs_the_secret() {
        let slots = slots();
        for method in [Method::POST, Method::DELETE] {
            for auth in [None, Some("Bearer not-the-secret"), Some("not-bearer")] {
                let got = status_of(router(slots.clone()), method.clone(), auth).await;
                assert_eq!(got, StatusCode::UNAUTHORIZED, "{method} with {auth:?}");
            }
        }
        let secret = format!("Bearer {}", slots.inner_secret_for_tests());
        let got = status_of(router(slots.clone()), Method::DELETE, Some(&secret)).await;
        assert_eq!(got, StatusCode::OK);
    }
}
