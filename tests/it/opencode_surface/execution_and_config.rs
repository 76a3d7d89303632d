//! Execution (off by default, and when allowed) and configuration patches (the steps of
//! `surface`).

use super::*;

/// With `admin.allow_execution` off (the default), shell lines and commands are 403 even for
/// the admin key, and nothing runs.
pub(super) async fn execution_is_off_by_default(bed: &Surface) {
    let gw = &bed.locked;
    let marker = format!("locked-{}", unique());
    let file = format!("{marker}.txt");
    for key in [ADMIN, SCOPED, PLAIN] {
        let sid = new_session(gw, key).await;
        let calls = bed.mock.call_count();
        let r = post(
            gw,
            key,
            &format!("/v1/sessions/{sid}/shell"),
            &json!({"command": format!("echo {marker} > {file}")}),
        )
        .await;
        assert_denied(&format!("shell as {key}"), r);
        let r = post(
            gw,
            key,
            &format!("/v1/sessions/{sid}/command"),
            &json!({"command": "surface-hello", "arguments": marker}),
        )
        .await;
        assert_denied(&format!("command as {key}"), r);
        assert_eq!(bed.mock.call_count(), calls, "a command reached the model");
        let msgs = messages(gw, key, &sid).await;
        assert!(msgs.is_empty(), "the session got messages: {msgs:?}");
    }
    assert!(!bed.project().join(&file).exists(), "the shell line ran");
    assert!(
        !bed.locked.logs().contains(&marker),
        "audit line for a refused run"
    );
}

/// With `admin.allow_execution` on, the admin key's shell line runs in the project (the file
/// appears, the answer carries its output) and a command runs its template through the
/// model; both are audit-logged with the key's name. Client keys stay 403.
pub(super) async fn execution_when_allowed(bed: &Surface) {
    let gw = &bed.open;
    let marker = unique();
    let file = format!("shell-{marker}.txt");
    let sid = new_session(gw, ADMIN).await;
    let shell = ok(
        "shell",
        post(
            gw,
            ADMIN,
            &format!("/v1/sessions/{sid}/shell"),
            &json!({"command": format!("echo written-{marker} > {file}; echo printed-{marker}")}),
        )
        .await,
    );
    let written = std::fs::read_to_string(bed.project().join(&file))
        .unwrap_or_else(|e| panic!("the shell line did not write {file}: {e}; answer {shell}"));
    assert_eq!(written.trim(), format!("written-{marker}"));
    assert_eq!(shell["role"], "assistant", "{shell}");
    assert!(
        shell["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_")),
        "{shell}"
    );
    assert!(
        shell["content"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("printed-{marker}"))),
        "the shell answer carries the output: {shell}"
    );
    let logs = gw.logs();
    let audit = logs
        .lines()
        .find(|l| l.contains("shell run") && l.contains(&marker))
        .unwrap_or_else(|| panic!("no audit line for the shell run in:\n{logs}"));
    assert!(
        audit.contains(ADMIN_NAME),
        "audit line without the key name: {audit}"
    );
    assert!(
        !audit.contains(ADMIN),
        "audit line with the key itself: {audit}"
    );

    let calls = bed.mock.call_count();
    let command = ok(
        "command",
        post(
            gw,
            ADMIN,
            &format!("/v1/sessions/{sid}/command"),
            &json!({"command": "surface-hello", "arguments": format!("world-{marker}")}),
        )
        .await,
    );
    assert_eq!(command["role"], "assistant", "{command}");
    let reply = command["content"].as_str().unwrap_or_default();
    assert!(
        reply.contains(&format!("Say hello to world-{marker}")),
        "the command's template reached the model and came back: {command}"
    );
    assert!(
        bed.mock.call_count() > calls,
        "the command did not reach the model"
    );
    let logs = gw.logs();
    let audit = logs
        .lines()
        .find(|l| l.contains("command run") && l.contains(&sid))
        .unwrap_or_else(|| panic!("no audit line for the command in:\n{logs}"));
    assert!(audit.contains(ADMIN_NAME), "{audit}");
    assert!(audit.contains("surface-hello"), "{audit}");

    // Client keys, even on their own sessions, and even with project scope.
    for key in [SCOPED, PLAIN] {
        let own = new_session(gw, key).await;
        let r = post(
            gw,
            key,
            &format!("/v1/sessions/{own}/shell"),
            &json!({"command": format!("echo client > client-{marker}.txt")}),
        )
        .await;
        assert_denied(&format!("shell as {key}"), r);
    }
    assert!(!bed.project().join(format!("client-{marker}.txt")).exists());
}

/// `GET /v1/config` shows OpenCode's configuration with secrets masked (admin only);
/// `PATCH /v1/config` is 403 unless `admin.allow_config_patch`, and with it a harmless
/// change round-trips.
pub(super) async fn configuration(bed: &Surface) {
    let config = ok("config", get(&bed.locked, ADMIN, "/v1/config").await);
    let options = &config["provider"]["mock"]["options"];
    assert_eq!(options["apiKey"], "********", "{config}");
    assert!(
        options["baseURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "not a secret, not masked: {config}"
    );
    assert_eq!(
        config["mcp"]["configured"]["headers"]["Authorization"], "********",
        "{config}"
    );
    assert_eq!(
        config["command"]["surface-hello"]["description"],
        "Greets someone"
    );
    let text = config.to_string();
    assert!(
        !text.contains(PROVIDER_SECRET) && !text.contains(MCP_SECRET),
        "{text}"
    );
    for key in [SCOPED, PLAIN] {
        assert_denied(
            "client reads config",
            get(&bed.locked, key, "/v1/config").await,
        );
    }

    let marker = format!("surface-{}", unique());
    let patch = json!({"username": marker});
    let r = send_to(
        &bed.locked,
        Some(ADMIN),
        Method::PATCH,
        "/v1/config",
        Some(&patch),
        &[],
    )
    .await;
    assert_denied("patch with the switch off", r);
    let r = send_to(
        &bed.open,
        Some(SCOPED),
        Method::PATCH,
        "/v1/config",
        Some(&patch),
        &[],
    )
    .await;
    assert_denied("client patch with the switch on", r);
    let written = || {
        std::fs::read_dir(bed.project())
            .unwrap()
            .chain(
                std::fs::read_dir(bed.opencode.home_dir().join(".config/opencode"))
                    .into_iter()
                    .flatten(),
            )
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&marker)))
    };
    assert!(!written(), "a refused patch reached OpenCode");

    let patched = ok(
        "patch",
        send_to(
            &bed.open,
            Some(ADMIN),
            Method::PATCH,
            "/v1/config",
            Some(&patch),
            &[],
        )
        .await,
    );
    assert_eq!(patched["username"], marker, "{patched}");
    assert!(written(), "OpenCode did not store the patch");
    let r = send_to(
        &bed.open,
        Some(ADMIN),
        Method::PATCH,
        "/v1/config",
        Some(&json!([1])),
        &[],
    )
    .await;
    assert_error(r.0, &r.1, 400, None, None, "a patch that is not an object");
}
