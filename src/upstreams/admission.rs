//! Admission control per upstream: a bound on the runs in flight that follows OpenCode's
//! latency, a short bounded queue, and beyond it a fast refusal.
//!
//! Forwarding everything at once makes an overloaded OpenCode thrash: at 1,000 concurrent
//! streams it took more than 15 s to accept a session create or a prompt, so almost every
//! request failed *after* it had started. Refusing early (a 503 with `Retry-After`, which the
//! OpenAI SDKs retry) keeps the requests that are admitted fast and the ones that are not
//! cheap.
//!
//! **The limit adapts** (`[admission] adaptive`, on by default), as Netflix's
//! concurrency-limits *Gradient2* and Envoy's adaptive concurrency do: each admitted run
//! reports how long OpenCode took to accept its prompt — a call that does not wait on the
//! model, so its latency measures OpenCode's own load whatever the provider's speed. A short
//! moving average of that latency is held against a baseline (the best recent average, which
//! may only creep up slowly, so a sustained overload never becomes the new normal — the flaw
//! of a plain long average, seen here: it followed OpenCode to 2.3 s per accepted prompt); while
//! the short one stays within `tolerance` × the baseline the limit grows (by a fifth of its square root per sample:
//! about doubling per generation of runs, like TCP's slow start), and when it rises above,
//! the limit shrinks in proportion (at most about a tenth per sample), within
//! `[min_limit, max_limit]`. Growth is cautious on purpose: OpenCode's latency rises only once
//! it is already busy, so a limit that jumped to the demand let a burst in before the signal
//! came. With `adaptive = false` the limit stays at
//! `initial_limit`.
//!
//! **The queue** holds at most `queue` requests and never more than the limit (one generation
//! of runs), each for at most `queue_timeout_ms`, first come first served — but only while
//! OpenCode answers as fast as usual, so that a burst on a
//! healthy upstream waits the few samples the limit needs to grow. Once OpenCode is slower
//! than it should be, waiters are refused at once and nothing new waits: under overload every
//! refusal is immediate. A request that finds the queue full, or whose wait runs out, is
//! refused too. Runs resumed with tool results are not admitted again: they already started, and
//! a parked run gives its place back while it waits.
//!
//! Why not a crate: `tower::limit::ConcurrencyLimit` has a fixed limit and an unbounded queue;
//! the adaptive limiters on crates.io (`concurrency-limiter`-style ports) are thinly kept and
//! drive their samples from whole-request latency, which here is mostly the model's. The
//! queue and limit below are one mutex and a FIFO of one-shot channels.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::AdmissionConfig;
use crate::sync::lock;

/// Weight of a new sample in the short average.
const SHORT_ALPHA: f64 = 0.2;
/// How often the refusal and admission rates behind `Retry-After` are taken.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// Longest `Retry-After` a refusal asks for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How fast the baseline latency may rise per sample (relative).
const BASELINE_CREEP: f64 = 0.0005;
/// How much of each new limit estimate is taken at once.
const SMOOTHING: f64 = 0.2;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full.
    QueueFull,
    /// It waited its longest in the queue.
    QueueTimeout,
    /// The upstream answers slower than it should: nothing waits for it.
    Overloaded,
}

impl Refusal {
    /// Label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::QueueTimeout => "queue_timeout",
            Refusal::Overloaded => "overloaded",
        }
    }
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// Each waiter is told `true` (admitted) or `false` (refused: the upstream is overloaded).
    waiters: VecDeque<oneshot::Sender<bool>>,
    /// The latest sample was within tolerance (a burst may wait for the limit to grow).
    healthy: bool,
    short: Option<f64>,
    baseline: Option<f64>,
    admitted: u64,
    refused: u64,
    /// Total seconds admitted requests waited in the queue.
    waited: f64,
    /// Start of the current counting window, and the counts at its start.
    window: (Instant, u64, u64),
    /// The `Retry-After` the last full window called for.
    retry_after: Duration,
}

struct Inner {
    config: AdmissionConfig,
    state: Mutex<State>,
}

/// One upstream's admission control; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

/// A run's place among the upstream's runs in flight, given back on drop.
pub struct Admitted {
    inner: Arc<Inner>,
}

/// What `/status` and `/metrics` show.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// The current limit on runs in flight (0: unlimited).
    pub limit: usize,
    /// Admitted runs in flight.
    pub in_flight: usize,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Requests admitted since start.
    pub admitted: u64,
    /// Requests refused since start.
    pub refused: u64,
    /// Seconds admitted requests waited in the queue, in all.
    pub waited_secs: f64,
    /// The short average of OpenCode's prompt latency, in milliseconds.
    pub latency_ms: Option<f64>,
}

impl Admission {
    /// Admission as `config` says.
    pub fn new(config: &AdmissionConfig) -> Admission {
        let limit = config
            .initial_limit
            .clamp(config.min_limit, config.max_limit) as f64;
        Admission {
            inner: Arc::new(Inner {
                config: config.clone(),
                state: Mutex::new(State {
                    limit,
                    in_flight: 0,
                    waiters: VecDeque::new(),
                    healthy: true,
                    short: None,
                    baseline: None,
                    admitted: 0,
                    refused: 0,
                    waited: 0.0,
                    window: (Instant::now(), 0, 0),
                    retry_after: config.retry_after,
                }),
            }),
        }
    }

    /// How long a refused client should wait before trying again: `retry_after_secs`, longer
    /// the more requests are turned away per admitted one (√ of that ratio, up to
    /// [`MAX_RETRY_AFTER`]), so clients that honour `Retry-After` spread their retries instead
    /// of spending the upstream's CPU on refusals.
    pub fn retry_after(&self) -> Duration {
        let mut state = lock(&self.inner.state);
        let (start, admitted, refused) = state.window;
        let elapsed = start.elapsed();
        if elapsed >= RATE_WINDOW {
            let a = (state.admitted - admitted) as f64;
            let r = (state.refused - refused) as f64;
            let base = self.inner.config.retry_after.as_secs_f64().max(1.0);
            let secs = match a {
                0.0 if r > 0.0 => MAX_RETRY_AFTER.as_secs_f64(),
                0.0 => base,
                a => base * (r / a).sqrt().max(1.0),
            };
            state.retry_after = Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()));
            state.window = (Instant::now(), state.admitted, state.refused);
        }
        state.retry_after
    }

    /// A place for a new run: at once while below the limit, else after a short wait in the
    /// queue, else a refusal (at once when the queue is full).
    pub async fn admit(&self) -> Result<Option<Admitted>, Refusal> {
        if !self.inner.config.enabled {
            return Ok(None);
        }
        let started = Instant::now();
        let rx = {
            let mut state = lock(&self.inner.state);
            if state.waiters.is_empty() && (state.in_flight as f64) < state.limit {
                state.in_flight += 1;
                state.admitted += 1;
                return Ok(Some(self.admitted()));
            }
            if !state.healthy {
                state.refused += 1;
                return Err(Refusal::Overloaded);
            }
            // At most one generation of runs waits (the limit's worth, and `queue` at most):
            // whoever would wait behind more is refused now rather than at the end of a wait.
            if state.waiters.len() >= self.inner.config.queue.min(state.limit as usize) {
                state.refused += 1;
                return Err(Refusal::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            rx
        };
        let mut rx = rx;
        let outcome = tokio::time::timeout(self.inner.config.queue_timeout, &mut rx).await;
        let (admitted, refusal) = match outcome {
            Ok(Ok(admitted)) => (admitted, Refusal::Overloaded),
            // Close first: a place handed over after the timeout fired is taken rather than
            // lost; none can come after the close.
            _ => {
                rx.close();
                (rx.try_recv() == Ok(true), Refusal::QueueTimeout)
            }
        };
        let mut state = lock(&self.inner.state);
        // A waiter that gave up leaves no place in the queue behind.
        state.waiters.retain(|tx| !tx.is_closed());
        if admitted {
            state.admitted += 1;
            state.waited += started.elapsed().as_secs_f64();
            Ok(Some(self.admitted()))
        } else {
            state.refused += 1;
            Err(refusal)
        }
    }

    fn admitted(&self) -> Admitted {
        Admitted {
            inner: self.inner.clone(),
        }
    }

    /// How long OpenCode took to accept a prompt (or to fail to): the load signal.
    pub fn sample(&self, latency: Duration) {
        let config = &self.inner.config;
        let mut state = lock(&self.inner.state);
        let x = latency.as_secs_f64().max(1e-6);
        let short = state.short.map_or(x, |s| s + SHORT_ALPHA * (x - s));
        // The baseline is the best recent latency, creeping up slowly (a doubling takes about
        // 1,400 samples), so a sustained overload never becomes the new normal but a slower
        // OpenCode (a bigger project, another host) eventually does.
        let baseline = state
            .baseline
            .map_or(short, |l| (l * (1.0 + BASELINE_CREEP)).min(short));
        state.short = Some(short);
        state.baseline = Some(baseline);
        // Only a limit that is being used is learned from (an idle gateway's would only grow).
        let demand = state.in_flight + state.waiters.len();
        if !config.adaptive || (demand as f64) < state.limit / 2.0 {
            return;
        }
        let gradient = (config.tolerance * baseline / short).clamp(0.5, 1.0);
        state.healthy = gradient >= 1.0;
        if !state.healthy {
            // Overloaded: whoever waits is refused now rather than at the end of the wait.
            while let Some(tx) = state.waiters.pop_front() {
                let _ = tx.send(false);
            }
        }
        // Healthy (gradient 1): grow by a fifth of the limit's square root per sample, which
        // roughly doubles it per generation of runs, like TCP's slow start; slower than
        // usual: shrink in proportion, at most about a tenth per sample.
        let estimate = state.limit * gradient + state.limit.sqrt();
        state.limit = (state.limit * (1.0 - SMOOTHING) + estimate * SMOOTHING)
            .clamp(config.min_limit as f64, config.max_limit as f64);
        release_waiters(&mut state);
    }

    /// The numbers for `/status` and `/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let state = lock(&self.inner.state);
        Snapshot {
            limit: if self.inner.config.enabled {
                state.limit as usize
            } else {
                0
            },
            in_flight: state.in_flight,
            queued: state.waiters.len(),
            admitted: state.admitted,
            refused: state.refused,
            waited_secs: state.waited,
            latency_ms: state.short.map(|s| s * 1000.0),
        }
    }
}

/// Hands free places to waiters, first come first served (skipping those that gave up).
fn release_waiters(state: &mut State) {
    while (state.in_flight as f64) < state.limit {
        let Some(tx) = state.waiters.pop_front() else {
            return;
        };
        if tx.send(true).is_ok() {
            state.in_flight += 1;
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        state.in_flight = state.in_flight.saturating_sub(1);
        release_waiters(&mut state);
    }
}

#[cfg(test)]
mod tests;
