//! The benches (`benches/*.rs`) include the test bed through this path; it lives in
//! `tests/it/support/` with the integration tests, which are one binary (`tests/it/main.rs`).
#![allow(dead_code, unused_imports)]

#[path = "../it/support/mod.rs"]
mod bed;

pub use bed::*;
