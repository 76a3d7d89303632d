//! The rest of OpenCode's server API the gateway serves (providers, commands, code search,
//! tools, MCP, session extras, config): one typed method per upstream call, each with the
//! client's timeout; read-only calls are retried, calls that change something never are.
//!
//! Answers are OpenCode's JSON as it comes ([`Value`]): the routes decide what a caller sees
//! (they filter, page and mask), this layer only knows how to ask.

use reqwest::Method;
use serde_json::{json, Value};

use super::v2::SurfaceCall as C;
use super::{OpenCodeClient, UpstreamError};

impl OpenCodeClient {
    /// A read-only `GET`, retried on transient failures.
    async fn read(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, UpstreamError> {
        self.retrying(what, || {
            self.json(
                what,
                self.request(Method::GET, path).query(query),
                self.timeout,
            )
        })
        .await
    }

    /// A call that changes something (never retried), with an optional JSON body.
    async fn change(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        let mut rb = self.request(method, path);
        if let Some(body) = body {
            rb = rb.json(body);
        }
        self.json(what, rb, self.timeout).await
    }

    /// `GET /provider`: every provider (`all`), the connected ones, defaults.
    pub async fn provider_list(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Providers).await;
        }
        self.read("list providers", "provider", &[]).await
    }

    /// `PUT /auth/:id`: stores a provider's credentials.
    pub async fn set_provider_auth(&self, id: &str, auth: &Value) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::ProviderKey { id, auth }).await;
        }
        let path = format!("auth/{id}");
        self.change("set provider auth", Method::PUT, &path, Some(auth))
            .await
    }

    /// `POST /provider/:id/oauth/authorize`: starts a provider's OAuth flow.
    pub async fn oauth_authorize(&self, id: &str, body: &Value) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self
                .v2_surface(C::Gone("Provider OAuth through the gateway"))
                .await;
        }
        let path = format!("provider/{id}/oauth/authorize");
        self.change("start OAuth", Method::POST, &path, Some(body))
            .await
    }

    /// `POST /provider/:id/oauth/callback`: completes it.
    pub async fn oauth_callback(&self, id: &str, body: &Value) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self
                .v2_surface(C::Gone("Provider OAuth through the gateway"))
                .await;
        }
        let path = format!("provider/{id}/oauth/callback");
        self.change("complete OAuth", Method::POST, &path, Some(body))
            .await
    }

    /// `GET /command`: the commands (`/init`, custom ones).
    pub async fn commands(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Commands).await;
        }
        self.read("list commands", "command", &[]).await
    }

    /// `POST /session/:id/command`: runs a command in a session; answers its message.
    pub async fn run_command(&self, session: &str, body: &Value) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::RunCommand { session, body }).await;
        }
        let path = format!("session/{session}/command");
        self.change("run command", Method::POST, &path, Some(body))
            .await
    }

    /// `POST /session/:id/shell`: runs a shell line in a session; answers its message.
    pub async fn run_shell(&self, session: &str, body: &Value) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::RunShell { session, body }).await;
        }
        let path = format!("session/{session}/shell");
        self.change("run shell", Method::POST, &path, Some(body))
            .await
    }

    /// `GET /find?pattern=`: text search in the project.
    pub async fn find_text(&self, pattern: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("Text search")).await;
        }
        self.read("search text", "find", &[("pattern", pattern)])
            .await
    }

    /// `GET /find/file?query=`: file search.
    pub async fn find_files(&self, query: &str, limit: usize) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::FindFiles { query, limit }).await;
        }
        let limit = limit.to_string();
        let q = [("query", query), ("limit", limit.as_str())];
        self.read("search files", "find/file", &q).await
    }

    /// `GET /find/symbol?query=`: symbol search (LSP).
    pub async fn find_symbols(&self, query: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("Symbol search")).await;
        }
        self.read("search symbols", "find/symbol", &[("query", query)])
            .await
    }

    /// `GET /file?path=`: a directory's entries.
    pub async fn list_directory(&self, path: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::ListDirectory { path }).await;
        }
        self.read("list directory", "file", &[("path", path)]).await
    }

    /// `GET /file/content?path=`: a file's content.
    pub async fn file_content(&self, path: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::FileContent { path }).await;
        }
        self.read("read file", "file/content", &[("path", path)])
            .await
    }

    /// `GET /file/status`: changed files.
    pub async fn file_status(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::FileStatus).await;
        }
        self.read("file status", "file/status", &[]).await
    }

    /// `GET /vcs`: version control info.
    pub async fn vcs(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Vcs).await;
        }
        self.read("VCS info", "vcs", &[]).await
    }

    /// `GET /project/current`: the project.
    pub async fn project(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Project).await;
        }
        self.read("project", "project/current", &[]).await
    }

    /// `GET /path`: OpenCode's paths (home, config, state, directory, worktree).
    pub async fn paths(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Paths).await;
        }
        self.read("paths", "path", &[]).await
    }

    /// `GET /experimental/tool/ids`: the tool ids.
    pub async fn tool_ids(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("Listing tool ids")).await;
        }
        self.read("list tools", "experimental/tool/ids", &[]).await
    }

    /// `GET /experimental/tool?provider=&model=`: the tools a model would get.
    pub async fn tool_definitions(
        &self,
        provider: &str,
        model: &str,
    ) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("Listing tool definitions")).await;
        }
        let q = [("provider", provider), ("model", model)];
        self.read("tool definitions", "experimental/tool", &q).await
    }

    /// `GET /lsp`: language servers' status.
    pub async fn lsp_status(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("LSP status")).await;
        }
        self.read("LSP status", "lsp", &[]).await
    }

    /// `GET /formatter`: formatters' status.
    pub async fn formatter_status(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("Formatter status")).await;
        }
        self.read("formatter status", "formatter", &[]).await
    }

    /// `GET /mcp`: MCP servers' status.
    pub async fn mcp_status(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::McpStatus).await;
        }
        self.read("MCP status", "mcp", &[]).await
    }

    /// `POST /mcp/:name/connect` or `/disconnect`.
    pub async fn mcp_switch(&self, name: &str, connect: bool) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::McpSwitch { name, connect }).await;
        }
        let verb = if connect { "connect" } else { "disconnect" };
        let path = format!("mcp/{name}/{verb}");
        self.change("switch MCP server", Method::POST, &path, None)
            .await
    }

    /// `GET /session/:id/children`.
    pub async fn session_children(&self, id: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Children { id }).await;
        }
        self.read("session children", &format!("session/{id}/children"), &[])
            .await
    }

    /// `GET /session/:id/todo`.
    pub async fn session_todo(&self, id: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("A session's todo list")).await;
        }
        self.read("session todo", &format!("session/{id}/todo"), &[])
            .await
    }

    /// `GET /session/:id/diff`.
    pub async fn session_diff(&self, id: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Diff { id }).await;
        }
        self.read("session diff", &format!("session/{id}/diff"), &[])
            .await
    }

    /// `GET /session/:id/message/:mid`.
    pub async fn session_message(&self, id: &str, message: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Message { id, message }).await;
        }
        let path = format!("session/{id}/message/{message}");
        self.read("get message", &path, &[]).await
    }

    /// `POST /session/:id/summarize`: compacts a session's history with `model`.
    pub async fn summarize(
        &self,
        id: &str,
        provider: &str,
        model: &str,
    ) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Summarize { id }).await;
        }
        let body = json!({ "providerID": provider, "modelID": model });
        let path = format!("session/{id}/summarize");
        self.change("summarize session", Method::POST, &path, Some(&body))
            .await
    }

    /// `POST /session/:id/revert`: undoes the session back to a message.
    pub async fn revert(
        &self,
        id: &str,
        message: &str,
        part: Option<&str>,
    ) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Revert { id, message }).await;
        }
        let mut body = json!({ "messageID": message });
        if let Some(part) = part {
            body["partID"] = Value::String(part.to_string());
        }
        let path = format!("session/{id}/revert");
        self.change("revert session", Method::POST, &path, Some(&body))
            .await
    }

    /// `POST /session/:id/unrevert`.
    pub async fn unrevert(&self, id: &str) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Unrevert { id }).await;
        }
        let path = format!("session/{id}/unrevert");
        self.change("unrevert session", Method::POST, &path, None)
            .await
    }

    /// `POST /session/:id/share` or `DELETE` it.
    pub async fn share(&self, id: &str, on: bool) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Gone("Sharing a session")).await;
        }
        let method = if on { Method::POST } else { Method::DELETE };
        let path = format!("session/{id}/share");
        self.change("share session", method, &path, None).await
    }

    /// `GET /config`.
    pub async fn opencode_config(&self) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self.v2_surface(C::Config).await;
        }
        self.read("get config", "config", &[]).await
    }

    /// `PATCH /config`.
    pub async fn patch_opencode_config(&self, patch: &Value) -> Result<Value, UpstreamError> {
        if self.is_v2().await {
            return self
                .v2_surface(C::Gone("Changing OpenCode's config at run time"))
                .await;
        }
        self.change("patch config", Method::PATCH, "config", Some(patch))
            .await
    }
}
