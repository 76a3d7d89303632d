//! Permission policy: a headless run never waits on a prompt nobody answers.
//!
//! When OpenCode's agent wants to run a tool its rules say to ask about (`permission.asked`), or
//! asks the user something with its `question` tool (`question.asked`), the run would wait
//! forever. The gateway answers by policy (`[permissions] policy`):
//! - `deny` (default): rejected at once; the model is told and carries on.
//! - `allow`: permissions matching the allowlist (`"bash"`, `"bash:git *"`: tool, then a
//!   pattern of its arguments) are granted once, the rest rejected; questions are rejected.
//! - `client`: the request is shown to the caller (a stream notice, and
//!   `GET /v1/sessions/{id}/permissions`), answered with
//!   `POST /v1/sessions/{id}/permissions/{permission_id}`; unanswered within
//!   `permissions.timeout_secs` it is rejected. The run's own deadline still holds.
//!
//! OpenCode's guard against a model repeating one call (`doom_loop`) is granted for runs with
//! client tools: repeating a call is the client's business.
//!
//! **What `always` means through the gateway.** OpenCode 1.18 keeps an `always` answer as an
//! `allow` rule of the whole project instance, in memory, until that OpenCode instance ends,
//! and checks it *after* every session's own rules: forwarded as-is it would let every later
//! run in that project directory — other conversations, other keys, admins, and a gateway
//! restarted with `policy = "deny"` — do the same thing without being asked. So the gateway
//! never sends `always` upstream: it answers OpenCode `once`, and grants the request's
//! patterns (OpenCode's suggestion, such as `git *` for `git status`) for the **rest of the
//! run that asked** only ([`Grants`]): later requests of that run that match are answered
//! `once` by the gateway without asking again; other runs, conversations and keys are asked
//! again; nothing is saved in OpenCode. The policy decides every request whatever OpenCode
//! has saved: rules saved by other clients (or a gateway before this rule) are cleared at
//! start where the gateway may ([`crate::server`]'s start-up, `permissions.reset_on_start`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::auth::ClientId;
use crate::config::{PermissionPolicy, PermissionsConfig};
use crate::error::ApiError;
use crate::opencode::events::{Ask, AskKind};
use crate::opencode::OpenCodeClient;
use crate::sync::lock;

/// A request of OpenCode's agent waiting for an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pending {
    /// `per_…` or `que_…`.
    pub id: String,
    /// `permission` or `question`.
    pub kind: &'static str,
    /// The session asking.
    pub session_id: String,
    /// The tool or permission (`bash`, `edit`, …), or `question`.
    pub permission: String,
    /// What it wants to run (`["git status"]`).
    pub patterns: Vec<String>,
    /// OpenCode's details (the command, the questions…).
    pub metadata: Value,
    /// Unix seconds.
    pub asked_at: u64,
    /// The patterns OpenCode suggests granting for `always` (`["git *"]`).
    #[serde(skip)]
    always: Vec<String>,
    /// The grants of the run that asked (what `always` adds to).
    #[serde(skip)]
    grants: Grants,
    #[serde(skip)]
    owner: ClientId,
    /// The project directory of the asking session (its OpenCode instance holds the request).
    #[serde(skip)]
    directory: Option<String>,
}

/// What one run has been granted for its rest by `always` answers: (permission, pattern)
/// pairs, matched as the allowlist's are. Owned by the run (dropped with it); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Grants(Arc<Mutex<Vec<(String, String)>>>);

impl PartialEq for Grants {
    fn eq(&self, other: &Grants) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Grants {
    /// Grants `permission` for `patterns` for the rest of the run.
    fn add(&self, permission: &str, patterns: &[String]) {
        let mut grants = lock(&self.0);
        for pattern in patterns {
            grants.push((permission.to_string(), pattern.clone()));
        }
    }

    /// Whether every one of `patterns` of `permission` is granted (an empty list never is).
    pub fn cover(&self, permission: &str, patterns: &[String]) -> bool {
        let grants = lock(&self.0);
        !patterns.is_empty()
            && patterns.iter().all(|text| {
                grants
                    .iter()
                    .any(|(p, pattern)| p == permission && glob(pattern, text))
            })
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer OpenCode now (`once`, `reject`).
    Reply(&'static str),
    /// Show it to the caller and wait (for at most the timeout).
    AskClient,
}

/// The policy and the requests waiting for callers; cheap to clone.
#[derive(Clone)]
pub struct Permissions {
    policy: PermissionPolicy,
    allow: Arc<Vec<(String, Option<String>)>>,
    timeout: Duration,
    client: OpenCodeClient,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
}

/// Whether `text` matches `pattern` (`*` matches any run of characters).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

fn now_secs() -> u64 {
    crate::sync::now_secs()
}

impl Permissions {
    /// The policy of `config`; answers go to OpenCode through `client`.
    pub fn new(config: &PermissionsConfig, client: OpenCodeClient) -> Permissions {
        let allow = config
            .allow
            .iter()
            .map(|rule| match rule.split_once(':') {
                Some((tool, pattern)) => {
                    (tool.trim().to_string(), Some(pattern.trim().to_string()))
                }
                None => (rule.trim().to_string(), None),
            })
            .collect();
        Permissions {
            policy: config.policy,
            allow: Arc::new(allow),
            timeout: config.timeout,
            client,
            pending: Arc::default(),
        }
    }

    fn allowed(&self, permission: &str, patterns: &[String]) -> bool {
        self.allow.iter().any(|(tool, pattern)| {
            glob(tool, permission)
                && match pattern {
                    None => true,
                    Some(p) => !patterns.is_empty() && patterns.iter().all(|text| glob(p, text)),
                }
        })
    }

    /// What the policy says about a request of a run (`client_tools`: the run has them).
    pub fn decide(&self, ask: &Ask, client_tools: bool) -> Decision {
        let question = ask.kind == AskKind::Question;
        let permission = ask.permission.as_str();
        if !question && permission == "doom_loop" && client_tools {
            return Decision::Reply("once");
        }
        match self.policy {
            PermissionPolicy::Deny => Decision::Reply("reject"),
            PermissionPolicy::Allow if question => Decision::Reply("reject"),
            PermissionPolicy::Allow => {
                if self.allowed(permission, &ask.patterns) {
                    Decision::Reply("once")
                } else {
                    Decision::Reply("reject")
                }
            }
            PermissionPolicy::Client => Decision::AskClient,
        }
    }

    /// Answers OpenCode: a permission with `reply`, a question rejected (or answered). OpenCode
    /// keeps a request in the instance of its session's project `directory`: the answer goes
    /// there (elsewhere it is a 404, and the run waits on).
    pub async fn reply(
        &self,
        kind: &str,
        session: &str,
        id: &str,
        reply: &str,
        answers: Option<&Value>,
        directory: Option<&str>,
    ) -> Result<(), ApiError> {
        let message = "The gateway's permission policy does not allow this.";
        let client = self.client.in_directory(directory);
        match (kind, reply, answers) {
            ("question", _, Some(answers)) => client.reply_question(session, id, answers).await?,
            ("question", _, None) => client.reject_question(session, id).await?,
            (_, "reject", _) => {
                client
                    .reply_permission(session, id, "reject", Some(message))
                    .await?
            }
            // `always` would become a rule of the whole project upstream: see the module docs.
            (_, _, _) => client.reply_permission(session, id, "once", None).await?,
        }
        Ok(())
    }

    /// Shows a request of the run holding `grants` to the caller `owner`, rejecting it after
    /// the timeout if nobody answers; returns what was registered.
    pub fn ask_client(&self, ask: &Ask, owner: &ClientId, grants: &Grants) -> Option<Pending> {
        if ask.session_id.is_empty() {
            return None;
        }
        let pending = Pending {
            id: ask.id.clone(),
            kind: ask.kind.label(),
            session_id: ask.session_id.clone(),
            permission: ask.permission.clone(),
            patterns: ask.patterns.clone(),
            metadata: ask.details.clone(),
            asked_at: now_secs(),
            always: ask.always.clone(),
            grants: grants.clone(),
            owner: owner.clone(),
            directory: ask.directory.clone(),
        };
        lock(&self.pending).insert(pending.id.clone(), pending.clone());
        let this = self.clone();
        let expired = pending.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.timeout).await;
            if lock(&this.pending).remove(&expired.id).is_some() {
                tracing::info!(id = %expired.id, session = %expired.session_id, "nobody answered the permission request in time; rejecting it");
                let dir = expired.directory.as_deref();
                if let Err(e) = this
                    .reply(
                        expired.kind,
                        &expired.session_id,
                        &expired.id,
                        "reject",
                        None,
                        dir,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "could not reject an unanswered permission request");
                }
            }
        });
        Some(pending)
    }

    /// Whether a request of `owner` (an admin: anyone's) waits on `session_id`.
    pub fn waiting_for(&self, session_id: &str, owner: &ClientId, admin: bool) -> bool {
        lock(&self.pending)
            .values()
            .any(|p| p.session_id == session_id && (admin || &p.owner == owner))
    }

    /// The requests waiting on `session_id` that `owner` may see (an admin: all).
    pub fn list(&self, session_id: &str, owner: &ClientId, admin: bool) -> Vec<Pending> {
        let mut out: Vec<Pending> = lock(&self.pending)
            .values()
            .filter(|p| p.session_id == session_id && (admin || &p.owner == owner))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.asked_at.cmp(&b.asked_at).then(a.id.cmp(&b.id)));
        out
    }

    /// Answers a waiting request of `session_id` (404 when there is none the caller may see).
    pub async fn answer(
        &self,
        session_id: &str,
        id: &str,
        owner: &ClientId,
        admin: bool,
        reply: &str,
        answers: Option<&Value>,
    ) -> Result<Pending, ApiError> {
        let taken = {
            let mut pending = lock(&self.pending);
            match pending.get(id) {
                Some(p) if p.session_id == session_id && (admin || &p.owner == owner) => {
                    pending.remove(id)
                }
                _ => None,
            }
        };
        let pending = taken.ok_or_else(|| ApiError::NotFound {
            message: format!("No permission request '{id}' is waiting on this session."),
            code: "permission_not_found",
        })?;
        self.reply(
            pending.kind,
            &pending.session_id,
            id,
            reply,
            answers,
            pending.directory.as_deref(),
        )
        .await?;
        if reply == "always" && pending.kind == "permission" {
            let patterns = if pending.always.is_empty() {
                &pending.patterns
            } else {
                &pending.always
            };
            pending.grants.add(&pending.permission, patterns);
            self.grant_waiting(&pending.grants).await;
        }
        Ok(pending)
    }

    /// Answers `once` the requests of the run holding `grants` that its grants now cover (as
    /// OpenCode does for the other requests of a session when one is answered `always`).
    async fn grant_waiting(&self, grants: &Grants) {
        let covered: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let ids: Vec<String> = pending
                .values()
                .filter(|p| {
                    p.kind == "permission"
                        && &p.grants == grants
                        && grants.cover(&p.permission, &p.patterns)
                })
                .map(|p| p.id.clone())
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for p in covered {
            let dir = p.directory.as_deref();
            if let Err(e) = self
                .reply(p.kind, &p.session_id, &p.id, "once", None, dir)
                .await
            {
                tracing::warn!(error = %e, "could not answer a permission request granted by `always`");
            }
        }
    }

    /// Forgets a request OpenCode no longer waits on (answered elsewhere, run ended).
    pub fn forget(&self, id: &str) {
        lock(&self.pending).remove(id);
    }
}

mod reset;
pub use reset::reset_saved_approvals;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OpenCodeConfig;

    fn perms(policy: PermissionPolicy, allow: &[&str]) -> Permissions {
        let config = PermissionsConfig {
            policy,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(60),
            reset_on_start: false,
        };
        let client = OpenCodeClient::new(&OpenCodeConfig {
            base_url: Some("http://127.0.0.1:9".into()),
            ..OpenCodeConfig::default()
        })
        .unwrap();
        Permissions::new(&config, client)
    }

    fn asked(permission: &str, patterns: &[&str]) -> Ask {
        Ask {
            id: "per_1".into(),
            kind: AskKind::Permission,
            session_id: "ses_1".into(),
            permission: permission.into(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            always: Vec::new(),
            details: Value::Null,
            directory: None,
        }
    }

    #[test]
    fn grants_cover_only_what_was_granted() {
        let grants = Grants::default();
        let of = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!grants.cover("bash", &of(&["git status"])));
        grants.add("bash", &of(&["git *"]));
        assert!(grants.cover("bash", &of(&["git status", "git log"])));
        assert!(!grants.cover("bash", &of(&["git status", "rm -rf /"])));
        assert!(!grants.cover("edit", &of(&["git status"])));
        assert!(
            !grants.cover("bash", &[]),
            "an empty request is never covered"
        );
        assert_ne!(grants, Grants::default(), "grants belong to one run");
        assert_eq!(grants, grants.clone());
    }

    #[test]
    fn globs() {
        assert!(glob("git *", "git status"));
        assert!(glob("*", "anything"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("git *", "rm -rf /"));
        assert!(glob("read", "read"));
        assert!(!glob("read", "readx"));
    }

    #[test]
    fn each_policy_decides() {
        let deny = perms(PermissionPolicy::Deny, &[]);
        assert_eq!(
            deny.decide(&asked("bash", &["ls"]), false),
            Decision::Reply("reject")
        );
        assert_eq!(
            deny.decide(&asked("doom_loop", &[]), true),
            Decision::Reply("once")
        );
        assert_eq!(
            deny.decide(&asked("doom_loop", &[]), false),
            Decision::Reply("reject")
        );
        let allow = perms(PermissionPolicy::Allow, &["bash:git *", "read"]);
        assert_eq!(
            allow.decide(&asked("bash", &["git status"]), false),
            Decision::Reply("once")
        );
        assert_eq!(
            allow.decide(&asked("bash", &["rm -rf /"]), false),
            Decision::Reply("reject")
        );
        assert_eq!(
            allow.decide(&asked("read", &["/etc/passwd"]), false),
            Decision::Reply("once")
        );
        assert_eq!(
            allow.decide(&asked("edit", &["x"]), false),
            Decision::Reply("reject")
        );
        let client = perms(PermissionPolicy::Client, &[]);
        assert_eq!(
            client.decide(&asked("bash", &["ls"]), false),
            Decision::AskClient
        );
    }
}
