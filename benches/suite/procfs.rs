//! What Linux says about a process in `/proc`: CPU time used (to divide by completions) and
//! resident memory. Read from outside, so measuring costs the measured process nothing.

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of `utime` / `stime`.
#[allow(unsafe_code)]
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

/// CPU seconds (user + system, all threads) `pid` has used so far.
pub fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0.0, |stat| stat_cpu_secs(&stat))
}

/// User + system CPU seconds of a `/proc/…/stat` line.
fn stat_cpu_secs(stat: &str) -> f64 {
    // `pid (comm) state ppid …`: comm may hold spaces; utime and stime are fields 14 and 15,
    // i.e. the 12th and 13th after the closing parenthesis.
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / clock_ticks() as f64
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// `kib` as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix` (Linux
/// cuts thread names to 15 bytes).
pub fn own_threads_cpu_secs(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')'));
            name.is_some_and(|(n, _)| n.starts_with(prefix))
        })
        .map(|stat| stat_cpu_secs(&stat))
        .sum()
}

/// CPU seconds this whole process has used so far.
pub fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}
