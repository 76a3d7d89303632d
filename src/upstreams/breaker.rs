//! A circuit breaker per upstream, driven by periodic health probes.
//!
//! Closed (serving) → after `failure_threshold` consecutive failed probes → Open (drained: no
//! new conversations, its conversations move at their next turn) → after `open_secs` one
//! half-open probe → Closed again on success, Open for another period on failure.
//!
//! Probes, not request errors, drive it: a request error can be the client's (a bad model, a
//! deadline it asked for), while a failed `GET /global/health` within the health timeout is
//! OpenCode's alone. Requests still see a dead upstream at once through its event stream (see
//! [`super::Backend::available`]). Crates such as `failsafe` were looked at: their breakers
//! count call results, which is the part not wanted here, and the state machine is twenty lines.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Healthy: serves new conversations.
    Closed,
    /// Drained until its next probe.
    Open,
    /// Drained; the next probe decides.
    HalfOpen,
}

impl BreakerState {
    /// As `/status` shows it.
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "up",
            BreakerState::Open => "down",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    open_until: Option<Instant>,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                open_until: None,
            }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// The current state (an open breaker whose period is over reads as half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = lock(&self.inner);
        if inner.state == BreakerState::Open
            && inner.open_until.is_some_and(|t| Instant::now() >= t)
        {
            inner.state = BreakerState::HalfOpen;
        }
        inner.state
    }

    /// Whether a probe should run now (not while open and its period lasts).
    pub fn should_probe(&self) -> bool {
        self.state() != BreakerState::Open
    }

    /// Records a probe's result; returns the new state when it changed.
    pub fn record(&self, ok: bool) -> Option<BreakerState> {
        let before = self.state();
        let mut inner = lock(&self.inner);
        if ok {
            inner.failures = 0;
            inner.state = BreakerState::Closed;
            inner.open_until = None;
        } else {
            inner.failures = inner.failures.saturating_add(1);
            if before == BreakerState::HalfOpen || inner.failures >= self.threshold {
                inner.state = BreakerState::Open;
                inner.open_until = Some(Instant::now() + self.open_for);
            }
        }
        (inner.state != before).then_some(inner.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_half_opens_after_its_period() {
        let b = Breaker::new(2, Duration::from_secs(10));
        assert_eq!(b.record(false), None, "one failure is not enough");
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.record(false), Some(BreakerState::Open));
        assert!(!b.should_probe());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.should_probe());
        assert_eq!(
            b.record(false),
            Some(BreakerState::Open),
            "a failed half-open probe opens it again at once"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.record(true), Some(BreakerState::Closed));
        assert_eq!(b.record(false), None, "the count starts over");
    }
}
