//! HTTP handlers, one module per resource. They translate between HTTP and the services
//! (catalog, pool, chat pipeline); every error leaves through [`ApiError`].

pub mod agents;
pub mod chat;
pub mod code;
pub mod commands;
pub mod config;
pub mod events;
pub mod health;
pub mod metrics;
pub mod models;
pub mod opencode_tools;
pub mod providers;
pub mod responses;
pub mod schemas;
pub mod session_extras;
pub mod sessions;

use axum::http::{Method, Uri};

use crate::error::ApiError;

/// Unknown route → 404 in OpenAI's error shape.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    crate::metrics::unmatched(method.as_str(), 404);
    ApiError::NotFound {
        message: format!("Unknown request URL: {method} {}.", uri.path()),
        code: "unknown_url",
    }
}

/// Known route, wrong method → 405 in OpenAI's error shape.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    crate::metrics::unmatched(method.as_str(), 405);
    ApiError::MethodNotAllowed(format!(
        "Method {method} is not allowed for {}.",
        uri.path()
    ))
}

pub use crate::sync::now_secs;
