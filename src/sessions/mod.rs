//! OpenCode sessions on behalf of clients: who may use which session, and when it is deleted.
//!
//! Two services share one upstream handle:
//! - [`ConversationPool`]: OpenAI clients resend the whole history every turn; the pool finds
//!   the session that already holds it (by [`Fingerprint`]), so only the new message is sent.
//! - [`ExplicitSessions`]: sessions a client creates and names itself (`/v1/sessions`,
//!   `x-session-id`), owned by its API key.
//!
//! Either hands out a [`Lease`] (exclusive use for one request, returned with
//! [`Lease::release`], cleaned up if dropped). All session calls to OpenCode go through
//! [`SessionUpstream`], which also runs the clean-up that shutdown waits for.
//!
//! What a gateway cannot clean up itself — the pooled sessions of a gateway killed outright —
//! the [`Sweeper`] finds: pooled sessions carry their gateway's [`Identity`], and those whose
//! gateway is gone are deleted once idle past the TTL (see [`sweep`]).

mod claims;
mod conversations;
mod explicit;
mod fingerprint;
pub mod identity;
mod lease;
mod reaper;
pub mod sweep;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use claims::Claims;
pub use conversations::ConversationPool;
pub use explicit::{display_title, is_session_id, ExplicitSessions};
pub use fingerprint::Fingerprint;
pub use identity::Identity;
pub use lease::{Lease, Outcome, Seed};
pub use sweep::Sweeper;
pub use upstream::{not_found_as_session, SessionUpstream};

use crate::config::SessionsConfig;
use crate::opencode::OpenCodeClient;
use crate::store::Store;

/// Both session services; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    /// Conversations → sessions.
    pub conversations: ConversationPool,
    /// Explicit sessions, owned by API keys.
    pub explicit: ExplicitSessions,
    /// Which key ran what on which session lately (for event filtering).
    pub owners: Owners,
    upstream: SessionUpstream,
    sweeper: Sweeper,
    /// How often the sweeper runs (zero: never).
    sweep_every: Duration,
}

/// The key each recently used session belongs to: sessions the gateway ran something on,
/// remembered for a day since last use (bounded), so that a key's event stream carries its
/// sessions and nobody else's.
#[derive(Clone)]
pub struct Owners {
    cache: moka::sync::Cache<String, crate::auth::ClientId>,
}

impl Owners {
    fn new() -> Owners {
        Owners {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
        }
    }

    /// `owner` runs something on `session_id`.
    pub fn record(&self, session_id: &str, owner: &crate::auth::ClientId) {
        self.cache.insert(session_id.to_string(), owner.clone());
    }

    /// Whose `session_id` is, if the gateway knows.
    pub fn of(&self, session_id: &str) -> Option<crate::auth::ClientId> {
        self.cache.get(session_id)
    }
}

impl Sessions {
    /// Builds both services over the client of upstream `name`, sharing what replicas share
    /// through `store`; sessions they create are titled `title`, pooled ones stamped with
    /// `identity`.
    pub fn new(
        client: OpenCodeClient,
        store: Store,
        name: String,
        title: String,
        identity: Arc<Identity>,
        config: &SessionsConfig,
    ) -> Sessions {
        let upstream = SessionUpstream::new(client, store, name, identity);
        let conversations = ConversationPool::new(upstream.clone(), title.clone(), config);
        let sweeper = Sweeper::new(
            upstream.clone(),
            conversations.clone(),
            title.clone(),
            config.ttl,
        );
        Sessions {
            conversations,
            explicit: ExplicitSessions::new(upstream.clone(), title, config),
            owners: Owners::new(),
            upstream,
            sweeper,
            sweep_every: config.sweep_interval,
        }
    }

    /// Starts the pool's expiry task, the reaper (which also retries whenever `connected`, the
    /// event stream's state, turns true) and the sweeper (first once `connected`); all stop
    /// with `shutdown`.
    pub fn spawn_background(&self, connected: watch::Receiver<bool>, shutdown: CancellationToken) {
        self.conversations.spawn_janitor(shutdown.clone());
        self.sweeper
            .spawn(self.sweep_every, connected.clone(), shutdown.clone());
        self.upstream.reaper().spawn(connected, shutdown);
    }

    /// The upstream handle (for clean-up work such as aborting an abandoned run).
    pub fn upstream(&self) -> &SessionUpstream {
        &self.upstream
    }

    /// On shutdown: with `delete_remembered`, deletes every remembered conversation's session
    /// upstream; then waits for all pending clean-up (aborts, deletes) and gives the reaper one
    /// last round. Bounded by `within`.
    pub async fn shutdown(&self, delete_remembered: bool, within: Duration) {
        let work = async {
            if delete_remembered {
                self.conversations.delete_all();
            }
            self.upstream.drain_cleanup().await;
            self.upstream.reaper().round().await;
        };
        if tokio::time::timeout(within, work).await.is_err() {
            tracing::warn!("shutdown clean-up did not finish in time");
        }
    }
}
