//! OpenCode's event stream, as the tests read it.

use super::*;

/// Parsed `GET /event` frames (`{"id","type","properties"}`), in order.
pub struct EventStream {
    pub(super) rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventStream {
    /// Next event, or `None` on timeout / end of stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collect events until `stop` returns true for one (included) or `timeout` elapses overall.
    pub async fn collect_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return out;
            }
            match self.next(deadline - now).await {
                Some(ev) => {
                    let done = stop(&ev);
                    out.push(ev);
                    if done {
                        return out;
                    }
                }
                None => return out,
            }
        }
    }
}

/// The session id an event refers to, wherever OpenCode puts it.
pub fn event_session_id(ev: &Value) -> Option<&str> {
    let p = &ev["properties"];
    p["sessionID"]
        .as_str()
        .or_else(|| p["info"]["sessionID"].as_str())
        .or_else(|| p["part"]["sessionID"].as_str())
        .or_else(|| {
            // session.* events carry the Session as `info` (its id is the session id)
            if ev["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("session."))
            {
                p["info"]["id"].as_str()
            } else {
                None
            }
        })
}
