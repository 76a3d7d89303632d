//! The rest of OpenCode's server API behind the gateway (providers, commands and shell, code
//! intelligence, tools/LSP/formatters/MCP, session extras, config), against a real
//! `opencode serve` over a small fixture project the test writes, and the scripted mock model.
//!
//! Keys (every gateway here has the same three): `surface-admin` (role admin),
//! `surface-scoped` (client, `directories` lists the project), `surface-plain` (client, no
//! project scope).
//!
//! One test per behaviour, on two kinds of bed (see `surface` and `session_extras` for which share one):
//! - [`surface`]: one OpenCode serving the fixture project (files with known contents, a
//!   subdirectory, a directory of pages, a git repository, a symlink `out` leading outside),
//!   with two gateways over it: `locked` (every `admin.allow_*` switch off) and `open`
//!   (`allow_execution` and `allow_config_patch` on). Scenarios: every route of the surface for
//!   each key and without one; project scope and traversal attempts; search and listing results
//!   against the fixture; providers; commands; tools, language servers and formatters; MCP
//!   servers with a local MCP server the test starts; execution off and on (with its audit
//!   line); OpenCode's configuration.
//! - [`session_extras`] (OpenCode's own tools on): a session whose turns write a file, a todo
//!   list and start a sub-agent through OpenCode's tools: message by id, children, todo, diff,
//!   revert/unrevert round trips (the file goes and comes back), a failed summary reported as
//!   such; another session where summarize shrinks what the next turn sends the model; share
//!   off.
//!
//! Text search needs ripgrep: OpenCode uses `rg` from PATH, else downloads it (impossible
//! offline). Without `rg` the text-search assertions are skipped with a notice, unless
//! `PORTATEK_REQUIRE_TOOLS=1` (CI), where they fail. Likewise git for the VCS assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

use support::api::read_json;
use support::gateway::test_client;
use support::mock_model::turns_of;
use support::shared::BedLogs;
use support::{ask, assert_error, Gateway, GatewayOptions, MockModel, OpenCode};
use support::{BedPool, Harness, ECHO};

const ADMIN: &str = "sk-surface-admin-1";
const SCOPED: &str = "sk-surface-scoped-2";
const PLAIN: &str = "sk-surface-plain-3";
const ADMIN_NAME: &str = "surface-admin";
/// The mock provider's API key in OpenCode's config: must never leave the gateway.
const PROVIDER_SECRET: &str = "sk-provider-secret-5c1e";
/// An MCP header secret in OpenCode's config: must never leave the gateway either.
const MCP_SECRET: &str = "Bearer mcp-secret-77ad";
/// The one line of the fixture that text search must find.
const NEEDLE: &str = "kumquat-surface-7731";
/// The content of the file outside the project (behind the `out` symlink).
const OUTSIDE_SECRET: &str = "outside-secret-3391";
/// Log filter of the gateways: the gateway's own debug lines and the audit lines.
const RUST_LOG: &str = "portatek_gateway=debug";

const LIB_RS: &str =
    "pub fn surface_alpha() -> u32 {\n    41 + 1\n}\n\n// needle: kumquat-surface-7731\n";
const UTIL_RS: &str = "pub fn surface_beta() {}\n";
const README: &str = "# Surface fixture\n\nA small project for the gateway's tests.\n";
/// Files of `pages/` (paging).
const PAGES: usize = 5;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

use support::tools_required;

/// Whether `program` runs (`program --version`).
fn available(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `what` (needing `program`) can be checked; a notice when not, a failure when the
/// tools are required.
fn can_check(program: &str, what: &str) -> bool {
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
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", nanos & 0xffff_ffff_ffff)
}

fn git(dir: &Path, args: &[&str]) {
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
fn git_commit_all(dir: &Path) -> bool {
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
fn write_fixture(project: &Path, outside: &Path) -> bool {
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
fn gateway_config(project: &Path, extra: &str) -> String {
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

async fn start_gateway(opencode: &OpenCode, config: String) -> Gateway {
    let opts = GatewayOptions::default()
        .config(config)
        .env("RUST_LOG", RUST_LOG);
    Gateway::start_with(&opencode.url(), opts).await
}

/// One request to `gw` as `key` (none: no `Authorization`), with optional JSON body and
/// extra headers → (status, JSON body).
async fn send_to(
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

async fn get(gw: &Gateway, key: &str, path: &str) -> (StatusCode, Value) {
    send_to(gw, Some(key), Method::GET, path, None, &[]).await
}

async fn post(gw: &Gateway, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    send_to(gw, Some(key), Method::POST, path, Some(body), &[]).await
}

/// The body of a 2xx answer (panics with it otherwise).
#[track_caller]
fn ok(what: &str, (status, body): (StatusCode, Value)) -> Value {
    assert!(status.is_success(), "{what}: {status} {body}");
    body
}

/// Asserts a 403 `permission_denied`.
#[track_caller]
fn assert_denied(what: &str, (status, body): (StatusCode, Value)) {
    assert_error(status, &body, 403, Some("permission_denied"), None, what);
}

/// Asserts a 400 naming `param`.
#[track_caller]
fn assert_invalid(what: &str, (status, body): &(StatusCode, Value), param: &str) {
    assert_error(*status, body, 400, None, Some(param), what);
}

/// The `data` array of a list answer.
#[track_caller]
fn data(v: &Value) -> &Vec<Value> {
    assert_eq!(v["object"], "list", "not a list: {v}");
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {v}"))
}

/// A new explicit session of `key` → its id.
async fn new_session(gw: &Gateway, key: &str) -> String {
    let v = ok(
        "create session",
        send_to(gw, Some(key), Method::POST, "/v1/sessions", None, &[]).await,
    );
    v["id"].as_str().expect("session id").to_string()
}

/// One turn in `session` as `key` → the reply text.
async fn turn(gw: &Gateway, key: &str, session: &str, text: &str) -> String {
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
async fn messages(gw: &Gateway, key: &str, session: &str) -> Vec<Value> {
    let v = ok(
        "messages",
        get(gw, key, &format!("/v1/sessions/{session}/messages")).await,
    );
    data(&v).clone()
}

/// Ids of the session's user messages, in order.
async fn user_message_ids(gw: &Gateway, key: &str, session: &str) -> Vec<String> {
    messages(gw, key, session)
        .await
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A local MCP server (streamable HTTP, JSON answers): `initialize`, `tools/list` with one tool,
// notifications accepted.
// ---------------------------------------------------------------------------------------------

/// The fixture MCP server's one tool.
const MCP_TOOL: &str = "surface_probe";

struct McpFixture {
    url: String,
    /// Methods received, in order.
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for McpFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl McpFixture {
    async fn start() -> McpFixture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/mcp",
                routing::post(mcp_handle)
                    .get(|| async { AxumStatus::METHOD_NOT_ALLOWED })
                    .delete(|| async { AxumStatus::OK }),
            )
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        McpFixture { url, seen, task }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn mcp_handle(State(seen): State<Arc<Mutex<Vec<String>>>>, body: Bytes) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return AxumStatus::BAD_REQUEST.into_response();
    };
    let method = msg["method"].as_str().unwrap_or_default().to_string();
    seen.lock().unwrap().push(method.clone());
    let Some(id) = msg.get("id").filter(|id| !id.is_null()) else {
        return AxumStatus::ACCEPTED.into_response();
    };
    let result = match method.as_str() {
        "initialize" => json!({
            "protocolVersion": msg["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "surface-fixture", "version": "1.0.0"},
        }),
        "tools/list" => json!({"tools": [{
            "name": MCP_TOOL,
            "description": "A fixture tool.",
            "inputSchema": {"type": "object", "properties": {}},
        }]}),
        "ping" => json!({}),
        _ => {
            return Json(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "method not found"}}))
            .into_response()
        }
    };
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

// ---------------------------------------------------------------------------------------------
// Bed 1: the surface over the fixture project
// ---------------------------------------------------------------------------------------------

/// The OpenCode config additions of the surface bed: the provider secret, a custom command,
/// and a disabled MCP server with a secret header.
fn surface_opencode_config() -> Value {
    json!({
        "provider": {"mock": {"options": {"apiKey": PROVIDER_SECRET}}},
        "command": {"surface-hello": {
            "template": "Say hello to $ARGUMENTS",
            "description": "Greets someone",
        }},
        "mcp": {"configured": {
            "type": "remote",
            "url": "http://127.0.0.1:9/mcp",
            "enabled": false,
            "headers": {"Authorization": MCP_SECRET},
        }},
    })
}

struct Surface {
    // Field order = drop order: gateways first, then OpenCode, then the model and servers.
    /// Every `admin.allow_*` off.
    locked: Gateway,
    /// `allow_execution` and `allow_config_patch` on.
    open: Gateway,
    opencode: OpenCode,
    mock: MockModel,
    mcp: McpFixture,
    /// The directory `out` leads to.
    outside: TempDir,
    /// Whether the project is a git repository.
    git: bool,
}

impl Surface {
    fn project(&self) -> PathBuf {
        self.opencode.project_dir()
    }

    fn project_str(&self) -> String {
        self.project().to_str().unwrap().to_string()
    }
}

/// The surface bed: a real OpenCode over the fixture project, a locked gateway, an open one
/// (execution and config patches allowed) and the MCP fixture server.
async fn surface_bed() -> Surface {
    let mock = MockModel::start().await;
    let opencode = Harness::real()
        .opencode_config(surface_opencode_config())
        .start_opencode(&mock)
        .await;
    let outside = tempfile::Builder::new()
        .prefix("surface-outside-")
        .tempdir()
        .unwrap();
    let git = write_fixture(&opencode.project_dir(), outside.path());
    let project = opencode.project_dir();
    let (locked, open, mcp) = tokio::join!(
        start_gateway(&opencode, gateway_config(&project, "")),
        start_gateway(
            &opencode,
            gateway_config(
                &project,
                "[admin]\nallow_execution = true\nallow_config_patch = true\n"
            )
        ),
        McpFixture::start(),
    );
    Surface {
        locked,
        open,
        opencode,
        mock,
        mcp,
        outside,
        git,
    }
}

impl BedLogs for Surface {
    fn logs(&self) -> String {
        format!(
            "--- locked gateway ---\n{}\n--- open gateway ---\n{}",
            self.locked.logs(),
            self.open.logs()
        )
    }
}

/// The surface's behaviours. Those that only read share a bed; those that change what the
/// others read (run shell lines, add MCP servers, patch the config, call every route) have
/// their own.
mod surface {
    use super::*;

    static BED: BedPool<Surface> = BedPool::new();

    /// A private bed for a test that changes it, with the log tail on failure.
    fn own_bed<F: std::future::Future<Output = ()>>(test: impl FnOnce(&'static Surface) -> F) {
        // A pool of its own is a bed of its own: nothing else borrows it.
        let pool: &'static BedPool<Surface> = Box::leak(Box::new(BedPool::new()));
        pool.run(surface_bed, test);
    }

    #[test]
    fn listing_and_search_match_the_fixture() {
        BED.run(surface_bed, super::listing_and_search_match_the_fixture);
    }

    #[test]
    fn paging() {
        BED.run(surface_bed, super::paging);
    }

    #[test]
    fn paths_outside_the_project_are_refused() {
        BED.run(surface_bed, super::paths_outside_the_project_are_refused);
    }

    #[test]
    fn project_scope() {
        BED.run(surface_bed, super::project_scope);
    }

    #[test]
    fn every_route_by_key() {
        own_bed(super::every_route_by_key);
    }

    #[test]
    fn providers() {
        BED.run(surface_bed, super::providers);
    }

    #[test]
    fn commands_are_listed() {
        BED.run(surface_bed, super::commands_are_listed);
    }

    #[test]
    fn tools_lsp_and_formatters() {
        BED.run(surface_bed, super::tools_lsp_and_formatters);
    }

    #[test]
    fn mcp_servers() {
        own_bed(super::mcp_servers);
    }

    #[test]
    fn execution_is_off_by_default() {
        BED.run(surface_bed, super::execution_is_off_by_default);
    }

    #[test]
    fn execution_when_allowed() {
        own_bed(super::execution_when_allowed);
    }

    #[test]
    fn configuration() {
        own_bed(super::configuration);
    }
}

/// Directory listing, file content, file and text search, file status, VCS and project info
/// answer what the fixture holds.
async fn listing_and_search_match_the_fixture(bed: &Surface) {
    let gw = &bed.locked;
    for key in [ADMIN, SCOPED] {
        // The root and `src/`.
        let root = ok("list root", get(gw, key, "/v1/files").await);
        let names: BTreeSet<&str> = data(&root)
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        for want in ["README.md", "src", "pages", "opencode.json"] {
            assert!(names.contains(want), "{key}: root lists {names:?}");
        }
        let src = ok("list src", get(gw, key, "/v1/files?path=src").await);
        let entries: BTreeSet<(&str, &str)> = data(&src)
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
            .collect();
        assert_eq!(
            entries,
            BTreeSet::from([("lib.rs", "file"), ("util.rs", "file")]),
            "{key}: src/ lists {src}"
        );
        assert_eq!(src["has_more"], false, "{src}");

        // Content.
        let file = ok(
            "file content",
            get(gw, key, "/v1/files/content?path=src/lib.rs").await,
        );
        assert_eq!(file["object"], "file", "{file}");
        assert_eq!(file["path"], "src/lib.rs", "{file}");
        assert_eq!(file["truncated"], false, "{file}");
        let content = file["file"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}"));
        assert_eq!(
            content.trim_end(),
            LIB_RS.trim_end(),
            "{key}: content of src/lib.rs"
        );

        // File search.
        let found = ok("find files", get(gw, key, "/v1/find/files?q=util.rs").await);
        let paths: Vec<&str> = data(&found).iter().filter_map(Value::as_str).collect();
        assert!(paths.contains(&"src/util.rs"), "{key}: find files: {found}");

        // Symbol search answers a list (no language server here: possibly empty).
        let symbols = ok(
            "find symbols",
            get(gw, key, "/v1/find/symbols?q=surface_alpha").await,
        );
        data(&symbols);
    }

    // Text search: the one line with the needle, where it is.
    if can_check("rg", "text search results") {
        let found = ok(
            "find text",
            get(gw, SCOPED, &format!("/v1/find/text?q={NEEDLE}")).await,
        );
        let hits = data(&found);
        assert_eq!(hits.len(), 1, "find text: {found}");
        assert_eq!(hits[0]["path"]["text"], "src/lib.rs", "{found}");
        assert_eq!(hits[0]["line_number"], 5, "{found}");
        assert!(
            hits[0]["lines"]["text"].as_str().unwrap().contains(NEEDLE),
            "{found}"
        );
        let none = ok(
            "find text (no match)",
            get(gw, SCOPED, "/v1/find/text?q=no-such-text-anywhere-0042").await,
        );
        assert!(data(&none).is_empty(), "{none}");
    }
    let empty = get(gw, ADMIN, "/v1/find/text?q=%20").await;
    assert_invalid("find text with an empty q", &empty, "q");

    if bed.git {
        // VCS and project info.
        let vcs = ok("vcs", get(gw, SCOPED, "/v1/vcs").await);
        assert_eq!(vcs["branch"], "surface-main", "{vcs}");
        let project = ok("project", get(gw, SCOPED, "/v1/project").await);
        assert_eq!(project["object"], "project", "{project}");
        assert_eq!(project["project"]["vcs"], "git", "{project}");
        let canonical = bed.project().canonicalize().unwrap();
        for (field, v) in [
            ("project.worktree", &project["project"]["worktree"]),
            ("paths.directory", &project["paths"]["directory"]),
        ] {
            let got = PathBuf::from(v.as_str().unwrap_or_else(|| panic!("{field}: {project}")));
            assert_eq!(got.canonicalize().unwrap(), canonical, "{field}: {project}");
        }

        // File status: OpenCode's own answer (the pinned version lists no changes in this
        // setup, even for a modified tracked file), as a page.
        std::fs::write(
            bed.project().join("README.md"),
            format!("{README}changed\n"),
        )
        .unwrap();
        let status = ok("file status", get(gw, SCOPED, "/v1/files/status").await);
        let raw = bed.opencode.get_json("/file/status").await;
        assert_eq!(
            data(&status),
            raw.as_array().unwrap(),
            "file status: {status}"
        );
        std::fs::write(bed.project().join("README.md"), README).unwrap();
    } else {
        ok("vcs", get(gw, SCOPED, "/v1/vcs").await);
        ok("project", get(gw, SCOPED, "/v1/project").await);
    }
}

/// `limit`/`offset` page listings (`has_more`, `next_offset`), and bad limits are 400s.
async fn paging(bed: &Surface) {
    let gw = &bed.locked;
    for (what, base) in [
        ("directory listing", "/v1/files?path=pages"),
        ("file search", "/v1/find/files?q=page-"),
    ] {
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let page = ok(
                what,
                get(gw, ADMIN, &format!("{base}&limit=2&offset={offset}")).await,
            );
            let items = data(&page);
            // File names (file search also finds the directory `pages/`).
            seen.extend(items.iter().filter_map(|e| {
                let path = e.as_str().or_else(|| e["name"].as_str()).unwrap();
                let name = path.rsplit('/').next().unwrap();
                (!name.is_empty()).then(|| name.to_string())
            }));
            if page["has_more"] == true {
                assert_eq!(items.len(), 2, "{what}: a full page: {page}");
                assert_eq!(page["next_offset"], offset + 2, "{what}: {page}");
                offset += 2;
            } else {
                assert!(page["next_offset"].is_null(), "{what}: {page}");
                break;
            }
            assert!(offset < 20, "{what}: paging does not end");
        }
        let want: Vec<String> = (0..PAGES).map(|i| format!("page-{i}.txt")).collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, want, "{what}: pages held {seen:?}");
        let past = ok(
            what,
            get(gw, ADMIN, &format!("{base}&limit=2&offset=100")).await,
        );
        assert!(data(&past).is_empty(), "{what}: past the end: {past}");
        assert_eq!(past["has_more"], false, "{past}");
    }
    for bad in ["limit=0", "limit=1001"] {
        let r = get(gw, ADMIN, &format!("/v1/files?path=pages&{bad}")).await;
        assert_invalid(&format!("/v1/files?{bad}"), &r, "limit");
    }
}

/// `..`, absolute paths, a symlink leading out, percent-encoded dots and separators and
/// backslashes are 400s naming `path`, on listing and content, and nothing of the outside
/// directory comes back.
async fn paths_outside_the_project_are_refused(bed: &Surface) {
    let gw = &bed.locked;
    let outside = bed.outside.path().to_str().unwrap().to_string();
    let attempts = [
        "..",
        "../",
        "../secret.txt",
        "/etc/passwd",
        outside.as_str(),
        "a/../../x",
        "src/../../secret.txt",
        "out",
        "out/secret.txt",
        "out/../out/secret.txt",
        "%2e%2e/secret.txt",
        "..%2fsecret.txt",
        "src%2f..%2f..%2fsecret.txt",
        "%2E%2E",
        "..\\secret.txt",
        "src\\lib.rs",
        "x\u{0}y",
    ];
    for key in [ADMIN, SCOPED] {
        for path in attempts {
            for route in ["/v1/files", "/v1/files/content"] {
                let url = reqwest::Url::parse_with_params(
                    &format!("{}{route}", gw.url()),
                    &[("path", path)],
                )
                .unwrap();
                let resp = test_client()
                    .get(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap();
                let r = read_json(resp).await;
                assert_invalid(&format!("{route} path={path:?} as {key}"), &r, "path");
                assert!(
                    !r.1.to_string().contains(OUTSIDE_SECRET),
                    "{route} {path:?} leaked the outside file: {}",
                    r.1
                );
            }
        }
    }
    // Single-encoded in the URL itself: the query decodes to `../secret.txt`.
    for raw in [
        "/v1/files/content?path=%2e%2e%2fsecret.txt",
        "/v1/files/content?path=%2E%2E/secret.txt",
        "/v1/files?path=..%2F",
    ] {
        let r = get(gw, ADMIN, raw).await;
        assert_invalid(raw, &r, "path");
    }
    // The same names inside the project are fine: the checks are about where a path leads.
    let inside = ok(
        "content of a file inside",
        get(gw, ADMIN, "/v1/files/content?path=./src/lib.rs").await,
    );
    assert!(inside["file"]["content"].as_str().unwrap().contains(NEEDLE));
    // A directory is not a file's content: a 400 naming `path` (OpenCode itself answers 500).
    for dir in [".", "src", "./src/"] {
        let r = get(gw, ADMIN, &format!("/v1/files/content?path={dir}")).await;
        assert_invalid(&format!("content of directory {dir:?}"), &r, "path");
    }
    // The symlink itself is there for OpenCode (the listing shows it); only reading through
    // it is refused.
    assert!(bed.project().join("out/secret.txt").exists());
}

/// Project scope: the plain client key may not read the project (403), the scoped one may,
/// but only its listed directories; a bad directory header is a 400.
async fn project_scope(bed: &Surface) {
    let gw = &bed.locked;
    let project = bed.project_str();
    let outside = bed.outside.path().to_str().unwrap().to_string();
    assert_denied(
        "plain key lists the project",
        get(gw, PLAIN, "/v1/files").await,
    );
    let r = send_to(
        gw,
        Some(PLAIN),
        Method::GET,
        "/v1/files",
        None,
        &[("x-opencode-directory", &project)],
    )
    .await;
    assert_denied("plain key naming the project", r);
    let r = send_to(
        gw,
        Some(SCOPED),
        Method::GET,
        "/v1/files",
        None,
        &[("x-opencode-directory", &project)],
    )
    .await;
    ok("scoped key naming its project", r);
    let r = send_to(
        gw,
        Some(SCOPED),
        Method::GET,
        "/v1/files",
        None,
        &[("x-opencode-directory", &outside)],
    )
    .await;
    assert_denied("scoped key naming another directory", r.clone());
    assert!(!r.1.to_string().contains("secret.txt"), "{}", r.1);
    let r = send_to(
        gw,
        Some(SCOPED),
        Method::GET,
        "/v1/files",
        None,
        &[("x-opencode-directory", &format!("{project}/../x"))],
    )
    .await;
    assert_error(r.0, &r.1, 400, None, None, "directory header with `..`");
    // An admin may read any directory: the outside one lists its file.
    let r = send_to(
        gw,
        Some(ADMIN),
        Method::GET,
        "/v1/files",
        None,
        &[("x-opencode-directory", &outside)],
    )
    .await;
    let listed = ok("admin naming another directory", r);
    assert!(
        data(&listed).iter().any(|e| e["name"] == "secret.txt"),
        "{listed}"
    );
}

/// What one key gets on one route.
#[derive(Clone, Copy)]
struct Expect {
    admin: u16,
    scoped: u16,
    plain: u16,
}

/// Admin 2xx, clients too.
const ANY: Expect = Expect {
    admin: 200,
    scoped: 200,
    plain: 200,
};
/// Admin only.
const ADMIN_ONLY: Expect = Expect {
    admin: 200,
    scoped: 403,
    plain: 403,
};
/// Admin and keys whose scope lists the project.
const PROJECT: Expect = Expect {
    admin: 200,
    scoped: 200,
    plain: 403,
};
/// Off on this gateway: 403 for everyone.
const OFF: Expect = Expect {
    admin: 403,
    scoped: 403,
    plain: 403,
};

/// One row of the route table; `{sid}` and `{mid}` stand for the calling key's own session
/// and its first user message.
struct Row {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    expect: Expect,
}

fn row(method: Method, path: &'static str, body: Option<Value>, expect: Expect) -> Row {
    Row {
        method,
        path,
        body,
        expect,
    }
}

/// Every route of the surface on the locked gateway: with no key and an unknown key 401;
/// the admin key 2xx (except what a switch turns off); client keys 403 `permission_denied`
/// where the route needs the admin role or project scope, 2xx elsewhere (their own sessions).
/// Then the same for the switched routes on the open gateway, and sessions of other keys.
async fn every_route_by_key(bed: &Surface) {
    let gw = &bed.locked;
    let fixture_mcp = json!({"name": "table", "config": {"type": "remote", "url": bed.mcp.url}});
    let oauth = Expect {
        // Passes the gate (0: anything but 401/403), then OpenCode refuses OAuth for a provider
        // without it (its 400 is the client's 400, its 500 a 502): a real OAuth flow needs a
        // real provider's servers.
        admin: 0,
        ..ADMIN_ONLY
    };
    let text_search = if can_check("rg", "text search results in the route table") {
        PROJECT
    } else {
        // Passes the gate, then OpenCode cannot run ripgrep.
        Expect {
            admin: 502,
            scoped: 502,
            plain: 403,
        }
    };
    let rows = vec![
        row(Method::GET, "/v1/providers", None, ANY),
        row(Method::POST, "/v1/providers/refresh", None, ADMIN_ONLY),
        row(
            Method::PUT,
            "/v1/providers/surfacefake/auth",
            Some(json!({"type": "api", "key": "sk-surfacefake"})),
            ADMIN_ONLY,
        ),
        row(
            Method::POST,
            "/v1/providers/mock/oauth/authorize",
            Some(json!({"method": 0})),
            oauth,
        ),
        row(
            Method::POST,
            "/v1/providers/mock/oauth/callback",
            Some(json!({"method": 0, "code": "x"})),
            oauth,
        ),
        row(Method::GET, "/v1/commands", None, ANY),
        row(
            Method::POST,
            "/v1/sessions/{sid}/command",
            Some(json!({"command": "surface-hello", "arguments": "table"})),
            OFF,
        ),
        row(
            Method::POST,
            "/v1/sessions/{sid}/shell",
            Some(json!({"command": "echo table"})),
            OFF,
        ),
        row(Method::GET, "/v1/find/text?q=surface", None, text_search),
        row(Method::GET, "/v1/find/files?q=lib", None, PROJECT),
        row(Method::GET, "/v1/find/symbols?q=surface", None, PROJECT),
        row(Method::GET, "/v1/files?path=src", None, PROJECT),
        row(
            Method::GET,
            "/v1/files/content?path=README.md",
            None,
            PROJECT,
        ),
        row(Method::GET, "/v1/files/status", None, PROJECT),
        row(Method::GET, "/v1/vcs", None, PROJECT),
        row(Method::GET, "/v1/project", None, PROJECT),
        row(Method::GET, "/v1/tools", None, PROJECT),
        row(
            Method::GET,
            "/v1/tools/definitions?model=mock/echo",
            None,
            PROJECT,
        ),
        row(Method::GET, "/v1/lsp", None, PROJECT),
        row(Method::GET, "/v1/formatters", None, PROJECT),
        row(Method::GET, "/v1/mcp", None, PROJECT),
        row(Method::POST, "/v1/mcp", Some(fixture_mcp), ADMIN_ONLY),
        row(Method::POST, "/v1/mcp/table/disconnect", None, ADMIN_ONLY),
        row(Method::POST, "/v1/mcp/table/connect", None, ADMIN_ONLY),
        row(Method::GET, "/v1/config", None, ADMIN_ONLY),
        row(
            Method::PATCH,
            "/v1/config",
            Some(json!({"username": "table"})),
            OFF,
        ),
        row(Method::GET, "/v1/sessions/{sid}/children", None, ANY),
        row(Method::GET, "/v1/sessions/{sid}/todo", None, ANY),
        row(Method::GET, "/v1/sessions/{sid}/diff", None, ANY),
        row(Method::GET, "/v1/sessions/{sid}/messages/{mid}", None, ANY),
        row(
            Method::POST,
            "/v1/sessions/{sid}/summarize",
            Some(json!({"model": ECHO})),
            ANY,
        ),
        row(
            Method::POST,
            "/v1/sessions/{sid}/revert",
            Some(json!({"message_id": "{mid}"})),
            ANY,
        ),
        row(Method::POST, "/v1/sessions/{sid}/unrevert", None, ANY),
        row(Method::POST, "/v1/sessions/{sid}/share", None, OFF),
        row(Method::DELETE, "/v1/sessions/{sid}/share", None, OFF),
    ];

    // Each key's own session with one turn.
    let own: Vec<(&str, String, String)> =
        futures::future::join_all([ADMIN, SCOPED, PLAIN].map(|key| async move {
            let sid = new_session(gw, key).await;
            turn(gw, key, &sid, &format!("table turn of {key}")).await;
            let mid = user_message_ids(gw, key, &sid).await.remove(0);
            (key, sid, mid)
        }))
        .await;
    let fill = |s: &str, sid: &str, mid: &str| s.replace("{sid}", sid).replace("{mid}", mid);

    // Row by row (some change what later rows see); the five callers of a row at once.
    for r in &rows {
        let calls = [None, Some("sk-not-a-key")]
            .into_iter()
            .map(|key| (key, &own[0].1, &own[0].2, 401))
            .chain(own.iter().enumerate().map(|(i, (key, sid, mid))| {
                let want = [r.expect.admin, r.expect.scoped, r.expect.plain][i];
                (Some(*key), sid, mid, want)
            }));
        let answers = futures::future::join_all(calls.map(|(key, sid, mid, want)| {
            let path = fill(r.path, sid, mid);
            let body = r
                .body
                .as_ref()
                .map(|b| serde_json::from_str::<Value>(&fill(&b.to_string(), sid, mid)).unwrap());
            async move {
                let answer = send_to(gw, key, r.method.clone(), &path, body.as_ref(), &[]).await;
                (format!("{} {path} as {key:?}", r.method), want, answer)
            }
        }))
        .await;
        for (what, want, (st, v)) in answers {
            match want {
                200 => assert!(st.is_success(), "{what}: {st} {v}"),
                401 => assert_error(st, &v, 401, Some("invalid_api_key"), None, &what),
                403 => assert_denied(&what, (st, v)),
                0 => assert!(
                    !matches!(st.as_u16(), 401 | 403) && v["error"].is_object(),
                    "{what}: should pass the gate and fail upstream: {st} {v}"
                ),
                other => assert_error(st, &v, other, None, None, &what),
            }
        }
    }

    // The switched routes where the switch is on: admin 2xx, clients still 403.
    let open = &bed.open;
    let switched = [
        (
            Method::POST,
            "/v1/sessions/{sid}/shell",
            json!({"command": "echo switched"}),
        ),
        (
            Method::POST,
            "/v1/sessions/{sid}/command",
            json!({"command": "surface-hello", "arguments": "switched"}),
        ),
        (Method::PATCH, "/v1/config", json!({"username": "switched"})),
    ];
    let switched = &switched;
    futures::future::join_all([ADMIN, SCOPED, PLAIN].map(|key| async move {
        let sid = new_session(open, key).await;
        for (method, path, body) in switched {
            let path = path.replace("{sid}", &sid);
            let r = send_to(open, Some(key), method.clone(), &path, Some(body), &[]).await;
            let what = format!("{method} {path} as {key} (switch on)");
            if key == ADMIN {
                ok(&what, r);
            } else {
                assert_denied(&what, r);
            }
            let (st, v) = send_to(open, None, method.clone(), &path, Some(body), &[]).await;
            assert_error(st, &v, 401, Some("invalid_api_key"), None, &what);
        }
    }))
    .await;

    // Another key's session: 404, as for one that does not exist (admins see every one).
    let (_, admin_sid, admin_mid) = &own[0];
    for key in [SCOPED, PLAIN] {
        for path in [
            format!("/v1/sessions/{admin_sid}/children"),
            format!("/v1/sessions/{admin_sid}/todo"),
            format!("/v1/sessions/{admin_sid}/diff"),
            format!("/v1/sessions/{admin_sid}/messages/{admin_mid}"),
        ] {
            let (st, v) = get(gw, key, &path).await;
            assert_error(st, &v, 404, None, None, format!("{path} as {key}"));
        }
        let (st, v) = post(
            gw,
            key,
            &format!("/v1/sessions/{admin_sid}/unrevert"),
            &json!({}),
        )
        .await;
        assert_error(st, &v, 404, None, None, format!("unrevert as {key}"));
    }
    let (_, plain_sid, plain_mid) = &own[2];
    ok(
        "admin reads a client's message",
        get(
            gw,
            ADMIN,
            &format!("/v1/sessions/{plain_sid}/messages/{plain_mid}"),
        )
        .await,
    );
}

/// `GET /v1/providers`: the mock provider, connected, with its models and default, and no
/// secret anywhere; other providers not connected. `POST /v1/providers/refresh` answers the
/// model count of the catalog, which `/v1/models` then shows.
async fn providers(bed: &Surface) {
    let gw = &bed.locked;
    // (OpenCode takes about a second to answer this: the three keys at once.)
    let lists =
        futures::future::join_all([ADMIN, SCOPED, PLAIN].map(|key| get(gw, key, "/v1/providers")))
            .await;
    for r in lists {
        let list = ok("providers", r);
        let text = list.to_string();
        assert!(
            !text.contains(PROVIDER_SECRET),
            "provider secret leaked: {text}"
        );
        assert!(!text.contains("apiKey"), "provider options leaked");
        let all = data(&list);
        let mock = all
            .iter()
            .find(|p| p["id"] == "mock")
            .unwrap_or_else(|| panic!("no mock provider: {list}"));
        assert_eq!(mock["object"], "provider");
        assert_eq!(mock["name"], "Mock");
        assert_eq!(mock["connected"], true, "{mock}");
        let models: BTreeSet<&str> = mock["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            models,
            BTreeSet::from(["mock/echo", "mock/vision", "mock/thinker"]),
            "{mock}"
        );
        assert!(mock["default_model"].is_string(), "{mock}");
        assert!(
            all.iter().any(|p| p["connected"] == false),
            "no provider is shown as not connected: {list}"
        );
    }
    let refreshed = ok(
        "refresh",
        post(gw, ADMIN, "/v1/providers/refresh", &json!({})).await,
    );
    assert_eq!(refreshed["object"], "catalog", "{refreshed}");
    let models = ok("models", get(gw, ADMIN, "/v1/models").await);
    assert_eq!(
        refreshed["models"].as_u64().unwrap() as usize,
        data(&models).len(),
        "refresh count vs /v1/models: {models}"
    );
    assert!(refreshed["models"].as_u64().unwrap() >= 3, "{refreshed}");
    for key in [SCOPED, PLAIN] {
        assert_denied(
            "client refresh",
            post(gw, key, "/v1/providers/refresh", &json!({})).await,
        );
        let r = send_to(
            gw,
            Some(key),
            Method::PUT,
            "/v1/providers/mock/auth",
            Some(&json!({"type": "api", "key": "sk-from-a-client"})),
            &[],
        )
        .await;
        assert_denied("client sets provider auth", r);
        assert_denied(
            "client starts OAuth",
            post(
                gw,
                key,
                "/v1/providers/mock/oauth/authorize",
                &json!({"method": 0}),
            )
            .await,
        );
    }
    // A provider id that cannot be one is a 404 before OpenCode is asked.
    let r = send_to(
        gw,
        Some(ADMIN),
        Method::PUT,
        "/v1/providers/bad%20id/auth",
        Some(&json!({"type": "api", "key": "k"})),
        &[],
    )
    .await;
    assert_error(
        r.0,
        &r.1,
        404,
        Some("provider_not_found"),
        None,
        "bad provider id",
    );
}

/// `GET /v1/commands` lists OpenCode's commands, the project's own included.
async fn commands_are_listed(bed: &Surface) {
    let list = ok("commands", get(&bed.locked, PLAIN, "/v1/commands").await);
    let hello = data(&list)
        .iter()
        .find(|c| c["id"] == "surface-hello")
        .unwrap_or_else(|| panic!("no surface-hello: {list}"));
    assert_eq!(hello["object"], "command");
    assert_eq!(hello["description"], "Greets someone");
    assert!(data(&list).iter().any(|c| c["id"] == "init"), "{list}");
}

/// Tool ids and definitions (with their schemas) as OpenCode has them; language servers and
/// formatters as lists; an unknown model is a 404.
async fn tools_lsp_and_formatters(bed: &Surface) {
    let gw = &bed.locked;
    let ids = ok("tool ids", get(gw, SCOPED, "/v1/tools").await);
    let ids: BTreeSet<&str> = data(&ids).iter().filter_map(Value::as_str).collect();
    for want in ["bash", "read", "edit", "write"] {
        assert!(ids.contains(want), "tool ids: {ids:?}");
    }
    let defs = ok(
        "tool definitions",
        get(gw, SCOPED, "/v1/tools/definitions?model=mock/echo").await,
    );
    let read = data(&defs)
        .iter()
        .find(|d| d["id"] == "read")
        .unwrap_or_else(|| panic!("no read tool: {defs}"));
    assert!(
        read["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{read}"
    );
    assert_eq!(read["parameters"]["type"], "object", "{read}");
    let raw = bed
        .opencode
        .get_json("/experimental/tool?provider=mock&model=echo")
        .await;
    assert_eq!(
        data(&defs),
        raw.as_array().unwrap(),
        "definitions as OpenCode has them"
    );
    let (st, v) = get(gw, SCOPED, "/v1/tools/definitions?model=mock/nope").await;
    assert_error(
        st,
        &v,
        404,
        Some("model_not_found"),
        None,
        "definitions of an unknown model",
    );
    let (st, v) = get(gw, SCOPED, "/v1/tools/definitions").await;
    assert_error(st, &v, 400, None, None, "definitions without a model");
    for path in ["/v1/lsp", "/v1/formatters"] {
        let list = ok(path, get(gw, SCOPED, path).await);
        data(&list);
    }
}

/// MCP servers: adding the local fixture server connects it (OpenCode initialized it and
/// listed its tools); the list shows it and the configured one, never a gateway's own slots
/// (`ptk…`, registered here directly in OpenCode as another gateway would); disconnect and
/// connect switch it; `ptk…` names and bad names are refused; clients may not manage.
async fn mcp_servers(bed: &Surface) {
    let gw = &bed.locked;
    // A slot of some gateway, straight into OpenCode.
    let slot = "ptk0a1b2c00";
    let (st, v) = bed
        .opencode
        .post_json(
            "/mcp",
            &json!({"name": slot, "config": {"type": "remote", "url": bed.mcp.url}}),
        )
        .await;
    assert!(st.is_success(), "register a slot-like server: {st} {v}");
    let raw = bed.opencode.get_json("/mcp").await;
    assert!(raw.get(slot).is_some(), "OpenCode lists the slot: {raw}");

    let added = ok(
        "add fixture",
        post(
            gw,
            ADMIN,
            "/v1/mcp",
            &json!({"name": "fixture", "config": {"type": "remote", "url": bed.mcp.url}}),
        )
        .await,
    );
    assert_eq!(added["name"], "fixture", "{added}");
    assert_eq!(added["object"], "mcp_server", "{added}");
    assert_eq!(added["status"]["status"], "connected", "{added}");
    let seen = bed.mcp.seen();
    assert!(
        seen.iter().any(|m| m == "initialize") && seen.iter().any(|m| m == "tools/list"),
        "the fixture server was asked {seen:?}"
    );

    let status_of = |list: &Value, name: &str| -> Value {
        data(list)
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    };
    for key in [ADMIN, SCOPED] {
        let list = ok("mcp status", get(gw, key, "/v1/mcp").await);
        assert_eq!(status_of(&list, "fixture"), "connected", "{list}");
        assert_eq!(status_of(&list, "configured"), "disabled", "{list}");
        assert!(
            data(&list)
                .iter()
                .all(|s| !s["name"].as_str().unwrap().starts_with("ptk")),
            "a gateway slot is shown: {list}"
        );
        assert!(!list.to_string().contains("mcp-secret"), "{list}");
    }

    let off = ok(
        "disconnect",
        post(gw, ADMIN, "/v1/mcp/fixture/disconnect", &json!({})).await,
    );
    assert_eq!(off["connected"], false, "{off}");
    let list = ok("mcp status", get(gw, ADMIN, "/v1/mcp").await);
    assert_ne!(status_of(&list, "fixture"), "connected", "{list}");
    let on = ok(
        "connect",
        post(gw, ADMIN, "/v1/mcp/fixture/connect", &json!({})).await,
    );
    assert_eq!(on["connected"], true, "{on}");
    let list = ok("mcp status", get(gw, ADMIN, "/v1/mcp").await);
    assert_eq!(status_of(&list, "fixture"), "connected", "{list}");

    // The gateway's own names, and names that cannot be one.
    for name in ["ptk", "ptkmine", slot, "ptk0a1b2c01"] {
        let r = post(
            gw,
            ADMIN,
            "/v1/mcp",
            &json!({"name": name, "config": {"type": "remote", "url": bed.mcp.url}}),
        )
        .await;
        assert_invalid(&format!("add {name}"), &r, "name");
    }
    for verb in ["connect", "disconnect"] {
        let r = post(gw, ADMIN, &format!("/v1/mcp/{slot}/{verb}"), &json!({})).await;
        assert_invalid(&format!("{verb} {slot}"), &r, "name");
    }
    let r = post(
        gw,
        ADMIN,
        "/v1/mcp",
        &json!({"name": "bad name", "config": {"type": "remote", "url": bed.mcp.url}}),
    )
    .await;
    assert_invalid("add a bad name", &r, "name");
    let r = post(
        gw,
        ADMIN,
        "/v1/mcp",
        &json!({"name": "x", "config": "nope"}),
    )
    .await;
    assert_invalid("add with a non-object config", &r, "config");
    // The slot is still there in OpenCode, untouched.
    let raw = bed.opencode.get_json("/mcp").await;
    assert_eq!(raw[slot]["status"], "connected", "{raw}");

    // Clients may look (with scope) but not manage.
    for key in [SCOPED, PLAIN] {
        let r = post(
            gw,
            key,
            "/v1/mcp",
            &json!({"name": "client", "config": {"type": "remote", "url": bed.mcp.url}}),
        )
        .await;
        assert_denied("client adds an MCP server", r);
        assert_denied(
            "client disconnects",
            post(gw, key, "/v1/mcp/fixture/disconnect", &json!({})).await,
        );
    }
    let raw = bed.opencode.get_json("/mcp").await;
    assert!(raw.get("client").is_none(), "{raw}");
    assert_eq!(raw["fixture"]["status"], "connected", "{raw}");
}

/// With `admin.allow_execution` off (the default), shell lines and commands are 403 even for
/// the admin key, and nothing runs.
async fn execution_is_off_by_default(bed: &Surface) {
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
async fn execution_when_allowed(bed: &Surface) {
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
async fn configuration(bed: &Surface) {
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

// ---------------------------------------------------------------------------------------------
// Bed 2: session extras
// ---------------------------------------------------------------------------------------------

struct Extras {
    gateway: Gateway,
    opencode: OpenCode,
    mock: MockModel,
}

/// The session-extras bed: OpenCode over a git project with a README, tools on, edits allowed.
async fn extras_bed() -> Extras {
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

/// Revert/unrevert and summarize: each edits its session's files and history, on its own bed.
mod session_extras {
    use super::*;

    #[test]
    fn revert_and_unrevert_round_trip() {
        static BED: BedPool<Extras> = BedPool::new();
        BED.run(extras_bed, super::revert_and_unrevert_round_trip);
    }

    #[test]
    fn summarize_shrinks_the_history() {
        static BED: BedPool<Extras> = BedPool::new();
        BED.run(extras_bed, super::summarize_shrinks_the_history);
    }
}

/// A session with three turns, the second writing `notes.txt` through OpenCode's `write` tool,
/// the third writing a todo list and starting a sub-agent (`todowrite` and `task`): message by
/// id; children (the sub-agent's session), todo (the list) and diff (as OpenCode has it);
/// revert to the second user message (the file is gone, the session says reverted) and
/// unrevert (it is back, same messages); share off. Its summary fails (the model answers the
/// summary request with a tool call, as the markers of the turns are in the transcript
/// OpenCode summarizes): a 502, not a success.
async fn revert_and_unrevert_round_trip(bed: &Extras) {
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
async fn summarize_shrinks_the_history(bed: &Extras) {
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
