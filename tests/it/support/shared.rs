//! Beds shared by tests: one test per behaviour, each runnable by name, without each starting
//! its own expensive bed (a real OpenCode takes seconds to start, and its first prompt more).
//!
//! A [`BedPool`] (a `static` per bed configuration) lends a bed to one test at a time, so tests
//! on it never see each other's traffic in the mock model's calls, OpenCode's sessions or the
//! gateway's log, exactly as when they ran one after another on one bed. A bed is started on
//! first use; when every bed of the pool is lent (tests run on several threads), another one is
//! started. A test that panics does not give its bed back (it may have left it in any state).
//!
//! Shared beds outlive every `#[tokio::test]` runtime, so they live on runtime of their own
//! ([`runtime`]): their in-process servers (the mock model, proxies) run on its workers, and the
//! tests' futures run on it too ([`BedPool::run`] blocks the test's thread on it), so clients
//! and connections made by one test stay valid for the next. Their child processes are spawned
//! from a thread that parks forever and die with the test process: `PR_SET_PDEATHSIG` (see
//! `opencode::set_pdeathsig`) fires when the spawning *thread* ends, which for these threads is
//! the process's exit. Tests using a pool are plain `#[test]` functions.
#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};

use futures::FutureExt;

/// The runtime shared beds and their tests run on (never shut down).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shared-bed")
            .enable_all()
            .build()
            .expect("the shared beds' runtime")
    })
}

/// Beds of one configuration, started on demand and lent to one test at a time.
pub struct BedPool<T: 'static> {
    idle: Mutex<Vec<&'static T>>,
}

/// What a failed test prints of its bed: the tail of the gateway's log.
pub trait BedLogs {
    fn logs(&self) -> String;
}

impl BedLogs for super::TestBed {
    fn logs(&self) -> String {
        self.gateway.logs()
    }
}

impl<T: BedLogs + Send + Sync + 'static> BedPool<T> {
    pub const fn new() -> BedPool<T> {
        BedPool {
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `test` on an idle bed of this pool, started with `start` when none is idle.
    /// Called from a plain `#[test]` function (it blocks on the shared [`runtime`]).
    pub fn run<S, SF, F, TF>(&'static self, start: S, test: F)
    where
        S: FnOnce() -> SF + Send + 'static,
        SF: Future<Output = T>,
        F: FnOnce(&'static T) -> TF,
        TF: Future<Output = ()>,
    {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let bed = idle.unwrap_or_else(|| start_bed(start));
        let lent = Lent { pool: self, bed };
        let outcome = runtime().block_on(AssertUnwindSafe(test(lent.bed)).catch_unwind());
        if let Err(panic) = outcome {
            let logs = bed.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!(
                "gateway log tail:\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
            std::panic::resume_unwind(panic);
        }
    }
}

impl<T: BedLogs + Send + Sync + 'static> Default for BedPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A lent bed: back to its pool when the test ends, unless it panicked.
struct Lent<T: 'static> {
    pool: &'static BedPool<T>,
    bed: &'static T,
}

impl<T: 'static> Drop for Lent<T> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.bed);
        }
    }
}

/// Starts a bed on a thread of its own that then parks for the rest of the process (the
/// parent thread of its child processes, see the module's docs). The bed is never dropped.
fn start_bed<T, S, SF>(start: S) -> &'static T
where
    T: Send + Sync + 'static,
    S: FnOnce() -> SF + Send + 'static,
    SF: Future<Output = T>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("shared-bed-owner".into())
        .spawn(move || {
            // A panic while starting drops `tx`, and the test sees it below.
            let bed: &'static T = Box::leak(Box::new(runtime().block_on(start())));
            let _ = tx.send(bed);
            loop {
                std::thread::park();
            }
        })
        .expect("spawn a shared bed's thread");
    rx.recv()
        .expect("the shared bed failed to start (its panic is printed above)")
}

/// Plain beds (`Harness::real()` as it comes), lent to tests of any module that need nothing
/// else of their bed.
pub static PLAIN: BedPool<super::TestBed> = BedPool::new();

/// Starts a bed of [`PLAIN`].
pub async fn plain_bed() -> super::TestBed {
    super::Harness::real().start().await
}

/// A real bed that tests share but mutate (they replace its gateway, restart its OpenCode):
/// lent to one test at a time, the lock is only ever taken by the test holding it.
pub struct Mutable(pub tokio::sync::Mutex<super::TestBed>);

impl BedLogs for Mutable {
    fn logs(&self) -> String {
        self.0
            .try_lock()
            .map(|bed| bed.gateway.logs())
            .unwrap_or_default()
    }
}

/// Starts a [`Mutable`] bed.
pub async fn mutable_bed() -> Mutable {
    Mutable(tokio::sync::Mutex::new(plain_bed().await))
}

/// Plain beds in front of OpenCode 2.x.
pub static PLAIN_V2: BedPool<super::TestBed> = BedPool::new();

/// Starts a bed of [`PLAIN_V2`].
pub async fn plain_bed_v2() -> super::TestBed {
    super::Harness::real().v2().start().await
}

/// Starts a [`Mutable`] bed in front of OpenCode 2.x.
pub async fn mutable_bed_v2() -> Mutable {
    Mutable(tokio::sync::Mutex::new(plain_bed_v2().await))
}
