//! Code intelligence, read-only: text, file and symbol search, directory listing, file content
//! and status, VCS, project and path info — for admin keys, and client keys whose scope lists
//! the project ([`crate::access::project`]). Paths are checked before OpenCode sees them;
//! results are capped and paged.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{self, Page};
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Largest file content passed on, bytes (longer content is cut and marked).
const MAX_CONTENT: usize = 1024 * 1024;

/// Query of the search routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// What to look for.
    q: String,
    /// Page size.
    limit: Option<usize>,
    /// Items to skip.
    offset: Option<usize>,
}

/// Query of the path routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// A path relative to the project (default: its root).
    #[serde(default)]
    path: String,
    /// Page size.
    limit: Option<usize>,
    /// Items to skip.
    offset: Option<usize>,
}

fn search_text(q: &SearchQuery) -> Result<&str, ApiError> {
    let text = q.q.trim();
    if text.is_empty() || text.len() > 1000 || text.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "`q` must be 1 to 1000 characters, none of them control characters.",
            Some("q".into()),
        ));
    }
    Ok(text)
}

/// OpenCode's text search is ripgrep's: a pattern ripgrep cannot parse is refused here (it
/// would be OpenCode's 500). `regex-syntax` is the parser of the regex engine ripgrep uses.
fn search_pattern(q: &SearchQuery) -> Result<&str, ApiError> {
    let pattern = search_text(q)?;
    regex_syntax::Parser::new().parse(pattern).map_err(|e| {
        let why = e.to_string();
        let why = why.lines().last().unwrap_or("invalid regular expression");
        ApiError::invalid(
            format!("`q` is not a valid regular expression: {why}"),
            Some("q".into()),
        )
    })?;
    Ok(pattern)
}

/// Most results OpenCode's file search gives.
const FILE_SEARCH_MAX: usize = 200;

impl SearchQuery {
    /// The page asked for, checked before OpenCode is asked.
    fn page(&self) -> Result<Page, ApiError> {
        Page {
            limit: self.limit,
            offset: self.offset,
        }
        .checked()
    }
}

impl PathQuery {
    /// The page asked for, checked before OpenCode is asked.
    fn page(&self) -> Result<Page, ApiError> {
        Page {
            limit: self.limit,
            offset: self.offset,
        }
        .checked()
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `GET /v1/find/text?q=`: lines matching a pattern.
#[utoipa::path(
    get,
    path = "/v1/find/text",
    operation_id = "code_find_text",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), SearchQuery),
    responses((status = 200, description = "Matching lines, paged.", body = crate::routes::schemas::PageList))
)]
pub async fn find_text(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let page = q.page()?;
    let pattern = search_pattern(&q)?;
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let found = client.find_text(pattern).await.map_err(access::upstream)?;
    Ok(Json(page.of(items(found))?))
}

/// `GET /v1/find/files?q=`: files whose path matches.
#[utoipa::path(
    get,
    path = "/v1/find/files",
    operation_id = "code_find_files",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), SearchQuery),
    responses((status = 200, description = "Matching files, paged.", body = crate::routes::schemas::PageList))
)]
pub async fn find_files(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let page = q.page()?;
    let text = search_text(&q)?;
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let found = client
        .find_files(text, FILE_SEARCH_MAX)
        .await
        .map_err(access::upstream)?;
    Ok(Json(page.of(items(found))?))
}

/// `GET /v1/find/symbols?q=`: symbols matching (through the language servers).
#[utoipa::path(
    get,
    path = "/v1/find/symbols",
    operation_id = "code_find_symbols",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), SearchQuery),
    responses((status = 200, description = "Matching symbols, paged.", body = crate::routes::schemas::PageList))
)]
pub async fn find_symbols(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let page = q.page()?;
    let text = search_text(&q)?;
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let found = client.find_symbols(text).await.map_err(access::upstream)?;
    Ok(Json(page.of(items(found))?))
}

/// `GET /v1/files?path=`: a directory's entries.
#[utoipa::path(
    get,
    path = "/v1/files",
    operation_id = "code_list_directory",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), PathQuery),
    responses((status = 200, description = "A directory's entries, paged.", body = crate::routes::schemas::PageList))
)]
pub async fn list_directory(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let page = q.page()?;
    let (client, dir) = access::opencode_for(&state, &caller, &headers)?;
    let path = access::safe_path(dir.as_deref(), &q.path, "path")?;
    access::existing(&state, dir.as_deref(), &path).await?;
    let entries = client
        .list_directory(&path)
        .await
        .map_err(access::upstream)?;
    Ok(Json(page.of(items(entries))?))
}

/// `GET /v1/files/content?path=`: a file's content (cut at 1 MiB).
#[utoipa::path(
    get,
    path = "/v1/files/content",
    operation_id = "code_file_content",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), PathQuery),
    responses((status = 200, description = "A file's content (cut at 1 MiB).", body = Object))
)]
pub async fn file_content(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let (client, dir) = access::opencode_for(&state, &caller, &headers)?;
    if q.path.is_empty() {
        return Err(ApiError::invalid(
            "`path` is required.",
            Some("path".into()),
        ));
    }
    let path = access::safe_path(dir.as_deref(), &q.path, "path")?;
    access::existing(&state, dir.as_deref(), &path).await?;
    let mut file = match client.file_content(&path).await {
        Ok(file) => file,
        // OpenCode answers 500 for a directory: tell the caller what it is (one more call,
        // only on this failure path).
        Err(e) => match client.list_directory(&path).await {
            Ok(_) => {
                return Err(ApiError::invalid(
                    format!("`path` {path:?} is a directory: list it with GET /v1/files."),
                    Some("path".into()),
                ))
            }
            Err(_) => return Err(access::upstream(e)),
        },
    };
    let mut truncated = false;
    if let Some(Value::String(content)) = file.get_mut("content") {
        if content.len() > MAX_CONTENT {
            let cut = content.floor_char_boundary(MAX_CONTENT);
            content.truncate(cut);
            truncated = true;
        }
    }
    Ok(Json(
        json!({ "object": "file", "path": path, "file": file, "truncated": truncated }),
    ))
}

/// `GET /v1/files/status`: files changed in the project.
#[utoipa::path(
    get,
    path = "/v1/files/status",
    operation_id = "code_file_status",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`)."), crate::access::Page),
    responses((status = 200, description = "Changed files, paged.", body = crate::routes::schemas::PageList))
)]
pub async fn file_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = page?;
    let page = page.checked()?;
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    Ok(Json(page.of(items(
        client.file_status().await.map_err(access::upstream)?,
    ))?))
}

/// `GET /v1/vcs`: version control info.
#[utoipa::path(
    get,
    path = "/v1/vcs",
    operation_id = "code_vcs",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "Version control info.", body = Object))
)]
pub async fn vcs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    Ok(Json(client.vcs().await.map_err(access::upstream)?))
}

/// `GET /v1/project`: the project and its paths.
#[utoipa::path(
    get,
    path = "/v1/project",
    operation_id = "code_project_info",
    tag = "Code",
    params(("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    responses((status = 200, description = "The project and its paths.", body = Object))
)]
pub async fn project_info(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = access::opencode_for(&state, &caller, &headers)?;
    let (project, paths) =
        tokio::try_join!(client.project(), client.paths()).map_err(access::upstream)?;
    Ok(Json(
        json!({ "object": "project", "project": project, "paths": paths }),
    ))
}
