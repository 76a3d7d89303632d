//! Named scenarios sharing one expensive bed (a real OpenCode takes seconds to start): each runs
//! in turn, a failing one is reported and the next still runs, and the test fails at the end
//! listing every failed scenario.
#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;

/// The scenarios of one test.
#[derive(Default)]
pub struct Scenarios {
    failures: Vec<String>,
}

impl Scenarios {
    pub fn new() -> Scenarios {
        Scenarios::default()
    }

    /// Runs one scenario to its end; a panic is recorded as its failure.
    pub async fn run(&mut self, name: &str, scenario: impl Future<Output = ()>) {
        let start = Instant::now();
        match AssertUnwindSafe(scenario).catch_unwind().await {
            Ok(()) => eprintln!("[scenario] {name}: ok ({:?})", start.elapsed()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                eprintln!("[scenario] {name}: FAILED ({:?}): {msg}", start.elapsed());
                self.failures.push(format!("{name}: {msg}"));
            }
        }
    }

    /// Fails the test if any scenario failed, with the tail of `logs` (the gateway's).
    pub fn finish(self, logs: &str) {
        if !self.failures.is_empty() {
            let lines: Vec<&str> = logs.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            panic!(
                "{} scenario(s) failed:\n- {}\n\ngateway log tail:\n{tail}",
                self.failures.len(),
                self.failures.join("\n- ")
            );
        }
    }
}

/// `scenario!(s, name(args…))` runs the scenario `name(args…)` in `s`, named after its function.
#[allow(unused_macros)]
macro_rules! scenario {
    ($s:expr, $name:ident($($arg:expr),* $(,)?)) => {
        $s.run(stringify!($name), $name($($arg),*)).await
    };
}
pub(crate) use scenario;
