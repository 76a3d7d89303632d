//! Shared counters (`rate:<name>`): per-key, per-minute request and token counts, so a key's
//! rate limit is the same however its requests are spread over replicas.

use std::time::Duration;

use super::{ms, Store, StoreError};

impl Store {
    /// Adds `amount` to counter `rate:<name>` (which expires `ttl` after its creation); the
    /// new total.
    pub async fn add_to_counter(
        &self,
        name: &str,
        amount: u64,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let r = self.shared()?;
        let mut inv = r.add_and_expire.prepare_invoke();
        inv.key(r.key("rate:", name)).arg(amount).arg(ms(ttl));
        let n: i64 = r.script(&inv).await?;
        Ok(n.max(0) as u64)
    }
}
