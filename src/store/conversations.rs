//! Where a conversation or session lives, as replicas share it: a conversation's session
//! (`conv:<sha256>`), a session's upstream (`session:<id>`) and its history_end (`history end:<id>`), and
//! forgetting a deleted session. The keys a replica reads to continue what another started.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{hex, ms, Store, StoreError};

/// A conversation's session as the shared store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedConversation {
    /// The upstream's name.
    pub upstream: String,
    /// The OpenCode session.
    pub session: String,
    /// The newest message id of the remembered state (stored as `floor`, the name replicas
    /// of earlier versions read).
    #[serde(rename = "floor")]
    pub history_end: Option<String>,
    /// The gateway instance that wrote the entry (and whose stamp the session carries); absent
    /// in entries of gateways that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

impl Store {
    /// `conv:<fp>` taken (exclusive: `GETDEL`).
    pub async fn take_conversation(
        &self,
        fp: &[u8; 32],
    ) -> Result<Option<SharedConversation>, StoreError> {
        let r = self.shared()?;
        let raw: Option<String> = r
            .call(redis::cmd("GETDEL").arg(r.key("conv:", &hex(fp))))
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// `conv:<fp>` read.
    pub async fn peek_conversation(
        &self,
        fp: &[u8; 32],
    ) -> Result<Option<SharedConversation>, StoreError> {
        let r = self.shared()?;
        let raw: Option<String> = r
            .call(redis::cmd("GET").arg(r.key("conv:", &hex(fp))))
            .await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// `conv:<fp>` written for `ttl`.
    pub async fn put_conversation(
        &self,
        fp: &[u8; 32],
        entry: &SharedConversation,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let value = serde_json::to_string(entry).unwrap_or_default();
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("conv:", &hex(fp)))
            .arg(value)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// Deletes `conv:<fp>` only when it is still `entry`; whether it did.
    pub async fn remove_conversation_if(
        &self,
        fp: &[u8; 32],
        entry: &SharedConversation,
    ) -> Result<bool, StoreError> {
        let r = self.shared()?;
        let value = serde_json::to_string(entry).unwrap_or_default();
        let mut inv = r.compare_and_delete.prepare_invoke();
        inv.key(r.key("conv:", &hex(fp))).arg(value);
        let n: i64 = r.script(&inv).await?;
        Ok(n == 1)
    }

    /// The upstream holding `session`.
    pub async fn session_home(&self, session: &str) -> Result<Option<String>, StoreError> {
        let r = self.shared()?;
        r.call(redis::cmd("GET").arg(r.key("session:", session)))
            .await
    }

    /// Records that `session` lives on `upstream`, for `ttl`.
    pub async fn set_session_home(
        &self,
        session: &str,
        upstream: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("session:", session))
            .arg(upstream)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// Forgets everything about `session` (deleted upstream).
    pub async fn forget_session(&self, session: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(r.key("session:", session))
            .arg(r.key("floor:", session))
            .arg(r.key("run:", session))
            .arg(r.key("running:", session));
        r.call::<()>(&cmd).await
    }

    /// The newest message id before `session`'s next run.
    pub async fn history_end(&self, session: &str) -> Result<Option<String>, StoreError> {
        let r = self.shared()?;
        r.call(redis::cmd("GET").arg(r.key("floor:", session)))
            .await
    }

    /// Records `session`'s history end for `ttl`.
    pub async fn set_history_end(
        &self,
        session: &str,
        history_end: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("floor:", session))
            .arg(history_end)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }
}
