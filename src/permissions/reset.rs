//! Clearing the `always` approvals an OpenCode the gateway did not start may hold (see
//! [`reset_saved_approvals`]).

use crate::opencode::OpenCodeClient;

/// At start, on an OpenCode the gateway did not start: `always` approvals saved there (by other
/// clients, or a gateway before `always` meant "this run") cannot be listed — OpenCode 1.18 keeps
/// them in each project instance's memory — and would bypass the policy. With
/// `permissions.reset_on_start`, the instances of `directories` (`None`: the server's own) are
/// ended when none of their sessions is busy, which clears them; otherwise the start says so.
/// Bounded: each call has the client's timeout; failures are logged, never fatal.
pub async fn reset_saved_approvals(
    client: &OpenCodeClient,
    upstream: &str,
    directories: &[Option<String>],
    reset: bool,
) {
    if !reset {
        tracing::info!(upstream, "OpenCode may hold `always` approvals given by other clients (it cannot list them; the gateway never saves any): set permissions.reset_on_start = true to clear them at start");
        return;
    }
    for dir in directories {
        let client = client.in_directory(dir.as_deref());
        let directory = dir.as_deref().unwrap_or("(server default)");
        match client.busy_sessions().await {
            Ok(0) => match client.dispose_instance().await {
                Ok(()) => {
                    tracing::info!(
                        upstream,
                        directory,
                        "cleared OpenCode's saved permission approvals (instance reset)"
                    )
                }
                Err(e) => {
                    tracing::warn!(upstream, directory, error = %e, "could not reset the OpenCode instance; approvals saved there may bypass the permission policy")
                }
            },
            Ok(busy) => {
                tracing::warn!(upstream, directory, busy, "not resetting an OpenCode instance with busy sessions; approvals saved there may bypass the permission policy")
            }
            Err(e) => {
                tracing::warn!(upstream, directory, error = %e, "could not check the OpenCode instance; approvals saved there may bypass the permission policy")
            }
        }
    }
}
