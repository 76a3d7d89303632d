//! The conversation → OpenCode session pool and the session API, against a real
//! `opencode serve` and the scripted mock model.
//!
//! One test per behaviour, declared here (their steps, named functions with doc comments, live
//! in the submodules). The tests of each group share real beds, one test at a time, and every
//! test starts with a fresh gateway on its bed, all sessions deleted ([`fresh_gateway`]): they
//! replace the gateway, restart OpenCode or count its sessions.
//! - [`conversation_pool`]: affinity, seeding, forks, eviction, vanished sessions, shutdown;
//! - [`session_api`]: keys isolating sessions, the session API, pinned sessions, restarts;
//! - [`orphan_sweep`]: the sweep of pooled sessions a gateway killed outright left behind, and
//!   the sessions it must never touch (live gateways', explicit, foreign).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::shared::{mutable_bed, Mutable};
use crate::support::BedPool;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::api::read_json;
use support::mock_model::turns_of;
use support::prometheus;
use support::{
    ask, assert_error, assistant, chat_body, eventually, reply_of, streaming, user, ECHO,
};
use support::{Gateway, GatewayOptions, TestBed};

mod api;
mod explicit;
mod helpers;
mod pool;
mod sweep;

use api::*;
use explicit::*;
use helpers::*;
use pool::*;
use sweep::*;

// ---------------------------------------------------------------------------------------------
// The conversation pool
// ---------------------------------------------------------------------------------------------

/// The conversation → session pool: affinity without replay and clean-up on
/// shutdown, concurrent branches, capacity eviction, a vanished session.
mod conversation_pool {
    use super::*;

    /// A real bed these tests share one at a time (each starts its own gateway on it).
    static BED: BedPool<Mutable> = BedPool::new();

    #[test]
    fn pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown() {
        BED.run(mutable_bed, |b| async move {
            super::pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown(
                &mut *b.0.lock().await,
            )
            .await
        });
    }

    #[test]
    fn pool_forks_concurrent_branches() {
        BED.run(mutable_bed, |b| async move {
            super::pool_forks_concurrent_branches(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn capacity_eviction_deletes_sessions_upstream() {
        BED.run(mutable_bed, |b| async move {
            super::capacity_eviction_deletes_sessions_upstream(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn vanished_session_falls_back_to_a_seeded_one() {
        BED.run(mutable_bed, |b| async move {
            super::vanished_session_falls_back_to_a_seeded_one(&mut *b.0.lock().await).await
        });
    }
}

/// The session API: keys isolate pooled and explicit sessions, the session
/// routes and pinned chats work, explicit sessions outlive the TTL (and are capped per key) and
/// survive a gateway restart.
mod session_api {
    use super::*;

    /// A real bed these tests share one at a time (each starts its own gateway on it).
    static BED: BedPool<Mutable> = BedPool::new();

    #[test]
    fn keys_isolate_sessions_and_session_api_works() {
        BED.run(mutable_bed, |b| async move {
            super::keys_isolate_sessions_and_session_api_works(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn ttl_evicts_pooled_sessions_but_not_pinned_ones() {
        BED.run(mutable_bed, |b| async move {
            super::ttl_evicts_pooled_sessions_but_not_pinned_ones(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn explicit_sessions_survive_a_gateway_restart() {
        BED.run(mutable_bed, |b| async move {
            super::explicit_sessions_survive_a_gateway_restart(&mut *b.0.lock().await).await
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The orphan sweep
// ---------------------------------------------------------------------------------------------

/// Pooled sessions a gateway killed outright leaves behind are swept by its next life (same
/// state dir), and nothing else is: explicit sessions, sessions without the stamp, a live
/// gateway's sessions, a running request's session. Two gateways on one OpenCode never sweep
/// each other's sessions.
mod orphan_sweep {
    use super::*;

    /// A real bed these tests share one at a time (each starts its own gateway on it).
    static BED: BedPool<Mutable> = BedPool::new();

    #[test]
    fn a_hard_killed_gateways_sessions_are_swept() {
        BED.run(mutable_bed, |b| async move {
            super::a_hard_killed_gateways_sessions_are_swept(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn live_gateways_keep_their_sessions() {
        BED.run(mutable_bed, |b| async move {
            super::live_gateways_keep_their_sessions(&mut *b.0.lock().await).await
        });
    }
}

/// The pool, the session API and the sweep in front of OpenCode 2.x, grouped on beds as the
/// 1.x groups are (the test that restarts OpenCode has its own: a restarted OpenCode is tied
/// to the thread of the test that restarted it).
mod sessions_v2 {
    use super::*;
    use support::shared::mutable_bed_v2;

    static POOL: BedPool<Mutable> = BedPool::new();
    static RESTARTS: BedPool<Mutable> = BedPool::new();
    static API: BedPool<Mutable> = BedPool::new();
    static SWEEP: BedPool<Mutable> = BedPool::new();

    #[test]
    fn pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown() {
        RESTARTS.run(mutable_bed_v2, |b| async move {
            super::pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown(
                &mut *b.0.lock().await,
            )
            .await
        });
    }

    #[test]
    fn pool_forks_concurrent_branches() {
        POOL.run(mutable_bed_v2, |b| async move {
            super::pool_forks_concurrent_branches(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn capacity_eviction_deletes_sessions_upstream() {
        POOL.run(mutable_bed_v2, |b| async move {
            super::capacity_eviction_deletes_sessions_upstream(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn vanished_session_falls_back_to_a_seeded_one() {
        POOL.run(mutable_bed_v2, |b| async move {
            super::vanished_session_falls_back_to_a_seeded_one(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn keys_isolate_sessions_and_session_api_works() {
        API.run(mutable_bed_v2, |b| async move {
            super::keys_isolate_sessions_and_session_api_works(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn ttl_evicts_pooled_sessions_but_not_pinned_ones() {
        API.run(mutable_bed_v2, |b| async move {
            super::ttl_evicts_pooled_sessions_but_not_pinned_ones(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn explicit_sessions_survive_a_gateway_restart() {
        API.run(mutable_bed_v2, |b| async move {
            super::explicit_sessions_survive_a_gateway_restart(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn a_hard_killed_gateways_sessions_are_swept() {
        SWEEP.run(mutable_bed_v2, |b| async move {
            super::a_hard_killed_gateways_sessions_are_swept(&mut *b.0.lock().await).await
        });
    }

    #[test]
    fn live_gateways_keep_their_sessions() {
        SWEEP.run(mutable_bed_v2, |b| async move {
            super::live_gateways_keep_their_sessions(&mut *b.0.lock().await).await
        });
    }
}
