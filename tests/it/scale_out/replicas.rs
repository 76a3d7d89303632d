//! Two replicas behaving as one gateway (the steps of `replicas_behave_as_one_gateway`).

use super::*;

/// Turn 1 on replica 0, turn 2 on replica 1, turn 3 on replica 0: one session throughout, and
/// only the new message sent each time.
pub(super) async fn conversation_moves_between_replicas(cluster: &Cluster) {
    let mut history = vec![user("moving conversation one")];
    let (s1, a1) = turn(cluster, 0, history.clone(), &[]).await;
    assert_eq!(a1, "echo: moving conversation one");
    history.extend([assistant(&a1), user("moving conversation two")]);
    let (s2, a2) = turn(cluster, 1, history.clone(), &[]).await;
    assert_eq!(a2, "echo: moving conversation two");
    assert_eq!(s2, s1, "replica 1 continued replica 0's session");
    assert_no_replay(cluster, "moving conversation two", 2);
    history.extend([assistant(&a2), user("moving conversation three")]);
    let (s3, _) = turn(cluster, 0, history, &[]).await;
    assert_eq!(s3, s1, "and back");
    assert_no_replay(cluster, "moving conversation three", 4);
}

/// New conversations go to both upstreams (the least loaded, ties taking turns).
pub(super) async fn new_conversations_spread_over_both_upstreams(cluster: &Cluster) {
    let mut on = [0, 0];
    for i in 0..4 {
        let (session, _) = turn(cluster, 0, vec![user(&format!("spread {i}"))], &[]).await;
        let upstream = cluster
            .upstream_of(&session)
            .await
            .expect("session upstream");
        on[upstream] += 1;
    }
    assert!(on[0] > 0 && on[1] > 0, "all on one upstream: {on:?}");
    let (_, status) = cluster.get(0, "/status").await;
    let names: Vec<&str> = status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "{status}");
    assert_eq!(status["store"], json!({"kind": "redis", "up": true}));
    let (_, metrics) = cluster.get(0, "/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for series in [
        "portatek_upstream_up{upstream=\"a\"} 1",
        "portatek_upstream_up{upstream=\"b\"} 1",
        "portatek_upstream_in_flight{upstream=\"b\"} 0",
        "portatek_store_up 1",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
}

/// A Responses chain started on replica 0 continues on replica 1, in the same session, and
/// each replica reads the other's stored responses.
pub(super) async fn responses_chain_moves_between_replicas(cluster: &Cluster) {
    let body = json!({"model": ECHO, "input": "chain one"});
    let (status, h1, first) = cluster.post(0, "/v1/responses", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let id = first["id"].as_str().unwrap();
    let body = json!({"model": ECHO, "input": "chain two", "previous_response_id": id});
    let (status, h2, second) = cluster.post(1, "/v1/responses", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        second["output_text"]
            .as_str()
            .or_else(|| second["output"][0]["content"][0]["text"].as_str()),
        Some("echo: chain two"),
        "{second}"
    );
    assert_eq!(
        h1.get(SESSION_HEADER),
        h2.get(SESSION_HEADER),
        "one session"
    );
    assert_no_replay(cluster, "chain two", 2);
    let (status, got) = cluster.get(1, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["id"], first["id"]);
}

/// A response still running on replica 0 is `in_progress` to `GET` on replica 1 (it used to
/// be a 404 until stored: the running map is per process, now shared through Redis), then
/// `completed` once it is stored.
pub(super) async fn a_running_response_is_read_on_either_replica(cluster: &Cluster) {
    let body = json!({"model": ECHO, "input": "running across [slow:400] [chunks:6]",
        "stream": true});
    let resp = cluster
        .http
        .post(format!("{}/v1/responses", cluster.gateways[0].url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut reader = support::sse::SseReader::new(resp);
    let id = loop {
        let frame = reader
            .next(Duration::from_secs(30))
            .await
            .expect("response.created");
        if let Some(v) = frame.json() {
            if v["type"] == "response.created" {
                break v["response"]["id"].as_str().unwrap().to_string();
            }
        }
    };
    let (status, got) = cluster.get(1, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["status"], "in_progress", "{got}");
    let _ = reader.rest(Duration::from_secs(30)).await;
    let (status, got) = cluster.get(1, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["status"], "completed", "{got}");
}

/// The same explicit session asked on both replicas at once: one runs, the other is told 409;
/// afterwards the session takes the next request again.
pub(super) async fn replicas_never_prompt_one_session_at_once(cluster: &Cluster) {
    let (status, _, created) = cluster.post(0, "/v1/sessions", &json!({}), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let headers = [("x-session-id", id.as_str())];
    let slow = |text: &str| chat_body(ECHO, vec![user(&format!("[slow:400] {text}"))]);
    let (zero, one) = (slow("race zero"), slow("race one"));
    let (first, second) = tokio::join!(
        cluster.post(0, "/v1/chat/completions", &zero, &headers),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster
                .post(1, "/v1/chat/completions", &one, &headers)
                .await
        }
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        first.2,
        second.2
    );
    let prompts = cluster
        .mock
        .requests()
        .iter()
        .filter(|r| r.to_string().contains("[slow:400] race"))
        .count();
    assert_eq!(prompts, 1, "the refused request never reached the model");
    let (session, _) = turn(cluster, 1, vec![user("after the race")], &headers).await;
    assert_eq!(session, id);
}

/// Replica 0 ends a response with a tool call; the results arrive at replica 1, which does not
/// hold the waiting run: it answers through a session seeded with the calls and results.
pub(super) async fn tool_results_on_the_other_replica_are_re_driven(cluster: &Cluster) {
    let tools = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    let ask = user(r#"[call:lookup:{"q":"capital"}] look it up"#);
    let mut body = chat_body(ECHO, vec![ask.clone()]);
    body["tools"] = tools.clone();
    let (status, _, first) = cluster.post(0, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let message = &first["choices"][0]["message"];
    assert_eq!(
        first["choices"][0]["finish_reason"], "tool_calls",
        "{first}"
    );
    let call_id = message["tool_calls"][0]["id"].as_str().unwrap();
    let result = json!({"role": "tool", "tool_call_id": call_id, "content": "Paris"});
    let mut body = chat_body(ECHO, vec![ask, message.clone(), result]);
    body["tools"] = tools;
    let (status, _, second) = cluster.post(1, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let req = model_request_with(cluster, "<tool_result");
    let text = req.to_string();
    assert!(
        text.contains(TRANSCRIPT_MARK) && text.contains("Paris"),
        "the results went into a seeded prompt: {text}"
    );
}

/// Replica 0 dies mid-stream on an explicit session: replica 1 is refused while the dead
/// replica's claim lasts, then runs on the session (its claim lapsed, the orphaned run aborted).
pub(super) async fn dead_replica_claim_lapses(cluster: &mut Cluster) {
    let (status, _, created) = cluster.post(1, "/v1/sessions", &json!({}), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let body = support::streaming(chat_body(
        ECHO,
        vec![user("[slow:500] [chunks:40] a long answer cut short")],
    ));
    let url = format!("{}/v1/chat/completions", cluster.gateways[0].url());
    let mut resp = cluster
        .http
        .post(url)
        .header("x-session-id", &id)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _first = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("a first chunk");
    cluster.gateways[0].kill().await;
    let headers = [("x-session-id", id.as_str())];
    let next = chat_body(ECHO, vec![user("after the crash")]);
    let (status, _, body) = cluster
        .post(1, "/v1/chat/completions", &next, &headers)
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the dead replica's claim still holds: {body}"
    );
    let started = Instant::now();
    loop {
        let (status, _, body) = cluster
            .post(1, "/v1/chat/completions", &next, &headers)
            .await;
        if status == StatusCode::OK {
            assert_eq!(
                body["choices"][0]["message"]["content"],
                "echo: after the crash"
            );
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the claim never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
