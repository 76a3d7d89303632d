//! The conversation → OpenCode session pool and the session API, against a real
//! `opencode serve` and the scripted mock model.
//!
//! One test per behaviour, declared here (their steps, named functions with doc comments, live
//! in the submodules). Every test has an OpenCode of its own and starts with a fresh gateway on
//! it ([`fresh_gateway`]): they replace the gateway, restart OpenCode or count its sessions.
//! - [`conversation_pool`]: affinity, seeding, forks, eviction, vanished sessions, shutdown;
//! - [`session_api`]: keys isolating sessions, the session API, pinned sessions, restarts;
//! - [`orphan_sweep`]: the sweep of pooled sessions a gateway killed outright left behind, and
//!   the sessions it must never touch (live gateways', explicit, foreign).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::Harness;

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

    #[tokio::test(flavor = "multi_thread")]
    async fn pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown() {
        let mut bed = Harness::real().start().await;
        super::pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pool_forks_concurrent_branches() {
        let mut bed = Harness::real().start().await;
        super::pool_forks_concurrent_branches(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn capacity_eviction_deletes_sessions_upstream() {
        let mut bed = Harness::real().start().await;
        super::capacity_eviction_deletes_sessions_upstream(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn vanished_session_falls_back_to_a_seeded_one() {
        let mut bed = Harness::real().start().await;
        super::vanished_session_falls_back_to_a_seeded_one(&mut bed).await;
    }
}

/// The session API: keys isolate pooled and explicit sessions, the session
/// routes and pinned chats work, explicit sessions outlive the TTL (and are capped per key) and
/// survive a gateway restart.
mod session_api {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn keys_isolate_sessions_and_session_api_works() {
        let mut bed = Harness::real().start().await;
        super::keys_isolate_sessions_and_session_api_works(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ttl_evicts_pooled_sessions_but_not_pinned_ones() {
        let mut bed = Harness::real().start().await;
        super::ttl_evicts_pooled_sessions_but_not_pinned_ones(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn explicit_sessions_survive_a_gateway_restart() {
        let mut bed = Harness::real().start().await;
        super::explicit_sessions_survive_a_gateway_restart(&mut bed).await;
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

    #[tokio::test(flavor = "multi_thread")]
    async fn a_hard_killed_gateways_sessions_are_swept() {
        let mut bed = Harness::real().start().await;
        super::a_hard_killed_gateways_sessions_are_swept(&mut bed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn live_gateways_keep_their_sessions() {
        let mut bed = Harness::real().start().await;
        super::live_gateways_keep_their_sessions(&mut bed).await;
    }
}
