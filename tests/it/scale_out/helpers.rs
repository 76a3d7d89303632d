//! Helpers of the scale-out tests: model requests, replays, turns, a pair of replicas.

use super::*;

/// The text the gateway uses to introduce a replayed transcript (a seeded new session).
pub(super) const TRANSCRIPT_MARK: &str = "The conversation so far";
pub(super) const SESSION_HEADER: &str = "x-opencode-session-id";

/// The model request whose last user message contains `marker` (the newest one).
pub(super) fn model_request_with(cluster: &Cluster, marker: &str) -> Value {
    cluster
        .mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| {
            r["messages"].as_array().is_some_and(|m| {
                m.iter()
                    .rev()
                    .find(|m| m["role"] == "user")
                    .is_some_and(|m| content_text(&m["content"]).contains(marker))
            })
        })
        .unwrap_or_else(|| panic!("no model request with {marker:?}"))
}

/// Asserts the turn carrying `marker` reached the model as a continued session: its earlier
/// turns are real messages, not a transcript replayed into one prompt.
pub(super) fn assert_no_replay(cluster: &Cluster, marker: &str, turns_before: usize) {
    let req = model_request_with(cluster, marker);
    let messages: Vec<&Value> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .collect();
    let text: String = messages
        .iter()
        .map(|m| content_text(&m["content"]))
        .collect();
    assert!(
        !text.contains(TRANSCRIPT_MARK),
        "{marker}: the history was replayed: {text}"
    );
    assert!(
        messages.len() > turns_before,
        "{marker}: the model saw {} messages, expected the {turns_before} earlier ones too",
        messages.len()
    );
}

/// One chat turn on the gateway at `url` (not a cluster's) → (session id, answer).
pub(super) async fn chat_at(
    http: &reqwest::Client,
    url: String,
    messages: Vec<Value>,
) -> (String, String) {
    let rb = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(ECHO, messages));
    let (status, headers, body) = support::api::send(rb).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = headers[SESSION_HEADER].to_str().unwrap().to_string();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    (session, answer)
}

/// One chat turn on replica `g` → (session id, answer).
pub(super) async fn turn(
    cluster: &Cluster,
    g: usize,
    messages: Vec<Value>,
    headers: &[(&str, &str)],
) -> (String, String) {
    let (status, h, body) = cluster
        .post(
            g,
            "/v1/chat/completions",
            &chat_body(ECHO, messages),
            headers,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "replica {g}: {body}\n{}",
        cluster.gateways[g].logs()
    );
    let session = h
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (session, answer)
}

/// A small bed: two replicas sharing a real `redis-server`, over one real OpenCode.
pub(super) struct ReplicaPair {
    pub(super) gateways: [support::Gateway; 2],
    pub(super) opencode: support::OpenCode,
    pub(super) _mock: support::MockModel,
    pub(super) _redis: support::redis::Redis,
}

impl ReplicaPair {
    /// With `extra` appended to both replicas' config; `None` without redis-server.
    pub(super) async fn start(extra: &str) -> Option<ReplicaPair> {
        Self::start_each([extra, extra]).await
    }

    /// With `extra[i]` appended to replica `i`'s config (right after the `[store]` keys).
    pub(super) async fn start_each(extra: [&str; 2]) -> Option<ReplicaPair> {
        let redis = support::redis::Redis::start().await?;
        let mock = support::MockModel::start().await;
        let opencode = support::OpenCode::start(&mock.base_url()).await;
        let opts = |extra: &str| {
            let config = format!(
                "[store]\nkind = \"redis\"\nurl = \"{}\"\n{extra}",
                redis.url()
            );
            support::GatewayOptions::default().config(config)
        };
        let gateways = [
            support::Gateway::start_with(&opencode.url(), opts(extra[0])).await,
            support::Gateway::start_with(&opencode.url(), opts(extra[1])).await,
        ];
        Some(ReplicaPair {
            gateways,
            opencode,
            _mock: mock,
            _redis: redis,
        })
    }
}
