//! Processes as Linux shows them in `/proc`: children, command lines, process groups, liveness,
//! listening sockets, and signals (for the tests that kill or freeze OpenCode and the gateway).
#![allow(dead_code, unsafe_code)]

use std::time::Duration;

/// `(state, ppid, pgrp)` of a process, from `/proc/<pid>/stat` (`None` when it is gone).
pub fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp …`: comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` exists and is neither a zombie nor dead (a zombie has exited; only its exit
/// status waits to be collected).
pub fn is_running(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// The command line of `pid` (empty when it is gone or a zombie).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live children of `pid` (by their parent pid, so children of every thread count).
pub fn children(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(stat(p), Some((s, ppid, _)) if ppid == pid && s != 'Z' && s != 'X'))
        .collect()
}

/// The live processes of process group `pgrp`.
pub fn group_members(pgrp: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(stat(p), Some((s, _, g)) if g == pgrp && s != 'Z' && s != 'X'))
        .collect()
}

/// The value after `flag` in a command line (`--port 1234` → `1234`).
pub fn arg_after(cmdline: &[String], flag: &str) -> Option<String> {
    let i = cmdline.iter().position(|a| a == flag)?;
    cmdline.get(i + 1).cloned()
}

/// The `opencode serve` child of `parent`, if it has one.
pub fn opencode_child(parent: u32) -> Option<u32> {
    children(parent).into_iter().find(|&c| {
        let cmd = cmdline(c);
        cmd.iter().any(|a| a == "serve") && cmd.iter().any(|a| a.contains("opencode"))
    })
}

/// The `opencode serve --port <port>` process.
pub fn opencode_on_port(port: u16) -> Option<u32> {
    let port = port.to_string();
    all_pids().into_iter().find(|&p| {
        let cmd = cmdline(p);
        cmd.iter().any(|a| a == "serve")
            && arg_after(&cmd, "--port").as_deref() == Some(port.as_str())
            && is_running(p)
    })
}

/// Local addresses (`a.b.c.d` or `[v6]`) with a socket listening on TCP `port`.
pub fn listening_addresses(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st …; st 0A = LISTEN
            if cols.len() < 4 || cols[3] != "0A" {
                continue;
            }
            let Some((addr, p)) = cols[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            out.push(if v6 {
                format!("[{addr}]")
            } else {
                // Little-endian hex of the IPv4 address.
                let n = u32::from_str_radix(addr, 16).unwrap_or(0);
                let b = n.to_le_bytes();
                format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
            });
        }
    }
    out
}

/// Sends `signal` to `pid` (a process this test started or found as a child of one).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: plain kill(2).
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Polls until `pid` no longer runs; returns whether it stopped within `within`.
pub async fn wait_gone(pid: u32, within: Duration) -> bool {
    super::eventually(within, || async move { !is_running(pid) }).await
}
