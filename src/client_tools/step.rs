//! When has the model finished asking for tools? The end of a step, told from OpenCode's events
//! and the MCP calls held for the run.
//!
//! OpenCode runs a tool as soon as the model has streamed its arguments, and only marks the step
//! finished (`step-finish`, `message.updated` with `finish: "tool-calls"`) once every tool has
//! returned — here, once the client has answered. So no event says "the model is done asking";
//! it has to be inferred (probed against OpenCode 1.18.34):
//! - a tool part is `pending` while the model streams a call's arguments, `running` once they
//!   are complete (and OpenCode sends the MCP call at that instant);
//! - the step is complete when at least one held call is waiting to go to the client, every
//!   held call is paired with its `running` part (by tool name and arguments — either may be
//!   seen first), no part is `pending`, every `running` part of the run's slot is paired, and
//!   nothing happened in the step for [`QUIET`].
//!
//! A model that pauses longer than [`QUIET`] between two calls of one step gets them sent in two
//! rounds (call → result → call → result): valid for every OpenAI client, nothing is lost.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::opencode::events::{RunEvent, ToolStatus};

/// How long a step must be quiet before its held calls go to the client.
pub const QUIET: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct ToolPart {
    call_id: String,
    tool: String,
    status: ToolStatus,
    input: Value,
    /// Paired with a held call (waiting, or already sent to the client).
    paired: bool,
}

#[derive(Debug)]
struct Held<T> {
    /// Full OpenCode tool name (`<slot>_<name>`).
    tool: String,
    arguments: Value,
    part: Option<usize>,
    call: T,
}

/// Tracks one run's tool parts and held calls; `T` is whatever stands for a held call.
#[derive(Debug)]
pub struct StepTracker<T> {
    /// `<slot>_`: only tools with this prefix are the client's.
    prefix: String,
    /// The assistant message of the current step.
    message: Option<String>,
    parts: Vec<ToolPart>,
    held: Vec<Held<T>>,
    last_activity: Option<Instant>,
}

impl<T> StepTracker<T> {
    /// A tracker for the tools of `slot`.
    pub fn new(slot: &str) -> StepTracker<T> {
        StepTracker {
            prefix: format!("{slot}_"),
            message: None,
            parts: Vec::new(),
            held: Vec::new(),
            last_activity: None,
        }
    }

    /// Whether any call is held and not yet sent to the client.
    #[cfg(test)]
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// When the step could next be complete (the end of the quiet window), once everything
    /// but that window holds; `None` while something else is missing (a new event or call
    /// asks again), so a run never spins on a deadline already past.
    pub fn ready_at(&self) -> Option<Instant> {
        if !self.complete_but_quiet() {
            return None;
        }
        Some(self.last_activity.map_or_else(Instant::now, |t| t + QUIET))
    }

    /// Feeds one event of the run.
    pub fn on_event(&mut self, event: &RunEvent, now: Instant) {
        match event {
            RunEvent::Step(step) if !step.completed => {
                if self.message.as_deref() != Some(step.message.as_str()) {
                    // A new step: the previous step's parts are done with.
                    self.message = Some(step.message.clone());
                    self.parts.clear();
                    for h in &mut self.held {
                        h.part = None;
                    }
                }
                self.last_activity = Some(now);
            }
            RunEvent::Tool(update) if self.in_step(&update.message) => {
                self.last_activity = Some(now);
                let index = match self.parts.iter().position(|x| x.call_id == update.call_id) {
                    Some(i) => i,
                    None => {
                        self.parts.push(ToolPart {
                            call_id: update.call_id.clone(),
                            tool: update.tool.clone(),
                            status: update.status,
                            input: Value::Null,
                            paired: false,
                        });
                        self.parts.len() - 1
                    }
                };
                let entry = &mut self.parts[index];
                entry.status = update.status;
                entry.input = update.input.clone();
                self.pair();
            }
            RunEvent::Text { message, .. }
            | RunEvent::Reasoning { message, .. }
            | RunEvent::Progress { message }
                if self.in_step(message) =>
            {
                self.last_activity = Some(now);
            }
            _ => {}
        }
    }

    /// Whether `message` is the current step's.
    fn in_step(&self, message: &str) -> bool {
        self.message.as_deref() == Some(message)
    }

    /// A call arrived on the run's slot (`name` as the MCP server knows it).
    pub fn on_call(&mut self, name: &str, arguments: Value, call: T, now: Instant) {
        self.held.push(Held {
            tool: format!("{}{name}", self.prefix),
            arguments,
            part: None,
            call,
        });
        self.last_activity = Some(now);
        self.pair();
    }

    fn pair(&mut self) {
        for h in self.held.iter_mut().filter(|h| h.part.is_none()) {
            let hit = self.parts.iter().position(|p| {
                // A held call's own part runs until its result is given: a part already
                // finished (or failed, say refused) belongs to another call.
                !p.paired
                    && p.status == ToolStatus::Running
                    && p.tool == h.tool
                    && p.input == h.arguments
            });
            if let Some(i) = hit {
                h.part = Some(i);
                self.parts[i].paired = true;
            }
        }
    }

    /// Whether the step is complete at `now` (see the module docs).
    pub fn is_complete(&self, now: Instant) -> bool {
        self.complete_but_quiet()
            && self
                .last_activity
                .is_none_or(|t| now.duration_since(t) >= QUIET)
    }

    /// Everything of a complete step but the quiet window.
    fn complete_but_quiet(&self) -> bool {
        !self.held.is_empty()
            && self.held.iter().all(|h| h.part.is_some())
            && !self.parts.iter().any(|p| p.status == ToolStatus::Pending)
            && !self.parts.iter().any(|p| {
                p.status == ToolStatus::Running && p.tool.starts_with(&self.prefix) && !p.paired
            })
    }

    /// Takes up to `max` held calls of a complete step, in the order the model made them.
    pub fn take(&mut self, max: usize) -> Vec<T> {
        self.held.sort_by_key(|h| h.part.unwrap_or(usize::MAX));
        let n = max.min(self.held.len());
        self.held.drain(..n).map(|h| h.call).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::opencode::events::{Step, ToolUpdate};

    fn assistant(id: &str) -> RunEvent {
        RunEvent::Step(Step {
            message: id.into(),
            ..Step::default()
        })
    }

    fn part(call: &str, tool: &str, status: &str, input: Value) -> RunEvent {
        RunEvent::Tool(ToolUpdate {
            message: "msg_a".into(),
            call_id: call.into(),
            tool: tool.into(),
            status: match status {
                "pending" => ToolStatus::Pending,
                "running" => ToolStatus::Running,
                "completed" => ToolStatus::Completed,
                _ => ToolStatus::Error,
            },
            input,
            output: None,
            error: None,
        })
    }

    #[test]
    fn a_step_completes_when_every_call_is_held_paired_and_quiet() {
        let now = Instant::now();
        let mut t: StepTracker<u32> = StepTracker::new("ptk01");
        t.on_event(&assistant("msg_a"), now);
        t.on_event(&part("c1", "ptk01_get_weather", "pending", json!({})), now);
        t.on_event(
            &part(
                "c1",
                "ptk01_get_weather",
                "running",
                json!({"city": "Paris"}),
            ),
            now,
        );
        t.on_call("get_weather", json!({"city": "Paris"}), 1, now);
        t.on_event(&part("c2", "ptk01_get_weather", "pending", json!({})), now);
        let later = now + Duration::from_secs(5);
        assert!(!t.is_complete(later), "c2 still streaming");
        t.on_event(
            &part(
                "c2",
                "ptk01_get_weather",
                "running",
                json!({"city": "Oslo"}),
            ),
            later,
        );
        assert!(!t.is_complete(later + QUIET), "c2's call not held yet");
        t.on_call("get_weather", json!({"city": "Oslo"}), 2, later);
        assert!(!t.is_complete(later), "quiet window");
        assert_eq!(t.ready_at(), Some(later + QUIET));
        assert!(t.is_complete(later + QUIET));
        assert_eq!(t.take(10), vec![1, 2]);
        assert!(!t.has_held());
    }

    #[test]
    fn calls_go_out_in_the_models_order_and_one_at_a_time_when_asked() {
        let now = Instant::now();
        let mut t: StepTracker<&str> = StepTracker::new("ptk01");
        t.on_event(&assistant("msg_a"), now);
        // The second call's MCP request arrives first.
        t.on_call("b", json!({}), "second", now);
        t.on_call("a", json!({}), "first", now);
        t.on_event(&part("c1", "ptk01_a", "running", json!({})), now);
        t.on_event(&part("c2", "ptk01_b", "running", json!({})), now);
        assert!(t.is_complete(now + QUIET));
        assert_eq!(t.take(1), vec!["first"]);
        assert!(
            t.is_complete(now + QUIET),
            "the rest stays ready for the next round"
        );
        assert_eq!(t.take(1), vec!["second"]);
    }

    /// A part that already ended (here refused: OpenCode answered it without the run) is not a
    /// held call's, even with the same arguments; and while a held call has no part yet there is
    /// no moment to wake up for (a run used to spin on a quiet window already past).
    #[test]
    fn finished_parts_are_not_paired_and_nothing_to_wait_for_is_none() {
        let now = Instant::now();
        let mut t: StepTracker<u8> = StepTracker::new("ptk03");
        t.on_event(&assistant("msg_a"), now);
        t.on_call("f", json!({}), 1, now);
        assert_eq!(t.ready_at(), None, "the held call has no part yet");
        t.on_event(&part("c1", "ptk03_f", "error", json!({})), now);
        assert_eq!(t.ready_at(), None, "an ended part is not the held call's");
        assert!(!t.is_complete(now + QUIET));
        t.on_event(&part("c2", "ptk03_f", "running", json!({})), now);
        assert_eq!(t.ready_at(), Some(now + QUIET));
        assert!(t.is_complete(now + QUIET));
        assert_eq!(t.take(5), vec![1]);
    }

    #[test]
    fn other_tools_and_a_new_step_are_handled() {
        let now = Instant::now();
        let mut t: StepTracker<u8> = StepTracker::new("ptk02");
        t.on_event(&assistant("msg_a"), now);
        // A slot tool of another run cannot appear; OpenCode's own tools run by themselves.
        t.on_event(
            &part("c0", "bash", "running", json!({"command": "ls"})),
            now,
        );
        t.on_event(&part("c1", "ptk02_f", "running", json!({"x": 1})), now);
        t.on_call("f", json!({"x": 1}), 7, now);
        assert!(t.is_complete(now + QUIET));
        assert_eq!(t.take(5), vec![7]);
        assert!(!t.is_complete(now + QUIET), "nothing held");
    }
}
