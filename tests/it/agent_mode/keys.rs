//! Key roles, digests, audit lines and `/status` (the steps of `keys_agents_and_directories`).

use super::*;

// ---------------------------------------------------------------------------------------------
// Keys, roles, agents and directories
// ---------------------------------------------------------------------------------------------

/// Admin, given by its SHA-256 only.
pub(super) const OPS: &str = "ops-secret-key";
/// Client: agent `reviewer` and directory A besides the defaults; OpenCode's tools on.
pub(super) const ALICE: &str = "alice-secret-key";
/// Client, given by its SHA-256: defaults agent `auditor` and directory B, nothing else.
pub(super) const BOB: &str = "bob-secret-key";
/// A plain `auth.api_keys` entry: client, no scope.
pub(super) const PLAIN: &str = "plain-secret-key";

pub(super) const REVIEWER_PROMPT: &str = "You are REVIEWER-7, a careful code reviewer.";
pub(super) const AUDITOR_PROMPT: &str = "You are AUDITOR-9, a strict auditor.";

/// Two custom agents with prompts the model can recognise.
pub(super) fn agents_config() -> Value {
    json!({"agent": {
        "reviewer": {"mode": "primary", "description": "Reviews code", "prompt": REVIEWER_PROMPT},
        "auditor": {"mode": "primary", "description": "Audits code", "prompt": AUDITOR_PROMPT},
    }})
}

pub(super) fn keys_toml(a: &str, b: &str) -> String {
    format!(
        r#"
[auth]
api_keys = ["{PLAIN}"]

[[auth.keys]]
name = "ops"
key_sha256 = "{ops}"
role = "admin"

[[auth.keys]]
name = "alice"
key = "{ALICE}"
agents = ["reviewer"]
directories = ["{a}"]
tools = true

[[auth.keys]]
name = "bob"
key_sha256 = "{bob}"
default_agent = "auditor"
default_directory = "{b}"
"#,
        ops = sha256_hex(OPS),
        bob = sha256_hex(BOB),
    )
}

/// Roles, digests, audit lines, agent and directory selection, two directories kept apart.
/// The bed of [`keys_agents_and_directories`]: projects `dir-a` and `dir-b`, keys scoped to them.
pub(super) async fn keys_bed() -> TestBed {
    keys_bed_on(Harness::real()).await
}

/// [`keys_bed`] in front of OpenCode 2.x.
pub(super) async fn keys_bed_v2() -> TestBed {
    keys_bed_on(Harness::real().v2()).await
}

async fn keys_bed_on(harness: support::harness::Real) -> TestBed {
    harness
        .opencode_config(agents_config())
        .projects(&["dir-a", "dir-b"])
        .gateway_for(|dirs| gateway_config(&keys_toml(&dirs[0], &dirs[1])))
        .start()
        .await
}

/// Unknown or missing keys are 401; keys configured by digest are accepted (the digest itself is
/// no key); `GET /v1/events?directory=` is 403 `permission_denied` for every client key and 200
/// for the admin; the admin sees another key's explicit session, which other clients do not.
pub(super) async fn roles_and_digests(bed: &TestBed, a: &str) {
    for (key, what) in [
        (None, "no key"),
        (Some("not-a-key"), "an unknown key"),
        (
            Some(sha256_hex(OPS).as_str()),
            "the admin key's digest itself",
        ),
        (Some("ops"), "a key's name"),
    ] {
        let (status, body) = get_as(bed, key, "/v1/models").await;
        assert_error(status, &body, 401, Some("invalid_api_key"), None, what);
    }
    for key in [OPS, BOB, ALICE, PLAIN] {
        let (status, body) = get_as(bed, Some(key), "/v1/models").await;
        assert_eq!(status, 200, "{key}: {body}");
    }
    let admin_route = format!("/v1/events?directory={a}");
    for key in [ALICE, BOB, PLAIN] {
        let (status, body) = get_as(bed, Some(key), &admin_route).await;
        assert_error(
            status,
            &body,
            403,
            Some("permission_denied"),
            None,
            format!("client {key} on {admin_route}"),
        );
        assert_eq!(body["error"]["type"], "permission_error", "{body}");
    }
    let resp = request(bed, Some(OPS), Method::GET, &admin_route, &[])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the admin on {admin_route}");
    assert!(is_event_stream(resp.headers()), "{:?}", resp.headers());
    drop(resp);

    let (status, _, created) = post_as(bed, Some(ALICE), "/v1/sessions", &[], &json!({})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, got) = get_as(bed, Some(OPS), &format!("/v1/sessions/{id}")).await;
    assert_eq!((status, &got["id"]), (StatusCode::OK, &json!(id)), "{got}");
    let (_, listed) = get_as(bed, Some(OPS), "/v1/sessions").await;
    assert!(
        listed.to_string().contains(id),
        "admin list lacks {id}: {listed}"
    );
    let (status, got) = get_as(bed, Some(BOB), &format!("/v1/sessions/{id}")).await;
    assert_error(status, &got, 404, None, None, "bob on alice's session");
    let (_, listed) = get_as(bed, Some(BOB), "/v1/sessions").await;
    assert!(
        !listed.to_string().contains(id),
        "bob lists alice's {id}: {listed}"
    );
}

/// Audit lines name the key (never the secret), the route and, for runs, the session: every
/// admin call and every run with OpenCode's tools on has one; a client's plain run has none.
pub(super) async fn audit_lines_for_admin_and_tool_calls(bed: &TestBed) {
    let (status, _) = get_as(bed, Some(OPS), "/v1/agents").await;
    assert_eq!(status, 200);
    let tools_run = answered(
        "alice (tools on)",
        chat_as(bed, Some(ALICE), &[], &ask(ECHO, "audit me, tools on")).await,
    );
    let plain_run = answered(
        "bob (tools off)",
        chat_as(bed, Some(BOB), &[], &ask(ECHO, "audit me not")).await,
    );
    let logs = bed.gateway.logs();
    let lines = audit_lines(&logs);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("key=ops") && l.contains("path=/v1/agents")),
        "no audit line for the admin's GET /v1/agents:\n{}",
        lines.join("\n")
    );
    let run_line = lines
        .iter()
        .find(|l| l.contains("key=alice") && l.contains(&tools_run.1))
        .unwrap_or_else(|| {
            panic!(
                "no audit line for alice's tool-enabled run on {}:\n{}",
                tools_run.1,
                lines.join("\n")
            )
        });
    assert!(
        run_line.contains("/v1/chat/completions"),
        "route: {run_line}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("key=ops") && l.contains("path=/v1/sessions/ses_")),
        "no audit line naming the session the admin looked at:\n{}",
        lines.join("\n")
    );
    // A plain key is named by its id, `k` + 16 hex digits of its SHA-256.
    let plain_name = format!("key=k{}", &sha256_hex(PLAIN)[..16]);
    for quiet in ["key=bob", plain_name.as_str(), &plain_run.1] {
        assert!(
            !lines.iter().any(|l| l.contains(quiet)),
            "an audit line for a client's plain call ({quiet}):\n{}",
            lines.join("\n")
        );
    }
    for secret in [OPS, ALICE, BOB, PLAIN] {
        assert!(!logs.contains(secret), "the logs show the key {secret}");
    }
}

/// `/status`: an admin sees the upstreams' URLs and every pool count; a client key sees only
/// whether things are up (no URL, no other key's load).
pub(super) async fn status_shows_clients_no_internals(bed: &TestBed) {
    let (status, admin) = get_as(bed, Some(OPS), "/status").await;
    assert_eq!(status, 200, "{admin}");
    assert!(admin["upstreams"][0]["url"].is_string(), "{admin}");
    assert!(admin["pool"]["remembered"].is_number(), "{admin}");
    let (status, client) = get_as(bed, Some(ALICE), "/status").await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(
        client["upstreams"][0]["state"],
        admin["upstreams"][0]["state"]
    );
    let text = client.to_string();
    for hidden in ["url", "pool", "remembered", "in_flight", "127.0.0.1"] {
        assert!(
            !text.contains(hidden),
            "a client key sees {hidden}: {client}"
        );
    }
}
