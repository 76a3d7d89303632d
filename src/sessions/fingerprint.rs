//! Conversation fingerprints: how a request's history finds the session that holds it.

use std::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};

use crate::auth::ClientId;
use crate::openai::Message;

/// A SHA-256 fingerprint of a conversation prefix (collision-resistant: pooled sessions must
/// never be shared between different conversations, let alone different keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Feeds `Hash` implementations into SHA-256 (`finish` is never used).
struct Sha(Sha256);

impl Hasher for Sha {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

impl Fingerprint {
    /// The digest (the shared store's key).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Fingerprints `(caller, model, system, turns)`.
    pub fn of(client: &ClientId, model: &str, system: Option<&str>, turns: &[Message]) -> Self {
        let mut h = Sha(Sha256::new());
        client.hash(&mut h);
        model.hash(&mut h);
        system.hash(&mut h);
        turns.hash(&mut h);
        Fingerprint(h.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Role;

    #[test]
    fn fingerprints_match_the_next_turns_prefix() {
        let c = ClientId("k".into());
        let turn2 = [
            Message::text_only(Role::User, "hi"),
            Message::text_only(Role::Assistant, "hello"),
        ];
        let after = Fingerprint::of(&c, "m", Some("sys"), &turn2);
        let empty_reply = |content: Option<&str>| Message {
            role: Role::Assistant,
            parts: content
                .map(|c| vec![crate::openai::ContentPart::Text(c.into())])
                .unwrap_or_default(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        assert_eq!(
            Fingerprint::of(&c, "m", None, &[Message::text_only(Role::Assistant, "")]),
            Fingerprint::of(&c, "m", None, &[empty_reply(None)]),
            "an empty answer is no content at all"
        );
        assert_ne!(
            after,
            Fingerprint::of(&ClientId("other".into()), "m", Some("sys"), &turn2)
        );
        assert_ne!(after, Fingerprint::of(&c, "m2", Some("sys"), &turn2));
        assert_ne!(after, Fingerprint::of(&c, "m", None, &turn2));
        let edited = [
            Message::text_only(Role::User, "hi!"),
            Message::text_only(Role::Assistant, "hello"),
        ];
        assert_ne!(after, Fingerprint::of(&c, "m", Some("sys"), &edited));
    }
}
