//! Scripted OpenAI-compatible model server (in-process, axum).
//!
//! The reply is derived from the request: `echo: <text of the last user message>`.
//! Markers inside the last user message switch modes (they may be combined):
//!
//! * `[fail]`      -> HTTP 500 `{"error":{"message":"scripted model failure","type":"server_error"}}`
//! * `[reasoning]` -> stream `delta.reasoning_content` = `thinking about <text>` (2+ chunks) first
//! * `[slow:MS]`   -> sleep MS milliseconds between content chunks (and reasoning chunks)
//! * `[chunks:N]`  -> split the reply into N chunks (default: ~3 chunks by words)
//! * `[length]`    -> finish_reason `length` instead of `stop`
//! * `[hang]`      -> send headers, then nothing (connection stays open)
//! * `[count]`     -> reply `echo: <text> (messages: K)`, K = number of messages in the request
//!
//! Tool calling:
//!
//! * `[call:NAME:{json args}]` -> answer with a tool call instead of text; several markers -> several
//!   parallel calls (`delta.tool_calls` index 0, 1, …), `finish_reason: "tool_calls"`. NAME is matched
//!   against the request's `tools`: an exact name wins, else the unique offered tool whose name ends with
//!   `_NAME` (OpenCode prefixes MCP tools with `<server>_`), else 2.x's new name of a 1.x tool
//!   (`bash` → `shell`, `task` → `subagent`) when offered, else NAME as written. Only when the last
//!   message is the user's (so the run ends after one round of tool results), unless `[sticky]`.
//!   The markers are read from the last text part of that message (a seeded prompt, whose earlier
//!   turns are written out in parts before the new message, does not repeat their calls).
//! * `[sticky]`      -> emit the calls again after tool results too (at most 5 tool rounds per user turn).
//! * `[sticky:N]`    -> the same, for N tool rounds in all (`[sticky:2]`: call → result → call →
//!   result → answer).
//! * `[toolgap:MS]`  -> streaming: sleep MS ms between the chunks of successive tool calls (and
//!   before `finish_reason`), to show that OpenCode starts executing a call before the step ends.
//! * When the last message is `role: tool` (and no call is emitted), the reply is
//!   `echo tool results: <tool_call_id>=<content>; <tool_call_id>=<content>` over the trailing tool
//!   messages, in order.
//!
//! Usage (`prompt_tokens: 11, completion_tokens: 7, total_tokens: 18`) is always sent: in the
//! final streaming chunk (`choices: []`) and in the non-streaming response.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

mod script;

pub use script::*;

/// Model ids advertised by `GET /v1/models` (any `model` in a request is accepted and echoed).
pub const MOCK_MODEL_IDS: &[&str] = &["echo", "vision", "thinker"];

pub const USAGE_PROMPT_TOKENS: u64 = 11;
pub const USAGE_COMPLETION_TOKENS: u64 = 7;
pub const USAGE_TOTAL_TOKENS: u64 = 18;
pub const FAILURE_MESSAGE: &str = "scripted model failure";
/// Largest request body accepted (axum's default, 2 MB, is less than a big prompt).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
    notify: Notify,
}

/// A running mock model server. Stops when dropped.
pub struct MockModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for MockModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockModel {
    pub async fn start() -> MockModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock model");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .route("/v1/models", get(list_models))
            .route("/models", get(list_models))
            // Prompts of megabytes (a flood of big events) must reach it too.
            .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(shared.clone());
        // Own accept loop (instead of axum::serve) so that dropping the server also drops every
        // open connection, keep-alive ones included: "model server down" really means down.
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        MockModel { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.addr.port())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every chat-completions request body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The most recent chat-completions request body, if any.
    pub fn last_request(&self) -> Option<Value> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    pub fn call_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Wait until at least `n` chat-completions requests were received. Returns whether it happened
    /// before `timeout`.
    pub async fn wait_for_calls(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            if self.call_count() >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }
}

async fn list_models() -> Json<Value> {
    let data: Vec<Value> = MOCK_MODEL_IDS
        .iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}),
        )
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": format!("invalid JSON: {e}"), "type": "invalid_request_error"}})),
            )
                .into_response()
        }
    };
    shared.requests.lock().unwrap().push(body.clone());
    shared.notify.notify_waiters();

    let text = last_user_text(&body);
    let script = Script::parse(&text);
    if script.fail {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": FAILURE_MESSAGE, "type": "server_error"}})),
        )
            .into_response();
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("echo")
        .to_string();
    let reply = expected_reply(&body);
    let reasoning = script.reasoning.then(|| expected_reasoning(&body));
    let tool_calls = expected_tool_calls(&body);
    let finish = if !tool_calls.is_empty() {
        "tool_calls"
    } else if script.length {
        "length"
    } else {
        "stop"
    };
    let id = format!("chatcmpl-mock{}", now_secs());
    let created = now_secs();
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);

    if !stream {
        if script.hang {
            std::future::pending::<()>().await;
        }
        if let Some(ms) = script.slow_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut message = json!({"role": "assistant", "content": reply, "refusal": null});
        if !tool_calls.is_empty() {
            message["content"] = Value::Null;
            message["tool_calls"] = json!(tool_calls);
        }
        if let Some(r) = reasoning {
            message["reasoning_content"] = json!(r);
        }
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage(),
        }))
        .into_response();
    }

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        if script.hang {
            // Headers go out when the response is returned; then nothing until the client leaves.
            tx.closed().await;
            return;
        }
        let chunk = |delta: Value, finish: Option<&str>| -> Value {
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        };
        let send = |v: Value| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(Bytes::from(format!("data: {v}\n\n"))))
                    .await
                    .is_ok()
            }
        };
        let first = if tool_calls.is_empty() {
            json!("")
        } else {
            Value::Null
        };
        if !send(chunk(json!({"role": "assistant", "content": first}), None)).await {
            return;
        }
        if let Some(r) = reasoning {
            // "thinking about <text>" always has 2+ words, hence 2+ chunks.
            for (i, piece) in split_chunks(&r, None).into_iter().enumerate() {
                if i > 0 {
                    if let Some(ms) = script.slow_ms {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                }
                if !send(chunk(json!({"reasoning_content": piece}), None)).await {
                    return;
                }
            }
        }
        // Tool calls: per call, a first chunk with id/type/name and empty arguments, then the
        // arguments in two pieces (OpenAI's shape); `[toolgap:MS]` pauses between calls.
        for (i, call) in tool_calls.iter().enumerate() {
            if i > 0 {
                if let Some(ms) = script.toolgap_ms {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            let args = call["function"]["arguments"]
                .as_str()
                .unwrap_or("{}")
                .to_string();
            let head = json!({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}]});
            if !send(chunk(head, None)).await {
                return;
            }
            let cut = args
                .char_indices()
                .nth(args.chars().count() / 2)
                .map_or(args.len(), |(b, _)| b);
            for piece in [&args[..cut], &args[cut..]] {
                if piece.is_empty() {
                    continue;
                }
                let d = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
                if !send(chunk(d, None)).await {
                    return;
                }
            }
        }
        if !tool_calls.is_empty() {
            if let Some(ms) = script.toolgap_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let pieces = if tool_calls.is_empty() {
            split_chunks(&reply, script.chunks)
        } else {
            vec![]
        };
        for (i, piece) in pieces.into_iter().enumerate() {
            if i > 0 {
                if let Some(ms) = script.slow_ms {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            if !send(chunk(json!({"content": piece}), None)).await {
                return;
            }
        }
        if !send(chunk(json!({}), Some(finish))).await {
            return;
        }
        let usage_chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage(),
        });
        if !send(usage_chunk).await {
            return;
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap()
}
