//! Explicit sessions: created through `/v1/sessions`, used with `x-session-id`, owned by the
//! API key that created them, never evicted.
//!
//! Ownership lives upstream, in the session's title (`… [owner:<client id>]`, kept by OpenCode's
//! forks too), so explicit sessions survive a gateway restart and are shared by gateway
//! replicas; only the busy flag and the history's end are local. A key never learns whether another
//! key's session exists: both are the same 404.

use std::sync::Arc;

use serde_json::Value;

use super::claims::Claims;
use super::lease::Lease;
use super::upstream::{not_found_as_session, SessionUpstream};
use crate::auth::{Caller, ClientId};
use crate::config::SessionsConfig;
use crate::error::ApiError;
use crate::opencode::{Session, UpstreamError};

/// Most sessions an admin's listing shows.
const ADMIN_LIST_LIMIT: usize = 10_000;

struct Inner {
    upstream: SessionUpstream,
    title: String,
    /// Busy flags and history ends (ownership lives upstream, in the title).
    claims: Claims,
    max_per_key: usize,
    /// Makes "check the cap, then create" one step.
    create_lock: tokio::sync::Mutex<()>,
}

/// Handle to the explicit sessions; cheap to clone.
#[derive(Clone)]
pub struct ExplicitSessions {
    inner: Arc<Inner>,
}

/// Whether `id` looks like an OpenCode session id (`ses_` and 8 to 64 ASCII letters or digits).
pub fn is_session_id(id: &str) -> bool {
    id.strip_prefix("ses_").is_some_and(|rest| {
        (8..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A session title as shown to clients: without the owner tag.
pub fn display_title(title: &str) -> String {
    let Some(start) = title.find(" [owner:") else {
        return title.to_string();
    };
    match title[start..].find(']') {
        Some(len) => format!("{}{}", &title[..start], &title[start + len + 1..]),
        None => title.to_string(),
    }
}

fn owner_tag(owner: &ClientId) -> String {
    format!("[owner:{}]", owner.0)
}

fn owns(owner: &ClientId, session: &Session) -> bool {
    session
        .title
        .as_deref()
        .is_some_and(|t| t.contains(&owner_tag(owner)))
}

impl ExplicitSessions {
    /// Explicit sessions titled `title` (plus the owner tag), at most `max_explicit_per_key` a key.
    pub fn new(upstream: SessionUpstream, title: String, config: &SessionsConfig) -> Self {
        ExplicitSessions {
            inner: Arc::new(Inner {
                claims: Claims::new(upstream.clone()),
                upstream,
                title,
                max_per_key: config.max_explicit_per_key,
                create_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// `caller`'s explicit session `id` (an admin's: any session); 404 when it does not exist
    /// or is another key's.
    pub async fn owned(&self, caller: &Caller, id: &str) -> Result<Session, ApiError> {
        // Only ids shaped like OpenCode's reach it (it answers 500 for others, and is lenient
        // with trailing slashes and queries that would alias one session under many names).
        if !is_session_id(id) {
            return Err(ApiError::session_not_found(id));
        }
        match self.inner.upstream.get(id).await {
            Ok(s) if (caller.is_admin() || owns(&caller.id, &s)) && s.id == id => Ok(s),
            Ok(_) | Err(UpstreamError::NotFound(_)) => Err(ApiError::session_not_found(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// `caller`'s explicit sessions (an admin's: everyone's), oldest first.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<Session>, ApiError> {
        if caller.is_admin() {
            let mut all = self
                .inner
                .upstream
                .search("[owner:", ADMIN_LIST_LIMIT)
                .await?;
            all.sort_by_key(|s| (s.created_secs(), s.id.clone()));
            return Ok(all);
        }
        let owner = &caller.id;
        // The cap bounds what one key holds; the margin covers creates racing the cap.
        let limit = self.inner.max_per_key * 2 + 16;
        let mut mine: Vec<Session> = self
            .inner
            .upstream
            .search(&owner_tag(owner), limit)
            .await?
            .into_iter()
            .filter(|s| owns(owner, s))
            .collect();
        mine.sort_by_key(|s| (s.created_secs(), s.id.clone()));
        Ok(mine)
    }

    /// 429 when `owner` already holds as many explicit sessions as allowed.
    async fn check_quota(&self, owner: &ClientId) -> Result<(), ApiError> {
        let limit = self.inner.max_per_key * 2 + 16;
        let held = self
            .inner
            .upstream
            .search(&owner_tag(owner), limit)
            .await?
            .iter()
            .filter(|s| owns(owner, s))
            .count();
        if held >= self.inner.max_per_key {
            return Err(ApiError::too_many_sessions(format!(
                "This API key already holds {held} sessions, the limit; delete some first."
            )));
        }
        Ok(())
    }

    /// Creates an explicit session owned by `owner` in directory `dir` (429 beyond the per-key
    /// limit).
    pub async fn create(&self, owner: &ClientId, dir: Option<&str>) -> Result<Session, ApiError> {
        let _one_at_a_time = self.inner.create_lock.lock().await;
        self.check_quota(owner).await?;
        let title = format!("{} {}", self.inner.title, owner_tag(owner));
        Ok(self.inner.upstream.create(&title, dir).await?)
    }

    /// Forks `owner`'s session `id` into a new one with the same history, owned by the same
    /// key (OpenCode titles a fork after its source, owner tag included).
    pub async fn fork(&self, caller: &Caller, id: &str) -> Result<Session, ApiError> {
        self.owned(caller, id).await?;
        let _one_at_a_time = self.inner.create_lock.lock().await;
        self.check_quota(&caller.id).await?;
        let upstream = &self.inner.upstream;
        let fork = upstream
            .fork(id, None)
            .await
            .map_err(not_found_as_session(id))?;
        // The copies get fresh ids, and their events may still be in flight: remember the
        // newest so they are not taken for the next run's.
        let history_end = upstream.newest_message_id(&fork.id).await.unwrap_or(None);
        self.inner.claims.set_history_end(&fork.id, history_end);
        Ok(fork)
    }

    /// Deletes `owner`'s session `id`, upstream too.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        self.owned(caller, id).await?;
        self.inner.upstream.delete(id).await?;
        self.inner.claims.forget(id);
        Ok(())
    }

    /// `owner`'s session `id`'s history as OpenCode's `[{info, parts}]`.
    pub async fn messages(&self, caller: &Caller, id: &str) -> Result<Vec<Value>, ApiError> {
        self.owned(caller, id).await?;
        self.inner
            .upstream
            .messages(id)
            .await
            .map_err(not_found_as_session(id))
    }

    /// Stops whatever runs on `owner`'s session `id`.
    pub async fn abort(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        self.owned(caller, id).await?;
        self.inner
            .upstream
            .abort(id)
            .await
            .map_err(not_found_as_session(id))
    }

    /// Number of explicit sessions this gateway has local state for.
    pub fn count(&self) -> usize {
        self.inner.claims.count()
    }

    /// Claims `owner`'s session `id` for one request (409 while another runs on it).
    pub async fn acquire(&self, caller: &Caller, id: &str) -> Result<Lease, ApiError> {
        let session = self.owned(caller, id).await?;
        self.claim(&session).await
    }

    /// Claims a session already known to be the caller's (from [`Self::owned`]).
    pub async fn claim(&self, session: &Session) -> Result<Lease, ApiError> {
        self.inner.claims.claim(&session.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_strict() {
        assert!(is_session_id("ses_de53ca663ffecb0lmdLoAGdUIz"));
        for bad in [
            "",
            "ses_",
            "nope",
            "ses_short",
            "ses_abcdefghij/",
            "ses_abcdefghij?x=1",
            "ses_abcdefgh%2F",
            "../ses_abcdefghij",
        ] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn owner_tags_are_hidden_from_titles() {
        assert_eq!(
            display_title("Chat [owner:k12] (fork #1)"),
            "Chat (fork #1)"
        );
        assert_eq!(display_title("Plain [x]"), "Plain [x]");
    }
}
