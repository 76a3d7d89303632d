//! Memory given back after spikes.
//!
//! A few very large requests (1,000 tools, a 5 MB schema, 50,000 input items) raised the
//! gateway's resident memory from 30 to 235 MiB, and it stayed near 150 MiB: not a leak, but
//! glibc's malloc keeping what was freed in its arenas (one per thread that allocated, up to
//! eight per core) for reuse. Two settings and one habit give it back:
//! - at most [`ARENAS`] arenas (`M_ARENA_MAX`): the runtime's threads share a few, so freed
//!   memory is not spread over arenas no one trims;
//! - allocations of [`MMAP_THRESHOLD`] and more come straight from `mmap` (`M_MMAP_THRESHOLD`),
//!   so a large request's big buffers go back to the system the moment they are freed;
//! - every [`TRIM_EVERY`], `malloc_trim(0)` returns the free pages inside the arenas (it walks
//!   them, a fraction of a millisecond at the gateway's sizes).
//!
//! Why not another allocator: mimalloc and jemalloc return memory by themselves, but swap the
//! whole allocator (a C build, different per-allocation costs) for what three calls into the
//! one already linked do; the allocator question for speed is issue 25's, to be measured in the
//! bench. On other C libraries (musl) these calls do not exist and nothing is done.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Most malloc arenas.
pub const ARENAS: i32 = 4;
/// Allocations at least this large are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: i32 = 256 * 1024;
/// How often free memory inside the arenas is handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Sets the allocator up (call once, early, before the runtime's threads allocate much).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; it is safe to call at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Hands free memory back to the system every [`TRIM_EVERY`] until `stop`.
pub fn spawn_trimmer(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => trim(),
            }
        }
    });
}

/// One `malloc_trim(0)`.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it is thread-safe.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
