//! Bearer API-key authentication for clients (constant-time comparison).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Who is calling: a stable, non-secret name for the API key used (`k` + the first 16 hex
/// digits of its SHA-256), or `anonymous` when keys are off.
///
/// Sessions and conversations are scoped to it: one key never sees another's. It is derived
/// from the key itself, so it stays the same across restarts and reordered key lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(pub Arc<str>);

impl ClientId {
    /// The identity of an API key.
    pub fn of_key(key: &str) -> ClientId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        ClientId(format!("k{hex}").into())
    }
}

/// The configured keys, kept as SHA-256 digests so that comparing them takes the same time
/// whatever the presented key's length or content.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    digests: Arc<Vec<[u8; 32]>>,
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.trim().as_bytes()).into()
}

impl Keys {
    /// Keys from config (surrounding whitespace ignored); empty means authentication is off.
    pub fn new(keys: Vec<String>) -> Keys {
        Keys {
            digests: Arc::new(keys.iter().map(|k| digest(k)).collect()),
        }
    }

    /// Checks a presented key against every configured key in constant time, without early
    /// exit. Returns the index of the matching key.
    pub fn check(&self, presented: &str) -> Option<usize> {
        let presented = digest(presented);
        let mut found = None;
        for (i, key) in self.digests.iter().enumerate() {
            if bool::from(key.ct_eq(&presented)) {
                found = Some(i);
            }
        }
        found
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }
}

/// Middleware: requires `Authorization: Bearer <key>` when keys are configured and stores the
/// caller's [`ClientId`] in the request extensions.
pub async fn require_key(State(keys): State<Keys>, mut req: Request, next: Next) -> Response {
    let id = if keys.enabled() {
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        let Some(presented) = presented else {
            return ApiError::Unauthorized(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.".into(),
            )
            .into_response();
        };
        match keys.check(presented) {
            Some(_) => ClientId::of_key(presented.trim()),
            None => {
                return ApiError::Unauthorized("Incorrect API key provided.".into()).into_response()
            }
        }
    } else {
        ClientId("anonymous".into())
    };
    req.extensions_mut().insert(id);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_keys() {
        let k = Keys::new(vec!["alpha".into(), " beta ".into()]);
        assert_eq!(k.check("beta"), Some(1));
        assert_eq!(k.check("alpha"), Some(0));
        assert_eq!(k.check("alph"), None);
        assert_eq!(k.check(""), None);
        assert!(!Keys::default().enabled());
        assert_eq!(ClientId::of_key("alpha"), ClientId::of_key("alpha"));
        assert_ne!(ClientId::of_key("alpha"), ClientId::of_key("beta"));
        assert!(!ClientId::of_key("alpha").0.contains("alpha"));
    }
}
