//! Where a run is in its life, and the only moves it can make.
//!
//! ```text
//!   start ──▶ Streaming ──tool calls out──▶ AwaitingToolResults ──results in──▶ Streaming
//!                │  │                              │
//!                │  └──answered──▶ Finished        ├──failed / deadline──▶ Failed
//!                └──failed──▶ Failed               └──abandoned──▶ Cancelled
//!   (Streaming ──abandoned──▶ Cancelled: the client went away)
//! ```
//!
//! `Finished`, `Failed` and `Cancelled` are final: the run's session has been handed back (or
//! aborted) exactly once, on the way in. A move the table does not have is a bug in the
//! caller; it leaves the phase as it was and says so in the log, rather than panic a request.

/// A run's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its current response is streaming (started, or resumed with tool results).
    Streaming,
    /// The response ended with the client's tool calls; OpenCode waits on them, and the run
    /// waits (parked) for the request that brings the results.
    AwaitingToolResults,
    /// OpenCode answered: the session went back to its pool.
    Finished,
    /// The run failed: aborted upstream, the session let go.
    Failed,
    /// Given up before its end (client gone, results never came): aborted upstream.
    Cancelled,
}

/// What happens to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The response ends with tool calls for the client.
    ToolCallsOut,
    /// The client brought the results.
    ResultsIn,
    /// OpenCode answered.
    Answered,
    /// OpenCode, the deadline or shutdown failed it.
    Failed,
    /// Nobody will read it any more.
    Abandoned,
}

impl Phase {
    /// Whether the run is over (its session handed back or aborted).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Finished | Phase::Failed | Phase::Cancelled)
    }

    /// The phase after `step`; `None` when the table has no such move.
    pub fn after(self, step: Move) -> Option<Phase> {
        use Phase::*;
        match (self, step) {
            (Streaming, Move::ToolCallsOut) => Some(AwaitingToolResults),
            (AwaitingToolResults, Move::ResultsIn) => Some(Streaming),
            (Streaming, Move::Answered) => Some(Finished),
            (Streaming | AwaitingToolResults, Move::Failed) => Some(Failed),
            (Streaming | AwaitingToolResults, Move::Abandoned) => Some(Cancelled),
            _ => None,
        }
    }

    /// Moves on by `step`, or stays (and logs) when the move is not in the table.
    pub fn advance(&mut self, step: Move) {
        match self.after(step) {
            Some(next) => *self = next,
            None => {
                tracing::error!(phase = ?self, ?step, "a run was asked to make a move it cannot make")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Phase; 5] = [
        Phase::Streaming,
        Phase::AwaitingToolResults,
        Phase::Finished,
        Phase::Failed,
        Phase::Cancelled,
    ];
    const MOVES: [Move; 5] = [
        Move::ToolCallsOut,
        Move::ResultsIn,
        Move::Answered,
        Move::Failed,
        Move::Abandoned,
    ];

    #[test]
    fn a_tool_round_trip_returns_to_streaming() {
        let mut p = Phase::Streaming;
        p.advance(Move::ToolCallsOut);
        assert_eq!(p, Phase::AwaitingToolResults);
        p.advance(Move::ResultsIn);
        assert_eq!(p, Phase::Streaming);
        p.advance(Move::Answered);
        assert_eq!(p, Phase::Finished);
    }

    #[test]
    fn final_phases_make_no_move() {
        for phase in ALL.into_iter().filter(|p| p.is_final()) {
            for step in MOVES {
                assert_eq!(phase.after(step), None, "{phase:?} then {step:?}");
            }
        }
    }

    #[test]
    fn every_live_phase_can_fail_or_be_abandoned() {
        for phase in ALL.into_iter().filter(|p| !p.is_final()) {
            assert_eq!(phase.after(Move::Failed), Some(Phase::Failed));
            assert_eq!(phase.after(Move::Abandoned), Some(Phase::Cancelled));
        }
    }

    #[test]
    fn a_run_waiting_for_results_cannot_answer_and_a_streaming_one_cannot_resume() {
        assert_eq!(Phase::AwaitingToolResults.after(Move::Answered), None);
        assert_eq!(Phase::Streaming.after(Move::ResultsIn), None);
        assert_eq!(Phase::AwaitingToolResults.after(Move::ToolCallsOut), None);
        let mut stuck = Phase::Finished;
        stuck.advance(Move::ResultsIn);
        assert_eq!(
            stuck,
            Phase::Finished,
            "an impossible move leaves the phase"
        );
    }
}
