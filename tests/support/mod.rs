//! Integration-test bed: a scripted model server, a real `opencode serve`, the gateway binary,
//! and OpenAI schema validation. Use from an integration test file with `mod support;`.
#![allow(dead_code, unused_imports)]

pub mod gateway;
pub mod mock_model;
pub mod opencode;
pub mod schema;

pub use gateway::{Gateway, GatewayOptions, TestBed};
pub use mock_model::MockModel;
pub use opencode::{OpenCode, OpenCodeOptions};

/// The `data:` payloads of an SSE text, in order (multi-line data joined with `\n`; comments,
/// `event:`/`id:`/`retry:` lines ignored; a trailing frame without a blank line is included).
pub fn parse_sse_data(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    for frame in text.split("\n\n") {
        let mut data: Vec<&str> = Vec::new();
        for line in frame.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                data.push(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}
