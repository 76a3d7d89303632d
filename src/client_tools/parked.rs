//! Runs waiting for the client's tool results, between two HTTP requests.
//!
//! A run whose model called client tools ends its response with `tool_calls` but goes on
//! upstream: OpenCode waits on the held MCP calls. The run is parked here under the key the
//! client's next request will present (the conversation so far, or the explicit session), and
//! taken out by that request. A client that never comes back loses it after the result timeout:
//! dropping the run aborts it upstream, answers its held calls with an error and frees its
//! session and slot. Every parked run holds a slot, so the slot pool bounds this registry.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::sync::lock;

struct Entry<T> {
    value: T,
    expiry: AbortHandle,
}

/// Parked values by key, each dropped after its timeout unless taken first.
pub struct Parked<K, T> {
    entries: Arc<Mutex<HashMap<K, Entry<T>>>>,
}

impl<K, T> Clone for Parked<K, T> {
    fn clone(&self) -> Self {
        Parked {
            entries: self.entries.clone(),
        }
    }
}

impl<K, T> Default for Parked<K, T> {
    fn default() -> Self {
        Parked {
            entries: Arc::default(),
        }
    }
}

impl<K, T> Parked<K, T>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Send + 'static,
{
    /// Parks `value` under `key` for at most `timeout` (a value already there is dropped).
    pub fn park(&self, key: K, value: T, timeout: Duration) {
        let entries = self.entries.clone();
        let expired_key = key.clone();
        let expiry = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let expired = lock(&entries).remove(&expired_key);
            if expired.is_some() {
                tracing::info!(
                    "the client did not return its tool results in time; abandoning the run"
                );
            }
            drop(expired);
        })
        .abort_handle();
        let old = lock(&self.entries).insert(key, Entry { value, expiry });
        if let Some(old) = old {
            old.expiry.abort();
        }
    }

    /// Takes the value parked under `key`.
    pub fn take(&self, key: &K) -> Option<T> {
        let entry = lock(&self.entries).remove(key)?;
        entry.expiry.abort();
        Some(entry.value)
    }

    /// How many values are parked.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every parked value (shutdown).
    pub fn clear(&self) {
        let all: Vec<Entry<T>> = lock(&self.entries).drain().map(|(_, e)| e).collect();
        for e in all {
            e.expiry.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flag(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn parked_values_are_taken_or_dropped_at_their_timeout() {
        let parked: Parked<&str, Flag> = Parked::default();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        parked.park("a", Flag(dropped.clone()), Duration::from_secs(10));
        parked.park("b", Flag(Arc::default()), Duration::from_secs(10));
        assert!(parked.take(&"b").is_some());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(parked.is_empty());
    }
}
