//! The rest of OpenCode's server API behind the gateway (providers, commands and shell, code
//! intelligence, tools/LSP/formatters/MCP, session extras, config), against a real
//! `opencode serve` over a small fixture project the test writes, and the scripted mock model.
//!
//! Keys (every gateway here has the same three): `surface-admin` (role admin),
//! `surface-scoped` (client, `directories` lists the project), `surface-plain` (client, no
//! project scope).
//!
//! One test per behaviour, on two kinds of bed (see `surface` and `session_extras` for which share one):
//! - [`surface`]: one OpenCode serving the fixture project (files with known contents, a
//!   subdirectory, a directory of pages, a git repository, a symlink `out` leading outside),
//!   with two gateways over it: `locked` (every `admin.allow_*` switch off) and `open`
//!   (`allow_execution` and `allow_config_patch` on). Tests: every route of the surface for
//!   each key and without one; project scope and traversal attempts; search and listing results
//!   against the fixture; providers; commands; tools, language servers and formatters; MCP
//!   servers with a local MCP server the test starts; execution off and on (with its audit
//!   line); OpenCode's configuration.
//! - [`session_extras`] (OpenCode's own tools on): a session whose turns write a file, a todo
//!   list and start a sub-agent through OpenCode's tools: message by id, children, todo, diff,
//!   revert/unrevert round trips (the file goes and comes back), a failed summary reported as
//!   such; another session where summarize shrinks what the next turn sends the model; share
//!   off.
//!
//! Text search needs ripgrep: OpenCode uses `rg` from PATH, else downloads it (impossible
//! offline). Without `rg` the text-search assertions are skipped with a notice, unless
//! `PORTATEK_REQUIRE_TOOLS=1` (CI), where they fail. Likewise git for the VCS assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

use support::api::read_json;
use support::gateway::test_client;
use support::mock_model::turns_of;
use support::shared::BedLogs;
use support::{ask, assert_error, Gateway, GatewayOptions, MockModel, OpenCode};
use support::{BedPool, Harness, ECHO};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

use support::tools_required;

mod execution_and_config;
mod extras;
mod files;
mod fixtures;
mod helpers;
mod providers_and_tools;
mod routes;

use execution_and_config::*;
use extras::*;
use files::*;
use fixtures::*;
use helpers::*;
use providers_and_tools::*;
use routes::*;

/// The surface's behaviours. Those that only read share a bed; those that change what the
/// others read (run shell lines, add MCP servers, patch the config, call every route) share
/// another, one test at a time (each checks only what it changed itself).
mod surface {
    use super::*;

    static BED: BedPool<Surface> = BedPool::new();

    /// The bed of the tests that change it.
    static CHANGED: BedPool<Surface> = BedPool::new();

    /// Runs a test that changes its bed on [`CHANGED`]'s.
    fn own_bed<F: std::future::Future<Output = ()>>(test: impl FnOnce(&'static Surface) -> F) {
        CHANGED.run(surface_bed, test);
    }

    #[test]
    fn listing_and_search_match_the_fixture() {
        BED.run(surface_bed, super::listing_and_search_match_the_fixture);
    }

    #[test]
    fn paging() {
        BED.run(surface_bed, super::paging);
    }

    #[test]
    fn paths_outside_the_project_are_refused() {
        BED.run(surface_bed, super::paths_outside_the_project_are_refused);
    }

    #[test]
    fn project_scope() {
        BED.run(surface_bed, super::project_scope);
    }

    #[test]
    fn every_route_by_key() {
        own_bed(super::every_route_by_key);
    }

    #[test]
    fn providers() {
        BED.run(surface_bed, super::providers);
    }

    #[test]
    fn commands_are_listed() {
        BED.run(surface_bed, super::commands_are_listed);
    }

    #[test]
    fn tools_lsp_and_formatters() {
        BED.run(surface_bed, super::tools_lsp_and_formatters);
    }

    #[test]
    fn mcp_servers() {
        own_bed(super::mcp_servers);
    }

    #[test]
    fn execution_is_off_by_default() {
        BED.run(surface_bed, super::execution_is_off_by_default);
    }

    #[test]
    fn execution_when_allowed() {
        own_bed(super::execution_when_allowed);
    }

    #[test]
    fn configuration() {
        own_bed(super::configuration);
    }
}

/// Revert/unrevert and summarize: each edits its own session's files and history, on a bed
/// they share one at a time.
mod session_extras {
    use super::*;

    static BED: BedPool<Extras> = BedPool::new();

    #[test]
    fn revert_and_unrevert_round_trip() {
        BED.run(extras_bed, super::revert_and_unrevert_round_trip);
    }

    #[test]
    fn summarize_shrinks_the_history() {
        BED.run(extras_bed, super::summarize_shrinks_the_history);
    }
}
