//! OpenCode asking before `bash`, answered by each permission policy (the steps of
//! `permission_policies`).

use super::*;

// ---------------------------------------------------------------------------------------------
// Permission policies
// ---------------------------------------------------------------------------------------------

/// How long a run whose permission request is answered by policy may take, in the test (the
/// gateway's own deadline is far longer, so a run left waiting fails here rather than there).
pub(super) const POLICY_RUN_SECS: u64 = 25;

/// The gateway of the permission bed: OpenCode's tools on, a long run deadline, `policy`.
pub(super) fn policy_toml(policy: &str, extra: &str) -> String {
    format!(
        "[prompt]\ntools_enabled = true\ndeadline_secs = 240\n\n[permissions]\npolicy = \"{policy}\"\n{extra}"
    )
}

/// With `client`: two keys that may use OpenCode's tools (the first in directory B too).
pub(super) const C1: &str = "client-one-key";
pub(super) const C2: &str = "client-two-key";

pub(super) fn client_policy_toml(timeout_secs: u64, b: &str) -> String {
    format!(
        "{}timeout_secs = {timeout_secs}\n\n[[auth.keys]]\nname = \"c1\"\nkey = \"{C1}\"\ntools = true\ndirectories = [\"{b}\"]\n\n[[auth.keys]]\nname = \"c2\"\nkey = \"{C2}\"\ntools = true\n",
        policy_toml("client", "")
    )
}

/// OpenCode asks before every `bash` command (`"permission": {"bash": "ask"}`): without an
/// answer such a run waits forever. Each policy must end every such run, promptly.
/// A bed whose OpenCode asks before `bash`, project `dir-b`, the gateway configured by `toml`
/// (given `dir-b`'s path).
pub(super) async fn ask_bed(toml: fn(&str) -> String) -> TestBed {
    ask_bed_on(Harness::real(), toml).await
}

/// [`ask_bed`] in front of OpenCode 2.x.
pub(super) async fn ask_bed_v2(toml: fn(&str) -> String) -> TestBed {
    ask_bed_on(Harness::real().v2(), toml).await
}

async fn ask_bed_on(harness: support::harness::Real, toml: fn(&str) -> String) -> TestBed {
    harness
        .opencode_config(json!({"permission": {"bash": "ask"}}))
        .projects(&["dir-b"])
        .gateway_for(move |dirs| gateway_config(&toml(&dirs[0])))
        .start()
        .await
}

pub(super) async fn deny_bed() -> TestBed {
    ask_bed(|_| policy_toml("deny", "")).await
}

pub(super) async fn allow_bed() -> TestBed {
    ask_bed(|_| policy_toml("allow", "allow = [\"bash:touch allowed-*\"]\n")).await
}

pub(super) async fn client_bed() -> TestBed {
    ask_bed(|b| client_policy_toml(2, b)).await
}

pub(super) async fn deny_bed_v2() -> TestBed {
    ask_bed_v2(|_| policy_toml("deny", "")).await
}

pub(super) async fn client_bed_v2() -> TestBed {
    ask_bed_v2(|b| client_policy_toml(2, b)).await
}

/// A run whose `bash` call OpenCode wants permission for, as `key` with headers, bounded by
/// [`POLICY_RUN_SECS`]: (answer text, session, how long it took).
pub(super) async fn bash_run(
    bed: &TestBed,
    key: Option<&str>,
    headers: &[(&str, &str)],
    marker: &str,
    command: &str,
) -> (String, String, Duration) {
    let started = Instant::now();
    let body = ask(ECHO, &bash_prompt(marker, command));
    let out = within(POLICY_RUN_SECS, marker, chat_as(bed, key, headers, &body)).await;
    let (text, session) = answered(marker, out);
    (text, session, started.elapsed())
}

/// `deny`: the `bash` call is rejected at once, never runs, and the model gets the rejection
/// as the tool's result and answers.
pub(super) async fn deny_tells_the_model_and_carries_on(bed: &TestBed) {
    let marker = bed.opencode.project_dir().join("denied.txt");
    let (text, _, took) = bash_run(bed, None, &[], "deny policy", "touch denied.txt").await;
    assert!(
        text.starts_with("echo tool results: call_0_0=") && says_rejected(&text),
        "the model must be told: {text}"
    );
    let results = tool_results(&model_call(bed, "deny policy"));
    assert!(
        results.len() == 1 && says_rejected(&results[0]),
        "tool results the model got: {results:?}"
    );
    assert!(!marker.exists(), "a denied command ran");
    assert!(took < Duration::from_secs(15), "deny took {took:?}");
    assert!(
        bed.gateway
            .logs()
            .contains("answering a permission request by policy"),
        "no log line for the policy's answer"
    );
}

/// `deny` in a project directory other than OpenCode's own: the answer must reach the
/// OpenCode instance of that directory, or the run waits until its deadline.
pub(super) async fn deny_works_in_another_project_directory(bed: &TestBed, b: &str) {
    let headers = [("x-opencode-directory", b)];
    let (text, session, _) = bash_run(bed, None, &headers, "deny in B", "touch denied-b.txt").await;
    assert!(says_rejected(&text), "{text}");
    assert_eq!(upstream_session(bed, &session).await["directory"], b);
    assert!(
        !Path::new(b).join("denied-b.txt").exists(),
        "a denied command ran"
    );
}

/// OpenCode's `question` tool asks the user, who is not there: `deny` rejects it at once and
/// the run ends. A run that ends after OpenCode's own tools must not claim client tool calls.
pub(super) async fn deny_rejects_a_question_at_once(bed: &TestBed) {
    let args = json!({"questions": [{"question": "Which one?", "header": "Pick",
        "options": [{"label": "A", "description": "a"}, {"label": "B", "description": "b"}]}]});
    let started = Instant::now();
    let body = ask(ECHO, &format!("ask me [call:question:{args}]"));
    let (status, _, v) = within(POLICY_RUN_SECS, "question", chat_as(bed, None, &[], &body)).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        bed.gateway.logs().contains("kind=\"question\""),
        "the question was not answered by policy"
    );
    let choice = &v["choices"][0];
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        choice["finish_reason"] != "tool_calls" || calls > 0,
        "finish_reason tool_calls without any tool call for the client: {v}"
    );
}

/// `allow`: a command the allowlist names runs for real (its effect is there, the model gets
/// its output); one it does not name is rejected.
pub(super) async fn allow_runs_only_the_allowlisted_command(bed: &TestBed) {
    let project = bed.opencode.project_dir();
    let (text, _, _) = bash_run(bed, None, &[], "allow policy", "touch allowed-1.txt").await;
    assert!(
        project.join("allowed-1.txt").exists(),
        "the allowed command did not run"
    );
    assert!(!text.contains("rejected"), "{text}");
    let results = tool_results(&model_call(bed, "allow policy"));
    assert!(
        results.len() == 1 && !results[0].contains("rejected"),
        "tool results the model got: {results:?}"
    );
    let (text, _, _) = bash_run(bed, None, &[], "not allowed", "touch other.txt").await;
    assert!(says_rejected(&text), "{text}");
    assert!(
        !project.join("other.txt").exists(),
        "a command off the allowlist ran"
    );
}

/// Reads a stream until its first `permission` activity: (the request it shows, frames so far).
pub(super) async fn until_permission(reader: &mut SseReader) -> (Value, Vec<Frame>) {
    let mut frames = Vec::new();
    loop {
        let frame = reader
            .next(Duration::from_secs(POLICY_RUN_SECS))
            .await
            .expect("the stream ended before the permission request was shown");
        frames.push(frame);
        if let Some(a) = activities(&frames[frames.len() - 1..]).pop() {
            if a["type"] == "permission" {
                return (a["request"].clone(), frames);
            }
        }
    }
}

/// The requests `key` sees waiting on a session.
pub(super) async fn waiting(bed: &TestBed, key: &str, session: &str) -> Vec<Value> {
    let (status, list) = get_as(
        bed,
        Some(key),
        &format!("/v1/sessions/{session}/permissions"),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list", "{list}");
    list["data"].as_array().cloned().unwrap_or_default()
}

/// `client`: the request shows on the caller's stream (activity opted in) and in
/// `GET /v1/sessions/{id}/permissions`; another key neither sees nor answers it; the caller's
/// `once` lets the command run and the run finish; the answer is audited.
pub(super) async fn client_answers_through_the_api(bed: &TestBed) {
    let body = ask(ECHO, &bash_prompt("client policy", "touch answered.txt"));
    let started = Instant::now();
    let (session, mut reader) =
        open_stream(bed, Some(C1), &[("x-opencode-activity", "1")], &body).await;
    let (asked, mut frames) = until_permission(&mut reader).await;
    let id = asked["id"].as_str().expect("request id").to_string();
    assert!(id.starts_with("per_"), "{asked}");
    assert_eq!(asked["kind"], "permission", "{asked}");
    assert_eq!(asked["permission"], "bash", "{asked}");
    assert_eq!(asked["patterns"], json!(["touch answered.txt"]), "{asked}");
    assert_eq!(asked["session_id"], session.as_str(), "{asked}");
    assert_eq!(waiting(bed, C1, &session).await, vec![asked.clone()]);

    // Another key's session is no session at all to c2, nor is a made-up one to c1: 404, as
    // on every other session route.
    for (key, id) in [(C2, session.as_str()), (C1, "ses_0000madeup0000000000000")] {
        let path = format!("/v1/sessions/{id}/permissions");
        let (status, err) = get_as(bed, Some(key), &path).await;
        assert_error(status, &err, 404, Some("session_not_found"), None, &path);
    }
    let path = format!("/v1/sessions/{session}/permissions/{id}");
    let (status, _, err) = post_as(bed, Some(C2), &path, &[], &json!({"reply": "once"})).await;
    assert_error(
        status,
        &err,
        404,
        Some("permission_not_found"),
        None,
        "c2 answering",
    );
    let (status, _, err) = post_as(bed, Some(C1), &path, &[], &json!({"reply": "maybe"})).await;
    assert_error(status, &err, 400, None, Some("reply"), "an unknown reply");
    assert!(
        !bed.opencode.project_dir().join("answered.txt").exists(),
        "the command ran before anyone answered"
    );

    let (status, _, ok) = post_as(bed, Some(C1), &path, &[], &json!({"reply": "once"})).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(
        ok,
        json!({"id": id, "object": "permission", "reply": "once"})
    );
    frames.extend(within(POLICY_RUN_SECS, "the answered run", reader.rest(FRAME_WAIT)).await);
    let streamed = check_ok_stream(frames, ECHO);
    assert!(started.elapsed() < Duration::from_secs(POLICY_RUN_SECS));
    assert!(
        !streamed.content.contains("rejected"),
        "{}",
        streamed.content
    );
    assert!(
        bed.opencode.project_dir().join("answered.txt").exists(),
        "the answered command did not run"
    );
    assert_eq!(
        waiting(bed, C1, &session).await,
        Vec::<Value>::new(),
        "still waiting"
    );
    let (status, _, err) = post_as(bed, Some(C1), &path, &[], &json!({"reply": "once"})).await;
    assert_error(
        status,
        &err,
        404,
        Some("permission_not_found"),
        None,
        "answering twice",
    );
    let logs = bed.gateway.logs();
    assert!(
        audit_lines(&logs)
            .iter()
            .any(|l| l.contains("permission answered")
                && l.contains("key=c1")
                && l.contains(&session)),
        "no audit line for the answer:\n{}",
        audit_lines(&logs).join("\n")
    );
}

/// `client`, nobody answering (in project directory B): the request is rejected after
/// `permissions.timeout_secs` (2 s here) — not sooner, not much later — and the model is told;
/// the run finishes.
pub(super) async fn client_silence_is_a_rejection_after_the_timeout(bed: &TestBed, b: &str) {
    let body = ask(ECHO, &bash_prompt("unanswered", "touch unanswered.txt"));
    let in_b = [("x-opencode-directory", b)];
    let started = Instant::now();
    let (session, mut reader) = open_stream(bed, Some(C1), &in_b, &body).await;
    // Without `x-opencode-activity` the stream shows nothing: the list is where to look.
    let shown = eventually(Duration::from_secs(POLICY_RUN_SECS), || async {
        !waiting(bed, C1, &session).await.is_empty()
    })
    .await;
    assert!(shown, "the request never showed in the permissions list");
    let shown_at = Instant::now();
    let frames = within(
        POLICY_RUN_SECS,
        "the unanswered run",
        reader.rest(FRAME_WAIT),
    )
    .await;
    let (since_shown, since_start) = (shown_at.elapsed(), started.elapsed());
    assert!(
        activities(&frames).is_empty(),
        "activity without the opt-in header"
    );
    let streamed = check_ok_stream(frames, ECHO);
    assert!(says_rejected(&streamed.content), "{}", streamed.content);
    // Asked after the request began, rejected 2 s after it was asked: not sooner, nor much later.
    assert!(
        since_start >= Duration::from_secs(2) && since_shown < Duration::from_secs(12),
        "rejected {since_shown:?} after it was shown, {since_start:?} after the request (timeout 2 s)"
    );
    assert!(!Path::new(b).join("unanswered.txt").exists());
    assert_eq!(waiting(bed, C1, &session).await, Vec::<Value>::new());
    assert_eq!(upstream_session(bed, &session).await["directory"], b);
}

/// The rest of a stream, with every permission activity it shows.
pub(super) async fn rest_with_activities(
    mut reader: SseReader,
    what: &str,
) -> (Vec<Frame>, Vec<Value>) {
    let frames = within(POLICY_RUN_SECS, what, reader.rest(FRAME_WAIT)).await;
    let asked = activities(&frames)
        .into_iter()
        .filter(|a| a["type"] == "permission")
        .collect();
    (frames, asked)
}

/// Issue 19: `always` binds the run that asked, for its rest, and nothing else. Answered
/// `always` on a run that calls `touch always-1.txt` twice, the second call is granted
/// without asking again; the next conversation of the same key, in the same project, running a
/// command OpenCode's `always` pattern (`touch *`) would cover, is asked again (before the fix
/// OpenCode kept the rule for the whole project and it ran unasked).
pub(super) async fn always_holds_for_the_rest_of_its_run_only(bed: &TestBed) {
    let activity = [("x-opencode-activity", "1")];
    let prompt = format!(
        "{} [sticky:2]",
        bash_prompt("always once", "touch always-1.txt")
    );
    let (session, mut reader) = open_stream(bed, Some(C1), &activity, &ask(ECHO, &prompt)).await;
    let (asked, mut frames) = until_permission(&mut reader).await;
    let path = format!(
        "/v1/sessions/{session}/permissions/{}",
        asked["id"].as_str().unwrap()
    );
    let (status, _, ok) = post_as(bed, Some(C1), &path, &[], &json!({"reply": "always"})).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["reply"], "always", "{ok}");
    let (rest, again) = rest_with_activities(reader, "the run answered always").await;
    assert!(again.is_empty(), "asked again within the run: {again:?}");
    frames.extend(rest);
    let streamed = check_ok_stream(frames, ECHO);
    assert!(
        !streamed.content.contains("rejected"),
        "{}",
        streamed.content
    );
    let results = tool_results(&model_call(bed, "always once"));
    assert!(
        results.iter().all(|r| !r.contains("rejected")),
        "tool results the model got: {results:?}"
    );
    assert!(bed.opencode.project_dir().join("always-1.txt").exists());

    let body = ask(ECHO, &bash_prompt("always later", "touch always-2.txt"));
    let (session, mut reader) = open_stream(bed, Some(C1), &activity, &body).await;
    let (asked, _) = until_permission(&mut reader).await;
    assert_eq!(asked["patterns"], json!(["touch always-2.txt"]), "{asked}");
    let path = format!(
        "/v1/sessions/{session}/permissions/{}",
        asked["id"].as_str().unwrap()
    );
    let (status, _, _) = post_as(bed, Some(C1), &path, &[], &json!({"reply": "reject"})).await;
    assert_eq!(status, 200);
    let _ = rest_with_activities(reader, "the later run").await;
    assert!(
        !bed.opencode.project_dir().join("always-2.txt").exists(),
        "an earlier run's `always` let a later conversation run unasked"
    );
}

/// An `always` given straight to OpenCode (another client, or a gateway before the fix) is a
/// project-wide rule in OpenCode's memory that would bypass any policy: a gateway started with
/// `permissions.reset_on_start` clears it, so `deny` holds again.
pub(super) async fn an_approval_saved_upstream_is_cleared_at_start(bed: &mut Bed, b: &str) {
    let activity = [("x-opencode-activity", "1")];
    let body = ask(ECHO, &bash_prompt("saved upstream", "touch saved-1.txt"));
    let (_, mut reader) = open_stream(bed, Some(C1), &activity, &body).await;
    let (asked, _) = until_permission(&mut reader).await;
    let id = asked["id"].as_str().unwrap();
    let (status, v) = bed
        .opencode
        .post_json(
            &format!("/permission/{id}/reply"),
            &json!({"reply": "always"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let _ = rest_with_activities(reader, "the run approved upstream").await;
    assert!(bed.opencode.project_dir().join("saved-1.txt").exists());

    let toml = format!(
        "{}reset_on_start = true\n\n[[auth.keys]]\nname = \"c1\"\nkey = \"{C1}\"\ntools = true\ndirectories = [\"{b}\"]\n",
        policy_toml("deny", "")
    );
    restart_gateway(bed, gateway_config(&toml)).await;
    let (text, _, _) = bash_run(bed, Some(C1), &[], "after reset", "touch saved-2.txt").await;
    assert!(says_rejected(&text), "{text}");
    assert!(
        !bed.opencode.project_dir().join("saved-2.txt").exists(),
        "an approval saved upstream outlived the gateway's restart with `deny`"
    );
    assert!(
        bed.gateway
            .logs()
            .contains("cleared OpenCode's saved permission approvals"),
        "no reset at start:\n{}",
        bed.gateway.logs()
    );
}
