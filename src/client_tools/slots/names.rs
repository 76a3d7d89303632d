//! Slot names and their tool tables: what a slot is called (`ptk<tag>NN`), how to recognise a
//! slot or a slot's tool among OpenCode's, and the names a client's tools get on a slot (kept
//! within the providers' length limit, and unique). Pure functions, apart from the pool that
//! leases the slots.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::openai::ToolSpec;

/// Prefix of slot names; a tools map entry `"ptk*": false` hides every slot from a prompt.
pub const SLOT_PREFIX: &str = "ptk";
/// Longest tool name OpenCode may show the model (providers commonly refuse longer ones).
pub(super) const MAX_TOOL_NAME: usize = 64;

/// One tool as the slot serves it.
#[derive(Debug, Clone)]
pub struct SlotTool {
    /// The client's name.
    pub client_name: String,
    /// The name on the MCP server (the client's, shortened when `<slot>_<name>` would be too long).
    pub mcp_name: String,
    /// Description for the model.
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub schema: Value,
}

/// Length of a slot name: the prefix, six hex digits of tag, two of index.
const SLOT_NAME_LEN: usize = SLOT_PREFIX.len() + 8;

/// The slot name for an index under `tag`.
pub(super) fn slot_name(tag: &str, index: usize) -> String {
    format!("{SLOT_PREFIX}{tag}{index:02}")
}

/// Whether `name` is a gateway's slot (this one's or another's sharing the OpenCode): such
/// MCP servers are internal, never shown or managed through the API.
pub fn is_slot_name(name: &str) -> bool {
    name.len() == SLOT_NAME_LEN
        && name.starts_with(SLOT_PREFIX)
        && name[SLOT_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether OpenCode's tool `tool` is one of a slot's (`<slot>_<name>`), i.e. a client's tool.
pub fn is_slot_tool(tool: &str) -> bool {
    tool.get(..SLOT_NAME_LEN).is_some_and(is_slot_name)
        && tool.as_bytes().get(SLOT_NAME_LEN) == Some(&b'_')
}

/// The tool table for `tools` on slot `slot`: names kept unless `<slot>_<name>` would exceed
/// [`MAX_TOOL_NAME`], then shortened with a hash so they stay unique.
pub(super) fn table(slot: &str, tools: &[ToolSpec]) -> Vec<SlotTool> {
    let room = MAX_TOOL_NAME - slot.len() - 1;
    tools
        .iter()
        .map(|t| {
            let mcp_name = if t.name.len() <= room {
                t.name.clone()
            } else {
                let digest = Sha256::digest(t.name.as_bytes());
                let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                format!("{}_{tag}", &t.name[..room - 9])
            };
            SlotTool {
                client_name: t.name.clone(),
                mcp_name,
                description: t.description.clone(),
                schema: t.parameters.clone(),
            }
        })
        .collect()
}

/// A digest of a tool table, to tell whether OpenCode already lists exactly these tools.
pub(super) fn hash(tools: &[SlotTool]) -> [u8; 32] {
    let mut h = Sha256::new();
    for t in tools {
        h.update(t.mcp_name.as_bytes());
        h.update([0]);
        h.update(t.description.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(t.schema.to_string().as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}
