//! Helpers of the OpenCode-surface steps: the fixture project, the gateway's config, requests
//! and session turns.

use super::*;

pub(super) const ADMIN: &str = "sk-surface-admin-1";
pub(super) const SCOPED: &str = "sk-surface-scoped-2";
pub(super) const PLAIN: &str = "sk-surface-plain-3";
pub(super) const ADMIN_NAME: &str = "surface-admin";
/// The mock provider's API key in OpenCode's config: must never leave the gateway.
pub(super) const PROVIDER_SECRET: &str = "sk-provider-secret-5c1e";
/// An MCP header secret in OpenCode's config: must never leave the gateway either.
pub(super) const MCP_SECRET: &str = "Bearer mcp-secret-77ad";
/// The one line of the fixture that text search must find.
pub(super) const NEEDLE: &str = "kumquat-surface-7731";
/// The content of the file outside the project (behind the `out` symlink).
pub(super) const OUTSIDE_SECRET: &str = "outside-secret-3391";
/// Log filter of the gateways: the gateway's own debug lines and the audit lines.
pub(super) const RUST_LOG: &str = "portatek_gateway=debug";

pub(super) const LIB_RS: &str =
    "pub fn surface_alpha() -> u32 {\n    41 + 1\n}\n\n// needle: kumquat-surface-7731\n";
pub(super) const UTIL_RS: &str = "pub fn surface_beta() {}\n";
pub(super) const README: &str = "# Surface fixture\n\nA small project for the gateway's tests.\n";
/// Files of `pages/` (paging).
pub(super) const PAGES: usize = 5;

/// Whether `program` runs (`program --version`).
pub(super) fn available(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `what` (needing `program`) can be checked; a notice when not, a failure when the
/// tools are required.
pub(super) fn can_check(program: &str, what: &str) -> bool {
    if available(program) {
        return true;
    }
    assert!(
        !tools_required(),
        "`{program}` is missing (PORTATEK_REQUIRE_TOOLS=1): {what}"
    );
    eprintln!("[notice] `{program}` not found: skipping {what}");
    false
}

/// A token unique to this run (for markers in files and shell lines).
pub(super) fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", nanos & 0xffff_ffff_ffff)
}

pub(super) fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.email=surface@example.invalid",
            "-c",
            "user.name=surface",
            "-c",
            "init.defaultBranch=surface-main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `dir` a git repository with everything in it committed (branch `surface-main`);
/// false (with a notice) without git.
pub(super) fn git_commit_all(dir: &Path) -> bool {
    if !can_check("git", "VCS assertions") {
        return false;
    }
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "fixture"]);
    true
}

/// Writes the fixture project into `project` (next to OpenCode's `opencode.json`), with a
/// symlink `out` → `outside`; commits it when git is there (→ whether it did).
pub(super) fn write_fixture(project: &Path, outside: &Path) -> bool {
    let write = |rel: &str, text: &str| {
        let path = project.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("README.md", README);
    write("src/lib.rs", LIB_RS);
    write("src/util.rs", UTIL_RS);
    for i in 0..PAGES {
        write(&format!("pages/page-{i}.txt"), &format!("page {i}\n"));
    }
    std::fs::write(outside.join("secret.txt"), OUTSIDE_SECRET).unwrap();
    std::os::unix::fs::symlink(outside, project.join("out")).unwrap();
    git_commit_all(project)
}

/// The gateway config: the project as `opencode.directory`, the three keys, then `extra`.
pub(super) fn gateway_config(project: &Path, extra: &str) -> String {
    let dir = project.to_str().unwrap();
    format!(
        r#"
[opencode]
directory = "{dir}"

[[auth.keys]]
name = "{ADMIN_NAME}"
key = "{ADMIN}"
role = "admin"

[[auth.keys]]
name = "surface-scoped"
key = "{SCOPED}"
role = "client"
directories = ["{dir}"]

[[auth.keys]]
name = "surface-plain"
key = "{PLAIN}"
role = "client"

{extra}
"#
    )
}

pub(super) async fn start_gateway(opencode: &OpenCode, config: String) -> Gateway {
    let opts = GatewayOptions::default()
        .config(config)
        .env("RUST_LOG", RUST_LOG);
    Gateway::start_with(&opencode.url(), opts).await
}

/// One request to `gw` as `key` (none: no `Authorization`), with optional JSON body and
/// extra headers → (status, JSON body).
pub(super) async fn send_to(
    gw: &Gateway,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut rb = test_client().request(method.clone(), format!("{}{path}", gw.url()));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    for (name, value) in headers {
        rb = rb.header(*name, *value);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let resp = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    read_json(resp).await
}

pub(super) async fn get(gw: &Gateway, key: &str, path: &str) -> (StatusCode, Value) {
    send_to(gw, Some(key), Method::GET, path, None, &[]).await
}

pub(super) async fn post(gw: &Gateway, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    send_to(gw, Some(key), Method::POST, path, Some(body), &[]).await
}

/// The body of a 2xx answer (panics with it otherwise).
#[track_caller]
pub(super) fn ok(what: &str, (status, body): (StatusCode, Value)) -> Value {
    assert!(status.is_success(), "{what}: {status} {body}");
    body
}

/// Asserts a 403 `permission_denied`.
#[track_caller]
pub(super) fn assert_denied(what: &str, (status, body): (StatusCode, Value)) {
    assert_error(status, &body, 403, Some("permission_denied"), None, what);
}

/// Asserts a 400 naming `param`.
#[track_caller]
pub(super) fn assert_invalid(what: &str, (status, body): &(StatusCode, Value), param: &str) {
    assert_error(*status, body, 400, None, Some(param), what);
}

/// The `data` array of a list answer.
#[track_caller]
pub(super) fn data(v: &Value) -> &Vec<Value> {
    assert_eq!(v["object"], "list", "not a list: {v}");
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {v}"))
}

/// A new explicit session of `key` → its id.
pub(super) async fn new_session(gw: &Gateway, key: &str) -> String {
    let v = ok(
        "create session",
        send_to(gw, Some(key), Method::POST, "/v1/sessions", None, &[]).await,
    );
    v["id"].as_str().expect("session id").to_string()
}

/// One turn in `session` as `key` → the reply text.
pub(super) async fn turn(gw: &Gateway, key: &str, session: &str, text: &str) -> String {
    let v = ok(
        &format!("turn {text:?}"),
        send_to(
            gw,
            Some(key),
            Method::POST,
            "/v1/chat/completions",
            Some(&ask(ECHO, text)),
            &[("x-session-id", session)],
        )
        .await,
    );
    support::content(&v).to_string()
}

/// The session's messages as the gateway shows them.
pub(super) async fn messages(gw: &Gateway, key: &str, session: &str) -> Vec<Value> {
    let v = ok(
        "messages",
        get(gw, key, &format!("/v1/sessions/{session}/messages")).await,
    );
    data(&v).clone()
}

/// Ids of the session's user messages, in order.
pub(super) async fn user_message_ids(gw: &Gateway, key: &str, session: &str) -> Vec<String> {
    messages(gw, key, session)
        .await
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}
