//! Load drivers and latency statistics.
//!
//! - [`open_loop`]: requests arrive at a fixed rate whatever the server does, each measured from
//!   its SCHEDULED send time. A server that stalls cannot slow the arrivals down and thereby hide
//!   its queue (coordinated omission): requests that had to wait count the wait. The schedule is
//!   kept by a plain OS thread (`nanosleep` is far finer than Tokio's 1 ms timer wheel) that
//!   hands each request to the client runtime at its time.
//! - [`closed_loop`]: N workers back to back, for saturation throughput.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests allowed in flight at once in an open loop; beyond it an arrival is counted as
/// `shed` instead of sent (the server is hopelessly behind; more sockets would not tell more).
pub const MAX_IN_FLIGHT: u64 = 4_000;

/// What a load run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of each successful request, µs.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    /// Open loop: arrivals not sent because [`MAX_IN_FLIGHT`] were outstanding.
    pub shed: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
}

impl Outcome {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ok(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// The `p`-th percentile (0–100) of `values` (µs), as µs; `NaN` when empty.
pub fn percentile(values: &[u64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1] as f64
}

/// Open loop at `rate` requests/s for `duration`: `make(i)` builds request `i`, which resolves
/// to whether it succeeded. Latency counts from the scheduled send time.
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, make: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let in_flight = Arc::new(AtomicU64::new(0));
    let scheduler = {
        let in_flight = in_flight.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now() + Duration::from_millis(5);
            let mut handles = Vec::with_capacity(total as usize);
            let mut shed = 0;
            for i in 0..total {
                let at = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if in_flight.load(Relaxed) >= MAX_IN_FLIGHT {
                    shed += 1;
                    continue;
                }
                in_flight.fetch_add(1, Relaxed);
                let fut = make(i);
                let in_flight = in_flight.clone();
                handles.push(handle.spawn(async move {
                    let ok = fut.await;
                    let done = Instant::now();
                    in_flight.fetch_sub(1, Relaxed);
                    (ok, done.saturating_duration_since(at))
                }));
            }
            (start, handles, shed)
        })
    };
    let Ok((start, handles, shed)) = scheduler.await else {
        return Outcome::default();
    };
    let mut out = Outcome {
        shed,
        ..Outcome::default()
    };
    for h in handles {
        match h.await {
            Ok((true, latency)) => out.latencies_us.push(latency.as_micros() as u64),
            _ => out.errors += 1,
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// Closed loop: `workers` tasks each send `make(i)` back to back until `duration` has passed
/// (requests numbered across workers); latency counts from each send.
pub async fn closed_loop<F, Fut>(workers: usize, duration: Duration, make: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    closed_loop_n(workers, duration, u64::MAX, make).await
}

/// Like [`closed_loop`], stopping after `limit` requests (or `duration`, whichever first).
pub async fn closed_loop_n<F, Fut>(
    workers: usize,
    duration: Duration,
    limit: u64,
    make: F,
) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let make = make.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= limit {
                        break;
                    }
                    let t = Instant::now();
                    if make(i).await {
                        lat.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut out = Outcome::default();
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            out.latencies_us.extend(lat);
            out.errors += errors;
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// A reqwest client for loopback load: no proxy, keep-alive pool, TCP_NODELAY.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}
