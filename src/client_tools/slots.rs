//! The slot pool: MCP servers the gateway registers with OpenCode, one per run that uses
//! client tools at that moment.
//!
//! OpenCode lists an MCP server's tools once, when it connects, and its tool calls carry no trace
//! of the session they belong to. So a run leases a *slot* (`ptk<tag>00`, `ptk<tag>01`, …: one
//! MCP server path each), the slot serves that run's tools, and every call arriving on it is
//! that run's. The tag (six hex digits, new at every start) keeps the slots of gateways that
//! share one OpenCode apart: with fixed names, a second gateway's registration would replace
//! the first one's server, and the first gateway's tool calls would reach the second.
//! When the run's tools differ from what OpenCode last listed for the slot, the slot is
//! registered again (`POST /mcp` with the same name replaces the server and re-lists its tools,
//! synchronously). Slots are never removed upstream — OpenCode keeps every server it was ever
//! given — so the pool is fixed-size (`tools.max_concurrent_runs`), and idle slots cost OpenCode
//! nothing per prompt.

mod names;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::openai::ToolSpec;
use crate::opencode::{McpConnection, OpenCodeClient};
use crate::sync::lock;

use names::{hash, slot_name, table};

pub use names::{is_slot_name, is_slot_tool, SlotTool, SLOT_PREFIX};

/// What a tool call's result is.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// The text the model receives.
    pub text: String,
    /// Whether the call failed.
    pub is_error: bool,
}

/// A `tools/call` held open until the client answers it.
#[derive(Debug)]
pub struct HeldCall {
    /// The tool, as the MCP server knows it.
    pub mcp_name: String,
    /// The arguments the model gave.
    pub arguments: Value,
    reply: oneshot::Sender<CallResult>,
}

impl HeldCall {
    /// Answers the call; OpenCode hands the text to the model as the tool's result.
    pub fn answer(self, result: CallResult) {
        // The endpoint may have given up (OpenCode cancelled the call): nothing to do then.
        let _ = self.reply.send(result);
    }
}

#[derive(Default)]
struct Slot {
    /// The tools it serves now.
    tools: Arc<Vec<SlotTool>>,
    /// Hash of the tool list OpenCode last listed for it, per project directory (OpenCode
    /// keeps MCP servers per directory instance).
    registered: HashMap<Option<String>, [u8; 32]>,
    /// The run holding it: lease id and where its calls go.
    lease: Option<(u64, mpsc::UnboundedSender<HeldCall>)>,
}

struct Inner {
    client: OpenCodeClient,
    /// Sent by OpenCode as `Authorization: Bearer …` on every MCP request; new at every start.
    secret: String,
    /// This start's slot name tag (six hex digits).
    tag: String,
    /// Base URL OpenCode reaches the MCP endpoint at (set once the endpoint listens).
    endpoint: OnceLock<String>,
    /// MCP `timeout` given to OpenCode (bounds a held call on OpenCode's side).
    call_timeout: Duration,
    slots: Mutex<Vec<Slot>>,
    max: usize,
    next_lease: AtomicU64,
}

/// The slot pool; cheap to clone.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

/// A run's exclusive use of one slot; the slot is free again when this is dropped (calls still
/// held are then answered with an error by the endpoint).
pub struct SlotLease {
    slots: Slots,
    index: usize,
    id: u64,
    /// The slot's name (`ptk<tag>NN`), the prefix of its tools in OpenCode.
    pub name: String,
    /// Calls of this run, as they arrive.
    pub calls: mpsc::UnboundedReceiver<HeldCall>,
    /// The tools it serves.
    pub tools: Arc<Vec<SlotTool>>,
}

impl std::fmt::Debug for SlotLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotLease")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SlotLease {
    /// The client's name of a tool the MCP server knows as `mcp_name`.
    pub fn client_name(&self, mcp_name: &str) -> Option<&str> {
        self.tools
            .iter()
            .find(|t| t.mcp_name == mcp_name)
            .map(|t| t.client_name.as_str())
    }

    /// The MCP name of the client's tool `client_name`.
    pub fn mcp_name(&self, client_name: &str) -> Option<&str> {
        self.tools
            .iter()
            .find(|t| t.client_name == client_name)
            .map(|t| t.mcp_name.as_str())
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots.inner.slots);
        if let Some(slot) = slots.get_mut(self.index) {
            if slot.lease.as_ref().is_some_and(|(id, _)| *id == self.id) {
                slot.lease = None;
            }
        }
    }
}

impl Slots {
    /// A pool of at most `max` slots whose held calls OpenCode gives up on after `call_timeout`.
    pub fn new(client: OpenCodeClient, max: usize, call_timeout: Duration) -> Slots {
        let secret: String = {
            use rand::Rng;
            let bytes: [u8; 32] = rand::thread_rng().gen();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let tag = {
            use rand::Rng;
            let bytes: [u8; 3] = rand::thread_rng().gen();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        Slots {
            inner: Arc::new(Inner {
                client,
                secret,
                tag,
                endpoint: OnceLock::new(),
                call_timeout,
                slots: Mutex::new(Vec::new()),
                max,
                next_lease: AtomicU64::new(1),
            }),
        }
    }

    /// Where OpenCode reaches the MCP endpoint (`http://host:port`); set once it listens.
    pub fn set_endpoint(&self, base_url: String) {
        let _ = self
            .inner
            .endpoint
            .set(base_url.trim_end_matches('/').to_string());
    }

    /// Whether client tools can be served (the MCP endpoint is listening).
    pub fn available(&self) -> bool {
        self.inner.endpoint.get().is_some()
    }

    /// This start's secret, for the door's own tests.
    #[cfg(test)]
    pub(crate) fn inner_secret_for_tests(&self) -> &str {
        &self.inner.secret
    }

    /// Whether `presented` is this start's secret (constant time).
    pub fn check_secret(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let a = Sha256::digest(presented.as_bytes());
        let b = Sha256::digest(self.inner.secret.as_bytes());
        bool::from(a.ct_eq(&b))
    }

    /// OpenCode forgot its MCP servers (it restarted): register slots again on next use.
    pub fn forget_registrations(&self) {
        for slot in lock(&self.inner.slots).iter_mut() {
            slot.registered.clear();
        }
    }

    /// The index of this start's slot `name` (`None` for any other name, other gateways'
    /// slots included).
    fn index_of(&self, name: &str) -> Option<usize> {
        let digits = name
            .strip_prefix(SLOT_PREFIX)?
            .strip_prefix(self.inner.tag.as_str())?;
        if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The name of this start's slot `index`.
    fn name(&self, index: usize) -> String {
        slot_name(&self.inner.tag, index)
    }

    /// The tools slot `name` serves (for `tools/list`).
    pub fn tools_of(&self, name: &str) -> Option<Arc<Vec<SlotTool>>> {
        let index = self.index_of(name)?;
        lock(&self.inner.slots).get(index).map(|s| s.tools.clone())
    }

    /// Hands a call on slot `name` to the run holding it; `None` when no run does.
    pub fn deliver(
        &self,
        name: &str,
        mcp_name: String,
        arguments: Value,
    ) -> Option<oneshot::Receiver<CallResult>> {
        let index = self.index_of(name)?;
        let sender = lock(&self.inner.slots)
            .get(index)?
            .lease
            .as_ref()?
            .1
            .clone();
        let (reply, answer) = oneshot::channel();
        let call = HeldCall {
            mcp_name,
            arguments,
            reply,
        };
        // Unbounded: every call is one open request from OpenCode (as many as the model made
        // in one step), each ended by the run's deadline or result timeout; a bounded queue
        // refused the 65th unread call silently and the step never completed.
        sender.send(call).ok()?;
        Some(answer)
    }

    /// Number of slots leased right now.
    pub fn in_use(&self) -> usize {
        lock(&self.inner.slots)
            .iter()
            .filter(|s| s.lease.is_some())
            .count()
    }

    /// Leases a slot serving `tools` to runs in directory `dir`, registering it with OpenCode
    /// when its tools changed there.
    pub async fn acquire(
        &self,
        tools: &[ToolSpec],
        dir: Option<&str>,
    ) -> Result<SlotLease, ApiError> {
        let endpoint = self.inner.endpoint.get().ok_or_else(|| {
            ApiError::Unavailable(
                "Client tools are not available: the gateway's MCP endpoint is not running.".into(),
            )
        })?;
        let dir_key = dir.map(String::from);
        let (index, lease_id, calls, needs_registration, table) = self.claim(tools, &dir_key)?;
        let name = self.name(index);
        let lease = SlotLease {
            slots: self.clone(),
            index,
            id: lease_id,
            name: name.clone(),
            calls,
            tools: table.clone(),
        };
        if let Some(digest) = needs_registration {
            self.register(&name, endpoint, dir).await?;
            if let Some(slot) = lock(&self.inner.slots).get_mut(index) {
                slot.registered.insert(dir_key, digest);
            }
        }
        Ok(lease)
    }

    /// Picks a free slot (one already serving the same tools first), grows the pool if needed.
    #[allow(clippy::type_complexity)]
    fn claim(
        &self,
        tools: &[ToolSpec],
        dir: &Option<String>,
    ) -> Result<
        (
            usize,
            u64,
            mpsc::UnboundedReceiver<HeldCall>,
            Option<[u8; 32]>,
            Arc<Vec<SlotTool>>,
        ),
        ApiError,
    > {
        let mut slots = lock(&self.inner.slots);
        let wanted = |i: usize| hash(&table(&self.name(i), tools));
        let free = slots.iter().enumerate().filter(|(_, s)| s.lease.is_none());
        let same = free
            .clone()
            .find(|(i, s)| s.registered.get(dir) == Some(&wanted(*i)))
            .map(|(i, _)| i);
        let index = match same.or_else(|| free.map(|(i, _)| i).next()) {
            Some(i) => i,
            None if slots.len() < self.inner.max => {
                slots.push(Slot::default());
                slots.len() - 1
            }
            None => {
                return Err(ApiError::TooManyRequests {
                    message: format!(
                        "All {} tool slots are in use by runs waiting for tool results; try again shortly.",
                        self.inner.max
                    ),
                    code: "too_many_tool_runs",
                    retry_after: Some(std::time::Duration::from_secs(1)),
                })
            }
        };
        let table = Arc::new(table(&self.name(index), tools));
        let digest = hash(&table);
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.inner.next_lease.fetch_add(1, Ordering::Relaxed);
        let slot = &mut slots[index];
        slot.tools = table.clone();
        slot.lease = Some((id, tx));
        let needs = (slot.registered.get(dir) != Some(&digest)).then_some(digest);
        Ok((index, id, rx, needs, table))
    }

    /// `POST /mcp` for slot `name`: OpenCode (re)connects and lists its tools.
    async fn register(
        &self,
        name: &str,
        endpoint: &str,
        dir: Option<&str>,
    ) -> Result<(), ApiError> {
        let client = self.inner.client.in_directory(dir);
        let url = format!("{endpoint}/mcp/{name}");
        let secret = &self.inner.secret;
        match client
            .register_mcp(name, &url, secret, self.inner.call_timeout)
            .await?
        {
            McpConnection::Connected => Ok(()),
            McpConnection::Failed(why) => Err(ApiError::Upstream(format!(
                "OpenCode could not connect to the gateway's tool server {name}: {why}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
