//! The MCP fixture server and the bed of `surface` (its OpenCode config and projects).

use super::*;

// ---------------------------------------------------------------------------------------------
// A local MCP server (streamable HTTP, JSON answers): `initialize`, `tools/list` with one tool,
// notifications accepted.
// ---------------------------------------------------------------------------------------------

/// The fixture MCP server's one tool.
pub(super) const MCP_TOOL: &str = "surface_probe";

pub(super) struct McpFixture {
    pub(super) url: String,
    /// Methods received, in order.
    pub(super) seen: Arc<Mutex<Vec<String>>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for McpFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl McpFixture {
    pub(super) async fn start() -> McpFixture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/mcp",
                routing::post(mcp_handle)
                    .get(|| async { AxumStatus::METHOD_NOT_ALLOWED })
                    .delete(|| async { AxumStatus::OK }),
            )
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        McpFixture { url, seen, task }
    }

    pub(super) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

pub(super) async fn mcp_handle(
    State(seen): State<Arc<Mutex<Vec<String>>>>,
    body: Bytes,
) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return AxumStatus::BAD_REQUEST.into_response();
    };
    let method = msg["method"].as_str().unwrap_or_default().to_string();
    seen.lock().unwrap().push(method.clone());
    let Some(id) = msg.get("id").filter(|id| !id.is_null()) else {
        return AxumStatus::ACCEPTED.into_response();
    };
    let result = match method.as_str() {
        "initialize" => json!({
            "protocolVersion": msg["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "surface-fixture", "version": "1.0.0"},
        }),
        "tools/list" => json!({"tools": [{
            "name": MCP_TOOL,
            "description": "A fixture tool.",
            "inputSchema": {"type": "object", "properties": {}},
        }]}),
        "ping" => json!({}),
        _ => {
            return Json(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "method not found"}}))
            .into_response()
        }
    };
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

// ---------------------------------------------------------------------------------------------
// Bed 1: the surface over the fixture project
// ---------------------------------------------------------------------------------------------

/// The OpenCode config additions of the surface bed: the provider secret, a custom command,
/// and a disabled MCP server with a secret header.
pub(super) fn surface_opencode_config() -> Value {
    json!({
        "provider": {"mock": {"options": {"apiKey": PROVIDER_SECRET}}},
        "command": {"surface-hello": {
            "template": "Say hello to $ARGUMENTS",
            "description": "Greets someone",
        }},
        "mcp": {"configured": {
            "type": "remote",
            "url": "http://127.0.0.1:9/mcp",
            "enabled": false,
            "headers": {"Authorization": MCP_SECRET},
        }},
    })
}

pub(super) struct Surface {
    // Field order = drop order: gateways first, then OpenCode, then the model and servers.
    /// Every `admin.allow_*` off.
    pub(super) locked: Gateway,
    /// `allow_execution` and `allow_config_patch` on.
    pub(super) open: Gateway,
    pub(super) opencode: OpenCode,
    pub(super) mock: MockModel,
    pub(super) mcp: McpFixture,
    /// The directory `out` leads to.
    pub(super) outside: TempDir,
    /// Whether the project is a git repository.
    pub(super) git: bool,
}

impl Surface {
    pub(super) fn project(&self) -> PathBuf {
        self.opencode.project_dir()
    }

    pub(super) fn project_str(&self) -> String {
        self.project().to_str().unwrap().to_string()
    }
}

/// The surface bed: a real OpenCode over the fixture project, a locked gateway, an open one
/// (execution and config patches allowed) and the MCP fixture server.
pub(super) async fn surface_bed() -> Surface {
    let mock = MockModel::start().await;
    let opencode = Harness::real()
        .opencode_config(surface_opencode_config())
        .start_opencode(&mock)
        .await;
    let outside = tempfile::Builder::new()
        .prefix("surface-outside-")
        .tempdir()
        .unwrap();
    let git = write_fixture(&opencode.project_dir(), outside.path());
    let project = opencode.project_dir();
    let (locked, open, mcp) = tokio::join!(
        start_gateway(&opencode, gateway_config(&project, "")),
        start_gateway(
            &opencode,
            gateway_config(
                &project,
                "[admin]\nallow_execution = true\nallow_config_patch = true\n"
            )
        ),
        McpFixture::start(),
    );
    Surface {
        locked,
        open,
        opencode,
        mock,
        mcp,
        outside,
        git,
    }
}

impl BedLogs for Surface {
    fn logs(&self) -> String {
        format!(
            "--- locked gateway ---\n{}\n--- open gateway ---\n{}",
            self.locked.logs(),
            self.open.logs()
        )
    }
}
