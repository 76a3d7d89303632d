mod support;
use serde_json::{json, Value};
use support::TestBed;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread")]
async fn explore() {
    let t = Instant::now();
    let bed = TestBed::start().await;
    eprintln!("bed start {:?}", t.elapsed());
    let t = Instant::now();
    let (s, v) = bed.chat(json!({"model":"mock/echo","messages":[{"role":"user","content":"hi one"}]})).await;
    eprintln!("turn1 {:?} {s} {v}", t.elapsed());
    let r1 = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (s, v) = bed.chat(json!({"model":"mock/echo","messages":[{"role":"user","content":"hi one"},{"role":"assistant","content":r1},{"role":"user","content":"second"}]})).await;
    eprintln!("turn2 {:?} {s} {v}", t.elapsed());
    let (s, v) = bed.chat(json!({"model":"mock/echo","messages":[{"role":"user","content":"hi two"},{"role":"assistant","content":r1},{"role":"user","content":"second"}]})).await;
    eprintln!("edited {s} {v}");
    for r in bed.mock.requests() { let m: Vec<&Value> = r["messages"].as_array().unwrap().iter().filter(|m| m["role"] != "system").collect(); eprintln!("REQ sys={} {}", r["messages"].as_array().unwrap().iter().filter(|m| m["role"]=="system").count(), serde_json::to_string(&m).unwrap()); }
    let ss = bed.opencode.sessions().await;
    eprintln!("SESSIONS {}", serde_json::to_string_pretty(&ss).unwrap());
    let m = bed.opencode.messages(ss[0]["id"].as_str().unwrap()).await;
    eprintln!("MSGS {}", m.len());
    let _: Value = Value::Null;
}
