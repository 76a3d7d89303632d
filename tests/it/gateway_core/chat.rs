//! Chat completions through OpenCode: models, answers, prompts, history, images, concurrency.

use super::*;

/// A new conversation's chat creates a session titled by the gateway and costs exactly one model
/// call (no title generation); the model is offered no tools.
pub(super) async fn first_chat(bed: &TestBed) {
    let calls_before = bed.mock.call_count();
    let sessions_before: Vec<Value> = bed.opencode.sessions().await;
    let (status, v) = bed.chat(ask(ECHO, "first contact")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(content(&v), "echo: first contact");
    assert_eq!(
        bed.mock.call_count() - calls_before,
        1,
        "one chat must cost exactly one model call (no title generation): {:#?}",
        bed.mock.requests()
    );
    let sessions = bed.opencode.sessions().await;
    assert!(
        sessions
            .iter()
            .any(|s| !sessions_before.iter().any(|b| b["id"] == s["id"])),
        "no new OpenCode session after a new conversation's chat: {sessions:?}"
    );
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
pub(super) async fn models_come_from_opencode(bed: &TestBed) {
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
pub(super) async fn completion_shape_and_usage(bed: &TestBed) {
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
pub(super) async fn finish_reason_length(bed: &TestBed) {
    let (status, v) = bed.chat(ask(ECHO, "cut me short [length]")).await;
    assert_eq!(status, 200, "{v}");
    assert_valid("CreateChatCompletionResponse", &v);
    assert_eq!(content(&v), "echo: cut me short [length]");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
}

/// An unknown model is a 404 before anything happens upstream: no model call, no OpenCode
/// session.
pub(super) async fn unknown_model_stays_here(bed: &TestBed) {
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
pub(super) async fn system_and_developer_prompts(bed: &TestBed) {
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
pub(super) async fn unseen_history_in_one_call(bed: &TestBed) {
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
pub(super) async fn images(bed: &TestBed) {
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
pub(super) async fn concurrent_chats(bed: &TestBed) {
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
