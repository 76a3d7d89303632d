//! The stream's shape and contents, keep-alives, disconnects, failures, fifty streams.

use super::*;

/// The basic OpenAI stream shape ([`support::sse::check_ok_stream`]), `finish_reason` `stop`, no
/// usage unless asked for, no reasoning from a plain model.
pub(super) async fn basic_stream_shape(bed: &TestBed) {
    let text = "hello stream";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    assert_eq!(st.finish_reason, "stop");
    assert_eq!(st.content, echo(text));
    assert!(
        st.usage_chunks.is_empty(),
        "no chunk may carry usage without stream_options.include_usage: {:?}",
        st.usage_chunks
    );
    assert!(
        st.reasoning.is_empty(),
        "unexpected reasoning: {}",
        st.reasoning
    );
}

/// The model's `length` finish reason ends the stream.
pub(super) async fn finish_reason_length(bed: &TestBed) {
    let text = "cut short [length]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    assert_eq!(st.finish_reason, "length");
    assert_eq!(st.content, echo(text));
}

/// Streamed content equals non-streamed content, both exactly the model's reply (the user's own
/// text never comes back as a delta).
pub(super) async fn stream_equals_non_stream(bed: &TestBed) {
    let text = "same answer both ways [chunks:4]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    let (status, v) = bed.chat(ask(ECHO, text)).await;
    assert_eq!(status, 200, "{v}");
    schema::assert_valid("CreateChatCompletionResponse", &v);
    let plain = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(st.content, plain, "streamed vs non-streamed content");
    assert_eq!(st.content, echo(text), "exactly the model's reply");
    assert!(
        !st.content_pieces.iter().any(|(_, p)| p == text),
        "the user's own text came back as a delta: {:?}",
        st.content_pieces
    );
}

/// Several chunks, not one blob; with a slow model the first chunk arrives well before the last.
pub(super) async fn real_streaming(bed: &TestBed) {
    // OpenCode 2.x merges deltas that come within ~150 ms: the model is paced there.
    let text = match bed.opencode.is_v2() {
        true => "one two three four five six seven [chunks:5] [slow:250]",
        false => "one two three four five six seven [chunks:5]",
    };
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    assert_eq!(st.content, echo(text));
    assert!(
        st.content_pieces.len() >= 3,
        "content arrived in {} piece(s): {:?}",
        st.content_pieces.len(),
        st.content_pieces
    );

    let text = "slowly but surely we get there [slow:300] [chunks:5]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    assert_eq!(st.content, echo(text));
    assert!(
        st.content_pieces.len() >= 5,
        "expected the 5 spaced-out model chunks as separate deltas: {:?}",
        st.content_pieces
    );
    let first = st.content_pieces.first().unwrap().0;
    let last = st.content_pieces.last().unwrap().0;
    assert!(
        last >= first + Duration::from_millis(900),
        "first content at {first:?}, last at {last:?}: not incremental (model spaced 4×300 ms)"
    );
}

/// Reasoning arrives as `delta.reasoning_content` (in pieces, before the answer, never mixed
/// into a content chunk) and as `message.reasoning_content` without streaming.
pub(super) async fn reasoning_content(bed: &TestBed) {
    // OpenCode 2.x merges deltas that come within ~150 ms: the model is paced there.
    let text = match bed.opencode.is_v2() {
        true => "ponder deeply [reasoning] [slow:250]",
        false => "ponder deeply [reasoning]",
    };
    let st = bed.read_ok_stream(streaming(ask(THINKER, text))).await;
    assert_eq!(st.reasoning, reasoning_of(text), "streamed reasoning");
    assert_eq!(st.content, echo(text), "streamed content");
    assert!(
        !st.content.contains("thinking about"),
        "reasoning leaked into content: {}",
        st.content
    );
    assert!(
        st.reasoning_pieces.len() >= 2,
        "reasoning in {} piece(s)",
        st.reasoning_pieces.len()
    );
    let last_reasoning = st.reasoning_pieces.last().unwrap().0;
    let first_content = st.content_pieces.first().unwrap().0;
    assert!(
        last_reasoning <= first_content,
        "reasoning must come before the answer"
    );
    for c in &st.chunks {
        let d = &c["choices"][0]["delta"];
        assert!(
            !(d["content"].as_str().is_some_and(|s| !s.is_empty())
                && d["reasoning_content"].is_string()),
            "a chunk mixes content and reasoning: {c}"
        );
    }

    let text2 = "ponder again [reasoning]";
    let (status, v) = bed.chat(ask(THINKER, text2)).await;
    assert_eq!(status, 200, "{v}");
    schema::assert_valid("CreateChatCompletionResponse", &v);
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], reasoning_of(text2), "{v}");
    assert_eq!(m["content"], echo(text2), "{v}");
}

/// `stream_options.include_usage`: exactly one usage chunk (`choices: []`, the model's
/// usage), right before `[DONE]`.
pub(super) async fn include_usage(bed: &TestBed) {
    let text = "count my tokens";
    let mut req = streaming(ask(ECHO, text));
    req["stream_options"] = json!({"include_usage": true});
    let st = bed.read_ok_stream(req).await;
    assert_eq!(st.content, echo(text));
    assert_eq!(st.usage_chunks.len(), 1, "exactly one usage chunk");
    let last = st.chunks.last().unwrap();
    assert_eq!(
        last, &st.usage_chunks[0],
        "the usage chunk comes right before [DONE]"
    );
    assert_eq!(last["choices"], json!([]), "usage chunk has choices: []");
    let u = &last["usage"];
    assert_eq!(u["prompt_tokens"], mock_model::USAGE_PROMPT_TOKENS, "{u}");
    assert_eq!(
        u["completion_tokens"],
        mock_model::USAGE_COMPLETION_TOKENS,
        "{u}"
    );
    assert_eq!(u["total_tokens"], mock_model::USAGE_TOTAL_TOKENS, "{u}");
}

/// Keep-alive comments go out while the model is silent between chunks.
pub(super) async fn keepalive_comments(bed: &TestBed) {
    let text = "wait for it [slow:2500] [chunks:2]";
    let st = bed.read_ok_stream(streaming(ask(ECHO, text))).await;
    assert_eq!(st.content, echo(text));
    let idx: Vec<usize> = st
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.content().is_some())
        .map(|(i, _)| i)
        .collect();
    assert!(
        idx.len() >= 2,
        "two content chunks expected: {:?}",
        st.frames
    );
    let between = &st.frames[idx[0] + 1..idx[idx.len() - 1]];
    assert!(
        between.iter().any(Frame::is_comment),
        "no `:` comment line between chunks 2.5 s apart (keepalive_secs = 1); frames:\n{}",
        st.frames
            .iter()
            .map(|f| format!("{:?} {}", f.at, f.raw))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A streaming client that disconnects mid-stream gets its run aborted upstream within 1 s.
pub(super) async fn client_disconnect_aborts(bed: &TestBed) {
    let text = "a long answer nobody waits for [slow:500] [chunks:20]";
    let mut reader = bed.open_stream(streaming(ask(ECHO, text))).await;
    let mut contents = 0;
    while contents < 2 {
        let f = reader
            .next(FRAME_WAIT)
            .await
            .expect("stream ended before 2 content chunks");
        if f.content().is_some() {
            contents += 1;
        }
    }
    let busy = bed.opencode.busy_sessions().await;
    assert!(
        !busy.is_empty(),
        "sanity: the run should be busy upstream mid-stream"
    );
    drop(reader);
    assert_not_busy(&bed.opencode, Duration::from_secs(1), "the client left").await;
}

/// A failing model mid-stream: an error event carrying the provider's message, no `[DONE]`, well
/// within the deadline, and no session left busy.
pub(super) async fn model_failure_error_event(bed: &TestBed) {
    let started = Instant::now();
    let mut reader = bed
        .open_stream(streaming(ask(ECHO, "this breaks [fail]")))
        .await;
    let frames = reader.rest(FRAME_WAIT).await;
    let took = started.elapsed();
    let v = final_error(&datas(&frames));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(FAILURE_MESSAGE),
        "error message {msg:?} lacks the provider's {FAILURE_MESSAGE:?}"
    );
    assert!(v["error"]["type"].is_string(), "error.type: {v}");
    assert!(
        took < Duration::from_secs(12),
        "failure took {took:?} (retry budget 1, deadline 20 s)"
    );
    assert_not_busy(&bed.opencode, Duration::from_secs(1), "the failed stream").await;
}

/// 50 concurrent streams each get their own answer, over one upstream event connection (the
/// hub's: `/status` and the proxy agree) before, during and after the burst.
pub(super) async fn fifty_streams(bed: &TestBed, proxy: &Proxy) {
    // On a bed just started (the pool may lend this test a fresh one) the gateway is ready
    // before its event stream is: wait for it, then count connections from there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut connected, mut opened) = hub_status(bed).await;
    while !connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (connected, opened) = hub_status(bed).await;
    }
    assert!(connected, "hub not connected before the burst");
    assert_eq!(opened, 1, "connections_opened before the burst");
    let done = AtomicBool::new(false);
    let streams = futures::future::join_all((0..50).map(|i| {
        let one = async move {
            let text = format!("stream number {i} says hi [slow:150] [chunks:4]");
            let st = bed.read_ok_stream(streaming(ask(ECHO, &text))).await;
            assert_eq!(
                st.content,
                echo(&text),
                "stream {i} got someone else's text"
            );
            assert_eq!(st.finish_reason, "stop", "stream {i}");
        };
        AssertUnwindSafe(one).catch_unwind()
    }));
    let burst = async {
        let results = streams.await;
        done.store(true, Ordering::SeqCst);
        results
    };
    // While they run.
    let sample = async {
        let mut samples = 0;
        while !done.load(Ordering::SeqCst) && samples < 20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (connected, opened) = hub_status(bed).await;
            assert!(connected, "hub disconnected during the burst");
            assert_eq!(opened, 1, "connections_opened during the burst");
            assert_eq!(
                proxy.event_connections(),
                (1, 1),
                "GET /event requests seen by the proxy (total, open) during the burst"
            );
            samples += 1;
        }
        samples
    };
    let (results, samples) = tokio::join!(burst, sample);
    assert!(
        samples > 0,
        "the burst ended before /status could be sampled"
    );
    let failures: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| format!("#{i}"))
        .collect();
    assert!(
        failures.is_empty(),
        "concurrent streams failed: {failures:?}"
    );
    let (connected, opened) = hub_status(bed).await;
    assert!(connected, "hub not connected after the burst");
    assert_eq!(opened, 1, "connections_opened after the burst");
    assert_eq!(
        proxy.event_connections(),
        (1, 1),
        "GET /event requests seen by the proxy (total, open) after the burst"
    );
}
