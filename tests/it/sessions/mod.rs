//! The conversation → OpenCode session pool and the session API, against a real
//! `opencode serve` and the scripted mock model.
//!
//! Two beds (an OpenCode takes a few seconds to start, and its first model call more), running
//! in parallel, each one OpenCode shared by named scenarios; every scenario starts with a fresh
//! gateway on an OpenCode without sessions ([`fresh_gateway`]), and its steps are named
//! functions with doc comments:
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
use support::scenarios::scenario;
use support::{
    ask, assert_error, assistant, chat_body, eventually, reply_of, streaming, user, ECHO,
};
use support::{Gateway, GatewayOptions, Scenarios, TestBed};

mod explicit;
mod helpers;
mod pool;
mod session_api;
mod sweep;

use explicit::*;
use helpers::*;
use pool::*;
use session_api::*;
use sweep::*;

// ---------------------------------------------------------------------------------------------
// The conversation pool
// ---------------------------------------------------------------------------------------------

/// The conversation → session pool on one OpenCode: affinity without replay and clean-up on
/// shutdown, concurrent branches, capacity eviction, a vanished session.
#[tokio::test(flavor = "multi_thread")]
async fn conversation_pool() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(
        s,
        pool_keeps_affinity_without_replay_and_cleans_up_on_shutdown(&mut bed)
    );
    scenario!(s, pool_forks_concurrent_branches(&mut bed));
    scenario!(s, capacity_eviction_deletes_sessions_upstream(&mut bed));
    scenario!(s, vanished_session_falls_back_to_a_seeded_one(&mut bed));
    s.finish(&bed.gateway.logs());
}

/// The session API on one OpenCode: keys isolate pooled and explicit sessions, the session
/// routes and pinned chats work, explicit sessions outlive the TTL (and are capped per key) and
/// survive a gateway restart.
#[tokio::test(flavor = "multi_thread")]
async fn session_api() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(s, keys_isolate_sessions_and_session_api_works(&mut bed));
    scenario!(s, ttl_evicts_pooled_sessions_but_not_pinned_ones(&mut bed));
    scenario!(s, explicit_sessions_survive_a_gateway_restart(&mut bed));
    s.finish(&bed.gateway.logs());
}

// ---------------------------------------------------------------------------------------------
// The orphan sweep
// ---------------------------------------------------------------------------------------------

/// Pooled sessions a gateway killed outright leaves behind are swept by its next life (same
/// state dir), and nothing else is: explicit sessions, sessions without the stamp, a live
/// gateway's sessions, a running request's session. Two gateways on one OpenCode never sweep
/// each other's sessions.
#[tokio::test(flavor = "multi_thread")]
async fn orphan_sweep() {
    let mut bed = Harness::real().start().await;
    let mut s = Scenarios::new();
    scenario!(s, a_hard_killed_gateways_sessions_are_swept(&mut bed));
    scenario!(s, live_gateways_keep_their_sessions(&mut bed));
    s.finish(&bed.gateway.logs());
}
