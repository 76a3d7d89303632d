//! The script the mock model follows: the turns of a request, the markers of the last user
//! message, the tool calls and the reply they make.

use super::*;

/// `(role, text)` of every non-system message the model received in one call.
pub fn turns_of(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in model request {request}"))
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").to_string(),
                content_text(&m["content"]),
            )
        })
        .collect()
}

/// Text of a message's `content` (string, or the concatenated text parts of an array).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    Some(t.to_string())
                } else {
                    p.as_str().map(str::to_string)
                }
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Text of the last `role: user` message of a chat-completions request body.
pub fn last_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|msgs| {
            msgs.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default()
}

/// One scripted tool call: `[call:NAME:{json}]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedCall {
    pub name: String,
    /// The arguments as written in the marker (must be a JSON value; sent as this exact string).
    pub arguments: String,
}

/// Every `[call:NAME:ARGS]` marker in `text`, in order. ARGS extends to the `]` that closes the
/// marker with balanced `{}`/`[]` (JSON strings may contain brackets).
pub fn parse_calls(text: &str) -> Vec<ScriptedCall> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("[call:") {
        let after = &rest[start + 6..];
        let Some(colon) = after.find(':') else { break };
        let name = after[..colon].to_string();
        let args_start = &after[colon + 1..];
        // Scan a balanced JSON value.
        let (mut depth, mut in_str, mut esc, mut end) = (0i32, false, false, None);
        for (i, c) in args_start.char_indices() {
            if in_str {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '{' | '[' => depth += 1,
                '}' | ']' if depth > 0 => depth -= 1,
                ']' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        out.push(ScriptedCall {
            name,
            arguments: args_start[..end].trim().to_string(),
        });
        rest = &args_start[end + 1..];
    }
    out
}

/// Resolve a scripted tool name against the request's offered `tools` (see module docs).
pub fn resolve_tool_name(body: &Value, name: &str) -> String {
    let offered: Vec<&str> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if offered.contains(&name) {
        return name.to_string();
    }
    let suffix = format!("_{name}");
    let hits: Vec<&&str> = offered.iter().filter(|t| t.ends_with(&suffix)).collect();
    if hits.len() == 1 {
        return hits[0].to_string();
    }
    // OpenCode 2.x renamed its own `bash` and `task`: a script written for 1.x calls them there.
    let renamed = match name {
        "bash" => "shell",
        "task" => "subagent",
        _ => name,
    };
    if offered.contains(&renamed) {
        return renamed.to_string();
    }
    name.to_string()
}

/// The trailing `role: tool` messages of a request (after the last non-tool message).
pub fn trailing_tool_messages(body: &Value) -> Vec<Value> {
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<Value> = msgs
        .iter()
        .rev()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .cloned()
        .collect();
    out.reverse();
    out
}

/// Number of assistant messages with `tool_calls` after the last user message.
pub(super) fn tool_rounds_since_user(body: &Value) -> usize {
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    msgs.iter()
        .rev()
        .take_while(|m| m.get("role").and_then(Value::as_str) != Some("user"))
        .filter(|m| {
            m.get("role").and_then(Value::as_str) == Some("assistant")
                && m.get("tool_calls")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
        })
        .count()
}

/// The last text part of the last `role: user` message (its whole text when it is a string):
/// where tool-call markers are read.
pub fn last_user_text_part(body: &Value) -> String {
    let Some(content) = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|msgs| msgs.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| &m["content"])
    else {
        return String::new();
    };
    match content {
        Value::Array(parts) => parts
            .iter()
            .rev()
            .find_map(|p| p.get("text").and_then(Value::as_str))
            .unwrap_or_default()
            .to_string(),
        other => content_text(other),
    }
}

/// How many tool rounds a user turn's markers ask for: 1, 5 with `[sticky]`, N with `[sticky:N]`.
pub(super) fn tool_round_limit(text: &str) -> usize {
    if text.contains("[sticky]") {
        5
    } else {
        marker_value::<usize>(text, "sticky").unwrap_or(1)
    }
}

/// The tool calls the mock answers `body` with (empty: answer with text). Ids are `call_<k>_<i>`,
/// k = tool rounds so far in this user turn, i = index.
pub fn expected_tool_calls(body: &Value) -> Vec<Value> {
    let text = last_user_text_part(body);
    let calls = parse_calls(&text);
    if calls.is_empty() {
        return vec![];
    }
    let last_role = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let rounds = tool_rounds_since_user(body);
    if last_role != "user" && rounds >= tool_round_limit(&text) {
        return vec![];
    }
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "id": format!("call_{rounds}_{i}"),
                "type": "function",
                "function": {"name": resolve_tool_name(body, &c.name), "arguments": c.arguments},
            })
        })
        .collect()
}

/// Parsed behaviour markers of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    pub fail: bool,
    pub reasoning: bool,
    pub slow_ms: Option<u64>,
    pub chunks: Option<usize>,
    pub length: bool,
    pub hang: bool,
    pub count: bool,
    pub toolgap_ms: Option<u64>,
}

pub(super) fn marker_value<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    let pat = format!("[{name}:");
    let start = text.find(&pat)? + pat.len();
    let end = text[start..].find(']')? + start;
    text[start..end].trim().parse().ok()
}

impl Script {
    pub fn parse(text: &str) -> Script {
        Script {
            fail: text.contains("[fail]"),
            reasoning: text.contains("[reasoning]"),
            slow_ms: marker_value(text, "slow"),
            chunks: marker_value::<usize>(text, "chunks").map(|n| n.max(1)),
            length: text.contains("[length]"),
            hang: text.contains("[hang]"),
            count: text.contains("[count]"),
            toolgap_ms: marker_value(text, "toolgap"),
        }
    }
}

/// The reply text the mock produces for a request body.
pub fn expected_reply(body: &Value) -> String {
    let tools = trailing_tool_messages(body);
    if !tools.is_empty() {
        let parts: Vec<String> = tools
            .iter()
            .map(|m| {
                format!(
                    "{}={}",
                    m.get("tool_call_id").and_then(Value::as_str).unwrap_or("?"),
                    content_text(m.get("content").unwrap_or(&Value::Null))
                )
            })
            .collect();
        return format!("echo tool results: {}", parts.join("; "));
    }
    let text = last_user_text(body);
    let script = Script::parse(&text);
    if script.count {
        let k = body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        format!("echo: {text} (messages: {k})")
    } else {
        format!("echo: {text}")
    }
}

/// The reasoning text the mock produces for a `[reasoning]` request.
pub fn expected_reasoning(body: &Value) -> String {
    format!("thinking about {}", last_user_text(body))
}

/// Split `text` into `n` chunks on char boundaries (word-aligned when no `n` given: ~3 chunks).
pub fn split_chunks(text: &str, n: Option<usize>) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    match n {
        Some(n) => {
            let chars: Vec<char> = text.chars().collect();
            let n = n.min(chars.len()).max(1);
            let base = chars.len() / n;
            let extra = chars.len() % n;
            let mut out = Vec::with_capacity(n);
            let mut i = 0;
            for k in 0..n {
                let len = base + usize::from(k < extra);
                out.push(chars[i..i + len].iter().collect());
                i += len;
            }
            out
        }
        None => {
            // Words keep their trailing whitespace so that concatenation is exact.
            let mut words: Vec<String> = Vec::new();
            let mut cur = String::new();
            let mut in_space = false;
            for c in text.chars() {
                if c.is_whitespace() {
                    in_space = true;
                } else if in_space {
                    words.push(std::mem::take(&mut cur));
                    in_space = false;
                }
                cur.push(c);
            }
            if !cur.is_empty() {
                words.push(cur);
            }
            let n = words.len().clamp(1, 3);
            let per = words.len().div_ceil(n);
            words.chunks(per).map(|w| w.concat()).collect()
        }
    }
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn usage() -> Value {
    json!({
        "prompt_tokens": USAGE_PROMPT_TOKENS,
        "completion_tokens": USAGE_COMPLETION_TOKENS,
        "total_tokens": USAGE_TOTAL_TOKENS
    })
}
