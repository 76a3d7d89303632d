//! Turning a [`Run`] into Server-Sent Events.
//!
//! [`spawn`] drives the run in its own task, so its deadline holds even while the client is not
//! reading: a client that stalls past the deadline, or goes away, gets the run aborted (by
//! dropping it) instead of holding the session for as long as its socket lives. Each API then
//! encodes the run's outputs in its own event format ([`chat`] for `chat.completion.chunk`s).

pub mod chat;

use tokio::sync::mpsc;

use crate::adapter::Output;
use crate::run::Run;

/// Outputs buffered between the run's task and the client's connection.
const BUFFER: usize = 64;

/// Drives `run` in its own task; its outputs arrive on the returned channel, which closes after
/// the terminal one (or when the run was cut off).
pub fn spawn(run: Run) -> mpsc::Receiver<Output> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(drive(run, tx));
    rx
}

async fn drive(mut run: Run, tx: mpsc::Sender<Output>) {
    let deadline = run.deadline();
    loop {
        let output = tokio::select! {
            output = run.next() => output,
            _ = tx.closed() => return,
        };
        let Some(output) = output else { return };
        match tokio::time::timeout_at(deadline, tx.send(output)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(session = %run.session_id(), "client stopped reading past the deadline; aborting");
                return;
            }
        }
    }
}
