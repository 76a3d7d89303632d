//! Which server API an OpenCode speaks — 1.x (1.18's routes: `/global/health`, `/session`,
//! `/event`…) or 2.x (everything under `/api/*`) — and how the client finds out.
//!
//! The two share no route the gateway could use for both (1.18 serves a partial `/api/*` with
//! other bodies; 2.x answers 1.x paths with its web app's HTML or a 405), so each upstream is
//! asked what it is: `GET /global/health` answering JSON is 1.x, `GET /api/info` answering
//! JSON is 2.x, and an HTML page is never health. The answer is probed at start, by every
//! health check and before every event-stream (re)connect — an upstream replaced by a newer
//! OpenCode behind the same address is spoken to in its own API from its next connection on —
//! and kept in an [`ApiCell`] that every clone of the client shares.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// An OpenCode server API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Api {
    /// OpenCode 1.x (1.18.34 tested).
    #[default]
    #[serde(rename = "1.x")]
    V1,
    /// OpenCode 2.x (2.1.2 tested).
    #[serde(rename = "2.x")]
    V2,
}

impl Api {
    /// `1.x` or `2.x`, as `/status`, `/metrics` and error messages name it.
    pub fn label(self) -> &'static str {
        match self {
            Api::V1 => "1.x",
            Api::V2 => "2.x",
        }
    }
}

/// The API an upstream was last seen speaking (unknown until the first probe), shared by
/// every clone of one client.
#[derive(Debug, Default)]
pub struct ApiCell {
    api: AtomicU8,
    version: Mutex<Option<String>>,
}

impl ApiCell {
    /// The API last detected, if any.
    pub fn get(&self) -> Option<Api> {
        match self.api.load(Ordering::Acquire) {
            1 => Some(Api::V1),
            2 => Some(Api::V2),
            _ => None,
        }
    }

    /// The version the server last reported (`2.1.2`), if any.
    pub fn version(&self) -> Option<String> {
        self.version.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Records what a probe found: the API and the version the server reported (a change of
    /// API is logged).
    pub fn set(&self, api: Api, version: Option<&str>) {
        if let (Ok(mut v), Some(version)) = (self.version.lock(), version) {
            if v.as_deref() != Some(version) {
                *v = Some(version.to_string());
            }
        }
        let code = match api {
            Api::V1 => 1,
            Api::V2 => 2,
        };
        let old = self.api.swap(code, Ordering::AcqRel);
        if old != 0 && old != code {
            tracing::warn!(
                api = api.label(),
                "the OpenCode server now speaks another API version"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cell_starts_unknown_and_keeps_the_last_probe() {
        let cell = ApiCell::default();
        assert_eq!(cell.get(), None);
        cell.set(Api::V2, Some("2.1.2"));
        assert_eq!(cell.get(), Some(Api::V2));
        assert_eq!(cell.version().as_deref(), Some("2.1.2"));
        cell.set(Api::V1, None);
        assert_eq!(cell.get(), Some(Api::V1));
        assert_eq!(cell.version().as_deref(), Some("2.1.2"), "kept until told");
        assert_eq!(Api::V2.label(), "2.x");
    }
}
