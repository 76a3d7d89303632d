//! Every route of the surface for every kind of key (the steps of `surface`).

use super::*;

/// What one key gets on one route.
#[derive(Clone, Copy)]
pub(super) struct Expect {
    pub(super) admin: u16,
    pub(super) scoped: u16,
    pub(super) plain: u16,
}

/// Admin 2xx, clients too.
pub(super) const ANY: Expect = Expect {
    admin: 200,
    scoped: 200,
    plain: 200,
};
/// Admin only.
pub(super) const ADMIN_ONLY: Expect = Expect {
    admin: 200,
    scoped: 403,
    plain: 403,
};
/// Admin and keys whose scope lists the project.
pub(super) const PROJECT: Expect = Expect {
    admin: 200,
    scoped: 200,
    plain: 403,
};
/// Off on this gateway: 403 for everyone.
pub(super) const OFF: Expect = Expect {
    admin: 403,
    scoped: 403,
    plain: 403,
};

/// One row of the route table; `{sid}` and `{mid}` stand for the calling key's own session
/// and its first user message.
pub(super) struct Row {
    pub(super) method: Method,
    pub(super) path: &'static str,
    pub(super) body: Option<Value>,
    pub(super) expect: Expect,
}

pub(super) fn row(method: Method, path: &'static str, body: Option<Value>, expect: Expect) -> Row {
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
pub(super) async fn every_route_by_key(bed: &Surface) {
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
