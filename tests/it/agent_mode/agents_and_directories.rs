//! The agent and the project directory chosen per request within the key's scope; two
//! directories kept apart (the steps of `keys_agents_and_directories`).

use super::*;

/// How one request names (or does not name) its agent or directory: as which key, by which
/// headers, with which `metadata`.
pub(super) struct Pick<'a> {
    pub(super) key: &'a str,
    pub(super) headers: Vec<(&'a str, &'a str)>,
    pub(super) metadata: Option<Value>,
}

impl<'a> Pick<'a> {
    /// Names nothing: the key's default applies.
    pub(super) fn default(key: &'a str) -> Pick<'a> {
        Pick {
            key,
            headers: Vec::new(),
            metadata: None,
        }
    }

    /// Names `value` in the header `name`.
    pub(super) fn header(key: &'a str, name: &'a str, value: &'a str) -> Pick<'a> {
        Pick {
            headers: vec![(name, value)],
            ..Pick::default(key)
        }
    }

    /// Names `value` as `metadata.<field>`.
    pub(super) fn metadata(key: &'a str, field: &str, value: &str) -> Pick<'a> {
        Pick {
            metadata: Some(json!({ field: value })),
            ..Pick::default(key)
        }
    }

    /// `body` (a chat or Responses request) with this pick's metadata.
    pub(super) fn body(&self, mut body: Value) -> Value {
        if let Some(m) = &self.metadata {
            body["metadata"] = m.clone();
        }
        body
    }

    /// A chat completion `text` as this pick.
    pub(super) async fn chat(&self, bed: &TestBed, text: &str) -> (StatusCode, HeaderMap, Value) {
        chat_as(
            bed,
            Some(self.key),
            &self.headers,
            &self.body(ask(ECHO, text)),
        )
        .await
    }

    /// A Responses request `text` as this pick.
    pub(super) async fn respond(
        &self,
        bed: &TestBed,
        text: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let body = self.body(json!({"model": ECHO, "input": text}));
        post_as(bed, Some(self.key), "/v1/responses", &self.headers, &body).await
    }

    pub(super) fn describe(&self) -> String {
        format!("{} with {:?} {:?}", self.key, self.headers, self.metadata)
    }
}

/// The agent comes from `x-opencode-agent`, else `metadata.opencode_agent`, else the key's
/// default: the model gets that agent's prompt and OpenCode records it on the message (chat
/// and Responses alike). An agent outside the key's scope is 403 before anything reaches
/// OpenCode; the admin may use any.
pub(super) async fn agent_chosen_per_request_within_scope(bed: &TestBed) {
    const AGENT: &str = "x-opencode-agent";
    let cases = [
        (Pick::header(ALICE, AGENT, "reviewer"), "reviewer"),
        (
            Pick::metadata(ALICE, "opencode_agent", "reviewer"),
            "reviewer",
        ),
        (Pick::default(ALICE), "build"),
        (Pick::default(BOB), "auditor"),
        (Pick::header(OPS, AGENT, "auditor"), "auditor"),
    ];
    for (i, (pick, agent)) in cases.iter().enumerate() {
        let what = pick.describe();
        let marker = format!("agent case {i}");
        let (_, session) = answered(&what, pick.chat(bed, &marker).await);
        let system = system_prompt(&model_call(bed, &marker));
        assert_eq!(
            system.contains(REVIEWER_PROMPT),
            *agent == "reviewer",
            "{what}: {system}"
        );
        assert_eq!(
            system.contains(AUDITOR_PROMPT),
            *agent == "auditor",
            "{what}: {system}"
        );
        let recorded = agents_recorded(bed, &session).await;
        assert_eq!(recorded, BTreeSet::from([agent.to_string()]), "{what}");

        let marker = format!("agent case {i} via responses");
        let (status, headers, response) = pick.respond(bed, &marker).await;
        assert_eq!(status, 200, "{what}: {response}");
        let system = system_prompt(&model_call(bed, &marker));
        assert_eq!(
            system.contains(REVIEWER_PROMPT),
            *agent == "reviewer",
            "{what}: {system}"
        );
        let recorded = agents_recorded(bed, &session_of(&headers)).await;
        assert_eq!(
            recorded,
            BTreeSet::from([agent.to_string()]),
            "responses: {what}"
        );
    }

    let sessions = bed.opencode.session_ids().await.len();
    let calls = bed.mock.call_count();
    let refused = [
        Pick::header(ALICE, AGENT, "auditor"),
        Pick::metadata(ALICE, "opencode_agent", "auditor"),
        Pick::header(BOB, AGENT, "reviewer"),
        Pick::header(PLAIN, AGENT, "build"),
    ];
    for pick in &refused {
        let what = pick.describe();
        let (status, _, err) = pick.chat(bed, "refused agent").await;
        assert_error(status, &err, 403, Some("permission_denied"), None, &what);
        let (status, _, err) = pick.respond(bed, "refused agent").await;
        let what = format!("responses: {what}");
        assert_error(status, &err, 403, Some("permission_denied"), None, what);
    }
    assert_eq!(
        bed.mock.call_count(),
        calls,
        "a refused request reached the model"
    );
    assert_eq!(
        bed.opencode.session_ids().await.len(),
        sessions,
        "a refused request created a session"
    );
}

/// `GET /v1/agents` lists exactly what the key may select: its default and its scope (all of
/// OpenCode's agents but its hidden ones for the admin), the default marked.
pub(super) async fn agents_listed_per_key(bed: &TestBed) {
    let ids = |v: &Value| -> BTreeSet<String> {
        v["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no data: {v}"))
            .iter()
            .map(|a| {
                assert_eq!(a["object"], "agent", "{a}");
                a["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let (status, alice) = get_as(bed, Some(ALICE), "/v1/agents").await;
    assert_eq!(
        (status, ids(&alice)),
        (StatusCode::OK, set(&["reviewer"])),
        "{alice}"
    );
    let (_, bob) = get_as(bed, Some(BOB), "/v1/agents").await;
    assert_eq!(ids(&bob), set(&["auditor"]), "{bob}");
    assert_eq!(bob["data"][0]["default"], true, "bob's default: {bob}");
    assert_eq!(bob["data"][0]["description"], "Audits code", "{bob}");
    let (_, plain) = get_as(bed, Some(PLAIN), "/v1/agents").await;
    assert_eq!(ids(&plain), set(&[]), "{plain}");
    let (_, ops) = get_as(bed, Some(OPS), "/v1/agents").await;
    let all = ids(&ops);
    for agent in ["build", "plan", "reviewer", "auditor"] {
        assert!(all.contains(agent), "the admin's list lacks {agent}: {ops}");
    }
    // OpenCode's internal agents (hidden: title, summary, compaction) are nobody's to select.
    for hidden in ["title", "summary", "compaction"] {
        assert!(
            !all.contains(hidden),
            "the admin's list shows {hidden}: {ops}"
        );
    }
}

/// The directory comes from `x-opencode-directory`, else `metadata.opencode_directory`, else
/// the key's default: the session lives there and the run works there. A directory outside the
/// key's scope is 403, a relative or `..` one 400; explicit sessions are created in theirs and
/// pinned runs work in it.
pub(super) async fn directory_chosen_per_request_within_scope(bed: &TestBed, a: &str, b: &str) {
    const DIRECTORY: &str = "x-opencode-directory";
    let cases = [
        (Pick::header(ALICE, DIRECTORY, a), a),
        (Pick::metadata(ALICE, "opencode_directory", a), a),
        (Pick::default(BOB), b),
        (Pick::header(OPS, DIRECTORY, b), b),
    ];
    for (i, (pick, dir)) in cases.iter().enumerate() {
        let what = pick.describe();
        let marker = format!("directory case {i}");
        let (_, session) = answered(&what, pick.chat(bed, &marker).await);
        assert_eq!(
            upstream_session(bed, &session).await["directory"],
            *dir,
            "{what}"
        );
        assert_eq!(working_directory(&model_call(bed, &marker)), *dir, "{what}");
    }

    let calls = bed.mock.call_count();
    let outside = format!("{b}-sibling");
    let climbing = format!("{a}/../dir-b");
    let refused = [
        (Pick::header(ALICE, DIRECTORY, b), 403),
        (Pick::metadata(ALICE, "opencode_directory", b), 403),
        (Pick::header(BOB, DIRECTORY, a), 403),
        (Pick::header(PLAIN, DIRECTORY, &outside), 403),
        (Pick::header(ALICE, DIRECTORY, "relative/dir"), 400),
        (Pick::header(OPS, DIRECTORY, &climbing), 400),
    ];
    for (pick, code) in &refused {
        let (status, _, err) = pick.chat(bed, "refused directory").await;
        let want = (*code == 403).then_some("permission_denied");
        assert_error(status, &err, *code, want, None, pick.describe());
    }
    assert_eq!(
        bed.mock.call_count(),
        calls,
        "a refused request reached the model"
    );

    // Explicit sessions live in their directory, and runs pinned to them work there.
    let create = |key: &'static str, dir: &str| {
        let rb = request(
            bed,
            Some(key),
            Method::POST,
            "/v1/sessions",
            &[("x-opencode-directory", dir)],
        );
        send(rb)
    };
    let (status, _, err) = create(ALICE, b).await;
    assert_error(
        status,
        &err,
        403,
        Some("permission_denied"),
        None,
        "alice's session in B",
    );
    for (key, dir) in [(ALICE, a), (OPS, b)] {
        let (status, _, created) = create(key, dir).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        assert_eq!(
            upstream_session(bed, id).await["directory"],
            dir,
            "explicit session"
        );
        let marker = format!("pinned in {dir}");
        let (_, ran_on) = answered(
            "pinned run",
            chat_as(bed, Some(key), &[("x-session-id", id)], &ask(ECHO, &marker)).await,
        );
        assert_eq!(ran_on, id);
        assert_eq!(
            working_directory(&model_call(bed, &marker)),
            dir,
            "pinned run"
        );
    }
    // A pinned run naming another directory than its session's is refused, not moved.
    let (status, _, created) = create(OPS, b).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, _, body) = chat_as(
        bed,
        Some(OPS),
        &[("x-session-id", id), ("x-opencode-directory", a)],
        &ask(ECHO, "pinned elsewhere"),
    )
    .await;
    assert_error(
        status,
        &body,
        400,
        None,
        None,
        "pinned run in another directory",
    );
}

/// The same conversation in directories A and B, at the same time: two sessions, each stream
/// exactly its own answer (no event of one reaches the other); the next turn of each continues
/// the session of its own directory (affinity never crosses directories).
pub(super) async fn two_directories_kept_apart(bed: &TestBed, a: &str, b: &str) {
    let text = "same words in two places [slow:150] [chunks:4]";
    let turn1 = chat_body(ECHO, vec![user(text)]);
    let run = |dir: &str| {
        let headers = [("x-opencode-directory", dir.to_string())];
        let body = turn1.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (session, mut reader) = open_stream(bed, Some(OPS), &headers, &body).await;
            let frames = reader.rest(FRAME_WAIT).await;
            (session, check_ok_stream(frames, ECHO))
        }
    };
    let ((sa, in_a), (sb, in_b)) = within(60, "turn 1 in A and B", async {
        tokio::join!(run(a), run(b))
    })
    .await;
    let reply = format!("echo: {text}");
    assert_eq!(in_a.content, reply, "the stream in A");
    assert_eq!(in_b.content, reply, "the stream in B");
    assert_ne!(sa, sb, "one session for two directories");
    assert_eq!(upstream_session(bed, &sa).await["directory"], a);
    assert_eq!(upstream_session(bed, &sb).await["directory"], b);

    for (dir, first) in [(b, &sb), (a, &sa)] {
        let marker = format!("turn two in {dir}");
        let body = chat_body(ECHO, vec![user(text), assistant(&reply), user(&marker)]);
        let (_, session) = answered(
            &marker,
            chat_as(bed, Some(OPS), &[("x-opencode-directory", dir)], &body).await,
        );
        assert_eq!(
            &session, first,
            "{marker} must continue that directory's session"
        );
        assert_eq!(working_directory(&model_call(bed, &marker)), dir);
    }
}
