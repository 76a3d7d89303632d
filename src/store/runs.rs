//! Who runs on a session (`run:<id>`, a lease renewed while the run lives, and its
//! `running:<id>` mark that tells a lapsed holder from a clean end), and which responses run
//! now (`response:<id>`), so that one replica at a time prompts a session and every replica
//! can answer for a running response.

use std::time::Duration;

use super::{ms, Store, StoreError};

/// How long the mark of a running session outlives an unreleased claim (a holder that died).
const RUNNING_MARK_TTL: Duration = Duration::from_secs(86_400);

/// What a run claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Another replica runs on the session.
    Held,
    /// Claimed; the last run ended normally.
    Taken,
    /// Claimed, but the last holder's claim lapsed without a release: it died mid-run, and its
    /// run may still be going upstream (abort it before prompting).
    TakenFromLapsed,
}

impl Store {
    /// Claims `session` for one run of this process (see [`Claim`]).
    pub async fn claim_run(&self, session: &str) -> Result<Claim, StoreError> {
        let r = self.shared()?;
        let mut inv = r.claim.prepare_invoke();
        inv.key(r.key("run:", session))
            .key(r.key("running:", session))
            .arg(&r.holder)
            .arg(ms(r.settings.lease_ttl))
            .arg(ms(RUNNING_MARK_TTL));
        let n: i64 = r.script(&inv).await?;
        Ok(match n {
            0 => Claim::Held,
            2 => Claim::TakenFromLapsed,
            _ => Claim::Taken,
        })
    }

    /// Extends this process's claim on `session`; `false` when it is not (or no longer) ours.
    pub async fn renew_run(&self, session: &str) -> Result<bool, StoreError> {
        let r = self.shared()?;
        let mut inv = r.compare_and_expire.prepare_invoke();
        inv.key(r.key("run:", session))
            .arg(&r.holder)
            .arg(ms(r.settings.lease_ttl));
        let n: i64 = r.script(&inv).await?;
        Ok(n == 1)
    }

    /// Ends this process's claim on `session` (another holder's stays).
    pub async fn release_run(&self, session: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut inv = r.release.prepare_invoke();
        inv.key(r.key("run:", session))
            .key(r.key("running:", session))
            .arg(&r.holder);
        r.script::<i64>(&inv).await.map(|_| ())
    }

    /// Records that response `id` runs now (`record`: its owner, session and snapshot, as
    /// JSON), for at most `ttl`, so every replica can answer `GET` for it.
    pub async fn set_running_response(
        &self,
        id: &str,
        record: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("response:", id))
            .arg(record)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// What [`set_running_response`](Self::set_running_response) recorded for `id`, while it
    /// runs.
    pub async fn running_response(&self, id: &str) -> Result<Option<String>, StoreError> {
        let r = self.shared()?;
        r.call(redis::cmd("GET").arg(r.key("response:", id))).await
    }

    /// Response `id` no longer runs.
    pub async fn forget_running_response(&self, id: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        r.call::<()>(redis::cmd("DEL").arg(r.key("response:", id)))
            .await
    }
}
