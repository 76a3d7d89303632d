//! Helpers of the streaming steps, and a proxy counting the gateway's event connections.

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

pub(super) fn echo(text: &str) -> String {
    format!("echo: {text}")
}

pub(super) fn reasoning_of(text: &str) -> String {
    mock_model::expected_reasoning(&json!({"messages": [{"role": "user", "content": text}]}))
}

/// Panics unless no session is busy or retrying upstream within `within`.
pub(super) async fn assert_not_busy(oc: &OpenCode, within: Duration, after: &str) {
    match oc.wait_not_busy(within).await {
        Ok(took) => eprintln!("upstream idle {took:?} after {after}"),
        Err(busy) => panic!("{within:?} after {after}, sessions still busy upstream: {busy:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A logging TCP proxy between the gateway and OpenCode (counts `GET /event` connections)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub(super) struct ConnLog {
    /// Every byte the gateway sent on this connection.
    pub(super) sent: Vec<u8>,
    pub(super) open: bool,
}

impl ConnLog {
    /// Request lines of an event subscription: `GET /global/event` or `GET /event` (with or
    /// without a query, not `/events`).
    pub(super) fn event_requests(&self) -> usize {
        let s = &self.sent;
        [b"GET /event".as_slice(), b"GET /global/event".as_slice()]
            .iter()
            .map(|pat| {
                (0..s.len())
                    .filter(|&i| {
                        s[i..].starts_with(pat)
                            && (i == 0 || s[..i].ends_with(b"\r\n"))
                            && matches!(s.get(i + pat.len()), Some(b' ') | Some(b'?'))
                    })
                    .count()
            })
            .sum()
    }
}

pub(super) struct Proxy {
    pub(super) port: u16,
    pub(super) conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub(super) async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>> = Arc::default();
        let registry = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let log = Arc::new(Mutex::new(ConnLog {
                    sent: Vec::new(),
                    open: true,
                }));
                registry.lock().unwrap().push(log.clone());
                tokio::spawn(async move {
                    match TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        Ok(upstream) => pipe(client, upstream, log.clone()).await,
                        Err(_) => drop(client),
                    }
                    log.lock().unwrap().open = false;
                });
            }
        });
        Proxy { port, conns, task }
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (total `GET /event` requests seen, connections with one that are still open).
    pub(super) fn event_connections(&self) -> (usize, usize) {
        let conns = self.conns.lock().unwrap();
        let mut total = 0;
        let mut open = 0;
        for c in conns.iter() {
            let c = c.lock().unwrap();
            let n = c.event_requests();
            total += n;
            if n > 0 && c.open {
                open += 1;
            }
        }
        (total, open)
    }
}

pub(super) async fn pipe(mut client: TcpStream, mut upstream: TcpStream, log: Arc<Mutex<ConnLog>>) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut ubuf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = cr.read(&mut cbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.lock().unwrap().sent.extend_from_slice(&cbuf[..n]);
                    if uw.write_all(&cbuf[..n]).await.is_err() {
                        break;
                    }
                }
            },
            r = ur.read(&mut ubuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if cw.write_all(&ubuf[..n]).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
}

/// `GET /status` on the gateway → (connected, connections_opened).
pub(super) async fn hub_status(bed: &TestBed) -> (bool, u64) {
    let (status, v) = bed.get("/status").await;
    assert_eq!(status, 200, "GET /status: {v}");
    (
        v["events"]["connected"].as_bool().unwrap_or(false),
        v["events"]["connections_opened"]
            .as_u64()
            .unwrap_or_else(|| panic!("no events.connections_opened in /status: {v}")),
    )
}
