//! Gateway instances' heartbeats (`instance:<id>`): which replicas are alive, so the session
//! sweep spares the pooled sessions of live ones.

use std::time::Duration;

use super::{ms, Store, StoreError};

impl Store {
    /// Records that gateway `instance` (of `deployment`) is alive, for `ttl`.
    pub async fn beat(
        &self,
        instance: &str,
        deployment: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let r = self.shared()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(r.key("instance:", instance))
            .arg(deployment)
            .arg("PX")
            .arg(ms(ttl));
        r.call::<()>(&cmd).await
    }

    /// Which of `instances` are alive (have a heartbeat), in order.
    pub async fn alive(&self, instances: &[&str]) -> Result<Vec<bool>, StoreError> {
        let r = self.shared()?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for id in instances {
            cmd.arg(r.key("instance:", id));
        }
        let found: Vec<Option<String>> = r.call(&cmd).await?;
        Ok(found.iter().map(Option::is_some).collect())
    }

    /// Removes gateway `instance`'s heartbeat (it is shutting down).
    pub async fn forget_instance(&self, instance: &str) -> Result<(), StoreError> {
        let r = self.shared()?;
        r.call::<()>(redis::cmd("DEL").arg(r.key("instance:", instance)))
            .await
    }
}
