//! PorTaTek Gateway: an OpenAI-compatible HTTP API in front of an OpenCode server.
//!
//! The picture: an axum [`app::router`] exposes `/v1/chat/completions`, `/v1/models`, the
//! session API and health probes; each chat request goes through the [`chat`] pipeline, which
//! claims an OpenCode session from the [`pool`], subscribes to its events on the shared
//! [`hub`], sends the prompt with the [`opencode`] client, and turns events into OpenAI deltas
//! with the [`adapter`]. [`config`] layers defaults, file, environment and flags; [`error`] is the
//! one place errors become OpenAI-shaped JSON; [`openai`] holds the wire types.

#![warn(missing_docs)]

pub mod adapter;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod chat;
pub mod config;
pub mod error;
pub mod hub;
pub mod openai;
pub mod opencode;
pub mod pool;
pub mod routes;
