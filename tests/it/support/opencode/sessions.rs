//! A test OpenCode's sessions, read and changed directly (1.x's routes, or 2.x's `/api`).

use super::*;

impl OpenCode {
    /// `POST /session {"title"}` → the session id.
    pub async fn create_session(&self, title: &str) -> String {
        if self.opts.v2 {
            let (status, v) = self
                .post_json("/api/session", &json!({ "title": title }))
                .await;
            assert!(status.is_success(), "POST /api/session -> {status}: {v}");
            return v["data"]["id"].as_str().expect("session id").to_string();
        }
        let (status, v) = self.post_json("/session", &json!({ "title": title })).await;
        assert!(status.is_success(), "POST /session -> {status}: {v}");
        v["id"].as_str().expect("session id").to_string()
    }

    /// Whether this is OpenCode 2.x.
    pub fn is_v2(&self) -> bool {
        self.opts.v2
    }

    /// `GET /session` (list of sessions; 2.x: `GET /api/session`).
    pub async fn sessions(&self) -> Vec<Value> {
        if self.opts.v2 {
            let page = self.get_json("/api/session?limit=100").await;
            return page["data"].as_array().cloned().unwrap_or_default();
        }
        match self.get_json("/session").await {
            Value::Array(a) => a,
            other => panic!("GET /session: expected array, got {other}"),
        }
    }

    /// `DELETE /session/:id`, panicking unless it succeeds.
    pub async fn delete_session(&self, id: &str) {
        let path = if self.opts.v2 {
            "api/session"
        } else {
            "session"
        };
        let resp = self
            .client
            .delete(format!("{}/{path}/{id}", self.url()))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE /session/{id}: {e}"));
        assert!(
            resp.status().is_success(),
            "DELETE /session/{id} -> {}",
            resp.status()
        );
    }

    /// Deletes every session `GET /session` lists.
    pub async fn delete_all_sessions(&self) {
        for id in self.session_ids().await {
            self.delete_session(&id).await;
        }
    }

    /// Ids of every session `GET /session` lists.
    pub async fn session_ids(&self) -> std::collections::BTreeSet<String> {
        self.sessions()
            .await
            .iter()
            .map(|s| s["id"].as_str().expect("session id").to_string())
            .collect()
    }

    /// Ids of the sessions whose title starts with `prefix` (each gateway of a bed shared by
    /// several gateways gets its own `prompt.session_title`).
    pub async fn session_ids_titled(&self, prefix: &str) -> std::collections::BTreeSet<String> {
        self.sessions()
            .await
            .iter()
            .filter(|s| s["title"].as_str().is_some_and(|t| t.starts_with(prefix)))
            .map(|s| s["id"].as_str().expect("session id").to_string())
            .collect()
    }

    /// Sessions OpenCode reports as busy or retrying.
    pub async fn busy_sessions(&self) -> Vec<(String, Value)> {
        self.session_status()
            .await
            .into_iter()
            .filter(|(_, v)| matches!(v["type"].as_str(), Some("busy") | Some("retry")))
            .collect()
    }

    /// Polls until no session is busy or retrying: how long it took, or the busy ones after
    /// `within`.
    pub async fn wait_not_busy(&self, within: Duration) -> Result<Duration, Vec<(String, Value)>> {
        let start = Instant::now();
        loop {
            let busy = self.busy_sessions().await;
            if busy.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= within {
                return Err(busy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /session/status` → `{sessionID: {"type": "busy"|"retry"|"idle", ...}}` (2.x:
    /// `GET /api/session/active`, running ones as `busy`).
    pub async fn session_status(&self) -> serde_json::Map<String, Value> {
        if self.opts.v2 {
            let active = self.get_json("/api/session/active").await;
            return active["data"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(id, _)| (id.clone(), json!({"type": "busy"})))
                .collect();
        }
        match self.get_json("/session/status").await {
            Value::Object(m) => m,
            other => panic!("GET /session/status: expected object, got {other}"),
        }
    }

    /// `GET /session/:id/message` → `[{info, parts}]` (2.x: its user and assistant items, as
    /// `{info: {id, role}, item}`).
    pub async fn messages(&self, session_id: &str) -> Vec<Value> {
        if self.opts.v2 {
            let page = self
                .get_json(&format!(
                    "/api/session/{session_id}/message?order=asc&limit=100"
                ))
                .await;
            return page["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["type"] == "user" || m["type"] == "assistant")
                .map(|m| json!({"info": {"id": m["id"], "role": m["type"]}, "item": m}))
                .collect();
        }
        match self
            .get_json(&format!("/session/{session_id}/message"))
            .await
        {
            Value::Array(a) => a,
            other => panic!("GET /session/{session_id}/message: expected array, got {other}"),
        }
    }
}
