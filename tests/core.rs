//! Integration tests of the gateway core ("Gateway core" issue): models, non-streaming chat,
//! validation, conversation seeding, images, safety defaults, concurrency, session titles,
//! client auth, startup checks, body limit, health, upstream auth, request ids, model failures
//! and the 404/405 fallbacks. Every test runs the real gateway binary in front of a real
//! `opencode serve` and the scripted mock model (see `tests/support`).

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::mock_model::{self, content_text, expected_reply, last_user_text, FAILURE_MESSAGE};
use support::opencode::opencode_version;
use support::schema::assert_valid;
use support::{Gateway, GatewayOptions, OpenCodeOptions, TestBed};

/// A 1x1 transparent PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [user(text)]})
}

/// The `choices[0].message.content` of a chat completion.
fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {v}"))
}

/// Asserts an OpenAI-shaped error with `status`, and (when given) `error.code` / `error.param`.
#[track_caller]
fn assert_error(
    got: (StatusCode, &Value),
    status: u16,
    code: Option<&str>,
    param: Option<&str>,
    what: &str,
) {
    let (s, body) = got;
    assert_eq!(s.as_u16(), status, "{what}: status (body {body})");
    assert_valid("ErrorResponse", body);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: error.message: {body}"
    );
    if let Some(code) = code {
        assert_eq!(body["error"]["code"], code, "{what}: error.code: {body}");
    }
    if let Some(param) = param {
        assert_eq!(body["error"]["param"], param, "{what}: error.param: {body}");
    }
}

/// Every system message text of a model request, joined.
fn system_text(req: &Value) -> String {
    req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "system")
        .map(|m| content_text(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every message text of a model request (all roles), joined.
fn all_text(req: &Value) -> String {
    req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| content_text(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Raw request on the gateway: (status, headers, body as JSON or JSON string).
async fn raw(rb: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = rb.send().await.expect("request to gateway");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}

fn request_id(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// Models list/get/404, non-streaming chat (shape, echo, usage, finish reasons), unknown model
/// (no model call, no session), request validation, request ids, 404/405 fallbacks.
#[tokio::test(flavor = "multi_thread")]
async fn models_chat_validation_and_fallbacks() {
    let bed = TestBed::start().await;

    // --- GET /v1/models
    let (status, list) = bed.get("/v1/models").await;
    assert_eq!(status, 200, "{list}");
    assert_valid("ListModelsResponse", &list);
    let data = list["data"].as_array().expect("data");
    for id in ["mock/echo", "mock/vision", "mock/thinker"] {
        let m = data
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {list}"));
        assert_valid("Model", m);
        assert_eq!(m["owned_by"], "mock", "{m}");
        assert_eq!(m["object"], "model", "{m}");
    }

    // --- GET /v1/models/{provider/model} (wildcard route: the id has a slash)
    let (status, m) = bed.get("/v1/models/mock/vision").await;
    assert_eq!(status, 200, "{m}");
    assert_valid("Model", &m);
    assert_eq!(m["id"], "mock/vision");
    assert_eq!(m["owned_by"], "mock");
    let (status, e) = bed.get("/v1/models/mock/nope").await;
    assert_error(
        (status, &e),
        404,
        Some("model_not_found"),
        None,
        "GET unknown model",
    );
    let (status, e) = bed.get("/v1/models/nope").await;
    assert_error(
        (status, &e),
        404,
        Some("model_not_found"),
        None,
        "GET id without slash",
    );

    // --- non-streaming chat
    let calls_before = bed.mock.call_count();
    let (status, v) = bed.chat(chat_body("mock/echo", "hello core")).await;
    assert_eq!(status, 200, "{v}");
    assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "mock/echo");
    assert_eq!(v["choices"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(content(&v), "echo: hello core");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"]["prompt_tokens"],
        mock_model::USAGE_PROMPT_TOKENS,
        "{v}"
    );
    assert_eq!(
        v["usage"]["completion_tokens"],
        mock_model::USAGE_COMPLETION_TOKENS,
        "{v}"
    );
    assert_eq!(
        v["usage"]["total_tokens"],
        mock_model::USAGE_TOTAL_TOKENS,
        "{v}"
    );
    assert_eq!(
        bed.mock.call_count(),
        calls_before + 1,
        "one model call per chat"
    );
    let req = bed.mock.last_request().unwrap();
    assert_eq!(content(&v), expected_reply(&req));

    // finish_reason `length`
    let (status, v) = bed
        .chat(chat_body("mock/echo", "cut me short [length]"))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(content(&v), "echo: cut me short [length]");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");

    // --- unknown model: 404, no model call, no OpenCode session
    let sessions_before = bed.opencode.sessions().await.len();
    let calls_before = bed.mock.call_count();
    for model in ["mock/unknown", "nosuchprovider/echo", "echo"] {
        let (status, e) = bed.chat(chat_body(model, "hello?")).await;
        assert_error(
            (status, &e),
            404,
            Some("model_not_found"),
            Some("model"),
            model,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bed.mock.call_count(),
        calls_before,
        "unknown model reached the model"
    );
    assert_eq!(
        bed.opencode.sessions().await.len(),
        sessions_before,
        "unknown model created an OpenCode session"
    );

    // --- validation 400s (OpenAI error shape naming `param`)
    let img_http = json!({"model": "mock/vision", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}
    ]}]});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing model", json!({"messages": [user("hi")]}), "model"),
        (
            "empty messages",
            json!({"model": "mock/echo", "messages": []}),
            "messages",
        ),
        (
            "last message not user",
            json!({"model": "mock/echo", "messages": [user("hi"), assistant("hello")]}),
            "messages[1].role",
        ),
        (
            "bad role",
            json!({"model": "mock/echo", "messages": [{"role": "wizard", "content": "hi"}, user("hi")]}),
            "messages[0].role",
        ),
        (
            "image_url with http URL",
            img_http,
            "messages[0].content[1].image_url.url",
        ),
        (
            "n = 2",
            json!({"model": "mock/echo", "messages": [user("hi")], "n": 2}),
            "n",
        ),
        (
            "tools",
            json!({"model": "mock/echo", "messages": [user("hi")], "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
            ]}),
            "tools",
        ),
        (
            "stream: \"yes\"",
            json!({"model": "mock/echo", "messages": [user("hi")], "stream": "yes"}),
            "stream",
        ),
    ];
    let calls_before = bed.mock.call_count();
    for (what, body, param) in cases {
        let (status, e) = bed.chat(body).await;
        assert_error((status, &e), 400, None, Some(param), what);
    }
    // invalid JSON: no param to name, but still a 400 in error shape
    let (status, headers, e) = raw(bed
        .client
        .post(bed.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": \"mock/echo\", \"messages\": ["))
    .await;
    assert_error((status, &e), 400, None, None, "invalid JSON");
    assert!(request_id(&headers).is_some(), "no x-request-id on a 400");
    assert_eq!(
        bed.mock.call_count(),
        calls_before,
        "invalid requests reached the model"
    );

    // --- x-request-id: on success, on errors, and echoed when the client sends one
    let (status, headers, _) = raw(bed.client.get(bed.url("/v1/models"))).await;
    assert_eq!(status, 200);
    let generated = request_id(&headers).expect("x-request-id on 200");
    let (_, headers2, _) = raw(bed.client.get(bed.url("/v1/models"))).await;
    assert_ne!(
        Some(generated),
        request_id(&headers2),
        "request ids must differ per request"
    );
    let (status, headers, _) = raw(bed
        .client
        .get(bed.url("/livez"))
        .header("x-request-id", "client-req-42"))
    .await;
    assert_eq!(status, 200);
    assert_eq!(request_id(&headers).as_deref(), Some("client-req-42"));
    let (status, headers, _) = raw(bed
        .client
        .post(bed.url("/v1/chat/completions"))
        .header("x-request-id", "client-req-43")
        .json(&chat_body("mock/echo", "with my id")))
    .await;
    assert_eq!(status, 200);
    assert_eq!(request_id(&headers).as_deref(), Some("client-req-43"));
    let (status, headers, _) = raw(bed
        .client
        .post(bed.url("/v1/chat/completions"))
        .header("x-request-id", "client-req-44")
        .json(&chat_body("mock/unknown", "x")))
    .await;
    assert_eq!(status, 404);
    assert_eq!(request_id(&headers).as_deref(), Some("client-req-44"));

    // --- unknown route → 404 JSON; wrong method → 405 JSON
    for path in ["/v1/nope", "/", "/v2/chat/completions"] {
        let (status, headers, e) = raw(bed.client.get(bed.url(path))).await;
        assert_error((status, &e), 404, None, None, path);
        assert!(
            request_id(&headers).is_some(),
            "no x-request-id on 404 {path}"
        );
    }
    let (status, headers, e) = raw(bed.client.get(bed.url("/v1/chat/completions"))).await;
    assert_error((status, &e), 405, None, None, "GET /v1/chat/completions");
    assert!(request_id(&headers).is_some(), "no x-request-id on 405");
    let (status, _, e) = raw(bed.client.delete(bed.url("/v1/models"))).await;
    assert_error((status, &e), 405, None, None, "DELETE /v1/models");
}

/// System/developer prompt, history seeding in one call, images, no tools, session titles
/// without a title-generation call, and 16 concurrent requests without cross-talk.
#[tokio::test(flavor = "multi_thread")]
async fn conversation_images_safety_titles_concurrency() {
    let bed = TestBed::start().await;

    // --- Titles: the first chat creates a titled session and costs exactly one model call.
    let (status, v) = bed.chat(chat_body("mock/echo", "first contact")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: first contact");
    assert_eq!(
        bed.mock.call_count(),
        1,
        "one chat must cost exactly one model call (no title generation): {:#?}",
        bed.mock.requests()
    );
    let sessions = bed.opencode.sessions().await;
    assert!(!sessions.is_empty(), "no OpenCode session after a chat");
    for s in &sessions {
        assert_eq!(s["title"], "PorTaTek Gateway", "session title: {s}");
    }

    // --- Safety: the model was offered no tools.
    let req = bed.mock.last_request().unwrap();
    match req.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(t) => panic!("the model was offered tools: {t}"),
    }

    // --- System + developer prompt reach the model's system message.
    let n = bed.mock.call_count();
    let (status, v) = bed
        .chat(json!({"model": "mock/echo", "messages": [
            {"role": "system", "content": "SYSMARK-7731 be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "DEVMARK-9142 answer in English."}]},
            user("what is up?"),
        ]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: what is up?");
    assert_eq!(bed.mock.call_count(), n + 1);
    let req = bed.mock.last_request().unwrap();
    let sys = system_text(&req);
    assert!(sys.contains("SYSMARK-7731"), "system prompt missing: {sys}");
    assert!(
        sys.contains("DEVMARK-9142"),
        "developer prompt missing: {sys}"
    );
    assert!(
        !last_user_text(&req).contains("SYSMARK-7731"),
        "system prompt sent as user text"
    );

    // --- A 3-turn history never seen before: one model call carrying every earlier turn once.
    let n = bed.mock.call_count();
    let history = [
        "HIST-U1-alpha",
        "HIST-A1-bravo",
        "HIST-U2-charlie",
        "HIST-A2-delta",
    ];
    let (status, v) = bed
        .chat(json!({"model": "mock/echo", "messages": [
            user(history[0]),
            assistant(history[1]),
            user(history[2]),
            assistant(history[3]),
            user("HIST-U3-echo now answer"),
        ]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        bed.mock.call_count(),
        n + 1,
        "a seeded history must take exactly one model call: {:#?}",
        &bed.mock.requests()[n..]
    );
    let req = bed.mock.last_request().unwrap();
    let last = last_user_text(&req);
    let everything = all_text(&req);
    for t in history
        .iter()
        .chain(std::iter::once(&"HIST-U3-echo now answer"))
    {
        assert!(
            last.contains(t),
            "{t} missing from the last user message: {last}"
        );
        assert_eq!(
            everything.matches(t).count(),
            1,
            "{t} must reach the model exactly once: {req}"
        );
    }
    assert_eq!(content(&v), expected_reply(&req));

    // --- Images: data: URL to an image model arrives as an image part.
    let data_url = format!("data:image/png;base64,{PNG_B64}");
    let image_msg = json!({"role": "user", "content": [
        {"type": "text", "text": "describe IMGMARK-5521"},
        {"type": "image_url", "image_url": {"url": data_url}}
    ]});
    let n = bed.mock.call_count();
    let (status, v) = bed
        .chat(json!({"model": "mock/vision", "messages": [image_msg.clone()]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(bed.mock.call_count(), n + 1);
    let req = bed.mock.last_request().unwrap();
    assert_eq!(req["model"], "vision");
    let user_msg = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .expect("a user message");
    let parts = user_msg["content"]
        .as_array()
        .unwrap_or_else(|| panic!("user content is not an array of parts: {user_msg}"));
    let image = parts
        .iter()
        .find(|p| p["type"] == "image_url")
        .unwrap_or_else(|| panic!("no image part reached the model: {user_msg}"));
    let url = image["image_url"]["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("data:image/png;base64,") && url.contains(PNG_B64),
        "image part url: {url}"
    );
    assert!(content_text(&user_msg["content"]).contains("IMGMARK-5521"));
    // The same to a model without image input: 400, nothing sent.
    let n = bed.mock.call_count();
    let (status, e) = bed
        .chat(json!({"model": "mock/echo", "messages": [image_msg]}))
        .await;
    assert_error((status, &e), 400, None, None, "image to mock/echo");
    assert!(
        e["error"]["param"]
            .as_str()
            .is_some_and(|p| p.starts_with("messages[0].content")),
        "param should name the message content: {e}"
    );
    assert_eq!(
        bed.mock.call_count(),
        n,
        "image to a text model reached the model"
    );

    // --- 16 concurrent requests, each gets its own echo.
    let texts: Vec<String> = (0..16)
        .map(|i| format!("parallel-{i}-{}", "xyzw".repeat(i % 4 + 1)))
        .collect();
    let started = Instant::now();
    let results =
        futures::future::join_all(texts.iter().map(|t| bed.chat(chat_body("mock/echo", t)))).await;
    for (t, (status, v)) in texts.iter().zip(&results) {
        assert_eq!(*status, 200, "{t}: {v}");
        assert_eq!(content(v), format!("echo: {t}"), "cross-talk for {t}");
    }
    eprintln!("16 concurrent chats took {:?}", started.elapsed());
    // Every session the gateway created carries the configured title.
    for s in bed.opencode.sessions().await {
        assert_eq!(s["title"], "PorTaTek Gateway", "session title: {s}");
    }
}

/// Config-driven behaviour: allowlist and body limit.
#[tokio::test(flavor = "multi_thread")]
async fn allowlist_and_body_limit() {
    let bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default()
            .config("[models]\nallowlist = [\"mock/echo\"]\n\n[limits]\nmax_body_bytes = 1000\n"),
    )
    .await;

    let (status, list) = bed.get("/v1/models").await;
    assert_eq!(status, 200, "{list}");
    assert_valid("ListModelsResponse", &list);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["mock/echo"], "allowlist not applied: {list}");
    let (status, m) = bed.get("/v1/models/mock/echo").await;
    assert_eq!(status, 200, "{m}");
    assert_valid("Model", &m);
    let (status, e) = bed.get("/v1/models/mock/thinker").await;
    assert_error(
        (status, &e),
        404,
        Some("model_not_found"),
        None,
        "GET hidden model",
    );

    let (status, v) = bed.chat(chat_body("mock/echo", "allowed")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: allowed");
    let calls = bed.mock.call_count();
    let (status, e) = bed.chat(chat_body("mock/thinker", "hidden")).await;
    assert_error(
        (status, &e),
        404,
        Some("model_not_found"),
        Some("model"),
        "chat hidden model",
    );
    assert_eq!(bed.mock.call_count(), calls);

    // Body limit: 2000 bytes > 1000 → 413 in error shape.
    let filler = "a".repeat(2000);
    let body = serde_json::to_string(&chat_body("mock/echo", &filler)).unwrap();
    assert!(body.len() >= 2000);
    let (status, headers, e) = raw(bed
        .client
        .post(bed.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body))
    .await;
    assert_error((status, &e), 413, None, None, "2000-byte body");
    assert!(request_id(&headers).is_some(), "no x-request-id on 413");
    assert_eq!(
        bed.mock.call_count(),
        calls,
        "oversized body reached the model"
    );
}

/// Client API keys: 401 without/with a wrong key, 200 with a right one; probes stay open.
#[tokio::test(flavor = "multi_thread")]
async fn api_keys() {
    let mut bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().env("PORTATEK_API_KEYS", "k1,k2"),
    )
    .await;

    for path in ["/health", "/livez"] {
        let (status, v) = bed.get(path).await;
        assert_eq!(status, 200, "{path} must not need a key: {v}");
    }

    let (status, e) = bed.get("/v1/models").await;
    assert_error((status, &e), 401, Some("invalid_api_key"), None, "no key");
    let (status, e) = bed.chat(chat_body("mock/echo", "no key")).await;
    assert_error(
        (status, &e),
        401,
        Some("invalid_api_key"),
        None,
        "chat without key",
    );

    bed.api_key = Some("k3".into());
    let (status, e) = bed.get("/v1/models").await;
    assert_error(
        (status, &e),
        401,
        Some("invalid_api_key"),
        None,
        "wrong key",
    );
    let (status, headers, e) = raw(bed
        .client
        .get(bed.url("/v1/models"))
        .header("authorization", "Basic azE6azE="))
    .await;
    assert_error(
        (status, &e),
        401,
        Some("invalid_api_key"),
        None,
        "basic auth",
    );
    assert!(request_id(&headers).is_some(), "no x-request-id on 401");
    assert_eq!(bed.mock.call_count(), 0);

    bed.api_key = Some("k1".into());
    let (status, v) = bed.get("/v1/models").await;
    assert_eq!(status, 200, "k1: {v}");
    assert_valid("ListModelsResponse", &v);
    bed.api_key = Some("k2".into());
    let (status, v) = bed.chat(chat_body("mock/echo", "with key")).await;
    assert_eq!(status, 200, "k2: {v}");
    assert_eq!(content(&v), "echo: with key");
}

/// Startup checks: non-loopback without keys refuses; `auth.disabled` allows it; invalid
/// config values exit non-zero naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn startup_checks() {
    let non_loopback =
        Gateway::run_expect_exit(GatewayOptions::default().args(["--listen", "0.0.0.0:0"]));
    let bad_toml = Gateway::run_expect_exit(
        GatewayOptions::default().config("[prompt]\ndeadline_secs = \"x\"\n"),
    );
    let bad_env = Gateway::run_expect_exit(GatewayOptions {
        no_default_args: true,
        ..GatewayOptions::default().env("PORTATEK_LISTEN", "nonsense")
    });
    let (non_loopback, bad_toml, bad_env) = tokio::join!(non_loopback, bad_toml, bad_env);

    let (status, out, err) = non_loopback;
    assert!(
        !status.success(),
        "0.0.0.0 without keys started: {status}\n{out}\n{err}"
    );
    assert!(
        err.contains("auth.api_keys"),
        "stderr should name auth.api_keys: {err}"
    );
    assert!(!out.contains(support::gateway::READY_PREFIX), "{out}");

    let (status, out, err) = bad_toml;
    assert!(
        !status.success(),
        "bad deadline_secs accepted: {status}\n{out}\n{err}"
    );
    assert!(
        err.contains("deadline_secs"),
        "stderr should name deadline_secs: {err}"
    );

    let (status, out, err) = bad_env;
    assert!(
        !status.success(),
        "PORTATEK_LISTEN=nonsense accepted: {status}\n{out}\n{err}"
    );
    assert!(
        err.contains("`listen`") || err.contains("PORTATEK_LISTEN"),
        "stderr should name the listen key: {err}"
    );

    // With keys, non-loopback starts.
    let with_keys = Gateway::start_with(
        support::gateway::UNUSED_OPENCODE_URL,
        GatewayOptions::default()
            .args(["--listen", "0.0.0.0:0"])
            .env("PORTATEK_API_KEYS", "k1"),
    );
    // Explicitly unauthenticated: starts too.
    let disabled = Gateway::start_with(
        support::gateway::UNUSED_OPENCODE_URL,
        GatewayOptions::default()
            .args(["--listen", "0.0.0.0:0"])
            .config("[auth]\ndisabled = true\n"),
    );
    let (with_keys, disabled) = tokio::join!(with_keys, disabled);
    // Probe over loopback only.
    let client = support::gateway::test_client();
    for gw in [&with_keys, &disabled] {
        let port = gw
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in {}", gw.url()));
        let resp = client
            .get(format!("http://127.0.0.1:{port}/livez"))
            .send()
            .await
            .expect("livez over loopback");
        assert_eq!(resp.status(), 200);
    }
    drop(with_keys);
    drop(disabled);
}

/// `/health` reflects OpenCode; when OpenCode dies, readiness and chats fail fast with 503
/// while liveness stays up.
#[tokio::test(flavor = "multi_thread")]
async fn health_and_upstream_down() {
    let mut bed = TestBed::start().await;

    let (status, h) = bed.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["opencode"]["healthy"], true, "{h}");
    assert_eq!(h["opencode"]["version"], opencode_version(), "{h}");
    let (status, l) = bed.get("/livez").await;
    assert_eq!(status, 200, "{l}");

    let (status, v) = bed.chat(chat_body("mock/echo", "before the crash")).await;
    assert_eq!(status, 200, "{v}");

    bed.opencode.kill().await;

    let t = Instant::now();
    let (status, h) = bed.get("/health").await;
    let took = t.elapsed();
    assert_eq!(status, 503, "health with OpenCode down: {h}");
    assert!(took < Duration::from_secs(5), "health took {took:?}");
    assert_eq!(h["opencode"]["healthy"], false, "{h}");

    let (status, l) = bed.get("/livez").await;
    assert_eq!(status, 200, "livez must not depend on OpenCode: {l}");

    let t = Instant::now();
    let (status, e) = bed.chat(chat_body("mock/echo", "after the crash")).await;
    let took = t.elapsed();
    assert_error(
        (status, &e),
        503,
        Some("upstream_unavailable"),
        None,
        "chat with OpenCode down",
    );
    assert!(
        took < Duration::from_secs(10),
        "chat with OpenCode down took {took:?}"
    );
}

/// Basic auth towards OpenCode: with the password everything works; without it the gateway
/// cannot reach OpenCode (health 503, models 502).
#[tokio::test(flavor = "multi_thread")]
async fn upstream_basic_auth() {
    let bed = TestBed::start_with(
        OpenCodeOptions {
            password: Some("oc-s3cret".into()),
            username: Some("ocuser".into()),
            ..OpenCodeOptions::default()
        },
        GatewayOptions::default()
            .env("OPENCODE_SERVER_PASSWORD", "oc-s3cret")
            .env("OPENCODE_SERVER_USERNAME", "ocuser"),
    )
    .await;

    let (status, h) = bed.get("/health").await;
    assert_eq!(status, 200, "{h}");
    let (status, v) = bed.get("/v1/models").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = bed.chat(chat_body("mock/echo", "through basic auth")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: through basic auth");

    // A second gateway without the password, same OpenCode.
    let nopw = Gateway::start(&bed.opencode.url()).await;
    let client = support::gateway::test_client();
    let (status, _, h) = raw(client.get(format!("{}/health", nopw.url()))).await;
    assert_eq!(status, 503, "health without the upstream password: {h}");
    let (status, _, e) = raw(client.get(format!("{}/v1/models", nopw.url()))).await;
    assert_error(
        (status, &e),
        502,
        None,
        None,
        "models without the upstream password",
    );
    // Also with a wrong password.
    let wrong = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().env("OPENCODE_SERVER_PASSWORD", "wrong"),
    )
    .await;
    let (status, _, e) = raw(client.get(format!("{}/v1/models", wrong.url()))).await;
    assert_error(
        (status, &e),
        502,
        None,
        None,
        "models with a wrong upstream password",
    );
    // And with the right password but the default user name.
    let default_user = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().env("OPENCODE_SERVER_PASSWORD", "oc-s3cret"),
    )
    .await;
    let (status, _, e) = raw(client.get(format!("{}/v1/models", default_user.url()))).await;
    assert_error(
        (status, &e),
        502,
        None,
        None,
        "models with the wrong upstream user name",
    );
}

/// Wait (up to `within`) until OpenCode reports no busy/retrying session; returns the last status.
async fn wait_until_quiet(bed: &TestBed, within: Duration) -> serde_json::Map<String, Value> {
    let deadline = Instant::now() + within;
    loop {
        let status = bed.opencode.session_status().await;
        let busy = status
            .values()
            .any(|s| s["type"] == "busy" || s["type"] == "retry");
        if !busy || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A failing model provider: the retry budget and the deadline both end the run with a 502
/// carrying the provider's message, and the OpenCode run is stopped.
#[tokio::test(flavor = "multi_thread")]
async fn model_failure_retry_budget_and_deadline() {
    let bed = TestBed::start_with(
        OpenCodeOptions::default(),
        GatewayOptions::default().config("[prompt]\nmax_model_retries = 1\ndeadline_secs = 20\n"),
    )
    .await;

    // Warm up OpenCode (provider load, first model call) so the timing below measures the
    // gateway's retry budget, not OpenCode's cold start.
    let (status, v) = bed.chat(chat_body("mock/echo", "warm up")).await;
    assert_eq!(status, 200, "{v}");

    // Retry budget: OpenCode retries after ~2 s; the gateway gives up at the 2nd attempt.
    let calls_before = bed.mock.call_count();
    let t = Instant::now();
    let (status, e) = bed.chat(chat_body("mock/echo", "please [fail]")).await;
    let took = t.elapsed();
    eprintln!("retry-budget failure answered after {took:?}");
    assert_error(
        (status, &e),
        502,
        None,
        None,
        "model failure (retry budget)",
    );
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(FAILURE_MESSAGE),
        "502 should carry the provider's message: {e}"
    );
    assert!(
        took < Duration::from_secs(12),
        "retry budget 1 should fail well within the 20 s deadline, took {took:?}"
    );
    assert!(
        bed.mock.call_count() > calls_before,
        "the model was never called"
    );
    let status = wait_until_quiet(&bed, Duration::from_secs(2)).await;
    assert!(
        !status
            .values()
            .any(|s| s["type"] == "busy" || s["type"] == "retry"),
        "OpenCode still running the failed prompt: {status:?}"
    );
    let calls_after = bed.mock.call_count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bed.mock.call_count(),
        calls_after,
        "OpenCode kept retrying after the gateway gave up"
    );

    // Deadline: a second gateway on the same OpenCode with a huge retry budget.
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nmax_model_retries = 100\ndeadline_secs = 5\n"),
    )
    .await;
    let client = support::gateway::test_client();
    let t = Instant::now();
    let (status, _, e) = raw(client
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat_body("mock/echo", "deadline please [fail]")))
    .await;
    let took = t.elapsed();
    eprintln!("deadline failure answered after {took:?}");
    assert_error((status, &e), 502, None, None, "model failure (deadline)");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(FAILURE_MESSAGE),
        "502 should carry the provider's message: {e}"
    );
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
        "the 5 s deadline should end the request after ~5 s, took {took:?}"
    );
    let status = wait_until_quiet(&bed, Duration::from_secs(2)).await;
    assert!(
        !status
            .values()
            .any(|s| s["type"] == "busy" || s["type"] == "retry"),
        "OpenCode still running the failed prompt after the deadline: {status:?}"
    );
}

/// `PORTATEK_LOG_FORMAT=json` writes one JSON object per line, and a request's lines carry its
/// request id (the one the client sent in `x-request-id`).
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id() {
    let gw = Gateway::start_with(
        support::gateway::UNUSED_OPENCODE_URL,
        GatewayOptions::default().env("PORTATEK_LOG_FORMAT", "json"),
    )
    .await;
    let client = support::gateway::test_client();
    let resp = client
        .get(format!("{}/no/such/route", gw.url()))
        .header("x-request-id", "req-json-42")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = gw.logs();
        let lines: Vec<Value> = logs
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.iter().any(|l| l.to_string().contains("req-json-42")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line carries the request id:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `prompt.agent` picks the OpenCode agent (its prompt reaches the model), and tools stay off
/// whatever the agent allows unless `prompt.tools_enabled = true`.
#[tokio::test(flavor = "multi_thread")]
async fn agent_is_used_and_tools_stay_off_unless_enabled() {
    let opencode_opts = OpenCodeOptions {
        extra_config: json!({"agent": {"chatty": {
            "mode": "primary",
            "prompt": "You are the chatty test agent.",
            "tools": {"bash": true}
        }}}),
        ..OpenCodeOptions::default()
    };
    let bed = TestBed::start_with(
        opencode_opts,
        GatewayOptions::default().config("[prompt]\nagent = \"chatty\"\n"),
    )
    .await;
    let (s, v) = bed
        .chat(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "agent one"}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let req = bed.mock.last_request().expect("model call");
    assert!(
        req.to_string().contains("You are the chatty test agent."),
        "the agent's prompt must reach the model: {req}"
    );
    assert!(
        req.get("tools")
            .is_none_or(|t| t.as_array().is_some_and(|a| a.is_empty())),
        "an agent with tools must not get them while tools are disabled: {}",
        req["tools"]
    );

    // With tools enabled, the same agent's tools reach the model.
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nagent = \"chatty\"\ntools_enabled = true\n"),
    )
    .await;
    let resp = support::gateway::test_client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(
            &json!({"model": "mock/echo", "messages": [{"role": "user", "content": "agent two"}]}),
        )
        .send()
        .await
        .expect("chat");
    assert_eq!(resp.status(), StatusCode::OK);
    let req = bed.mock.last_request().expect("model call");
    let tools = req["tools"].to_string();
    assert!(
        tools.contains("bash"),
        "with tools enabled the agent's bash tool is offered: {tools}"
    );
}

/// A client that stalls while sending its body gets 408 in OpenAI's error shape after
/// `limits.body_timeout_secs`, instead of holding the connection and its buffer forever.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_request_body_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start_with(
        support::gateway::UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nbody_timeout_secs = 1\n"),
    )
    .await;
    let addr = gw.url().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{\"model\":"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("the gateway must answer a stalled body, not wait forever")
            .expect("read");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if n == 0 || text.contains("\r\n\r\n") && text.contains('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = &text[text.find("\r\n\r\n").expect("head end") + 4..];
    let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_valid("ErrorResponse", &v);
    assert_eq!(v["error"]["code"], "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// `reasoning_effort` must be one of the model's OpenCode variants (forwarded as `variant`);
/// anything else is a 400 naming the parameter, before anything is sent upstream.
#[tokio::test(flavor = "multi_thread")]
async fn reasoning_effort_is_checked_against_the_models_variants() {
    let opencode_opts = OpenCodeOptions {
        extra_config: json!({"provider": {"mock": {"models": {"thinker": {
            "variants": {"high": {"reasoningEffort": "high"}, "low": {"reasoningEffort": "low"}}
        }}}}}),
        ..OpenCodeOptions::default()
    };
    let bed = TestBed::start_with(opencode_opts, GatewayOptions::default()).await;
    let chat = |model: &str, effort: &str| {
        json!({"model": model, "reasoning_effort": effort,
               "messages": [{"role": "user", "content": "effort"}]})
    };
    let (s, v) = bed.chat(chat("mock/thinker", "high")).await;
    assert_eq!(s, StatusCode::OK, "a declared variant is accepted: {v}");
    let sent = bed.mock.last_request().expect("model call");
    assert_eq!(
        sent["reasoning_effort"], "high",
        "the variant reaches the model: {sent}"
    );
    let calls = bed.mock.call_count();
    let (s, v) = bed.chat(chat("mock/thinker", "extreme")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "reasoning_effort", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("high"),
        "{v}"
    );
    let (s, v) = bed.chat(chat("mock/echo", "high")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a model without variants: {v}");
    assert_eq!(v["error"]["param"], "reasoning_effort", "{v}");
    assert_eq!(
        bed.mock.call_count(),
        calls,
        "rejected before any model call"
    );
}

/// `opencode.directory` runs everything in that project directory upstream: sessions are
/// created there and the shared event subscription follows it (a chat completes).
#[tokio::test(flavor = "multi_thread")]
async fn opencode_directory_scopes_sessions_and_events() {
    let mock = support::MockModel::start().await;
    let opencode = support::OpenCode::start(&mock.base_url()).await;
    let dir = opencode.project_dir().join("sub");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let gw = Gateway::start_with(
        &opencode.url(),
        GatewayOptions::default().config(format!(
            "[opencode]\ndirectory = {:?}\n",
            dir.to_str().unwrap()
        )),
    )
    .await;
    let resp = support::gateway::test_client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "in sub"}]}))
        .send()
        .await
        .expect("chat");
    let (status, v) = support::api::read_json(resp).await;
    assert_eq!(status, StatusCode::OK, "{v}\n{}", gw.logs());
    assert_eq!(content(&v), "echo: in sub");
    let url = reqwest::Url::parse_with_params(
        &format!("{}/session", opencode.url()),
        &[("directory", dir.to_str().unwrap())],
    )
    .unwrap();
    let sessions: Value = opencode
        .client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dirs: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["directory"].as_str())
        .collect();
    assert_eq!(dirs, vec![dir.to_str().unwrap()], "{sessions}");
}

/// A client that never finishes its request headers (slowloris) is disconnected after
/// `limits.header_timeout_secs`, instead of holding a connection forever.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start_with(
        support::gateway::UNUSED_OPENCODE_URL,
        GatewayOptions::default().config("[limits]\nheader_timeout_secs = 1\n"),
    )
    .await;
    let addr = gw.url().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection was still open 5 s into a 1 s header timeout"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
}
