//! The gateway's own events of a run, whatever OpenCode version said them.
//!
//! OpenCode reports a run as a stream of changes to messages and their parts (1.18: the
//! `message.*` and `session.*` events of `GET /event`). Which of those belong to *this* run,
//! which part is answer text and which reasoning, when the run is over and why it failed: that
//! is protocol knowledge, decided once by the version's decoder ([`super::RunDecoder`]). The
//! core — the adapter, the tool-step tracker, the permission policy — reads only these types,
//! so a new OpenCode server API is a new decoder, not a change of the core.

use serde_json::Value;

/// Something that happened in one run, in the gateway's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// New answer text of the step `message`.
    Text {
        /// The step (assistant message) it belongs to.
        message: String,
        /// The increment.
        text: String,
    },
    /// New reasoning text of the step `message`.
    Reasoning {
        /// The step it belongs to.
        message: String,
        /// The increment.
        text: String,
    },
    /// Something else of the step `message` changed (nothing to pass on, but the step is not
    /// quiet: see the client tools' step tracker).
    Progress {
        /// The step.
        message: String,
    },
    /// A step (one assistant message of the run) began or changed.
    Step(Step),
    /// A tool call of the run changed state (OpenCode's own tools and the gateway's MCP ones).
    Tool(ToolUpdate),
    /// The structured answer the model produced (requested with an output format).
    Structured(Value),
    /// OpenCode retries the model provider.
    Retrying {
        /// Which attempt this is (1: the first retry).
        attempt: u64,
        /// The provider's reason, fit to show.
        message: String,
    },
    /// The run is over: OpenCode went idle after it started. Whether it answered is the
    /// steps' to say.
    Idle,
    /// The run failed.
    Failed(RunFailure),
    /// OpenCode's agent asks the caller something (a permission, a question).
    Asked(Ask),
    /// A request asked earlier was answered (by anyone).
    Answered {
        /// The request's id.
        id: String,
    },
}

/// One step of a run: an assistant message and what it cost so far.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// The message id (ids ascend within a session).
    pub message: String,
    /// Whether OpenCode has completed the message.
    pub completed: bool,
    /// How the step ended, once it has.
    pub finish: Option<Finish>,
    /// Its tokens so far (the message's totals, not an increment); `None` when this update
    /// does not say.
    pub tokens: Option<Tokens>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model stopped.
    Stop,
    /// The output-token limit.
    Length,
    /// The provider's content filter.
    ContentFilter,
    /// The step ended on tool calls (OpenCode's own: the run goes on, or a question was
    /// rejected).
    ToolCalls,
    /// Anything else.
    Other,
}

/// A step's tokens, as OpenCode counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// New input tokens (not from the cache).
    pub input: u64,
    /// Output tokens, reasoning excluded.
    pub output: u64,
    /// Reasoning tokens.
    pub reasoning: u64,
    /// Input tokens read from the provider's cache.
    pub cache_read: u64,
    /// Input tokens written to the provider's cache.
    pub cache_write: u64,
}

/// A tool call's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUpdate {
    /// The step it belongs to.
    pub message: String,
    /// OpenCode's call id.
    pub call_id: String,
    /// The tool's name as OpenCode knows it (`bash`; an MCP tool `<server>_<tool>`).
    pub tool: String,
    /// Where it is.
    pub status: ToolStatus,
    /// Its arguments (complete from `Running` on).
    pub input: Value,
    /// What it returned, once completed.
    pub output: Option<String>,
    /// Why it failed, fit to show.
    pub error: Option<String>,
}

/// Where a tool call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolStatus {
    /// The model is still streaming its arguments.
    Pending,
    /// Running (an MCP call has been sent).
    Running,
    /// Returned.
    Completed,
    /// Failed.
    Error,
}

impl ToolStatus {
    /// The status as the gateway's activity events spell it.
    pub fn label(self) -> &'static str {
        match self {
            ToolStatus::Pending => "pending",
            ToolStatus::Running => "running",
            ToolStatus::Completed => "completed",
            ToolStatus::Error => "error",
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// OpenCode's or the provider's reason, fit to show.
    pub message: String,
}

/// The kinds of failure the API tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The run was interrupted (aborted).
    Interrupted,
    /// The model did not produce the requested structured output.
    StructuredOutput,
    /// The model provider (or OpenCode) failed.
    Provider,
}

/// A request of OpenCode's agent for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// The request's id (`per_…`, `que_…`).
    pub id: String,
    /// A permission or a question.
    pub kind: AskKind,
    /// The session asking.
    pub session_id: String,
    /// The permission (`bash`, `edit`, …; `question` for a question).
    pub permission: String,
    /// What it wants to run (`["git status"]`).
    pub patterns: Vec<String>,
    /// The patterns OpenCode suggests granting for `always` (`["git *"]`).
    pub always: Vec<String>,
    /// OpenCode's details to show the caller (the command; the questions).
    pub details: Value,
    /// The project directory of the asking session (its instance holds the request).
    pub directory: Option<String>,
}

/// What an [`Ask`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskKind {
    /// A tool wants permission.
    Permission,
    /// The agent asks the user a question.
    Question,
}

impl AskKind {
    /// `permission` or `question`, as the API names them.
    pub fn label(self) -> &'static str {
        match self {
            AskKind::Permission => "permission",
            AskKind::Question => "question",
        }
    }
}
