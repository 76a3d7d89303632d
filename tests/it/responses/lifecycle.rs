//! Cancelling a running response, stored responses across a gateway restart.

use super::*;

/// A slow streaming response is cancelled from another request: `POST …/cancel` answers the
/// response as `cancelled`, the stream ends at once, OpenCode stops, the stored response says
/// `cancelled`; cancelling it again (or any finished response) is a 400.
pub(super) async fn cancel_stops_a_running_response(bed: &TestBed) {
    let body = json!({"model": ECHO, "input": "long story [slow:300] [chunks:20]", "stream": true});
    let resp = bed
        .client
        .post(bed.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let mut events = Vec::new();
    while let Some(frame) = reader.next(FRAME_WAIT).await {
        let Some(e) = frame.json() else { continue };
        let first_text = e["type"] == "response.output_text.delta";
        events.push(e);
        if first_text {
            break;
        }
    }
    let id = events[0]["response"]["id"].as_str().unwrap().to_string();
    let (s, running) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{running}");
    assert_eq!(
        running["status"], "in_progress",
        "GET while it runs: {running}"
    );

    let cancelled_at = Instant::now();
    let (s, v) = bed
        .post(&format!("/v1/responses/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_response(&v);
    assert_eq!(v["status"], "cancelled", "{v}");
    let rest = reader.rest(FRAME_WAIT).await;
    let ended = cancelled_at.elapsed();
    events.extend(rest.iter().filter_map(|f| f.json()));
    assert!(
        ended < Duration::from_secs(3),
        "the stream ends soon after the cancel, not with the story ({ended:?})"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    eprintln!("[cancel] the stream after the cancel ({ended:?}): {kinds:?}");
    let last = events.last().unwrap();
    assert!(
        matches!(
            last["type"].as_str(),
            Some(
                "response.failed"
                    | "response.cancelled"
                    | "response.completed"
                    | "response.incomplete"
            )
        ),
        "the stream ends with a terminal event: {last}"
    );
    for e in &events {
        support::responses_schema::assert_event(e);
    }
    assert!(
        bed.opencode
            .wait_not_busy(Duration::from_secs(3))
            .await
            .is_ok(),
        "OpenCode still runs the cancelled response"
    );
    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_response(&got);
    assert_eq!(got["status"], "cancelled", "the stored response: {got}");

    let (s, v) = bed
        .post(&format!("/v1/responses/{id}/cancel"), &json!({}))
        .await;
    assert_error(s, &v, 400, None, None, "cancelling a cancelled response");
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "quick"})).await;
    let done = id_of(&completed(s, &v));
    let (s, v) = bed
        .post(&format!("/v1/responses/{done}/cancel"), &json!({}))
        .await;
    assert_error(s, &v, 400, None, None, "cancelling a completed response");
}

/// A gateway restarted over the same OpenCode still finds a stored response (GET, input items)
/// and continues it with `previous_response_id` in the same session, the model seeing the
/// earlier turn once as real messages.
pub(super) async fn stored_responses_survive_a_gateway_restart(bed: &mut TestBed) {
    let (s, v) = create(bed, &json!({"model": ECHO, "input": "before the restart"})).await;
    let r1 = completed(s, &v);
    let id = id_of(&r1);
    let upstream = sessions(bed).await;

    bed.gateway.kill().await;
    bed.gateway = Gateway::start(&bed.opencode.url()).await;

    let (s, got) = bed.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, r1, "the same response after the restart");
    let (s, page) = bed.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_valid("ResponseItemList", &page);

    let before = bed.mock.call_count();
    let (s, v) = create(
        bed,
        &json!({"model": ECHO, "input": "after the restart", "previous_response_id": id}),
    )
    .await;
    assert_eq!(output_text(&completed(s, &v)), "echo: after the restart");
    let req = &model_calls_since(bed, before, 1, "continued after a restart")[0];
    assert_eq!(
        turns(req),
        vec![
            json!({"user": "before the restart"}),
            json!({"assistant": "echo: before the restart"}),
            json!({"user": "after the restart"}),
        ]
    );
    let chain = format!(
        "ses_{}",
        id.strip_prefix("resp_")
            .unwrap()
            .rsplit_once('_')
            .unwrap()
            .0
    );
    let after = sessions(bed).await;
    assert!(after.contains(&chain), "{chain} is gone: {after:?}");
    assert_eq!(
        after.difference(&upstream).count(),
        0,
        "the chain goes on in its own session, no new one"
    );
}
