//! Small synchronisation helpers shared by the services.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, carrying on after a panic in another holder: every map guarded this way is
/// left consistent by each single operation, so a poisoned lock holds nothing half-done.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds since the Unix epoch (0 on a clock before it): the `created` of OpenAI's objects.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
