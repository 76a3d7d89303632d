//! What the gateway last set on each 2.x session — model, agent, tool permissions, system
//! text — so that a turn sends only what changed.
//!
//! 2.x keeps these as session state, set by a call each before the prompt; a follow-up turn of
//! a conversation usually changes none of them, and four calls per turn become one. A session
//! not known here (new, deleted, or made by another gateway replica) gets every call. The
//! memory is bounded: past [`MAX_SESSIONS`] it starts over (costing only the calls).
//! A `HashMap` behind a `Mutex`: `moka` would bound it more finely, for no gain here.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Most sessions remembered.
const MAX_SESSIONS: usize = 20_000;

/// One piece of session state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Setting {
    Model = 0,
    Agent = 1,
    Permissions = 2,
    System = 3,
}

/// The digests of what was last set, per session.
#[derive(Debug, Default)]
pub(crate) struct SessionSettings {
    sessions: Mutex<HashMap<String, [Option<u64>; 4]>>,
}

/// A digest of a setting's value.
pub(crate) fn digest(value: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl SessionSettings {
    /// Whether `setting` of session `id` must be sent (it differs from, or is not known as,
    /// `value`'s digest).
    pub fn needs(&self, id: &str, setting: Setting, value: u64) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(id).and_then(|s| s[setting as usize]) != Some(value)
    }

    /// Records that `setting` of session `id` is now `value`.
    pub fn set(&self, id: &str, setting: Setting, value: u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(id) {
            sessions.clear();
        }
        sessions.entry(id.to_string()).or_default()[setting as usize] = Some(value);
    }

    /// Forgets a session (deleted).
    pub fn forget(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_needed() {
        let s = SessionSettings::default();
        let model = digest(&"mock/echo");
        assert!(s.needs("ses_1", Setting::Model, model), "unknown: sent");
        s.set("ses_1", Setting::Model, model);
        assert!(!s.needs("ses_1", Setting::Model, model));
        assert!(s.needs("ses_1", Setting::Model, digest(&"mock/thinker")));
        assert!(s.needs("ses_1", Setting::Agent, digest(&"build")));
        assert!(s.needs("ses_2", Setting::Model, model), "per session");
        s.forget("ses_1");
        assert!(s.needs("ses_1", Setting::Model, model));
    }
}
