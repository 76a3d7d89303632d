//! Files: listing and search against the fixture, paging, paths outside the project, the
//! project scope of keys (the steps of `surface`).

use super::*;

/// Directory listing, file content, file and text search, file status, VCS and project info
/// answer what the fixture holds.
pub(super) async fn listing_and_search_match_the_fixture(bed: &Surface) {
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
pub(super) async fn paging(bed: &Surface) {
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
pub(super) async fn paths_outside_the_project_are_refused(bed: &Surface) {
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
pub(super) async fn project_scope(bed: &Surface) {
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
