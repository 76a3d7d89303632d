//! The event hub: one long-lived `GET /event` subscription per upstream, demultiplexed by
//! `sessionID` to the requests waiting on those sessions.
//!
//! The number of upstream event connections never grows with the number of clients. When the
//! connection drops, every waiting subscriber is told at once (its events may be lost) and the hub
//! reconnects with backoff. A connection silent for longer than [`SILENCE_LIMIT`] (OpenCode sends a
//! heartbeat every 10 s) is treated as dead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::opencode::{Event, OpenCodeClient};

/// How long the event connection may stay silent before it is considered dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// How long OpenCode may take to answer `GET /event` with headers. An SSE endpoint answers at
/// once when the server is up; one that accepted the connection while still starting may never
/// answer that request, so give up quickly and try again.
const HEADERS_WITHIN: Duration = Duration::from_secs(3);

/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum HubMessage {
    /// An event of the subscribed session.
    Event(Event),
    /// The upstream event connection was lost; events may have been missed.
    Lost(String),
}

/// Events buffered per subscriber; a subscriber this far behind (its client reads too slowly)
/// is dropped rather than let memory grow or hold up every other session's events.
pub const SUBSCRIBER_BUFFER: usize = 16_384;

type Subscribers = HashMap<String, (u64, mpsc::Sender<HubMessage>)>;

/// A consumer of every event (`GET /v1/events`): its channel, and whether it was dropped for
/// reading too slowly.
struct Tap {
    id: u64,
    tx: mpsc::Sender<Arc<Event>>,
    overflowed: Arc<AtomicBool>,
}

/// Events buffered per tap before it is dropped.
pub const TAP_BUFFER: usize = 1_024;

struct Inner {
    subscribers: Mutex<Subscribers>,
    taps: Mutex<Vec<Tap>>,
    connected: watch::Sender<bool>,
    next_id: AtomicU64,
    connections_opened: AtomicU64,
    /// Cuts a reconnect backoff short when a request is waiting for the connection.
    wake: Notify,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        crate::sync::lock(&self.subscribers)
    }
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

/// A live subscription to one session's events; unsubscribes on drop.
pub struct Subscription {
    session_id: String,
    id: u64,
    rx: mpsc::Receiver<HubMessage>,
    inner: Arc<Inner>,
}

impl Subscription {
    /// The next message; `None` once the hub dropped this subscriber (it fell
    /// [`SUBSCRIBER_BUFFER`] events behind) or stopped.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        self.rx.recv().await
    }

    /// The subscribed session.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.inner.lock();
        if subs
            .get(&self.session_id)
            .is_some_and(|(id, _)| *id == self.id)
        {
            subs.remove(&self.session_id);
        }
    }
}

impl EventHub {
    /// Starts the hub's connection task; it runs until `shutdown` is cancelled.
    pub fn start(client: OpenCodeClient, shutdown: CancellationToken) -> EventHub {
        let (connected, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            subscribers: Mutex::new(HashMap::new()),
            taps: Mutex::new(Vec::new()),
            connected,
            next_id: AtomicU64::new(1),
            connections_opened: AtomicU64::new(0),
            wake: Notify::new(),
        });
        tokio::spawn(run(client, inner.clone(), shutdown));
        EventHub { inner }
    }

    /// Whether the upstream event connection is currently established.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Follows the upstream event connection's state (true while connected).
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.inner.connected.subscribe()
    }

    /// How many upstream event connections the hub has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections_opened.load(Ordering::Relaxed)
    }

    /// Waits up to `wait` for the upstream event connection; returns whether it is up.
    pub async fn wait_connected(&self, wait: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        if !*rx.borrow() {
            // Someone is waiting: retry now rather than at the end of the backoff.
            self.inner.wake.notify_one();
        }
        let ready = tokio::time::timeout(wait, rx.wait_for(|c| *c)).await;
        matches!(ready, Ok(Ok(_)))
    }

    /// Every event from now on (for `GET /v1/events`); the receiver ends when the consumer
    /// fell [`TAP_BUFFER`] events behind (then the flag is set) or the hub stopped.
    pub fn tap(&self) -> (mpsc::Receiver<Arc<Event>>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(TAP_BUFFER);
        let overflowed = Arc::new(AtomicBool::new(false));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        crate::sync::lock(&self.inner.taps).push(Tap {
            id,
            tx,
            overflowed: overflowed.clone(),
        });
        (rx, overflowed)
    }

    /// Number of event consumers (`GET /v1/events` streams) attached.
    pub fn taps(&self) -> usize {
        crate::sync::lock(&self.inner.taps)
            .iter()
            .filter(|t| t.id > 0)
            .count()
    }

    /// Subscribes to a session's events, first waiting up to `wait` for the upstream connection.
    ///
    /// Subscribe *before* starting the run so that no early event is missed.
    pub async fn subscribe(&self, session_id: &str, wait: Duration) -> Option<Subscription> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.wait_connected(left).await {
                return None;
            }
            // Check and insert under the lock the hub holds while it marks a connection lost,
            // so a subscriber is either told about the loss or joins the live connection.
            let mut subs = self.inner.lock();
            if !*self.inner.connected.borrow() {
                continue;
            }
            let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            subs.insert(session_id.to_string(), (id, tx));
            return Some(Subscription {
                session_id: session_id.to_string(),
                id,
                rx,
                inner: self.inner.clone(),
            });
        }
    }
}

async fn run(client: OpenCodeClient, inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => {
                lose_all(&inner, "the gateway is shutting down");
                return;
            }
            reason = connect_once(&client, &inner) => reason,
        };
        let was_connected = lose_all(&inner, &reason);
        if was_connected {
            tracing::warn!(%reason, "OpenCode event stream lost; reconnecting");
            backoff = Duration::from_millis(100);
        } else {
            tracing::debug!(%reason, ?backoff, "OpenCode event stream unavailable");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
            _ = inner.wake.notified() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Hands `event` to every tap; a full one is dropped (and told so), never waited for.
fn tap_all(inner: &Inner, event: &Event) {
    let mut taps = crate::sync::lock(&inner.taps);
    if taps.is_empty() {
        return;
    }
    let shared = Arc::new(event.clone());
    taps.retain(|tap| match tap.tx.try_send(shared.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tap.overflowed.store(true, Ordering::SeqCst);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
}

/// Marks the connection down and tells every subscriber; returns whether it was up.
fn lose_all(inner: &Inner, reason: &str) -> bool {
    let (was_connected, lost) = {
        let mut subs = inner.lock();
        let was = inner.connected.send_replace(false);
        (was, subs.drain().map(|(_, (_, tx))| tx).collect::<Vec<_>>())
    };
    for tx in lost {
        // A full buffer drops the sender instead, which the subscriber also sees as the end.
        let _ = tx.try_send(HubMessage::Lost(reason.to_string()));
    }
    was_connected
}

/// Holds one connection until it ends; returns why it ended.
async fn connect_once(client: &OpenCodeClient, inner: &Inner) -> String {
    let stream = match client.events(HEADERS_WITHIN).await {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    inner.connections_opened.fetch_add(1, Ordering::Relaxed);
    futures::pin_mut!(stream);
    loop {
        let next = match tokio::time::timeout(SILENCE_LIMIT, stream.next()).await {
            Err(_) => return format!("no event or heartbeat for {SILENCE_LIMIT:?}"),
            Ok(None) => return "connection closed by OpenCode".into(),
            Ok(Some(Err(e))) => return e.to_string(),
            Ok(Some(Ok(ev))) => ev,
        };
        if next.kind == "server.connected" {
            tracing::debug!("OpenCode event stream connected");
            crate::metrics::event_stream_connected();
            inner.connected.send_replace(true);
            continue;
        }
        tap_all(inner, &next);
        // Owned, so that the event itself moves to its subscriber instead of being copied.
        let Some(session_id) = next.session_id().map(str::to_owned) else {
            continue;
        };
        let mut subs = inner.lock();
        if let Some((_, tx)) = subs.get(&session_id) {
            match tx.try_send(HubMessage::Event(next)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(session = %session_id, "subscriber fell too far behind; dropping it");
                    subs.remove(&session_id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    subs.remove(&session_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OpenCodeConfig;
    use axum::response::sse::{Event as SseEvent, Sse};
    use axum::routing::get;
    use std::convert::Infallible;

    /// A fake `/event` that announces itself, waits for `go`, then floods one session.
    async fn flooding_upstream(go: Arc<Notify>, events: usize) -> String {
        let app = axum::Router::new().route(
            "/event",
            get(move || {
                let go = go.clone();
                async move {
                    let connected = futures::stream::once(async {
                        Ok::<_, Infallible>(SseEvent::default().data(r#"{"type":"server.connected","properties":{}}"#))
                    });
                    let flood = futures::stream::once(async move { go.notified().await })
                        .flat_map(move |_| {
                            futures::stream::iter((0..events).map(|i| {
                                Ok(SseEvent::default().data(format!(
                                    r#"{{"type":"message.part.delta","properties":{{"sessionID":"ses_x","delta":"{i}"}}}}"#
                                )))
                            }))
                        });
                    // Then stay open: the subscriber must be dropped for falling behind, not
                    // because the connection ended.
                    Sse::new(connected.chain(flood).chain(futures::stream::pending()))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_dropped_not_buffered_forever() {
        let go = Arc::new(Notify::new());
        let url = flooding_upstream(go.clone(), SUBSCRIBER_BUFFER + 1_000).await;
        let client = OpenCodeClient::new(&OpenCodeConfig {
            base_url: Some(url),
            ..OpenCodeConfig::default()
        })
        .unwrap();
        let shutdown = CancellationToken::new();
        let hub = EventHub::start(client, shutdown.clone());
        let mut sub = hub
            .subscribe("ses_x", Duration::from_secs(5))
            .await
            .expect("connected");
        go.notify_one();
        // Do not read: wait until the hub gives up on this subscriber.
        let dropped = tokio::time::timeout(Duration::from_secs(30), async {
            while hub.inner.lock().contains_key("ses_x") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            dropped.is_ok(),
            "the hub kept buffering for a subscriber that reads nothing"
        );
        let mut received = 0;
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), sub.recv()).await {
            assert!(matches!(msg, HubMessage::Event(_)));
            received += 1;
        }
        assert_eq!(
            received, SUBSCRIBER_BUFFER,
            "buffered up to the limit, then dropped"
        );
        assert!(hub.is_connected(), "other sessions keep their connection");
        shutdown.cancel();
    }
}
