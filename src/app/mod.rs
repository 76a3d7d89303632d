//! Application wiring: the shared state every handler sees, and the router with its layers.
//! How connections are accepted and drained lives in [`crate::server`].

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth;
use crate::body::{self, BodyLimits};
use crate::ratelimit::RateLimits;
use crate::routes;

pub mod state;

use crate::auth::Keys;
pub use state::AppState;
pub(crate) use state::{upstream_names, upstream_settings};

/// The routes that need an API key (when keys are configured).
fn keyed_routes(keys: Keys, limits: RateLimits, metrics_here: bool) -> Router<AppState> {
    use routes::{agents, chat, code, commands, config, events, health, models, providers};
    use routes::{opencode_tools, responses, session_extras as extras, sessions};
    let router = Router::new();
    let router = if metrics_here {
        router.route("/metrics", get(routes::metrics::render))
    } else {
        router
    };
    router
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/agents", get(agents::list))
        .route("/v1/events", get(events::stream))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .route("/v1/responses/{id}/cancel", post(responses::cancel))
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/v1/sessions/{id}/messages", get(sessions::messages))
        .route("/v1/sessions/{id}/fork", post(sessions::fork))
        .route("/v1/sessions/{id}/abort", post(sessions::abort))
        .route("/v1/sessions/{id}/permissions", get(sessions::permissions))
        .route(
            "/v1/sessions/{id}/permissions/{permission_id}",
            post(sessions::answer_permission),
        )
        .route("/v1/sessions/{id}/children", get(extras::children))
        .route("/v1/sessions/{id}/todo", get(extras::todo))
        .route("/v1/sessions/{id}/diff", get(extras::diff))
        .route(
            "/v1/sessions/{id}/messages/{message_id}",
            get(extras::message),
        )
        .route("/v1/sessions/{id}/summarize", post(extras::summarize))
        .route("/v1/sessions/{id}/revert", post(extras::revert))
        .route("/v1/sessions/{id}/unrevert", post(extras::unrevert))
        .route(
            "/v1/sessions/{id}/share",
            post(extras::share).delete(extras::unshare),
        )
        .route("/v1/sessions/{id}/command", post(commands::run_command))
        .route("/v1/sessions/{id}/shell", post(commands::run_shell))
        .route("/v1/commands", get(commands::list))
        .route("/v1/providers", get(providers::list))
        .route("/v1/providers/refresh", post(providers::refresh))
        .route("/v1/providers/{id}/auth", put(providers::set_auth))
        .route(
            "/v1/providers/{id}/oauth/authorize",
            post(providers::oauth_authorize),
        )
        .route(
            "/v1/providers/{id}/oauth/callback",
            post(providers::oauth_callback),
        )
        .route("/v1/find/text", get(code::find_text))
        .route("/v1/find/files", get(code::find_files))
        .route("/v1/find/symbols", get(code::find_symbols))
        .route("/v1/files", get(code::list_directory))
        .route("/v1/files/content", get(code::file_content))
        .route("/v1/files/status", get(code::file_status))
        .route("/v1/vcs", get(code::vcs))
        .route("/v1/project", get(code::project_info))
        .route("/v1/tools", get(opencode_tools::tool_ids))
        .route(
            "/v1/tools/definitions",
            get(opencode_tools::tool_definitions),
        )
        .route("/v1/lsp", get(opencode_tools::lsp))
        .route("/v1/formatters", get(opencode_tools::formatters))
        .route(
            "/v1/mcp",
            get(opencode_tools::mcp_status).post(opencode_tools::mcp_add),
        )
        .route("/v1/mcp/{name}/connect", post(opencode_tools::mcp_connect))
        .route(
            "/v1/mcp/{name}/disconnect",
            post(opencode_tools::mcp_disconnect),
        )
        .route("/v1/config", get(config::get).patch(config::patch))
        .route("/status", get(health::status))
        .route_layer(middleware::from_fn_with_state(
            limits,
            crate::ratelimit::enforce,
        ))
        .route_layer(middleware::from_fn_with_state(keys, auth::require_key))
}

/// `/metrics` alone, for its own listener (`metrics.listen`): no key, nothing else exposed.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics::render))
        .with_state(state)
}

/// The HTTP API.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let limits = &state.config.limits;
    let metrics = &state.config.metrics;
    let metrics_here = metrics.enabled && metrics.listen.is_none();
    if metrics.enabled {
        crate::metrics::handle();
    }
    Router::new()
        .route("/health", get(routes::health::ready))
        .route("/livez", get(routes::health::live))
        .route("/openapi.json", get(crate::openapi::serve))
        .merge(keyed_routes(
            state.keys.clone(),
            state.rate_limits.clone(),
            metrics_here,
        ))
        .route_layer(middleware::from_fn(crate::metrics::track))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            BodyLimits {
                max_bytes: limits.max_body_bytes,
                deadline: limits.body_timeout,
            },
            body::enforce,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
