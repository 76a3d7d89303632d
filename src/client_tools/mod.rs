//! Client tools: OpenAI function calling through OpenCode.
//!
//! OpenCode has no "tools the caller runs" switch. What it has is MCP: it connects to remote MCP
//! servers, offers their tools to the model as real tools, and hands the model each result as a
//! real tool result. So the gateway *is* an MCP server ([`mcp`]) and serves the client's tool
//! definitions on it. When the model calls one, OpenCode calls the gateway; the gateway holds
//! that call, ends the client's response with `tool_calls`, and parks the run ([`parked`]). The
//! client's next request carries the results: they answer the held calls, and the *same*
//! OpenCode run goes on, its output streamed as the new response. The model sees the results as
//! tool results, in one uninterrupted run — no replay, no prose pasted into a prompt.
//!
//! Three facts of OpenCode shape this (probed on 1.18.34):
//! - it lists a server's tools once, at connect, and its calls carry no session id, so each run
//!   leases a whole server, a *slot* ([`slots`]), whose path says whose calls arrive on it;
//! - servers can never be removed, so the slots are a fixed pool, re-registered when their tools
//!   change;
//! - no event marks the end of the model's step while calls are held, so the end is inferred
//!   ([`step`]).
//!
//! What this cannot serve — a conversation with earlier tool calls that the gateway has not seen
//! (another process, evicted) — falls back to seeding a new session with the calls and results
//! written out in the history (see `run::prompt`).

pub mod mcp;
pub mod parked;
pub mod slots;
pub mod step;

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use parked::Parked;
pub use slots::{CallResult, HeldCall, SlotLease, Slots};

use crate::config::Config;
use crate::opencode::OpenCodeClient;
use crate::sessions::Fingerprint;

/// What a client's next request presents to pick up a parked run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParkKey {
    /// The conversation up to and including the assistant message with the tool calls.
    Conversation(Fingerprint),
    /// The explicit session the run is on.
    Session(String),
    /// The Responses API response that ended with the calls.
    Response(String),
}

/// One upstream's slot pool; cheap to clone. (The runs parked for tool results are the
/// gateway's, whichever upstream they run on: `run::Gateway::parked`.)
#[derive(Clone)]
pub struct ClientTools {
    /// MCP server slots.
    pub slots: Slots,
}

impl ClientTools {
    /// Forgets slot registrations whenever the event stream reconnects: OpenCode may have
    /// restarted, and it keeps runtime-added MCP servers in memory only.
    pub fn spawn_watch(&self, mut connected: watch::Receiver<bool>, shutdown: CancellationToken) {
        let slots = self.slots.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = connected.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if *connected.borrow() {
                            slots.forget_registrations();
                        }
                    }
                }
            }
        });
    }

    /// The pool for `config`; OpenCode may hold a call for as long as the gateway would wait
    /// for the run and the client together, so its own timeout never fires first.
    pub fn new(client: OpenCodeClient, config: &Config) -> ClientTools {
        let tools = &config.client_tools;
        let call_timeout = tools.result_timeout + config.prompt.deadline + Duration::from_secs(60);
        ClientTools {
            slots: Slots::new(client, tools.max_runs, call_timeout),
        }
    }
}
