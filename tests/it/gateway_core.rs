//! The gateway core in front of a real `opencode serve` and the scripted mock model: only what
//! needs OpenCode. Two beds, each one OpenCode shared by named scenarios (an OpenCode takes
//! seconds to start, and its first prompt more; the two beds run in parallel):
//! - [`chat_through_opencode`]: models, completions, conversation seeding, images, titles, tools
//!   off, concurrency; then settings that reach OpenCode: `reasoning_effort` variants,
//!   `prompt.agent`, `prompt.tools_enabled`, `opencode.directory`; a failing model cut off by
//!   the retry budget;
//! - [`upstream_failures`]: basic auth towards OpenCode, a failing model cut off by the
//!   deadline, OpenCode dying.
//!
//! Validation, client auth, fallbacks, request ids and the catalog's filtering are checked
//! in-process (`tests/http_api`); the binary without OpenCode in `tests/it/gateway_process.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::api::{read_json, send};
use support::gateway::test_client;
use support::mock_model::{self, content_text, expected_reply, last_user_text, FAILURE_MESSAGE};
use support::opencode::opencode_version;
use support::scenarios::scenario;
use support::schema::assert_valid;
use support::{ask, assert_error, assistant, chat_body, content, user, ECHO, THINKER, VISION};
use support::{Gateway, GatewayOptions, OpenCodeOptions, Scenarios, TestBed};

/// A 1x1 transparent PNG.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
/// The title the gateway gives its sessions by default.
const TITLE: &str = "PorTaTek Gateway";

/// Every message text of a model request with one of `roles` (all roles when empty), joined.
fn texts(req: &Value, roles: &[&str]) -> String {
    req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| roles.is_empty() || roles.iter().any(|r| m["role"] == *r))
        .map(|m| content_text(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `POST /v1/chat/completions` on another gateway than the bed's → (status, JSON body).
async fn chat_via(gw: &Gateway, body: &Value) -> (StatusCode, Value) {
    let resp = test_client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(body)
        .send()
        .await
        .expect("chat");
    read_json(resp).await
}

/// Panics unless OpenCode has no busy or retrying session within 2 s.
async fn assert_quiet_upstream(bed: &TestBed, after: &str) {
    if let Err(busy) = bed.opencode.wait_not_busy(Duration::from_secs(2)).await {
        panic!("OpenCode still running the prompt after {after}: {busy:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Chat through OpenCode
// ---------------------------------------------------------------------------------------------

/// Chat completions through OpenCode: models and answers come from it, conversations and images
/// reach the model as they should, sessions are titled without a model call, the model gets no
/// tools, and concurrent chats do not mix. Then the settings that change what OpenCode runs,
/// and a failing model cut off by the retry budget (these scenarios start their own gateways).
/// OpenCode defines the `chatty` agent (whose own config allows `bash`) and reasoning-effort
/// variants for `mock/thinker`.
#[tokio::test(flavor = "multi_thread")]
async fn chat_through_opencode() {
    let opencode_opts = OpenCodeOptions {
        extra_config: json!({
            "agent": {"chatty": {
                "mode": "primary",
                "prompt": "You are the chatty test agent.",
                "tools": {"bash": true}
            }},
            "provider": {"mock": {"models": {"thinker": {
                "variants": {"high": {"reasoningEffort": "high"}, "low": {"reasoningEffort": "low"}}
            }}}}
        }),
        ..OpenCodeOptions::default()
    };
    let bed = Harness::real()
        .opencode(opencode_opts)
        .gateway(GatewayOptions::default())
        .start()
        .await;
    let mut s = Scenarios::new();
    // First: it counts every model call and session so far.
    scenario!(s, first_chat(&bed));
    scenario!(s, models_come_from_opencode(&bed));
    scenario!(s, completion_shape_and_usage(&bed));
    scenario!(s, finish_reason_length(&bed));
    scenario!(s, unknown_model_stays_here(&bed));
    scenario!(s, system_and_developer_prompts(&bed));
    scenario!(s, unseen_history_in_one_call(&bed));
    scenario!(s, images(&bed));
    scenario!(s, concurrent_chats(&bed));
    // Settings that reach OpenCode.
    scenario!(s, reasoning_effort(&bed));
    scenario!(s, agent_without_tools(&bed));
    scenario!(s, agent_with_tools(&bed));
    scenario!(s, opencode_directory(&bed));
    scenario!(s, model_failure_retry_budget(&bed));
    s.finish(&bed.gateway.logs());
}

/// The first chat creates a session titled by the gateway and costs exactly one model call (no
/// title generation); the model is offered no tools.
async fn first_chat(bed: &TestBed) {
    let (status, v) = bed.chat(ask(ECHO, "first contact")).await;
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
        assert_eq!(s["title"], TITLE, "session title: {s}");
    }
    let req = bed.mock.last_request().unwrap();
    match req.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(t) => panic!("the model was offered tools: {t}"),
    }
}

/// `GET /v1/models` lists OpenCode's models as OpenAI models (`provider/model`, owned by the
/// provider); `GET /v1/models/{provider/model}` returns one (the id has a slash).
async fn models_come_from_opencode(bed: &TestBed) {
    let (status, list) = bed.get("/v1/models").await;
    assert_eq!(status, 200, "{list}");
    assert_valid("ListModelsResponse", &list);
    let data = list["data"].as_array().expect("data");
    for id in [ECHO, VISION, THINKER] {
        let m = data
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {list}"));
        assert_valid("Model", m);
        assert_eq!(m["owned_by"], "mock", "{m}");
        assert_eq!(m["object"], "model", "{m}");
    }
    let (status, m) = bed.get("/v1/models/mock/vision").await;
    assert_eq!(status, 200, "{m}");
    assert_valid("Model", &m);
    assert_eq!(m["id"], VISION);
    assert_eq!(m["owned_by"], "mock");
}

/// A non-streaming completion is a schema-valid `chat.completion` with the model's exact reply,
/// `finish_reason` `stop` and the model's usage, for one model call.
async fn completion_shape_and_usage(bed: &TestBed) {
    let calls_before = bed.mock.call_count();
    let (status, v) = bed.chat(ask(ECHO, "hello core")).await;
    assert_eq!(status, 200, "{v}");
    assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], ECHO);
    assert_eq!(v["choices"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(content(&v), "echo: hello core");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let usage = &v["usage"];
    assert_eq!(
        usage["prompt_tokens"],
        mock_model::USAGE_PROMPT_TOKENS,
        "{v}"
    );
    assert_eq!(
        usage["completion_tokens"],
        mock_model::USAGE_COMPLETION_TOKENS,
        "{v}"
    );
    assert_eq!(usage["total_tokens"], mock_model::USAGE_TOTAL_TOKENS, "{v}");
    assert_eq!(
        bed.mock.call_count(),
        calls_before + 1,
        "one model call per chat"
    );
    let req = bed.mock.last_request().unwrap();
    assert_eq!(content(&v), expected_reply(&req));
}

/// The model's `length` finish reason comes through.
async fn finish_reason_length(bed: &TestBed) {
    let (status, v) = bed.chat(ask(ECHO, "cut me short [length]")).await;
    assert_eq!(status, 200, "{v}");
    assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(content(&v), "echo: cut me short [length]");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
}

/// An unknown model is a 404 before anything happens upstream: no model call, no OpenCode
/// session.
async fn unknown_model_stays_here(bed: &TestBed) {
    let sessions_before = bed.opencode.sessions().await.len();
    let calls_before = bed.mock.call_count();
    for model in ["mock/unknown", "nosuchprovider/echo", "echo"] {
        let (status, e) = bed.chat(ask(model, "hello?")).await;
        assert_error(
            status,
            &e,
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
}

/// `system` and `developer` messages become the model's system prompt, not user text.
async fn system_and_developer_prompts(bed: &TestBed) {
    let n = bed.mock.call_count();
    let (status, v) = bed
        .chat(chat_body(
            ECHO,
            vec![
                json!({"role": "system", "content": "SYSMARK-7731 be terse."}),
                json!({"role": "developer", "content": [{"type": "text", "text": "DEVMARK-9142 answer in English."}]}),
                user("what is up?"),
            ],
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: what is up?");
    assert_eq!(bed.mock.call_count(), n + 1);
    let req = bed.mock.last_request().unwrap();
    let sys = texts(&req, &["system"]);
    assert!(sys.contains("SYSMARK-7731"), "system prompt missing: {sys}");
    assert!(
        sys.contains("DEVMARK-9142"),
        "developer prompt missing: {sys}"
    );
    assert!(
        !last_user_text(&req).contains("SYSMARK-7731"),
        "system prompt sent as user text"
    );
}

/// A 3-turn history never seen before takes one model call carrying every earlier turn once.
async fn unseen_history_in_one_call(bed: &TestBed) {
    let n = bed.mock.call_count();
    let history = [
        "HIST-U1-alpha",
        "HIST-A1-bravo",
        "HIST-U2-charlie",
        "HIST-A2-delta",
    ];
    let (status, v) = bed
        .chat(chat_body(
            ECHO,
            vec![
                user(history[0]),
                assistant(history[1]),
                user(history[2]),
                assistant(history[3]),
                user("HIST-U3-echo now answer"),
            ],
        ))
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
    let everything = texts(&req, &[]);
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
}

/// A `data:` image to an image model reaches it as an image part; the same to a model without
/// image input (as OpenCode describes it) is a 400 and reaches nothing.
async fn images(bed: &TestBed) {
    let data_url = format!("data:image/png;base64,{PNG_B64}");
    let image_msg = json!({"role": "user", "content": [
        {"type": "text", "text": "describe IMGMARK-5521"},
        {"type": "image_url", "image_url": {"url": data_url}}
    ]});
    let n = bed.mock.call_count();
    let (status, v) = bed.chat(chat_body(VISION, vec![image_msg.clone()])).await;
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

    let n = bed.mock.call_count();
    let (status, e) = bed.chat(chat_body(ECHO, vec![image_msg])).await;
    assert_error(status, &e, 400, None, None, "image to mock/echo");
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
}

/// 16 concurrent chats each get their own answer, and every session carries the title.
async fn concurrent_chats(bed: &TestBed) {
    let texts: Vec<String> = (0..16)
        .map(|i| format!("parallel-{i}-{}", "xyzw".repeat(i % 4 + 1)))
        .collect();
    let started = Instant::now();
    let results = futures::future::join_all(texts.iter().map(|t| bed.chat(ask(ECHO, t)))).await;
    for (t, (status, v)) in texts.iter().zip(&results) {
        assert_eq!(*status, 200, "{t}: {v}");
        assert_eq!(content(v), format!("echo: {t}"), "cross-talk for {t}");
    }
    eprintln!("16 concurrent chats took {:?}", started.elapsed());
    for s in bed.opencode.sessions().await {
        assert_eq!(s["title"], TITLE, "session title: {s}");
    }
}

// ---------------------------------------------------------------------------------------------
// Settings that reach OpenCode
// ---------------------------------------------------------------------------------------------

/// `reasoning_effort` must be one of the model's OpenCode variants (then it is forwarded as
/// `variant` and reaches the model); anything else is a 400 naming the parameter, before
/// anything is sent upstream.
async fn reasoning_effort(bed: &TestBed) {
    let with_effort = |model: &str, effort: &str| {
        let mut body = ask(model, "effort");
        body["reasoning_effort"] = json!(effort);
        body
    };
    let (s, v) = bed.chat(with_effort(THINKER, "high")).await;
    assert_eq!(s, StatusCode::OK, "a declared variant is accepted: {v}");
    let sent = bed.mock.last_request().expect("model call");
    assert_eq!(
        sent["reasoning_effort"], "high",
        "the variant reaches the model: {sent}"
    );
    let calls = bed.mock.call_count();
    let (s, v) = bed.chat(with_effort(THINKER, "extreme")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "reasoning_effort", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("high"),
        "{v}"
    );
    let (s, v) = bed.chat(with_effort(ECHO, "high")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a model without variants: {v}");
    assert_eq!(v["error"]["param"], "reasoning_effort", "{v}");
    assert_eq!(
        bed.mock.call_count(),
        calls,
        "rejected before any model call"
    );
}

/// `prompt.agent` picks the OpenCode agent (its prompt reaches the model), and its tools stay
/// off while `prompt.tools_enabled` is not set.
async fn agent_without_tools(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nagent = \"chatty\"\n"),
    )
    .await;
    let (s, v) = chat_via(&gw, &ask(ECHO, "agent one")).await;
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
}

/// With `prompt.tools_enabled = true` the agent's tools reach the model.
async fn agent_with_tools(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nagent = \"chatty\"\ntools_enabled = true\n"),
    )
    .await;
    let (s, v) = chat_via(&gw, &ask(ECHO, "agent two")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let req = bed.mock.last_request().expect("model call");
    let tools = req["tools"].to_string();
    assert!(
        tools.contains("bash"),
        "with tools enabled the agent's bash tool is offered: {tools}"
    );
}

/// `opencode.directory` runs everything in that project directory upstream: sessions are
/// created there and the shared event subscription follows it (a chat completes).
async fn opencode_directory(bed: &TestBed) {
    let dir = bed.opencode.project_dir().join("sub");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config(format!(
            "[opencode]\ndirectory = {:?}\n",
            dir.to_str().unwrap()
        )),
    )
    .await;
    let (status, v) = chat_via(&gw, &ask(ECHO, "in sub")).await;
    assert_eq!(status, StatusCode::OK, "{v}\n{}", gw.logs());
    assert_eq!(content(&v), "echo: in sub");
    let url = reqwest::Url::parse_with_params(
        &format!("{}/session", bed.opencode.url()),
        &[("directory", dir.to_str().unwrap())],
    )
    .unwrap();
    let sessions: Value = bed
        .opencode
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

/// A failing model provider and `prompt.max_model_retries = 1` (its own gateway): OpenCode
/// retries after ~2 s and the gateway gives up at that retry, well within the deadline, with a
/// 502 carrying the provider's message; OpenCode's run is stopped and retries no more.
async fn model_failure_retry_budget(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        GatewayOptions::default().config("[prompt]\nmax_model_retries = 1\ndeadline_secs = 20\n"),
    )
    .await;
    // Warm up OpenCode (provider load, first model call) so the timing below measures the
    // gateway's retry budget, not OpenCode's cold start.
    let (status, v) = chat_via(&gw, &ask(ECHO, "warm up")).await;
    assert_eq!(status, 200, "{v}");

    let calls_before = bed.mock.call_count();
    let t = Instant::now();
    let (status, e) = chat_via(&gw, &ask(ECHO, "please [fail]")).await;
    let took = t.elapsed();
    eprintln!("retry-budget failure answered after {took:?}");
    assert_error(status, &e, 502, None, None, "model failure (retry budget)");
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
    assert_quiet_upstream(bed, "the retry budget").await;
    let calls_after = bed.mock.call_count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bed.mock.call_count(),
        calls_after,
        "OpenCode kept retrying after the gateway gave up"
    );
}

// ---------------------------------------------------------------------------------------------
// Upstream failures
// ---------------------------------------------------------------------------------------------

const OC_USER: &str = "ocuser";
const OC_PASSWORD: &str = "oc-s3cret";

/// Gateway options with the upstream basic-auth credentials.
fn with_credentials() -> GatewayOptions {
    GatewayOptions::default()
        .env("OPENCODE_SERVER_PASSWORD", OC_PASSWORD)
        .env("OPENCODE_SERVER_USERNAME", OC_USER)
}

/// When OpenCode or the model fails, on one password-protected OpenCode (every gateway gets the
/// credentials unless the scenario is about not having them): basic auth, a failing model cut
/// off by the deadline, and last OpenCode dying.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures() {
    let mut bed = Harness::real()
        .opencode(OpenCodeOptions {
            password: Some(OC_PASSWORD.into()),
            username: Some(OC_USER.into()),
            ..OpenCodeOptions::default()
        })
        .gateway(with_credentials())
        .start()
        .await;
    let mut s = Scenarios::new();
    scenario!(s, upstream_basic_auth(&bed));
    scenario!(s, model_failure_deadline(&bed));
    // Last: it kills OpenCode.
    scenario!(s, opencode_dies(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// Basic auth towards OpenCode: with the credentials everything works; without the password,
/// with a wrong one, or with the default user name the gateway cannot reach OpenCode (health
/// 503, models 502).
async fn upstream_basic_auth(bed: &TestBed) {
    let (status, h) = bed.get("/health").await;
    assert_eq!(status, 200, "{h}");
    let (status, v) = bed.get("/v1/models").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = bed.chat(ask(ECHO, "through basic auth")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: through basic auth");

    let url = bed.opencode.url();
    let (no_password, wrong, default_user) = tokio::join!(
        Gateway::start(&url),
        Gateway::start_with(
            &url,
            GatewayOptions::default().env("OPENCODE_SERVER_PASSWORD", "wrong")
        ),
        Gateway::start_with(
            &url,
            GatewayOptions::default().env("OPENCODE_SERVER_PASSWORD", OC_PASSWORD)
        ),
    );
    let client = test_client();
    let (status, _, h) = send(client.get(format!("{}/health", no_password.url()))).await;
    assert_eq!(status, 503, "health without the upstream password: {h}");
    for (gw, what) in [
        (&no_password, "models without the upstream password"),
        (&wrong, "models with a wrong upstream password"),
        (&default_user, "models with the wrong upstream user name"),
    ] {
        let (status, _, e) = send(client.get(format!("{}/v1/models", gw.url()))).await;
        assert_error(status, &e, 502, None, None, what);
    }
}

/// A failing model with a huge retry budget: the 5 s `prompt.deadline_secs` ends the request
/// after ~5 s with a 502 carrying the provider's message, and OpenCode's run is stopped.
async fn model_failure_deadline(bed: &TestBed) {
    let gw = Gateway::start_with(
        &bed.opencode.url(),
        with_credentials().config("[prompt]\nmax_model_retries = 100\ndeadline_secs = 5\n"),
    )
    .await;
    let t = Instant::now();
    let (status, e) = chat_via(&gw, &ask(ECHO, "deadline please [fail]")).await;
    let took = t.elapsed();
    eprintln!("deadline failure answered after {took:?}");
    assert_error(status, &e, 502, None, None, "model failure (deadline)");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(FAILURE_MESSAGE),
        "502 should carry the provider's message: {e}"
    );
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
        "the 5 s deadline should end the request after ~5 s, took {took:?}"
    );
    assert_quiet_upstream(bed, "the deadline").await;
}

/// `/health` reflects OpenCode (status, version); when OpenCode dies, readiness and chats fail
/// fast with 503 while liveness stays up.
async fn opencode_dies(bed: &mut TestBed) {
    let (status, h) = bed.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["opencode"]["healthy"], true, "{h}");
    assert_eq!(h["opencode"]["version"], opencode_version(), "{h}");
    let (status, l) = bed.get("/livez").await;
    assert_eq!(status, 200, "{l}");
    let (status, v) = bed.chat(ask(ECHO, "before the crash")).await;
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
    let (status, e) = bed.chat(ask(ECHO, "after the crash")).await;
    let took = t.elapsed();
    assert_error(
        status,
        &e,
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
