//! PorTaTek Gateway: an OpenAI-compatible HTTP API in front of an OpenCode server.
//!
//! The crate is layered, and dependencies point down only (`tests/it/layers.rs` checks every
//! `use crate::`):
//! - **base** — [`config`] (defaults < file < environment < flags, one file per section),
//!   [`error`] (the one error type, turned into each API's JSON in one place), `metrics`,
//!   `sync`, [`memory`];
//! - **wire formats** — [`openai`]: requests parsed with a 4xx naming the field, response
//!   shapes, client JSON Schemas bounded;
//! - **protocol** — [`opencode`]: the only module that knows OpenCode's server API. The core
//!   asks it for sessions, prompts ([`opencode::Prompt`], an intent), interrupts, replies and
//!   MCP registration, and reads a run's events as the gateway's own
//!   ([`opencode::events::RunEvent`]), decoded per run from the session's events;
//! - **core** — runs (`run`: a `run::Gateway` of shared handles and the upstream's
//!   `Backend` go in; a `Phase` state machine with one end path; an `Encoder` per wire format
//!   comes out), sessions, client tools, permissions, rate limits, upstreams and admission,
//!   the [`adapter`] (run events → outputs), the Responses API's chains, the shared [`store`];
//! - **HTTP** — [`app`] (the state handlers see, the router), `encode` (JSON and SSE), `routes`
//!   (thin handlers), [`openapi`], [`server`] (accept loop, shutdown).
//!
//! Following one chat completion: [`server`] accepts the connection; [`app`] routes it through
//! request id, body limits, keys and rate limits to `routes::chat`, which parses the body with
//! [`openai`] and starts a run: the model is checked against the catalog, admission control
//! admits it, a session is leased (the conversation pool or the client's explicit session), its
//! events are subscribed to on the upstream's hub, and the prompt is sent. The session's events
//! are decoded into run events, the [`adapter`] turns them into outputs, and an encoder answers
//! them as one JSON object or as SSE. Pooled sessions carry their gateway's identity, so the
//! sweep can delete those of dead gateways; [`memory`] hands memory back after spikes.

#![warn(missing_docs)]

pub(crate) mod access;
pub mod adapter;
pub mod app;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod catalog;
pub mod config;
pub(crate) mod embedded;
pub mod error;

pub(crate) mod client_tools;
pub(crate) mod encode;
pub mod memory;
pub(crate) mod metrics;
pub mod openai;
pub mod openapi;
pub mod opencode;
pub(crate) mod permissions;
pub(crate) mod ratelimit;
pub(crate) mod responses;
pub(crate) mod routes;
pub(crate) mod run;
pub mod server;
pub(crate) mod sessions;
pub mod store;
pub(crate) mod sync;
pub(crate) mod upstreams;
