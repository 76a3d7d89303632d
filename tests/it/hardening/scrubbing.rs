//! Stack traces and non-JSON upstream error bodies never passed on.

use super::*;

// ---------------------------------------------------------------------------------------------
// 502s never expose OpenCode's internals
// ---------------------------------------------------------------------------------------------

/// A Bun error as OpenCode reports it: the message, then stack frames naming its bundle.
pub(super) const BUN_TRACE: &str = "Error: bad image\n    at catch (/$bunfs/root/chunk-abc.js:1004:6414)\n    at processTicksAndRejections (native:7:39)";
/// The same, with the frame on the message's line.
pub(super) const BUN_INLINE: &str =
    "Error: bad image at catch (/$bunfs/root/chunk-abc.js:1004:6414)";

/// Asserts a 502-style message keeps the upstream's words and none of its internals.
#[track_caller]
pub(super) fn assert_scrubbed(message: &str, what: &str) {
    assert!(message.contains("bad image"), "{what}: {message:?}");
    for internal in ["$bunfs", ".js:", " at ", "chunk-abc"] {
        assert!(
            !message.contains(internal),
            "{what}: the message exposes {internal:?}: {message:?}"
        );
    }
}

/// `prompt_async` refused with OpenCode's JSON error whose message carries a Bun stack trace
/// (multi-line, and inline): the client's 502 keeps "bad image", not the frames.
#[tokio::test]
pub(super) async fn a_stack_trace_in_an_upstream_error_body_is_not_passed_on() {
    let app = Harness::in_process().start().await;
    for trace in [BUN_TRACE, BUN_INLINE] {
        *app.fake.faults().prompt_error.lock().unwrap() = Some(trace.to_string());
        let r = app.chat(&ask(ECHO, "describe this")).await;
        r.assert_error(502, Some("upstream_error"), None, "prompt refused");
        assert_scrubbed(r.body["error"]["message"].as_str().unwrap(), trace);
    }
}

/// `prompt_async` refused with a plain-text body that is nothing but a stack trace: it is not
/// forwarded at all (the 502 names the HTTP status instead).
#[tokio::test]
pub(super) async fn a_non_json_upstream_error_body_is_not_passed_on() {
    let app = Harness::in_process().start().await;
    *app.fake.faults().prompt_error_raw.lock().unwrap() = Some(BUN_TRACE.to_string());
    let r = app.chat(&ask(ECHO, "describe this")).await;
    r.assert_error(502, Some("upstream_error"), None, "plain-text error body");
    let message = r.body["error"]["message"].as_str().unwrap();
    for internal in ["$bunfs", ".js:", "chunk-abc", "bad image"] {
        assert!(!message.contains(internal), "{message:?}");
    }
}

/// A run failing with a `session.error` whose message carries a Bun stack trace: the
/// non-streaming 502, the stream's final error event, and the Responses API's 502 all keep
/// "bad image" and none of the frames.
#[tokio::test]
pub(super) async fn a_stack_trace_in_a_session_error_is_not_passed_on() {
    let app = Harness::in_process().start().await;
    for trace in [BUN_TRACE, BUN_INLINE] {
        *app.fake.faults().run_error.lock().unwrap() =
            Some(json!({"name": "UnknownError", "data": {"message": trace}}));

        let r = app.chat(&ask(ECHO, &format!("chat {trace}"))).await;
        r.assert_error(502, Some("upstream_error"), None, "session.error");
        assert_scrubbed(r.body["error"]["message"].as_str().unwrap(), "chat");

        let r = app
            .chat(&streaming(ask(ECHO, &format!("stream {trace}"))))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let payloads = parse_sse_data(r.body.as_str().expect("an SSE body"));
        let event = final_error(&payloads);
        assert_scrubbed(event["error"]["message"].as_str().unwrap(), "stream");

        let body = json!({"model": ECHO, "input": format!("responses {trace}")});
        let r = app.post_raw("/v1/responses", body.to_string(), &[]).await;
        r.assert_error(502, None, None, "responses");
        assert_scrubbed(r.body["error"]["message"].as_str().unwrap(), "responses");
    }
    assert_eq!(app.fake.prompts().len(), 6, "every request reached the run");
}
