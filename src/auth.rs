//! Who is calling: bearer API keys, their roles and scopes.
//!
//! Keys come as a plain list (`auth.api_keys`, `PORTATEK_API_KEYS`: role `client`, no limits
//! beyond the global defaults) or as entries (`[[auth.keys]]`) with a name, a role, the agents
//! and project directories the key may use, whether its runs may use OpenCode's own tools, and
//! its own rate limits. An entry may give the key's SHA-256 instead of the key, so that config
//! files hold no secrets. Every key is kept as a SHA-256 digest and compared in constant time.
//!
//! Roles: a `client` key sees only its own sessions and responses; an `admin` key sees all, and
//! may use the admin routes. With keys off (loopback only, or `auth.disabled`), the caller is an
//! anonymous admin: one user, trusted by the operator's choice.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, KeyConfig, KeyRole};
use crate::error::ApiError;

/// A SHA-256 in hex, as `key_sha256` gives it: defined with the configuration (whose validation
/// needs it and must not import this module), re-exported here for the key checks.
pub use crate::config::parse_digest;

/// A stable, non-secret name for the API key used (`k` + the first 16 hex digits of its
/// SHA-256), or `anonymous` when keys are off.
///
/// Sessions and conversations are scoped to it: one key never sees another's. It is derived
/// from the key itself, so it stays the same across restarts and reordered key lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(pub Arc<str>);

impl ClientId {
    /// The identity of an API key.
    pub fn of_key(key: &str) -> ClientId {
        Self::of_digest(&digest(key))
    }

    /// The identity of a key given by its SHA-256.
    pub fn of_digest(digest: &[u8; 32]) -> ClientId {
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        ClientId(format!("k{hex}").into())
    }
}

/// What a key may do beyond its own sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Agents it may select (empty: only its default).
    pub agents: Vec<String>,
    /// Project directories it may select (empty: only its default).
    pub directories: Vec<String>,
    /// Whether its runs may use OpenCode's own tools (`None`: `prompt.tools_enabled`).
    pub tools: Option<bool>,
    /// Agent when the request names none (`None`: `prompt.agent`).
    pub default_agent: Option<String>,
    /// Directory when the request names none (`None`: `opencode.directory`).
    pub default_directory: Option<String>,
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its key's identity.
    pub id: ClientId,
    /// Its key's name (the entry's `name`, or the id for plain keys).
    pub name: Arc<str>,
    /// `client` or `admin`.
    pub role: KeyRole,
    /// What it may select.
    pub scope: Arc<Scope>,
}

impl Caller {
    /// Whether the caller sees and may use everything.
    pub fn is_admin(&self) -> bool {
        self.role == KeyRole::Admin
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "{what} needs an admin API key."
            )))
        }
    }

    fn anonymous() -> Caller {
        Caller {
            id: ClientId("anonymous".into()),
            name: "anonymous".into(),
            role: KeyRole::Admin,
            scope: Arc::default(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
}

/// The configured keys; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    entries: Arc<Vec<Entry>>,
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.trim().as_bytes()).into()
}

fn entry(config: &KeyConfig) -> Option<Entry> {
    let digest = match (&config.key, &config.key_sha256) {
        (Some(key), _) => digest(key),
        (None, Some(hex)) => parse_digest(hex)?,
        (None, None) => return None,
    };
    let id = ClientId::of_digest(&digest);
    let scope = Scope {
        agents: config.agents.clone(),
        directories: config.directories.clone(),
        tools: config.tools,
        default_agent: config.default_agent.clone(),
        default_directory: config.default_directory.clone(),
    };
    Some(Entry {
        digest,
        caller: Caller {
            id,
            name: config.name.as_str().into(),
            role: config.role,
            scope: Arc::new(scope),
        },
    })
}

impl Keys {
    /// Keys from config: the plain list and the entries; none means authentication is off.
    pub fn new(config: &AuthConfig) -> Keys {
        let plain = config.api_keys.iter().map(|k| {
            let digest = digest(k);
            let id = ClientId::of_digest(&digest);
            Entry {
                digest,
                caller: Caller {
                    name: id.0.clone(),
                    id,
                    role: KeyRole::Client,
                    scope: Arc::default(),
                },
            }
        });
        let entries = plain.chain(config.keys.iter().filter_map(entry)).collect();
        Keys {
            entries: Arc::new(entries),
        }
    }

    /// The caller presenting `key`: compared with every configured key in constant time,
    /// without early exit.
    pub fn check(&self, presented: &str) -> Option<Caller> {
        let presented = digest(presented);
        let mut found = None;
        for entry in self.entries.iter() {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry.caller.clone());
            }
        }
        found
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }
}

/// Middleware: requires `Authorization: Bearer <key>` when keys are configured and stores the
/// [`Caller`] (and its [`ClientId`]) in the request extensions.
pub async fn require_key(State(keys): State<Keys>, mut req: Request, next: Next) -> Response {
    let caller = if keys.enabled() {
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
            Some(caller) => caller,
            None => {
                return ApiError::Unauthorized("Incorrect API key provided.".into()).into_response()
            }
        }
    } else {
        Caller::anonymous()
    };
    if caller.is_admin() && keys.enabled() {
        tracing::info!(target: "portatek_gateway::audit", key = %caller.name, method = %req.method(), path = %req.uri().path(), "admin call");
    }
    req.extensions_mut().insert(caller.id.clone());
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: Vec<KeyConfig>, plain: Vec<&str>) -> AuthConfig {
        AuthConfig {
            api_keys: plain.into_iter().map(String::from).collect(),
            disabled: false,
            keys,
        }
    }

    fn key_entry(name: &str, key: Option<&str>, sha: Option<&str>, role: KeyRole) -> KeyConfig {
        KeyConfig {
            name: name.into(),
            key: key.map(String::from),
            key_sha256: sha.map(String::from),
            role,
            ..KeyConfig::default()
        }
    }

    #[test]
    fn checks_plain_keys_and_entries_with_digests() {
        let sha_of_gamma = "be9d587defa1f0c09ef49eb17e206983a5f8f8289e4281860bd0ee5a19592c67";
        let k = Keys::new(&config(
            vec![
                key_entry("ops", Some("delta"), None, KeyRole::Admin),
                key_entry("bot", None, Some(sha_of_gamma), KeyRole::Client),
            ],
            vec!["alpha", " beta "],
        ));
        assert_eq!(k.check("beta").unwrap().id, ClientId::of_key("beta"));
        assert!(k.check("alpha").is_some());
        assert!(k.check("alph").is_none());
        assert!(k.check("").is_none());
        let ops = k.check("delta").unwrap();
        assert!(ops.is_admin());
        assert_eq!(&*ops.name, "ops");
        let bot = k.check("gamma").unwrap();
        assert_eq!(bot.role, KeyRole::Client);
        assert_eq!(
            bot.id,
            ClientId::of_key("gamma"),
            "a digest entry is the same identity"
        );
        assert!(bot.require_admin("This").is_err());
        assert!(!Keys::default().enabled());
        assert!(!ClientId::of_key("alpha").0.contains("alpha"));
    }
}
