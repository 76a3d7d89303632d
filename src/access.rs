//! Who may see what of OpenCode's surface, and the checks every such route shares: project
//! scope, safe paths, pages, masked secrets.
//!
//! - **Project scope.** Code intelligence and tooling status read the project. An admin key may
//!   read any project; a client key only the directories its scope lists (`[[auth.keys]]
//!   directories`). A plain key has no project scope: 403.
//! - **Paths** stay inside the project: absolute paths, `..`, backslashes, NUL and
//!   percent-encoded separators are refused before OpenCode sees them, and, where the project
//!   is on this host, so is a path that resolves (through symlinks) outside it.
//! - **Pages.** Lists are capped and paged with `limit`/`offset`, the same way everywhere.
//! - **Secrets** in OpenCode's configuration are masked before it leaves the gateway.

use std::path::{Component, Path};

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::opencode::{OpenCodeClient, UpstreamError};
use crate::run::placement::{self, Requested};
use crate::run::Gateway;

/// Largest page.
pub const MAX_LIMIT: usize = 1_000;
/// Page size when none is asked.
pub const DEFAULT_LIMIT: usize = 100;

/// `limit` and `offset` of a listing.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Items to skip.
    pub offset: Option<usize>,
}

impl Page {
    /// The page, checked before anything is asked upstream.
    pub fn checked(self) -> Result<Page, ApiError> {
        self.limit()?;
        Ok(self)
    }

    /// The page size: as asked (1 to [`MAX_LIMIT`]) or [`DEFAULT_LIMIT`].
    fn limit(self) -> Result<usize, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                format!("`limit` must be between 1 and {MAX_LIMIT}."),
                Some("limit".into()),
            ));
        }
        Ok(limit)
    }

    /// One page of `items` as `{object: "list", data, has_more, next_offset}`.
    pub fn of(self, items: Vec<Value>) -> Result<Value, ApiError> {
        let limit = self.limit()?;
        let offset = self.offset.unwrap_or(0);
        let total = items.len();
        let data: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
        let next = offset + data.len();
        Ok(json!({
            "object": "list",
            "data": data,
            "has_more": next < total,
            "next_offset": (next < total).then_some(next),
        }))
    }
}

/// The project directory a request reads (its header, else the key's or the global default),
/// checked against the caller's scope: admins any, client keys only what their scope lists.
pub fn project(
    state: &Gateway,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let requested = Requested::from_request(headers, None)?;
    let placement = placement::resolve(&state.config, caller, &requested)?;
    if caller.is_admin() {
        return Ok(placement.directory);
    }
    let listed = placement
        .directory
        .as_ref()
        .is_some_and(|d| caller.scope.directories.iter().any(|s| s == d));
    if listed {
        Ok(placement.directory)
    } else {
        Err(ApiError::PermissionDenied(
            "This API key has no project scope: reading the project needs an admin key or a key whose `directories` list it.".into(),
        ))
    }
}

/// OpenCode's client for the request's project, and the project directory, if the caller may
/// read it ([`project`]).
pub fn opencode_for(
    state: &Gateway,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<(OpenCodeClient, Option<String>), ApiError> {
    let dir = project(state, caller, headers)?;
    // Not a session's: the first available upstream (upstreams are configured alike).
    let client = state.default_backend().client.clone();
    Ok((client.in_directory(dir.as_deref()), dir))
}

/// An upstream error of a call that carries the client's input: OpenCode's 400 is the
/// client's (a 400 with OpenCode's reason) and its 404 a 404; anything else stays upstream
/// trouble.
pub fn upstream(e: UpstreamError) -> ApiError {
    match e {
        UpstreamError::Status {
            status: 400,
            message,
        } => ApiError::invalid(format!("OpenCode refused the request: {message}"), None),
        UpstreamError::NotFound(message) => ApiError::NotFound {
            message: format!("OpenCode has no such thing: {message}"),
            code: "not_found",
        },
        e => e.into(),
    }
}

/// 404 for a `path` that does not exist, where the project is on this host (OpenCode answers
/// 500 for it). Without a project directory, OpenCode's own is asked for.
pub async fn existing(state: &Gateway, project: Option<&str>, path: &str) -> Result<(), ApiError> {
    if !state.config.opencode_on_this_host() {
        return Ok(());
    }
    let root = match project {
        Some(root) => root.to_string(),
        None => match state.default_backend().client.paths().await {
            Ok(paths) => match paths["directory"].as_str() {
                Some(dir) => dir.to_string(),
                None => return Ok(()),
            },
            Err(_) => return Ok(()),
        },
    };
    let root = Path::new(&root);
    if root.is_dir() && !root.join(path).exists() {
        return Err(ApiError::NotFound {
            message: format!("No file or directory {path:?} in the project."),
            code: "path_not_found",
        });
    }
    Ok(())
}

/// `path` if it stays inside `project` (see the module docs); 400 naming `param` otherwise.
pub fn safe_path(project: Option<&str>, path: &str, param: &str) -> Result<String, ApiError> {
    let refuse = |why: &str| {
        ApiError::invalid(
            format!("`{param}` must be a path inside the project: {why}."),
            Some(param.into()),
        )
    };
    if path.chars().any(char::is_control) || path.contains('\\') {
        return Err(refuse("no control characters or backslash"));
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%00")
    {
        return Err(refuse("no percent-encoded dots or separators"));
    }
    let relative = Path::new(path);
    for component in relative.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(refuse("no `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("not an absolute path"))
            }
        }
    }
    // Where the project is on this host, follow symlinks too.
    if let Some(root) = project.map(Path::new).filter(|r| r.is_dir()) {
        if let (Ok(root), Ok(target)) = (root.canonicalize(), root.join(relative).canonicalize()) {
            if !target.starts_with(&root) {
                return Err(refuse("it leads outside the project"));
            }
        }
    }
    Ok(if path.is_empty() {
        ".".into()
    } else {
        path.to_string()
    })
}

/// Whether a configuration key names a secret.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "authorization",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `value` with every secret-looking string replaced by `********`.
pub fn masked(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let shown = match v {
                        Value::String(_) if secret_key(k) => Value::String("********".into()),
                        Value::Object(o) if secret_key(k) => Value::Object(
                            o.keys()
                                .map(|k| (k.clone(), json!("********")))
                                .collect::<Map<_, _>>(),
                        ),
                        other => masked(other),
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_project() {
        for ok in ["src/main.rs", "", "a/./b", "README.md"] {
            assert!(safe_path(None, ok, "path").is_ok(), "{ok}");
        }
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a\\..\\b",
            "%2e%2e/etc",
            "a%2Fb",
            "x\0y",
        ] {
            assert!(safe_path(None, bad, "path").is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinks_out_of_the_project_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("p");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join("in.txt"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", project.join("out")).unwrap();
        let root = project.to_str().unwrap();
        assert!(safe_path(Some(root), "in.txt", "path").is_ok());
        #[cfg(unix)]
        assert!(safe_path(Some(root), "out/passwd", "path").is_err());
    }

    #[test]
    fn pages_and_masks() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let page = Page {
            limit: Some(2),
            offset: Some(2),
        }
        .of(items)
        .unwrap();
        assert_eq!(page["data"], json!([2, 3]));
        assert_eq!(page["has_more"], true);
        assert_eq!(page["next_offset"], 4);
        let config = json!({"provider": {"x": {"options": {"apiKey": "sk-1", "baseURL": "u"}}},
            "mcp": {"s": {"headers": {"Authorization": "Bearer t"}}}});
        let shown = masked(&config);
        assert_eq!(shown["provider"]["x"]["options"]["apiKey"], "********");
        assert_eq!(shown["provider"]["x"]["options"]["baseURL"], "u");
        assert_eq!(shown["mcp"]["s"]["headers"]["Authorization"], "********");
    }
}
