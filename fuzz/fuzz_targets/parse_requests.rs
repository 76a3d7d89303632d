//! Fuzzes the request parsers: `ChatRequest::parse` and `ResponsesRequest::parse` take any
//! bytes and answer a request or an `ApiError` — never a panic. An error must render as
//! OpenAI's `{"error":{"message","type","param","code"}}` with a 4xx status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portatek_gateway::openai::{ChatRequest, ResponsesRequest};

fn check(result: Result<(), portatek_gateway::error::ApiError>) {
    if let Err(e) = result {
        let status = e.status();
        assert!(
            status.is_client_error(),
            "a parse error must be a 4xx, got {status}: {e}"
        );
        let body = e.body();
        assert!(body["error"]["message"].is_string(), "{body}");
    }
}

fuzz_target!(|data: &[u8]| {
    check(ChatRequest::parse(data).map(|_| ()));
    check(ResponsesRequest::parse(data).map(|_| ()));
});
