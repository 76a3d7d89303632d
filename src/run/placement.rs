//! Where and how a run happens: the OpenCode agent, the project directory, and whether
//! OpenCode's own tools are on — chosen per request within the calling key's scope.
//!
//! A request names an agent or directory with the `x-opencode-agent` / `x-opencode-directory`
//! headers (or `opencode_agent` / `opencode_directory` in its `metadata`, for clients that cannot
//! set headers). Unnamed, the key's default applies, then the global one (`prompt.agent`,
//! `opencode.directory`). A client key may name only its defaults and what its scope lists; an
//! admin key anything. Anything else is a 403 before OpenCode is asked.

use axum::http::HeaderMap;

use crate::auth::Caller;
use crate::config::Config;
use crate::error::ApiError;

/// Header selecting the OpenCode agent.
pub const AGENT_HEADER: &str = "x-opencode-agent";
/// Header selecting the project directory.
pub const DIRECTORY_HEADER: &str = "x-opencode-directory";

/// What a request asks for (before the scope check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    /// The agent named, if any.
    pub agent: Option<String>,
    /// The directory named, if any.
    pub directory: Option<String>,
}

impl Requested {
    /// From the headers, else from `metadata` (`opencode_agent`, `opencode_directory`).
    pub fn from_request(
        headers: &HeaderMap,
        metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Requested, ApiError> {
        let pick = |header: &str, key: &str| -> Result<Option<String>, ApiError> {
            if let Some(v) = headers.get(header) {
                return match v.to_str() {
                    Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                    _ => Err(ApiError::invalid(
                        format!("The `{header}` header must be a non-empty text."),
                        None,
                    )),
                };
            }
            Ok(metadata
                .and_then(|m| m.get(key))
                .and_then(|v| v.as_str())
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string()))
        };
        Ok(Requested {
            agent: pick(AGENT_HEADER, "opencode_agent")?,
            directory: pick(DIRECTORY_HEADER, "opencode_directory")?,
        })
    }
}

/// The resolved placement of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// OpenCode agent (`None`: OpenCode's default).
    pub agent: Option<String>,
    /// Project directory (`None`: the server's own).
    pub directory: Option<String>,
    /// Whether the model may use OpenCode's own tools.
    pub tools: bool,
}

impl Placement {
    /// A stable text of the placement, for conversation fingerprints: the same history in two
    /// directories or under two agents is two conversations.
    pub fn key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            self.agent.as_deref().unwrap_or(""),
            self.directory.as_deref().unwrap_or(""),
            self.tools
        )
    }
}

/// Resolves what `caller` asked for within its scope.
pub fn resolve(
    config: &Config,
    caller: &Caller,
    requested: &Requested,
) -> Result<Placement, ApiError> {
    let scope = &caller.scope;
    let default_agent = scope
        .default_agent
        .clone()
        .or_else(|| config.prompt.agent.clone());
    let default_directory = scope
        .default_directory
        .clone()
        .or_else(|| config.opencode.directory.clone());
    let agent = match &requested.agent {
        None => default_agent,
        Some(a)
            if caller.is_admin()
                || Some(a) == default_agent.as_ref()
                || scope.agents.contains(a) =>
        {
            Some(a.clone())
        }
        Some(a) => {
            return Err(ApiError::PermissionDenied(format!(
                "This API key may not use the agent `{a}`."
            )))
        }
    };
    let directory = match &requested.directory {
        None => default_directory,
        Some(d) if !d.starts_with('/') || d.split('/').any(|c| c == "..") => {
            return Err(ApiError::invalid(
                format!("`{DIRECTORY_HEADER}` must be an absolute path without `..`: {d:?}."),
                None,
            ))
        }
        Some(d)
            if caller.is_admin()
                || Some(d) == default_directory.as_ref()
                || scope.directories.contains(d) =>
        {
            Some(d.clone())
        }
        Some(d) => {
            return Err(ApiError::PermissionDenied(format!(
                "This API key may not use the project directory `{d}`."
            )))
        }
    };
    // OpenCode answers 500 for a directory that does not exist; where it runs on this host
    // the gateway can tell the client what is wrong instead.
    if let (Some(d), Some(_)) = (&directory, &requested.directory) {
        if config.opencode_on_this_host() && !std::path::Path::new(d).is_dir() {
            return Err(ApiError::invalid(
                format!("`{DIRECTORY_HEADER}`: no directory {d:?} on OpenCode's host."),
                None,
            ));
        }
    }
    Ok(Placement {
        agent,
        directory,
        tools: scope.tools.unwrap_or(config.prompt.tools_enabled),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ClientId, Scope};
    use crate::config::KeyRole;
    use std::sync::Arc;

    fn caller(role: KeyRole, scope: Scope) -> Caller {
        Caller {
            id: ClientId("k1".into()),
            name: "k1".into(),
            role,
            scope: Arc::new(scope),
        }
    }

    fn ask(agent: Option<&str>, directory: Option<&str>) -> Requested {
        Requested {
            agent: agent.map(String::from),
            directory: directory.map(String::from),
        }
    }

    #[test]
    fn defaults_then_scope_then_refusal() {
        let mut config = Config::default();
        config.prompt.agent = Some("chat".into());
        // A remote OpenCode: its directories are not checked on this host.
        config.opencode.base_url = Some("http://opencode.internal:4096".into());
        let scoped = caller(
            KeyRole::Client,
            Scope {
                agents: vec!["build".into()],
                directories: vec!["/srv/a".into()],
                tools: Some(true),
                ..Scope::default()
            },
        );
        let p = resolve(&config, &scoped, &ask(None, None)).unwrap();
        assert_eq!(p.agent.as_deref(), Some("chat"));
        assert!(p.tools, "the key's own tool switch wins");
        let p = resolve(&config, &scoped, &ask(Some("build"), Some("/srv/a"))).unwrap();
        assert_eq!(
            (p.agent.as_deref(), p.directory.as_deref()),
            (Some("build"), Some("/srv/a"))
        );
        for denied in [ask(Some("plan"), None), ask(None, Some("/srv/b"))] {
            assert!(matches!(
                resolve(&config, &scoped, &denied),
                Err(ApiError::PermissionDenied(_))
            ));
        }
        assert!(matches!(
            resolve(&config, &scoped, &ask(None, Some("/srv/a/../b"))),
            Err(ApiError::InvalidRequest { .. })
        ));
        let admin = caller(KeyRole::Admin, Scope::default());
        assert!(resolve(&config, &admin, &ask(Some("plan"), Some("/srv/b"))).is_ok());
        let plain = caller(KeyRole::Client, Scope::default());
        assert!(!resolve(&config, &plain, &ask(None, None)).unwrap().tools);
    }
}
