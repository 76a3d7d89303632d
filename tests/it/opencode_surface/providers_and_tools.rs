//! Providers, commands, tools, LSP and formatters, MCP servers (the steps of `surface`).

use super::*;

/// `GET /v1/providers`: the mock provider, connected, with its models and default, and no
/// secret anywhere; other providers not connected. `POST /v1/providers/refresh` answers the
/// model count of the catalog, which `/v1/models` then shows.
pub(super) async fn providers(bed: &Surface) {
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
pub(super) async fn commands_are_listed(bed: &Surface) {
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
pub(super) async fn tools_lsp_and_formatters(bed: &Surface) {
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
pub(super) async fn mcp_servers(bed: &Surface) {
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
