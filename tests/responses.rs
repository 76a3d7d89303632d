//! The Responses API end to end, against the real OpenCode.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::TestBed;

#[tokio::test(flavor = "multi_thread")]
async fn smoke() {
    let bed = TestBed::start().await;
    let (status, r1) = bed
        .post(
            "/v1/responses",
            &json!({"model": "mock/echo", "input": "hello one", "instructions": "be brief"}),
        )
        .await;
    eprintln!("{status} {r1:#}");
    let id1 = r1["id"].as_str().unwrap().to_string();
    let (status, got) = bed.get(&format!("/v1/responses/{id1}")).await;
    eprintln!("GET {status} {got:#}");
    let (status, r2) = bed
        .post(
            "/v1/responses",
            &json!({"model": "mock/echo", "input": "second [count]", "previous_response_id": id1}),
        )
        .await;
    eprintln!("{status} {r2:#}");
    eprintln!(
        "model saw: {:#}",
        bed.mock.last_request().unwrap()["messages"]
    );
    // branch from r1 again
    let (status, r3) = bed
        .post(
            "/v1/responses",
            &json!({"model": "mock/echo", "input": "branch [count]", "previous_response_id": id1}),
        )
        .await;
    eprintln!("{status} {r3:#}");
    let resp = bed
        .client
        .post(bed.url("/v1/responses"))
        .json(&json!({"model": "mock/echo", "input": "stream me [reasoning]", "stream": true}))
        .send()
        .await
        .unwrap();
    eprintln!("{}", resp.status());
    eprintln!("{}", resp.text().await.unwrap());
    let (status, items) = bed.get(&format!("/v1/responses/{id1}/input_items")).await;
    eprintln!("{status} {items:#}");
}
