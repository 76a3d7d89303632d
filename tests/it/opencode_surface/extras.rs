//! Reverting and summarizing sessions (the bed and steps of `session_extras`).

use super::*;

// ---------------------------------------------------------------------------------------------
// Bed 2: session extras
// ---------------------------------------------------------------------------------------------

pub(super) struct Extras {
    pub(super) gateway: Gateway,
    pub(super) opencode: OpenCode,
    pub(super) mock: MockModel,
}

/// The session-extras bed: OpenCode over a git project with a README, tools on, edits allowed.
pub(super) async fn extras_bed() -> Extras {
    let mock = MockModel::start().await;
    let opencode = Harness::real().start_opencode(&mock).await;
    let project = opencode.project_dir();
    std::fs::write(project.join("README.md"), README).unwrap();
    git_commit_all(&project);
    let config = gateway_config(
        &project,
        "[prompt]\ntools_enabled = true\n\n[permissions]\npolicy = \"allow\"\nallow = [\"edit\", \"write\", \"todowrite\", \"task\"]\n",
    );
    let gateway = start_gateway(&opencode, config).await;
    Extras {
        gateway,
        opencode,
        mock,
    }
}

impl BedLogs for Extras {
    fn logs(&self) -> String {
        self.gateway.logs()
    }
}

/// A session with three turns, the second writing `notes.txt` through OpenCode's `write` tool,
/// the third writing a todo list and starting a sub-agent (`todowrite` and `task`): message by
/// id; children (the sub-agent's session), todo (the list) and diff (as OpenCode has it);
/// revert to the second user message (the file is gone, the session says reverted) and
/// unrevert (it is back, same messages); share off. Its summary fails (the model answers the
/// summary request with a tool call, as the markers of the turns are in the transcript
/// OpenCode summarizes): a 502, not a success.
pub(super) async fn revert_and_unrevert_round_trip(bed: &Extras) {
    let gw = &bed.gateway;
    let project = bed.opencode.project_dir();
    let notes = project.join("notes.txt");
    let sid = new_session(gw, ADMIN).await;
    turn(gw, ADMIN, &sid, "first turn alpha").await;
    let write = json!({"filePath": notes.to_str().unwrap(), "content": "notes v1\n"});
    turn(
        gw,
        ADMIN,
        &sid,
        &format!("second turn beta [call:write:{write}]"),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap_or_default(),
        "notes v1\n",
        "the write tool did not run"
    );
    let todo =
        json!({"todos": [{"content": "surface todo", "status": "pending", "priority": "high"}]});
    let task = json!({"description": "surface child", "prompt": "child prompt", "subagent_type": "general"});
    turn(
        gw,
        ADMIN,
        &sid,
        &format!("third turn gamma [call:todowrite:{todo}] [call:task:{task}]"),
    )
    .await;
    let before = messages(gw, ADMIN, &sid).await;
    let users = user_message_ids(gw, ADMIN, &sid).await;
    assert_eq!(users.len(), 3, "{before:?}");

    // Message by id: the same message as in the list, with its raw parts.
    for m in &before {
        let id = m["id"].as_str().unwrap();
        let one = ok(
            "message by id",
            get(gw, ADMIN, &format!("/v1/sessions/{sid}/messages/{id}")).await,
        );
        assert_eq!(one["id"], id, "{one}");
        assert_eq!(one["role"], m["role"], "{one}");
        assert_eq!(one["content"], m["content"], "{one}");
        assert!(one["parts"].is_array(), "{one}");
    }
    let (st, v) = get(
        gw,
        ADMIN,
        &format!("/v1/sessions/{sid}/messages/msg_0000000000nope"),
    )
    .await;
    assert_error(
        st,
        &v,
        404,
        Some("message_not_found"),
        None,
        "unknown message",
    );
    let (st, v) = get(gw, ADMIN, &format!("/v1/sessions/{sid}/messages/not-an-id")).await;
    assert_error(
        st,
        &v,
        404,
        Some("message_not_found"),
        None,
        "malformed message id",
    );

    // Children, todo, diff: lists.
    let children = ok(
        "children",
        get(gw, ADMIN, &format!("/v1/sessions/{sid}/children")).await,
    );
    let kids = data(&children);
    assert_eq!(
        kids.len(),
        1,
        "the task tool's sub-agent session: {children}"
    );
    assert_eq!(kids[0]["object"], "session", "{children}");
    assert_eq!(kids[0]["parent_id"], sid.as_str(), "{children}");
    assert!(
        kids[0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("surface child")),
        "{children}"
    );
    let todo = ok(
        "todo",
        get(gw, ADMIN, &format!("/v1/sessions/{sid}/todo")).await,
    );
    assert_eq!(
        data(&todo),
        &vec![json!({"content": "surface todo", "status": "pending", "priority": "high"})],
        "the todowrite tool's list: {todo}"
    );
    let diff = ok(
        "diff",
        get(gw, ADMIN, &format!("/v1/sessions/{sid}/diff")).await,
    );
    let raw_diff = bed.opencode.get_json(&format!("/session/{sid}/diff")).await;
    assert_eq!(
        data(&diff),
        raw_diff.as_array().unwrap(),
        "diff as OpenCode has it"
    );

    // Revert to the second user message: the write is undone.
    let reverted = ok(
        "revert",
        post(
            gw,
            ADMIN,
            &format!("/v1/sessions/{sid}/revert"),
            &json!({"message_id": users[1]}),
        )
        .await,
    );
    assert_eq!(reverted["reverted"], true, "{reverted}");
    assert_eq!(
        reverted["revert"]["message_id"],
        users[1].as_str(),
        "{reverted}"
    );
    let upstream = bed.opencode.get_json(&format!("/session/{sid}")).await;
    assert_eq!(
        upstream["revert"]["messageID"],
        users[1].as_str(),
        "{upstream}"
    );
    assert!(!notes.exists(), "revert left notes.txt");
    let (st, v) = post(
        gw,
        ADMIN,
        &format!("/v1/sessions/{sid}/revert"),
        &json!({"message_id": "nope"}),
    )
    .await;
    assert_error(
        st,
        &v,
        400,
        None,
        Some("message_id"),
        "revert to a malformed id",
    );

    // Unrevert: all back.
    let back = ok(
        "unrevert",
        post(
            gw,
            ADMIN,
            &format!("/v1/sessions/{sid}/unrevert"),
            &json!({}),
        )
        .await,
    );
    assert_eq!(back["reverted"], false, "{back}");
    assert!(back["revert"].is_null(), "{back}");
    let upstream = bed.opencode.get_json(&format!("/session/{sid}")).await;
    assert!(upstream["revert"].is_null(), "{upstream}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap_or_default(),
        "notes v1\n",
        "unrevert did not bring notes.txt back"
    );
    assert_eq!(
        messages(gw, ADMIN, &sid).await,
        before,
        "messages after unrevert"
    );

    // Share: off.
    for method in [Method::POST, Method::DELETE] {
        let r = send_to(
            gw,
            Some(ADMIN),
            method,
            &format!("/v1/sessions/{sid}/share"),
            None,
            &[],
        )
        .await;
        assert_denied("share", r);
    }
    let upstream = bed.opencode.get_json(&format!("/session/{sid}")).await;
    assert!(upstream["share"].is_null(), "{upstream}");

    // A summary that fails is reported as failed.
    let (st, v) = post(
        gw,
        ADMIN,
        &format!("/v1/sessions/{sid}/summarize"),
        &json!({"model": ECHO}),
    )
    .await;
    assert_error(st, &v, 502, None, None, "a failed summary");
}

/// Summarize (compaction): the turn after it sends the model the summary instead of the
/// earlier turns, so fewer messages; OpenCode marks the summary message.
pub(super) async fn summarize_shrinks_the_history(bed: &Extras) {
    let gw = &bed.gateway;
    let sid = new_session(gw, ADMIN).await;
    for text in ["first turn alpha", "second turn beta", "third turn gamma"] {
        turn(gw, ADMIN, &sid, text).await;
    }
    let calls = bed.mock.call_count();
    turn(gw, ADMIN, &sid, "fourth turn delta").await;
    let full = turns_of(&bed.mock.requests()[calls..].last().cloned().unwrap());
    assert!(
        full.iter().any(|(_, t)| t.contains("first turn alpha")),
        "before summarize the model sees the first turn: {full:?}"
    );
    let calls = bed.mock.call_count();
    let summarized = ok(
        "summarize",
        post(
            gw,
            ADMIN,
            &format!("/v1/sessions/{sid}/summarize"),
            &json!({"model": ECHO}),
        )
        .await,
    );
    assert_eq!(summarized["summarized"], true, "{summarized}");
    assert_eq!(summarized["id"], sid.as_str(), "{summarized}");
    assert!(
        bed.mock.call_count() > calls,
        "summarize did not ask the model"
    );
    // OpenCode's summary message: the model's answer to the summary request.
    let raw = bed.opencode.messages(&sid).await;
    let summary = raw
        .iter()
        .find(|m| m["info"]["summary"] == true)
        .unwrap_or_else(|| panic!("no summary message upstream: {raw:?}"));
    assert!(summary["info"]["error"].is_null(), "{summary}");
    let summary_text: String = summary["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "text")
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert!(summary_text.starts_with("echo: "), "{summary}");

    let calls = bed.mock.call_count();
    turn(gw, ADMIN, &sid, "fifth turn epsilon").await;
    let after = turns_of(&bed.mock.requests()[calls..].last().cloned().unwrap());
    for earlier in ["first turn alpha", "second turn beta", "fourth turn delta"] {
        assert!(
            !after.contains(&("user".to_string(), earlier.to_string())),
            "after summarize the model still gets {earlier:?} as a message: {after:?}"
        );
    }
    assert!(
        after
            .iter()
            .any(|(role, t)| role == "assistant" && *t == summary_text),
        "after summarize the model does not get the summary: {after:?}"
    );
    assert!(
        after.len() < full.len(),
        "after summarize the model gets {} messages, before {}",
        after.len(),
        full.len()
    );
    assert_eq!(after.last().unwrap().1, "fifth turn epsilon", "{after:?}");
    let (st, v) = post(
        gw,
        ADMIN,
        &format!("/v1/sessions/{sid}/summarize"),
        &json!({"model": "mock/nope"}),
    )
    .await;
    assert_error(
        st,
        &v,
        404,
        Some("model_not_found"),
        None,
        "summarize with an unknown model",
    );
    let (st, v) = post(
        gw,
        ADMIN,
        &format!("/v1/sessions/{sid}/summarize"),
        &json!({}),
    )
    .await;
    assert_error(st, &v, 400, None, None, "summarize without a model");
}
