//! The architecture, checked: every module of `src/` sits on a layer, and a module may only
//! use modules ranked below it (or itself). The layers, bottom up:
//!
//! - **base** — `sync`, `memory`, `config`, `error`, `metrics`: no knowledge of HTTP, OpenAI
//!   or OpenCode.
//! - **wire formats** — `openai`: what clients send and get, parsed and shaped; no I/O.
//! - **protocol** — `opencode`: the only place that knows OpenCode's server API (paths, JSON
//!   fields, event names); it hands the core the gateway's own types and events.
//! - **core** — identity, shared store, catalog, sessions, permissions, rate limits, client
//!   tools, upstreams, the adapter, runs, the Responses API's chains, access rules.
//! - **HTTP** — body limits, encoders (JSON and SSE), routes, the OpenAPI description, app wiring, the
//!   server. Only this layer knows `AppState`.
//!
//! A `use` that points up fails this test with the file and the name, so a cycle cannot come
//! back unnoticed. The check reads the source as text (comments left out): a real parser
//! (`syn`) was not needed for `crate::` paths and would add a dependency to the test build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Modules, bottom up: (module path under `crate::`, layer). A module may use those before it.
const ORDER: &[(&str, &str)] = &[
    ("sync", "base"),
    ("memory", "base"),
    ("config", "base"),
    ("error", "base"),
    ("metrics", "base"),
    ("openai", "wire"),
    ("opencode", "protocol"),
    ("hub", "protocol"),
    ("embedded", "protocol"),
    ("auth", "core"),
    ("store", "core"),
    ("catalog", "core"),
    ("sessions", "core"),
    ("permissions", "core"),
    ("ratelimit", "core"),
    ("client_tools", "core"),
    ("responses::saved", "core"),
    ("upstreams", "core"),
    ("adapter", "core"),
    ("run", "core"),
    ("responses", "core"),
    ("access", "core"),
    ("body", "http"),
    ("app::state", "http"),
    ("encode", "http"),
    ("routes", "http"),
    ("openapi", "http"),
    ("app", "http"),
    ("server", "http"),
];

/// Strings of OpenCode 1.18's wire (paths, event types) that only `opencode` may spell.
const WIRE: &[&str] = &[
    "\"/event\"",
    "\"/session",
    "\"/permission",
    "\"/question",
    "\"/global/",
    "\"/instance/",
    "\"/provider",
    "\"message.updated\"",
    "\"message.part.updated\"",
    "\"message.part.delta\"",
    "\"session.idle\"",
    "\"session.status\"",
    "\"session.error\"",
    "\"permission.asked\"",
    "\"permission.replied\"",
    "\"question.asked\"",
    "\"question.replied\"",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`src/run/gateway.rs` → `run::gateway`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod")
        .collect();
    parts.join("::")
}

/// The rank of a module path: its longest listed prefix. `None`: the crate root or `main`.
fn rank(module: &str) -> Option<(usize, &'static str, &'static str)> {
    ORDER
        .iter()
        .enumerate()
        .filter(|(_, (prefix, _))| module == *prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(_, (prefix, _))| prefix.len())
        .map(|(i, (prefix, layer))| (i, *prefix, *layer))
}

/// The code of a file without its comments (line comments and doc comments; block comments
/// are not used in this crate) and without `#[cfg(test)]` modules' bodies kept apart: tests
/// may reach anything, so everything after `#[cfg(test)]` is left out.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Every `crate::a::b` path a piece of code names, `use crate::{a::x, b}` groups unfolded,
/// as the module path it points into (its first one or two segments).
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        // `portatek_gateway::crate::` does not occur; skip identifiers ending in `crate`.
        if start > "crate::".len() {
            let before = bytes[start - "crate::".len() - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        if code[start..].starts_with('{') {
            let Some(end) = matching_brace(code, start) else {
                continue;
            };
            for item in split_top(&code[start + 1..end]) {
                found.push(head(item.trim()));
            }
        } else {
            found.push(head(&code[start..]));
        }
    }
    found.retain(|p| !p.is_empty());
    found
}

fn matching_brace(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top(group: &str) -> Vec<&str> {
    let (mut depth, mut last, mut items) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[last..i]);
                last = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[last..]);
    items
}

/// `a::b::C` → `a::b` (two module segments at most: ranks are listed that deep).
fn head(path: &str) -> String {
    let segments: Vec<&str> = path
        .split("::")
        .map(|s| {
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            &s[..end]
        })
        .take_while(|s| !s.is_empty() && s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .take(2)
        .collect();
    segments.join("::")
}

#[test]
fn dependencies_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut unranked = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        // The crate root and the binary wire everything; unit-test modules may reach anything.
        if module == "lib" || module == "main" || module.split("::").any(|m| m == "tests") {
            continue;
        }
        let Some((own, own_prefix, layer)) = rank(&module) else {
            unranked.push(module);
            continue;
        };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let mut seen = BTreeMap::new();
        for used in crate_paths(&code) {
            let Some((theirs, their_prefix, their_layer)) = rank(&used) else {
                continue;
            };
            if their_prefix == own_prefix || own_prefix.starts_with(&format!("{their_prefix}::")) {
                continue;
            }
            if theirs > own {
                seen.entry(used.clone()).or_insert(format!(
                    "{} ({layer}) uses crate::{used} ({their_layer}), which sits above it",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
        problems.extend(seen.into_values());
        if layer != "http" && code.contains("AppState") {
            problems.push(format!(
                "{} ({layer}) names AppState, which only the HTTP layer may know",
                file.strip_prefix(&src).unwrap().display()
            ));
        }
        if !own_prefix.starts_with("opencode") {
            for wire in WIRE {
                if code.contains(wire) {
                    problems.push(format!(
                        "{} ({layer}) spells OpenCode's wire ({wire}); only `opencode` may",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        unranked.is_empty(),
        "modules without a layer (add them to ORDER): {unranked:?}"
    );
    assert!(
        problems.is_empty(),
        "{} layering problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    let code = "use crate::{a::B, c::{d::E, F}};\nlet x = crate::g::h::I::new();\n";
    assert_eq!(crate_paths(code), vec!["a", "c", "g::h"]);
    assert_eq!(
        code_of("use x;\n// crate::y\n#[cfg(test)]\nuse crate::z;"),
        "use x;\n"
    );
    assert_eq!(
        rank("responses::saved").map(|r| r.1),
        Some("responses::saved")
    );
    assert_eq!(rank("responses::builder").map(|r| r.1), Some("responses"));
}
