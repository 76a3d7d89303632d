//! Turning a [`Run`] into Server-Sent Events.
//!
//! [`spawn`] drives the run in its own task, so its deadline holds even while the client is not
//! reading: a client that stalls past the deadline, or goes away, gets the run aborted (by
//! dropping it) instead of holding the session for as long as its socket lives. Each API then
//! encodes the run's outputs in its own event format ([`chat`] for `chat.completion.chunk`s,
//! [`responses`] for the Responses API's typed events).

pub mod chat;
pub mod responses;

use tokio::sync::mpsc;

use crate::adapter::Output;
use crate::run::Run;

/// Outputs buffered between the run's task and the client's connection.
const BUFFER: usize = 64;

/// Drives `run` in its own task; its outputs arrive on the returned channel, which closes after
/// the terminal one (or when the run was cut off). `before_end` sees the run just before its
/// terminal output is sent; a run that suspended for tool results is then parked — before the
/// client can see the end and send the results.
pub fn spawn<F>(run: Run, before_end: F) -> mpsc::Receiver<Output>
where
    F: FnOnce(&Run) + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(drive(run, tx, before_end));
    rx
}

async fn drive<F: FnOnce(&Run)>(mut run: Run, tx: mpsc::Sender<Output>, before_end: F) {
    let deadline = run.deadline();
    let mut before_end = Some(before_end);
    loop {
        let output = tokio::select! {
            output = run.next() => output,
            _ = tx.closed() => return,
        };
        let Some(output) = output else { return };
        if output.is_terminal() {
            if let Some(f) = before_end.take() {
                f(&run);
            }
            if run.is_suspended() {
                let session = run.session_id().to_string();
                run.park();
                send(&tx, output, deadline, &session).await;
                return;
            }
        }
        if !send(&tx, output, deadline, run.session_id()).await {
            return;
        }
    }
}

/// Sends one output, waiting no later than `deadline` for a client that stopped reading.
async fn send(
    tx: &mpsc::Sender<Output>,
    output: Output,
    deadline: tokio::time::Instant,
    session: &str,
) -> bool {
    match tokio::time::timeout_at(deadline, tx.send(output)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::warn!(%session, "client stopped reading past the deadline; aborting");
            false
        }
    }
}
