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
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::opencode::OpenCodeClient;

/// Largest file content passed on, bytes (longer content is cut and marked).
const MAX_CONTENT: usize = 1024 * 1024;

/// Query of the search routes.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    /// What to look for.
    q: String,
    /// Page size.
    limit: Option<usize>,
    /// Items to skip.
    offset: Option<usize>,
}

/// Query of the path routes.
#[derive(Debug, Deserialize)]
pub struct PathQuery {
    /// A path relative to the project (default: its root).
    #[serde(default)]
    path: String,
    /// Page size.
    limit: Option<usize>,
    /// Items to skip.
    offset: Option<usize>,
}

/// The project's client and directory, if the caller may read it.
fn project(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<(OpenCodeClient, Option<String>), ApiError> {
    let dir = access::project(state, caller, headers)?;
    Ok((state.client.in_directory(dir.as_deref()), dir))
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(e.body_text(), None))
}

fn search_text(q: &SearchQuery) -> Result<&str, ApiError> {
    let text = q.q.trim();
    if text.is_empty() || text.len() > 1000 {
        return Err(ApiError::invalid(
            "`q` must be 1 to 1000 characters.",
            Some("q".into()),
        ));
    }
    Ok(text)
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `GET /v1/find/text?q=`: lines matching a pattern.
pub async fn find_text(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let (client, _) = project(&state, &caller, &headers)?;
    let found = client.find_text(search_text(&q)?).await?;
    Ok(Json(
        Page {
            limit: q.limit,
            offset: q.offset,
        }
        .of(items(found))?,
    ))
}

/// `GET /v1/find/files?q=`: files whose path matches.
pub async fn find_files(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let (client, _) = project(&state, &caller, &headers)?;
    let found = client
        .find_files(search_text(&q)?, access::MAX_LIMIT)
        .await?;
    Ok(Json(
        Page {
            limit: q.limit,
            offset: q.offset,
        }
        .of(items(found))?,
    ))
}

/// `GET /v1/find/symbols?q=`: symbols matching (through the language servers).
pub async fn find_symbols(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let (client, _) = project(&state, &caller, &headers)?;
    let found = client.find_symbols(search_text(&q)?).await?;
    Ok(Json(
        Page {
            limit: q.limit,
            offset: q.offset,
        }
        .of(items(found))?,
    ))
}

/// `GET /v1/files?path=`: a directory's entries.
pub async fn list_directory(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let (client, dir) = project(&state, &caller, &headers)?;
    let path = access::safe_path(dir.as_deref(), &q.path, "path")?;
    let entries = client.list_directory(&path).await?;
    Ok(Json(
        Page {
            limit: q.limit,
            offset: q.offset,
        }
        .of(items(entries))?,
    ))
}

/// `GET /v1/files/content?path=`: a file's content (cut at 1 MiB).
pub async fn file_content(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let (client, dir) = project(&state, &caller, &headers)?;
    if q.path.is_empty() {
        return Err(ApiError::invalid(
            "`path` is required.",
            Some("path".into()),
        ));
    }
    let path = access::safe_path(dir.as_deref(), &q.path, "path")?;
    let mut file = client.file_content(&path).await?;
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
pub async fn file_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let page = query(page)?;
    let (client, _) = project(&state, &caller, &headers)?;
    Ok(Json(page.of(items(client.file_status().await?))?))
}

/// `GET /v1/vcs`: version control info.
pub async fn vcs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = project(&state, &caller, &headers)?;
    Ok(Json(client.vcs().await?))
}

/// `GET /v1/project`: the project and its paths.
pub async fn project_info(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (client, _) = project(&state, &caller, &headers)?;
    let (project, paths) = tokio::try_join!(client.project(), client.paths())?;
    Ok(Json(
        json!({ "object": "project", "project": project, "paths": paths }),
    ))
}
