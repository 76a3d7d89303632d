//! The fake OpenCode ALONE, driven the way the gateway drives it: create a session, subscribe
//! (one shared `/event` stream, demultiplexed by session), `prompt_async`, wait for the run's
//! `session.idle`. What this costs at a given rate is subtracted from the gateway's numbers at the
//! same rate, so "added latency" is the gateway's own share.
//!
//! The client side is kept as cheap as possible (no JSON parsing of events: a frame is only
//! looked at when it is a `session.idle`), so the baseline does not flatter the gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::oneshot;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// A client of the fake with its own `/event` subscription; the subscription ends on drop.
pub struct Alone {
    http: reqwest::Client,
    base: String,
    waiters: Waiters,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Alone {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The session id of a `session.idle` frame, without parsing the JSON.
fn idle_session(frame: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(frame).ok()?;
    if !text.contains(r#""type":"session.idle""#) {
        return None;
    }
    let key = r#""sessionID":""#;
    let start = text.find(key)? + key.len();
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_string())
}

impl Alone {
    /// Connects to `base`'s `/event` stream (returns once it is open).
    pub async fn connect(http: reqwest::Client, base: &str) -> Alone {
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let resp = http
            .get(format!("{base}/event"))
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .expect("fake /event");
        assert!(resp.status().is_success(), "fake /event: {}", resp.status());
        let w = waiters.clone();
        let reader = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                let mut from = 0;
                while let Some(pos) = buf[from..].windows(2).position(|w| w == b"\n\n") {
                    let frame = &buf[from..from + pos];
                    if let Some(sid) = idle_session(frame) {
                        if let Some(tx) = lock(&w).remove(&sid) {
                            let _ = tx.send(());
                        }
                    }
                    from += pos + 2;
                }
                buf.drain(..from);
            }
        });
        Alone {
            http,
            base: base.to_string(),
            waiters,
            reader,
        }
    }

    /// One completion: session, prompt, wait for idle. Whether it finished in time.
    pub async fn complete(&self, prompt: &str) -> bool {
        let Ok(resp) = self
            .http
            .post(format!("{}/session", self.base))
            .json(&json!({"title": "bench", "metadata": {}}))
            .send()
            .await
        else {
            return false;
        };
        let Ok(session) = resp.json::<Value>().await else {
            return false;
        };
        let Some(id) = session["id"].as_str().map(String::from) else {
            return false;
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id.clone(), tx);
        let body = json!({"parts": [{"type": "text", "text": prompt}],
                          "model": {"providerID": "mock", "modelID": "echo"},
                          "tools": {"*": false}});
        let sent = self
            .http
            .post(format!("{}/session/{id}/prompt_async", self.base))
            .json(&body)
            .send()
            .await;
        if !matches!(sent, Ok(r) if r.status().is_success()) {
            lock(&self.waiters).remove(&id);
            return false;
        }
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(30), rx).await,
            Ok(Ok(()))
        );
        if !ok {
            lock(&self.waiters).remove(&id);
        }
        ok
    }
}

/// The streaming floor: one run of `deltas` deltas `gap_us` apart read straight from the fake's
/// `/event` stream; the added latency (receive − send) of each delta, µs. What the gateway's
/// per-chunk numbers compare against: the fake's own write and loopback TCP.
pub async fn stream_floor(
    http: &reqwest::Client,
    base: &str,
    deltas: u32,
    gap_us: u64,
) -> Vec<u64> {
    let resp = http
        .get(format!("{base}/event"))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("fake /event");
    let session: Value = http
        .post(format!("{base}/session"))
        .json(&json!({"title": "floor"}))
        .send()
        .await
        .expect("create session")
        .json()
        .await
        .expect("session JSON");
    let sid = session["id"].as_str().unwrap_or_default().to_string();
    let body = json!({"parts": [{"type": "text",
                                 "text": format!("floor [deltas:{deltas}] [gap_us:{gap_us}]")}]});
    http.post(format!("{base}/session/{sid}/prompt_async"))
        .json(&body)
        .send()
        .await
        .expect("prompt");
    let mut added = Vec::with_capacity(deltas as usize);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let at = super::fake::now_us();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if !frame.contains(&sid) {
                continue;
            }
            if frame.contains(r#""type":"message.part.delta""#) {
                if let Some(d) = frame.split(r#""delta":""#).nth(1) {
                    added.extend(
                        super::fake::stamps(d.split('"').next().unwrap_or(""))
                            .map(|t| at.saturating_sub(t)),
                    );
                }
            }
            if idle_session(frame.trim_start_matches("data: ").as_bytes()).as_deref()
                == Some(sid.as_str())
            {
                return added;
            }
        }
    }
    added
}
