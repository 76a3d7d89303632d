//! The Responses API: `POST /v1/responses` (JSON or SSE), and a stored response's `GET`,
//! `DELETE`, `input_items` and `cancel`, all scoped to the calling key.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::state::AppState;
use crate::auth::Caller;
use crate::encode;
use crate::error::ApiError;
use crate::openai::{InputItemList, ResponseStatus, ResponsesRequest};
use crate::responses::{self, Started};
use crate::run::placement::Requested;

/// The `{id}` of a response route (a malformed one is the same 404 as an unknown one).
pub struct ResponseId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ResponseId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(ResponseId(id)),
            Err(_) => Err(ApiError::NotFound {
                message: "No response found with that id.".into(),
                code: "response_not_found",
            }),
        }
    }
}

/// The state on the upstream holding response `id`'s session.
async fn on_response(state: &AppState, id: &str) -> Result<AppState, ApiError> {
    match responses::saved::session_of(id) {
        Some(session) => state.for_session(&session).await,
        None => Ok(state.clone()),
    }
}

/// `POST /v1/responses`.
#[utoipa::path(
    post,
    path = "/v1/responses",
    operation_id = "responses_create",
    tag = "Responses",
    params(("x-opencode-agent" = Option<String>, Header, description = "OpenCode agent, within the key's scope (default: the key's, then `prompt.agent`)."), ("x-opencode-directory" = Option<String>, Header, description = "Project directory, within the key's scope (default: the key's, then `opencode.directory`).")),
    request_body(content = Object, description = "OpenAI's `CreateResponse`."),
    responses((status = 200, description = "A `Response`, or with `stream: true` typed SSE events (`ResponseStreamEvent`).", content((Object = "application/json"), (String = "text/event-stream"))))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = state.config.limits.max_body_bytes;
    let body = body.map_err(|r| ApiError::from_body_rejection(&r, limit))?;
    let req = ResponsesRequest::parse(&body)?;
    let requested = Requested::from_request(&headers, Some(&req.metadata))?;
    let started = responses::start(&state, &caller, &req, requested).await?;
    // The run's own state: on the upstream its session lives on, where it is stored.
    let state = state.with(started.run.backend().clone());
    let session = crate::routes::chat::session_header(started.run.session_id());
    let mut response = if req.stream {
        let keepalive = KeepAlive::new()
            .interval(state.config.prompt.keepalive)
            .text("keep-alive");
        let events = encode::responses::events(state, started);
        Sse::new(events).keep_alive(keepalive).into_response()
    } else {
        collect(&state, started).await?
    };
    response
        .extensions_mut()
        .insert(crate::metrics::ModelLabel(req.model));
    response.headers_mut().extend(session);
    Ok(response)
}

/// Runs a response to its end (the non-streaming mode). A failure after the run started is the
/// same HTTP error chat completions give; the stored response then says `failed`.
async fn collect(state: &AppState, started: Started) -> Result<Response, ApiError> {
    let Started {
        run,
        mut builder,
        store_input,
        resumed,
    } = started;
    let drained = run.drain(&mut builder).await;
    let (session, failure) = (drained.session_id, drained.failure);
    let start = if resumed {
        None
    } else {
        drained.user_message_id
    };
    responses::finish(
        &state.backend,
        builder.response(),
        &session,
        store_input,
        start,
    )
    .await;
    match failure {
        Some(e) => Err(e),
        None => Ok(Json(builder.into_response()).into_response()),
    }
}

/// `GET /v1/responses/{id}`.
#[utoipa::path(
    get,
    path = "/v1/responses/{id}",
    operation_id = "responses_get",
    tag = "Responses",
    params(("id" = String, Path, description = "Response id (`resp_…`).")),
    responses((status = 200, description = "The stored `Response`.", body = Object))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ResponseId(id): ResponseId,
) -> Result<Json<Value>, ApiError> {
    let state = on_response(&state, &id).await?;
    if let Some(snapshot) = state.backend.responses.running_anywhere(&caller, &id).await {
        return Ok(Json(json!(snapshot)));
    }
    let found = state.backend.responses.find(&caller, &id).await?;
    Ok(Json(json!(found.record().response)))
}

/// `DELETE /v1/responses/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/responses/{id}",
    operation_id = "responses_delete",
    tag = "Responses",
    params(("id" = String, Path, description = "Response id (`resp_…`).")),
    responses((status = 200, description = "Deleted.", body = crate::routes::schemas::Deleted))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ResponseId(id): ResponseId,
) -> Result<Json<Value>, ApiError> {
    let state = on_response(&state, &id).await?;
    state.backend.responses.delete(&caller, &id).await?;
    Ok(Json(
        json!({ "id": id, "object": "response.deleted", "deleted": true }),
    ))
}

/// `POST /v1/responses/{id}/cancel`: stops a running response.
#[utoipa::path(
    post,
    path = "/v1/responses/{id}/cancel",
    operation_id = "responses_cancel",
    tag = "Responses",
    params(("id" = String, Path, description = "Response id (`resp_…`).")),
    responses((status = 200, description = "The cancelled `Response`.", body = Object))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ResponseId(id): ResponseId,
) -> Result<Json<Value>, ApiError> {
    let state = on_response(&state, &id).await?;
    let Some(running) = state.backend.responses.running(&caller, &id) else {
        // Stored (404 if not this key's) but no longer running.
        state.backend.responses.find(&caller, &id).await?;
        return Err(ApiError::invalid(
            "Only a response that is still in progress can be cancelled.",
            None,
        ));
    };
    state.backend.responses.mark_cancelled(&id);
    state.backend.responses.abort(&running.session_id).await?;
    let mut response = running.snapshot;
    response.status = ResponseStatus::Cancelled;
    Ok(Json(json!(response)))
}

/// Query of `GET /v1/responses/{id}/input_items`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100 items (default 20).
    limit: Option<usize>,
    /// `asc` or `desc` (default).
    order: Option<String>,
    /// Start after this item id.
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`.
#[utoipa::path(
    get,
    path = "/v1/responses/{id}/input_items",
    operation_id = "responses_input_items",
    tag = "Responses",
    params(("id" = String, Path, description = "Response id (`resp_…`)."), ListQuery),
    responses((status = 200, description = "A `ResponseItemList` page.", body = Object))
)]
pub async fn input_items(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ResponseId(id): ResponseId,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InputItemList>, ApiError> {
    let state = on_response(&state, &id).await?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "`limit` must be between 1 and 100.",
            Some("limit".into()),
        ));
    }
    let mut items = state
        .backend
        .responses
        .find(&caller, &id)
        .await?
        .record()
        .input
        .clone();
    match query.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "`order` must be `asc` or `desc`.",
                Some("order".into()),
            ))
        }
    }
    if let Some(after) = &query.after {
        let position = items
            .iter()
            .position(|i| i["id"].as_str() == Some(after))
            .ok_or_else(|| {
                ApiError::invalid(
                    "`after` names no item of this response.",
                    Some("after".into()),
                )
            })?;
        items.drain(..=position);
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let id_of = |v: Option<&Value>| v.and_then(|i| i["id"].as_str()).map(String::from);
    Ok(Json(InputItemList {
        object: "list",
        first_id: id_of(items.first()),
        last_id: id_of(items.last()),
        has_more,
        data: items,
    }))
}
