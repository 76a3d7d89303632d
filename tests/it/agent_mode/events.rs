//! `GET /v1/events` per key, and a consumer that never reads (the steps of `event_stream`).

use super::*;

// ---------------------------------------------------------------------------------------------
// The event stream
// ---------------------------------------------------------------------------------------------

/// Client keys of the event bed (K2 may use directory B), and its admin.
pub(super) const K1: &str = "events-one-key";
pub(super) const K2: &str = "events-two-key";
pub(super) const ADMIN: &str = "events-admin-key";

pub(super) fn events_toml(b: &str) -> String {
    format!(
        "[[auth.keys]]\nname = \"k1\"\nkey = \"{K1}\"\n\n[[auth.keys]]\nname = \"k2\"\nkey = \"{K2}\"\ndirectories = [\"{b}\"]\n\n[[auth.keys]]\nname = \"admin\"\nkey = \"{ADMIN}\"\nrole = \"admin\"\n"
    )
}

/// `GET /v1/events` per key and per directory, and a consumer too slow to keep up.
/// The event bed: project `dir-b`, keys K1, K2 (may use `dir-b`) and an admin.
pub(super) async fn events_bed() -> TestBed {
    Harness::real()
        .projects(&["dir-b"])
        .gateway_for(|dirs| gateway_config(&events_toml(&dirs[0])))
        .start()
        .await
}

/// One `GET /v1/events` stream read in the background: its events (`{type, properties,
/// directory}`, checked to carry their type as the SSE `event:` name).
pub(super) struct EventTap {
    pub(super) events: Arc<Mutex<Vec<Value>>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for EventTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventTap {
    pub(super) async fn open(bed: &TestBed, key: &str, query: &str) -> EventTap {
        let resp = request(
            bed,
            Some(key),
            Method::GET,
            &format!("/v1/events{query}"),
            &[],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 200, "GET /v1/events{query} as {key}");
        assert!(is_event_stream(resp.headers()), "{:?}", resp.headers());
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut reader = SseReader::new(resp);
            while let Some(frame) = reader.next_frame().await {
                if frame.is_comment() {
                    continue;
                }
                let name = frame.raw.lines().find_map(|l| l.strip_prefix("event: "));
                // A frame of megabytes is the flood's own text (its user part): its name is all
                // these checks use, and parsing it in a debug build takes long enough for the
                // burst of deltas behind it to pile up past the gateway's limit for a reader.
                if frame.raw.len() > 256 * 1024 {
                    sink.lock().unwrap().push(json!({ "type": name }));
                    continue;
                }
                let v = frame
                    .json()
                    .unwrap_or_else(|| panic!("an event without JSON: {}", frame.raw));
                assert_eq!(name, v["type"].as_str(), "event name: {}", frame.raw);
                sink.lock().unwrap().push(v);
            }
        });
        EventTap { events, task }
    }

    pub(super) fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// How many of its events satisfy `pred` (without copying them).
    pub(super) fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| pred(e))
            .count()
    }

    /// The sessions its events are about (`None`: an event about no session).
    pub(super) fn sessions(&self) -> BTreeSet<Option<String>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| event_session_id(e).map(String::from))
            .collect()
    }

    pub(super) fn saw_idle(&self, session: &str) -> bool {
        self.count(|e| e["type"] == "session.idle" && event_session_id(e) == Some(session)) > 0
    }
}

/// Each client key sees exactly its own sessions' events (nothing about other sessions, nothing
/// about none); the admin sees both; the admin's `?directory=` sees only that directory's.
pub(super) async fn events_are_filtered_per_key_and_directory(bed: &TestBed, b: &str) {
    let project = bed.opencode.project_dir().to_str().unwrap().to_string();
    let k1 = EventTap::open(bed, K1, "").await;
    let k2 = EventTap::open(bed, K2, "").await;
    let admin = EventTap::open(bed, ADMIN, "").await;
    let only_b = EventTap::open(bed, ADMIN, &format!("?directory={b}")).await;
    let only_project = EventTap::open(bed, ADMIN, &format!("?directory={project}")).await;

    let (body1, body2) = (ask(ECHO, "events of one"), ask(ECHO, "events of two"));
    let in_b = [("x-opencode-directory", b)];
    let (one, two) = tokio::join!(
        chat_as(bed, Some(K1), &[], &body1),
        chat_as(bed, Some(K2), &in_b, &body2),
    );
    let (_, s1) = answered("k1", one);
    let (_, s2) = answered("k2", two);
    let all_idle = eventually(Duration::from_secs(10), || async {
        k1.saw_idle(&s1)
            && k2.saw_idle(&s2)
            && admin.saw_idle(&s1)
            && admin.saw_idle(&s2)
            && only_b.saw_idle(&s2)
            && only_project.saw_idle(&s1)
    })
    .await;
    assert!(all_idle, "some stream missed its session.idle");

    let just = |s: &str| BTreeSet::from([Some(s.to_string())]);
    assert_eq!(k1.sessions(), just(&s1), "k1 saw: {:#?}", k1.events());
    assert_eq!(k2.sessions(), just(&s2), "k2 saw: {:#?}", k2.events());
    for kind in ["message.part.delta", "message.updated", "session.status"] {
        assert!(
            k1.events().iter().any(|e| e["type"] == kind),
            "k1 lacks {kind}"
        );
    }
    let seen = admin.sessions();
    assert!(
        seen.contains(&Some(s1.clone())) && seen.contains(&Some(s2.clone())),
        "{seen:?}"
    );
    for (tap, dir, theirs, other) in [
        (&only_b, b, &s2, &s1),
        (&only_project, project.as_str(), &s1, &s2),
    ] {
        let events = tap.events();
        assert!(
            events.iter().all(|e| e["directory"] == dir),
            "?directory={dir}: {events:#?}"
        );
        let seen = tap.sessions();
        assert!(
            seen.contains(&Some(theirs.clone())),
            "?directory={dir}: {seen:?}"
        );
        assert!(
            !seen.contains(&Some(other.clone())),
            "?directory={dir}: {seen:?}"
        );
    }
}

/// A client that opens `GET /v1/events` (with a tiny receive buffer) and never reads, while a
/// run streams thousands of events: the gateway drops it — once the client reads at last, its
/// stream ends with an `error` event and the connection closes, having carried far fewer
/// events than were sent — instead of buffering for it without bound. A reader that keeps up
/// is not dropped and gets every event.
pub(super) async fn a_consumer_that_never_reads_is_dropped(bed: &TestBed) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = bed
        .gateway
        .url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    let head = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let keeps_up = EventTap::open(bed, ADMIN, "").await;
    let started = Instant::now();

    // One run echoing 3 MB in 2,500 pieces, 1 ms apart: OpenCode's events carry the whole text
    // (the user's part, the answer's) and 2,500 `message.part.delta`s. (Unpaced, OpenCode sends
    // them faster than a debug build of the gateway and this reader can pass them on, and the
    // reader that keeps up is dropped too.) On loopback the kernel alone takes megabytes for a
    // socket nobody reads (the gateway's send buffer grows with its big MSS); past that, the
    // gateway may buffer only so many events for the consumer.
    const PIECES: usize = 2_500;
    let flood = format!("{} [chunks:{PIECES}] [slow:1]", "x".repeat(3_000_000));
    let (_, flooded) = answered(
        "the flood",
        within(
            120,
            "the flood",
            chat_as(bed, Some(K1), &[], &ask(ECHO, &flood)),
        )
        .await,
    );
    let flooded_in = started.elapsed();
    let all_there = eventually(Duration::from_secs(10), || async {
        keeps_up.saw_idle(&flooded)
    })
    .await;
    assert!(all_there, "the reader that keeps up lost the stream");
    let deltas = keeps_up
        .count(|e| e["type"] == "message.part.delta" && event_session_id(e) == Some(&flooded));
    assert!(
        deltas >= PIECES,
        "the reader that keeps up missed events: {deltas}"
    );

    // Now read the slow stream: it must end, with an error event last.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        read.is_ok(),
        "the slow consumer's stream is still open ({} bytes so far): never dropped",
        raw.len()
    );
    let body_start = text.find("\r\n\r\n").expect("response head") + 4;
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..body_start]);
    // The body is chunked; the SSE text is in the chunks (a chunk may split a frame).
    let sse = dechunk(&text[body_start..]);
    let frames: Vec<&str> = sse.split("\n\n").filter(|f| !f.trim().is_empty()).collect();
    let last = frames.last().expect("no event at all");
    assert!(
        last.starts_with("event: error\n"),
        "the last event is not an error: {last}"
    );
    let error: Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    support::schema::assert_valid("ErrorResponse", &error);
    let got = frames
        .iter()
        .filter(|f| f.contains("message.part.delta"))
        .count();
    eprintln!(
        "slow consumer: {got} of {PIECES} deltas before the drop ({} bytes in all); flood {flooded_in:?}, whole scenario so far {:?}",
        raw.len(),
        started.elapsed()
    );
    assert!(
        got < PIECES,
        "the slow consumer got every event: it was buffered for"
    );

    // The reader that kept up is still there.
    let (_, next) = answered(
        "after the drop",
        chat_as(bed, Some(K1), &[], &ask(ECHO, "still here")).await,
    );
    let still = eventually(Duration::from_secs(10), || async {
        keeps_up.saw_idle(&next)
    })
    .await;
    assert!(still, "the reader that kept up was dropped too");
}

/// The payload of a chunked HTTP/1.1 body (as much of it as is complete).
pub(super) fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some(line_end) = body.find("\r\n") {
        let Ok(size) = usize::from_str_radix(body[..line_end].trim(), 16) else {
            break;
        };
        let start = line_end + 2;
        if size == 0 || body.len() < start + size {
            break;
        }
        out.push_str(&body[start..start + size]);
        body = &body[(start + size + 2).min(body.len())..];
    }
    out
}
