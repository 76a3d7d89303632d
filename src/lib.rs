//! PorTaTek Gateway: an OpenAI-compatible HTTP API in front of an OpenCode server.
//!
//! The picture, following one chat completion:
//! - [`server`] accepts the connection; [`app`] routes it through its layers (request id, body
//!   limits, [`auth`]) to a thin handler in [`routes`].
//! - The handler parses the body into [`openai`] wire types, then starts a [`run`]: the model is
//!   checked against the [`catalog`], a session is leased from [`sessions`] (the conversation
//!   pool, or the client's explicit session), its events are subscribed to on the shared
//!   [`hub`], and the prompt is sent with the [`opencode`] client.
//! - The [`adapter`] turns the session's events into outputs (text, reasoning, the end); the
//!   handler collects them into one answer or [`stream`]s them as SSE.
//!
//! Before a run takes a session, its upstream's admission control
//! ([`upstreams::admission`]) admits it, lets it wait briefly, or refuses it; client JSON
//! Schemas are bounded when the request arrives ([`openai::schema`]). Pooled sessions carry
//! their gateway's identity, so the sweep ([`sessions::sweep`]) can delete those of dead
//! gateways; [`memory`] hands memory back after spikes.
//!
//! [`config`] layers defaults, file, environment and flags; [`error`] is the one place errors
//! become OpenAI-shaped JSON. Beyond chat, [`routes`] also serve OpenCode's wider surface
//! (providers, code search, tools, MCP, session extras, config) under the role and path checks
//! of [`access`].

#![warn(missing_docs)]

pub mod access;
pub mod adapter;
pub mod app;
pub mod auth;
pub mod body;
pub mod catalog;
pub mod config;
pub mod embedded;
pub mod error;

pub mod encode;
pub mod memory;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod opencode;
pub mod permissions;
pub mod ratelimit;
pub mod responses;
pub mod routes;
pub mod run;
pub mod server;
pub mod sessions;
pub mod store;
pub mod sync;
pub mod tools;
pub mod upstreams;
