//! Response objects, streamed events, reasoning summaries, `previous_response_id`, input items
//! (the steps of `responses_api`).

use super::*;

/// `POST /v1/responses` with a string input: a completed `response` (id `resp_…`, created_at,
/// model, one assistant message with `output_text`, usage with its details) that echoes
/// `instructions`, `metadata`, `temperature`, `top_p`, `truncation`, `max_output_tokens` and
/// `store` (default true). `GET` returns the same object; the instructions reached the model
/// as its system prompt.
pub(super) async fn response_object_and_what_it_echoes(bed: &TestBed) {
    let before = bed.mock.call_count();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = json!({"model": ECHO, "input": "hello responses", "instructions": "Be terse.",
        "metadata": {"ticket": "T-1"}, "temperature": 0.5, "top_p": 0.9, "truncation": "auto",
        "max_output_tokens": 256});
    let (s, v) = create(bed, &body).await;
    let r = completed(s, &v);
    let id = id_of(&r);
    assert!(id.starts_with("resp_"), "{id}");
    assert!(r["created_at"].as_u64().unwrap().abs_diff(now) < 60, "{r}");
    assert_eq!(r["model"], ECHO);
    assert_eq!(output_text(&r), "echo: hello responses");
    let messages = items(&r, "message");
    assert_eq!(messages.len(), 1, "{r}");
    assert_eq!(messages[0]["role"], "assistant");
    assert_eq!(messages[0]["status"], "completed");
    assert!(messages[0]["id"].as_str().unwrap().starts_with("msg_"));
    for (field, want) in [
        ("instructions", json!("Be terse.")),
        ("metadata", json!({"ticket": "T-1"})),
        ("temperature", json!(0.5)),
        ("top_p", json!(0.9)),
        ("truncation", json!("auto")),
        ("max_output_tokens", json!(256)),
        ("store", json!(true)),
        ("previous_response_id", Value::Null),
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("text", json!({"format": {"type": "text"}})),
    ] {
        assert_eq!(r[field], want, "`{field}` echoed: {r}");
    }
    let usage = &r["usage"];
    assert_eq!(usage["input_tokens"], 11, "{usage}");
    assert_eq!(usage["output_tokens"], 7, "{usage}");
    assert_eq!(usage["total_tokens"], 18, "{usage}");
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0, "{usage}");
    assert_eq!(
        usage["output_tokens_details"]["reasoning_tokens"], 0,
        "{usage}"
    );

    let req = &model_calls_since(bed, before, 1, "one response")[0];
    assert!(
        req["messages"][0]["role"] == "system"
            && content_text(&req["messages"][0]["content"]).contains("Be terse."),
        "instructions reach the model as its system prompt"
    );
    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_response(&got);
    assert_eq!(got, r, "GET returns the response as it was answered");
}

/// `stream: true`: `response.created` and `.in_progress`, the message item added, its part
/// added, text deltas, then everything done in order, `response.completed` — each event valid
/// against its schema, numbered from 0; the final response is what `GET` returns.
pub(super) async fn streamed_text_events(bed: &TestBed) {
    // OpenCode 2.x merges text deltas that come within ~150 ms: the chunks come slower there.
    let input = match bed.opencode.is_v2() {
        true => "stream this [chunks:3] [slow:300]",
        false => "stream this [chunks:3]",
    };
    let body = json!({"model": ECHO, "input": input});
    let stream = create_stream(bed, &body).await;
    assert_eq!(stream.status, 200, "{:?}", stream.body);
    let r = check_structure(&stream);
    assert_eq!(r["status"], "completed");
    let kinds = stream.kinds();
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    assert_eq!(deltas, 3, "{kinds:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", 3));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    assert_eq!(output_text(&r), format!("echo: {input}"));
    let (s, got) = bed.get(&format!("/v1/responses/{}", stream.id())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, r, "the stored response is the streamed one");
}

/// A reasoning model: `reasoning.effort` is forwarded (as OpenCode's variant), the reasoning
/// becomes a `reasoning` item with summary text before the message — streamed as reasoning
/// summary events — and usage reports reasoning tokens.
pub(super) async fn reasoning_becomes_a_summary(bed: &TestBed) {
    let before = bed.mock.call_count();
    let body =
        json!({"model": THINKER, "input": "ponder [reasoning]", "reasoning": {"effort": "high"}});
    let (s, v) = create(bed, &body).await;
    let r = completed(s, &v);
    let kinds: Vec<&str> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reasoning", "message"], "{r}");
    assert_eq!(
        r["output"][0]["summary"],
        json!([{"type": "summary_text", "text": "thinking about ponder [reasoning]"}])
    );
    assert_eq!(output_text(&r), "echo: ponder [reasoning]");
    assert_eq!(r["reasoning"], json!({"effort": "high"}));
    assert!(r["usage"]["output_tokens_details"]["reasoning_tokens"].is_u64());
    let req = &model_calls_since(bed, before, 1, "reasoning")[0];
    assert_eq!(
        req["reasoning_effort"], "high",
        "the effort reaches the model"
    );

    let stream = create_stream(
        bed,
        &json!({"model": THINKER, "input": "ponder more [reasoning]"}),
    )
    .await;
    let r = check_structure(&stream);
    let kinds = stream.kinds();
    let first_text = kinds
        .iter()
        .position(|k| *k == "response.output_text.delta")
        .unwrap();
    for k in [
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ] {
        let at = kinds.iter().position(|x| *x == k);
        assert!(
            at.is_some_and(|i| i < first_text),
            "{k} comes before the text: {kinds:?}"
        );
    }
    assert_eq!(
        r["output"][0]["summary"][0]["text"],
        "thinking about ponder more [reasoning]"
    );
}

/// `previous_response_id` continues the response's OpenCode session: the client sends only the
/// new input and the model sees the earlier turn once, as real messages. Continuing an older
/// response branches (a fork): both branches live on, each without the other's turns.
pub(super) async fn previous_response_id_continues_and_branches(bed: &TestBed) {
    let before_sessions = sessions(bed).await;
    let before = bed.mock.call_count();
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "chain one"})).await;
    let r1 = id_of(&completed(s, &v));
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "chain two", "previous_response_id": r1}),
    )
    .await;
    let r2v = completed(s, &v);
    let r2 = id_of(&r2v);
    assert_eq!(r2v["previous_response_id"], r1.as_str());
    let req = &model_calls_since(bed, before, 2, "a continued chain")[1];
    assert_eq!(
        turns(req),
        vec![
            json!({"user": "chain one"}),
            json!({"assistant": "echo: chain one"}),
            json!({"user": "chain two"}),
        ],
        "the earlier turn reaches the model once, as real messages"
    );
    let chain: Vec<String> = sessions(bed)
        .await
        .difference(&before_sessions)
        .cloned()
        .collect();
    assert_eq!(chain.len(), 1, "a chain is one session: {chain:?}");
    let (s, page) = bed.get(&format!("/v1/responses/{r2}/input_items")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        1,
        "a continuation's input is only what the client sent: {page}"
    );

    // A branch from r1, then both branches continued.
    let step = |prev: &str, text: &str| json!({"model": ECHO, "input": text, "previous_response_id": prev});
    let before = bed.mock.call_count();
    let (s, v) = create(bed, &step(&r1, "branch")).await;
    let r3 = id_of(&completed(s, &v));
    let (s, v) = create(bed, &step(&r2, "after two")).await;
    completed(s, &v);
    let (s, v) = create(bed, &step(&r3, "after branch")).await;
    completed(s, &v);
    let calls = model_calls_since(bed, before, 3, "two branches");
    let (one, echo1) = (
        json!({"user": "chain one"}),
        json!({"assistant": "echo: chain one"}),
    );
    assert_eq!(
        turns(&calls[0]),
        vec![one.clone(), echo1.clone(), json!({"user": "branch"})],
        "a branch from r1 does not see r2's turn"
    );
    assert_eq!(
        turns(&calls[1]),
        vec![
            one.clone(),
            echo1.clone(),
            json!({"user": "chain two"}),
            json!({"assistant": "echo: chain two"}),
            json!({"user": "after two"}),
        ],
        "the original branch goes on without the new one"
    );
    assert_eq!(
        turns(&calls[2]),
        vec![
            one,
            echo1,
            json!({"user": "branch"}),
            json!({"assistant": "echo: branch"}),
            json!({"user": "after branch"}),
        ],
        "the new branch goes on without r2's turn"
    );
    assert_no_replay(bed, before, "branches");
    assert_eq!(
        sessions(bed).await.difference(&before_sessions).count(),
        2,
        "the branch is a second session"
    );
}

/// Input items: a developer message, an earlier question, an earlier function call and its
/// output, and a user message with text and an image reach the model (the image as an image);
/// `GET …/input_items` pages through them (`limit`, `order`, `after`,
/// `first_id`/`last_id`/`has_more`), every page schema-valid.
pub(super) async fn input_items_parts_and_pages(bed: &TestBed) {
    let before = bed.mock.call_count();
    let image = format!("data:image/png;base64,{PNG_B64}");
    let input = json!([
        {"type": "message", "role": "developer", "content": "Answer in haiku."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "earlier question"}]},
        {"type": "function_call", "call_id": "call_earlier", "name": "lookup", "arguments": "{\"q\":1}"},
        call_output("call_earlier", "earlier output"),
        {"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": image},
        ]},
    ]);
    let (s, v) = create(bed, &json!({"model": VISION, "input": input})).await;
    let r = completed(s, &v);
    let id = id_of(&r);
    let req = &model_calls_since(bed, before, 1, "items")[0];
    let seen = req["messages"].to_string();
    assert!(
        seen.contains("Answer in haiku."),
        "developer text reaches the system prompt"
    );
    assert!(
        seen.contains("earlier question")
            && seen.contains("call_earlier")
            && seen.contains("earlier output"),
        "earlier items reach the model: {seen}"
    );
    assert!(
        seen.contains(&format!("data:image/png;base64,{PNG_B64}")),
        "the image reaches the model as an image"
    );

    let page = |query: &str| {
        let path = format!("/v1/responses/{id}/input_items{query}");
        async move {
            let (s, v) = bed.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
            assert_valid("ResponseItemList", &v);
            v
        }
    };
    let ids_of = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = page("?order=asc").await;
    let kinds: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().or(i["type"].as_str()).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "developer",
            "user",
            "function_call",
            "function_call_output",
            "user"
        ],
        "{all}"
    );
    assert_eq!(all["has_more"], false);
    assert_eq!(
        all["data"][4]["content"][1],
        json!({"type": "input_image", "image_url": image, "detail": "auto"})
    );
    let ids = ids_of(&all);
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(
        ids_of(&page("").await),
        reversed,
        "the default order is desc"
    );

    let first = page("?order=asc&limit=2").await;
    assert_eq!(ids_of(&first), ids[..2]);
    assert_eq!(first["has_more"], true, "{first}");
    assert_eq!(first["first_id"], ids[0].as_str());
    assert_eq!(first["last_id"], ids[1].as_str());
    let second = page(&format!("?order=asc&limit=2&after={}", ids[1])).await;
    assert_eq!(ids_of(&second), ids[2..4]);
    assert_eq!(second["has_more"], true, "{second}");
    let third = page(&format!("?order=asc&limit=2&after={}", ids[3])).await;
    assert_eq!(ids_of(&third), ids[4..]);
    assert_eq!(third["has_more"], false, "{third}");
    assert_eq!(third["first_id"], ids[4].as_str());
    assert_eq!(third["last_id"], ids[4].as_str());
    let newest = page("?limit=1").await;
    assert_eq!(ids_of(&newest), ids[4..], "desc starts with the newest");
    let (s, v) = bed
        .get(&format!("/v1/responses/{id}/input_items?limit=0"))
        .await;
    assert_error(s, &v, 400, None, Some("limit"), "limit 0");
}
