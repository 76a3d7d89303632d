//! A run's answers to OpenCode's requests for the caller (a permission, a question): a
//! headless run must never wait on a prompt nobody sees, so the policy answers at once, or the
//! caller is shown the request and answers through the API (see [`crate::permissions`]).

use crate::adapter::{Activity, Output};
use crate::opencode::events::{Ask, AskKind};
use crate::permissions::Decision;

use super::Run;

impl Run {
    /// A headless run must never wait on a permission prompt: the policy answers it now, or
    /// shows it to the caller (a notice in the stream) and answers it after the timeout.
    pub(super) fn answer_permission(&self, ask: &Ask) -> Vec<Output> {
        let permissions = &self.backend.permissions;
        let kind = ask.kind.label();
        let granted =
            ask.kind == AskKind::Permission && self.grants.cover(&ask.permission, &ask.patterns);
        let reply = match permissions.decide(ask, self.tools.is_some()) {
            Decision::Reply(reply) => {
                tracing::info!(kind, permission = %ask.permission, reply,
                    session = %self.session_id(), "answering a permission request by policy");
                reply
            }
            Decision::AskClient if granted => {
                tracing::info!(permission = %ask.permission, session = %self.session_id(),
                    "granting a permission request: the caller answered `always` earlier in this run");
                "once"
            }
            Decision::AskClient => {
                return permissions
                    .ask_client(ask, &self.conversation.client, &self.grants)
                    .map(|p| vec![Output::Activity(Activity::Permission(p))])
                    .unwrap_or_default()
            }
        };
        let (permissions, id, session, directory) = (
            permissions.clone(),
            ask.id.clone(),
            ask.session_id.clone(),
            ask.directory.clone(),
        );
        self.backend.sessions.upstream().spawn_cleanup(async move {
            let dir = directory.as_deref();
            if let Err(e) = permissions
                .reply(kind, &session, &id, reply, None, dir)
                .await
            {
                tracing::warn!(error = %e, "could not answer a permission request");
            }
        });
        Vec::new()
    }
}
