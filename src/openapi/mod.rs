//! The gateway's own API described as OpenAPI 3.1, served at `GET /openapi.json`.
//!
//! Generated from the code with [`utoipa`]: every handler carries a `#[utoipa::path]`
//! annotation next to it (method, path, parameters, bodies, responses, role), and
//! [`ApiDoc`] lists them. The OpenAI-compatible bodies (chat completions, Responses) are not
//! re-described: they are OpenAI's own schemas, cut from OpenAI's public OpenAPI description
//! (MIT) into the two JSON files beside this module, and the operations refer to them; the
//! same files are what the test suite validates every emitted body against.
//!
//! Why utoipa and not a hand-written document: the description lives beside the handler it
//! describes, so a changed parameter is changed in one place; a test
//! (`tests/http_api/openapi.rs`) fails when a routed path is missing from it. `utoipa-axum`'s
//! router was not used: it would own route registration, and the router keeps its one flat,
//! readable table in [`crate::app`].

use std::collections::BTreeSet;
use std::sync::OnceLock;

use axum::Json;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

pub use crate::routes::schemas::*;

/// Declares the API key as a bearer token.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <key>` (or `x-api-key`), when keys are configured. \
                         Roles: `client` keys see their own sessions and responses; `admin` keys \
                         everything, and the admin-only routes.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The description, as utoipa builds it from the annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "PorTaTek Gateway",
        description = "An OpenAI-compatible HTTP API in front of an OpenCode server: chat completions, the Responses API, explicit sessions, and OpenCode's wider surface (providers, code search, tools, MCP) under key roles and safety switches.",
        license(name = "MIT")
    ),
    paths(
        routes::models::list, routes::models::get,
        routes::chat::completions,
        routes::agents::list, routes::events::stream,
        routes::responses::create, routes::responses::get, routes::responses::delete,
        routes::responses::cancel, routes::responses::input_items,
        routes::sessions::create, routes::sessions::list, routes::sessions::get,
        routes::sessions::delete, routes::sessions::messages, routes::sessions::fork,
        routes::sessions::abort, routes::sessions::permissions, routes::sessions::answer_permission,
        routes::session_extras::children, routes::session_extras::todo,
        routes::session_extras::diff, routes::session_extras::message,
        routes::session_extras::summarize, routes::session_extras::revert,
        routes::session_extras::unrevert, routes::session_extras::share,
        routes::session_extras::unshare,
        routes::commands::run_command, routes::commands::run_shell, routes::commands::list,
        routes::providers::list, routes::providers::refresh, routes::providers::set_auth,
        routes::providers::oauth_authorize, routes::providers::oauth_callback,
        routes::code::find_text, routes::code::find_files, routes::code::find_symbols,
        routes::code::list_directory, routes::code::file_content, routes::code::file_status,
        routes::code::vcs, routes::code::project_info,
        routes::opencode_tools::tool_ids, routes::opencode_tools::tool_definitions, routes::opencode_tools::lsp,
        routes::opencode_tools::formatters, routes::opencode_tools::mcp_status, routes::opencode_tools::mcp_add,
        routes::opencode_tools::mcp_connect, routes::opencode_tools::mcp_disconnect,
        routes::config::get, routes::config::patch,
        routes::health::status, routes::health::ready, routes::health::live,
        routes::metrics::render,
        serve,
    ),
    components(schemas(ErrorResponse)),
    modifiers(&ApiKey),
    security(("api_key" = [])),
    tags(
        (name = "Chat", description = "OpenAI chat completions."),
        (name = "Responses", description = "OpenAI's Responses API, stored in OpenCode sessions."),
        (name = "Models", description = "The model catalog."),
        (name = "Sessions", description = "Explicit OpenCode sessions owned by a key, and what else a session has."),
        (name = "Agents", description = "OpenCode's agents and events."),
        (name = "Execution", description = "Commands and shell lines: admin only, and off unless `admin.allow_execution`."),
        (name = "Providers", description = "Providers; auth flows admin only."),
        (name = "Code", description = "Read-only code intelligence: admin keys and keys whose scope lists the project."),
        (name = "Tools", description = "Tools, language servers, formatters, MCP servers; changes admin only."),
        (name = "Config", description = "OpenCode's configuration (admin; patch only with `admin.allow_config_patch`)."),
        (name = "Operations", description = "Health, status, metrics and this description."),
    )
)]
pub struct ApiDoc;

/// OpenAI's chat-completions schemas (a subset of OpenAI's OpenAPI components).
const OPENAI_CHAT: &str = include_str!("openai-chat-completions.schema.json");
/// OpenAI's Responses schemas.
const OPENAI_RESPONSES: &str = include_str!("openai-responses.schema.json");

/// Which OpenAI schema each OpenAI-compatible body is: (path, method, where, schema).
const OPENAI_BODIES: &[(&str, &str, &str, &str)] = &[
    (
        "/v1/chat/completions",
        "post",
        "request",
        "CreateChatCompletionRequest",
    ),
    (
        "/v1/chat/completions",
        "post",
        "200",
        "CreateChatCompletionResponse",
    ),
    ("/v1/responses", "post", "request", "CreateResponse"),
    ("/v1/responses", "post", "200", "Response"),
    ("/v1/responses/{id}", "get", "200", "Response"),
    ("/v1/responses/{id}/cancel", "post", "200", "Response"),
    (
        "/v1/responses/{id}/input_items",
        "get",
        "200",
        "ResponseItemList",
    ),
];

/// The whole description (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    error_responses(&mut doc);
    let openai: Vec<Map<String, Value>> = [OPENAI_CHAT, OPENAI_RESPONSES]
        .iter()
        .filter_map(|text| serde_json::from_str::<Value>(text).ok())
        .filter_map(|v| v["components"]["schemas"].as_object().cloned())
        .collect();
    let roots: BTreeSet<&str> = OPENAI_BODIES.iter().map(|(.., s)| *s).collect();
    let mut wanted: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = openai.iter().find_map(|m| m.get(&name)) {
            refs(schema, &mut wanted);
            let mut schema = schema.clone();
            nullable_to_3_1(&mut schema);
            recursion_to_ref(&mut schema, &name);
            doc["components"]["schemas"][&name] = schema;
        }
    }
    for (path, method, at, schema) in OPENAI_BODIES {
        let op = &mut doc["paths"][*path][*method];
        let r = json!({ "$ref": format!("#/components/schemas/{schema}") });
        if *at == "request" {
            op["requestBody"]["content"]["application/json"]["schema"] = r;
        } else {
            op["responses"][*at]["content"]["application/json"]["schema"] = r;
        }
    }
    doc
}

/// OpenAI's schemas still say `nullable: true` (OpenAPI 3.0); in 3.1 a schema allows `null`
/// through its `type` (`["string", "null"]`) or an `anyOf` with `{"type": "null"}`.
fn nullable_to_3_1(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.values_mut().for_each(nullable_to_3_1);
            // `default: null` where the schema itself does not admit null (OpenAI puts it on
            // `anyOf` members and `oneOf`s of non-null types): 3.1 validators check defaults.
            if m.get("default") == Some(&Value::Null) && !admits_null(m) {
                m.remove("default");
            }
            if m.remove("nullable") != Some(Value::Bool(true)) {
                return;
            }
            if let Some(Value::Array(values)) = m.get_mut("enum") {
                if !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
            }
            match m.get_mut("type") {
                Some(Value::String(t)) => {
                    let t = std::mem::take(t);
                    m.insert("type".into(), json!([t, "null"]));
                }
                Some(Value::Array(types)) => {
                    if !types.contains(&json!("null")) {
                        types.push(json!("null"));
                    }
                }
                _ => {
                    let inner = std::mem::take(m);
                    let keep = ["description", "default", "title"];
                    let mut outer = Map::new();
                    let mut rest = Map::new();
                    for (k, val) in inner {
                        if keep.contains(&k.as_str()) {
                            outer.insert(k, val);
                        } else {
                            rest.insert(k, val);
                        }
                    }
                    outer.insert("anyOf".into(), json!([rest, {"type": "null"}]));
                    *m = outer;
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(nullable_to_3_1),
        _ => {}
    }
}

/// Whether a schema says outright that `null` is valid.
fn admits_null(m: &Map<String, Value>) -> bool {
    let null = json!("null");
    let by_type = match m.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.contains(&null),
        _ => false,
    };
    let by_branch = ["anyOf", "oneOf"].iter().any(|k| {
        m.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|branches| branches.iter().any(|b| b.get("type") == Some(&null)))
    });
    by_type || by_branch || m.get("nullable") == Some(&Value::Bool(true))
}

/// `$recursiveAnchor`/`$recursiveRef: "#"` (JSON Schema 2019-09, which OpenAI's recursive
/// filters use) as a plain `$ref` to the component itself, which 3.1's dialect reads.
fn recursion_to_ref(v: &mut Value, component: &str) {
    match v {
        Value::Object(m) => {
            m.remove("$recursiveAnchor");
            if m.get("$recursiveRef") == Some(&json!("#")) {
                m.remove("$recursiveRef");
                m.insert(
                    "$ref".into(),
                    json!(format!("#/components/schemas/{component}")),
                );
            }
            m.values_mut().for_each(|v| recursion_to_ref(v, component));
        }
        Value::Array(a) => a.iter_mut().for_each(|v| recursion_to_ref(v, component)),
        _ => {}
    }
}

/// Every operation can fail the same ways, in OpenAI's error shape: said once here rather
/// than on every handler.
/// Operations whose OpenCode route 2.x dropped: on a 2.x upstream they answer 501.
const GONE_IN_2X: &[&str] = &[
    "code_find_text",
    "code_find_symbols",
    "tooling_tool_ids",
    "tooling_tool_definitions",
    "tooling_lsp",
    "tooling_formatters",
    "session_extras_todo",
    "session_extras_share",
    "session_extras_unshare",
    "config_patch",
    "providers_oauth_authorize",
    "providers_oauth_callback",
];

fn error_responses(doc: &mut Value) {
    let error = json!({"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ErrorResponse"}}}});
    let client =
        "Refused: 400 invalid (`param` names the field), 401 no or unknown key, 403 role, \
                  scope or switch, 404 unknown, 405, 408 body too slow, 409 busy, 413 too large, \
                  429 rate limited.";
    let upstream =
        "OpenCode or gateway trouble: 502 upstream failed, 503 unavailable, 504 deadline.";
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let gone = op["operationId"]
            .as_str()
            .is_some_and(|id| GONE_IN_2X.contains(&id));
        let responses = &mut op["responses"];
        for (status, description) in [("4XX", client), ("5XX", upstream)] {
            let mut response = error.clone();
            response["description"] = json!(description);
            responses[status] = response;
        }
        if gone {
            let mut response = error.clone();
            response["description"] = json!(
                "Not supported by the upstream: it runs OpenCode 2.x, whose server API has no such route (error code `not_supported_by_upstream`, the message names the version)."
            );
            responses["501"] = response;
        }
    }
}

/// Every `#/components/schemas/X` that `v` refers to, pushed onto `out`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    out.push(name.to_string());
                }
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The gateway's API as OpenAPI 3.1 (browse it with any OpenAPI viewer, e.g. Swagger UI's
/// "Explore" box or `npx @redocly/cli preview-docs`).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_serve",
    tag = "Operations",
    responses((status = 200, description = "This description.", body = Object)),
    security(())
)]
pub async fn serve() -> Json<Value> {
    Json(document().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_becomes_a_null_type() {
        let mut v = json!({"a": {"type": "string", "nullable": true, "enum": ["x"]},
                           "b": {"$ref": "#/components/schemas/X", "nullable": true, "description": "d"}});
        nullable_to_3_1(&mut v);
        assert_eq!(
            v["a"],
            json!({"type": ["string", "null"], "enum": ["x", null]})
        );
        assert_eq!(
            v["b"],
            json!({"description": "d", "anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]})
        );
    }

    #[test]
    fn openai_bodies_resolve() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut missing = Vec::new();
        let mut all = Vec::new();
        refs(doc, &mut all);
        for name in all {
            if doc["components"]["schemas"].get(&name).is_none() {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "unresolved refs: {missing:?}");
        let chat = &doc["paths"]["/v1/chat/completions"]["post"];
        assert_eq!(
            chat["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/CreateChatCompletionRequest"
        );
    }
}
