//! Unit tests of the slot pool: tool names within the limit, held calls, per-start slot names.

use super::*;
use serde_json::json;

fn spec(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: None,
        parameters: json!({"type": "object"}),
        strict: false,
    }
}

#[test]
fn names_fit_the_providers_limit_and_stay_unique() {
    let long_a = "a".repeat(64);
    let long_b = format!("{}b", "a".repeat(63));
    let t = table(
        "ptkab12cd07",
        &[spec("short"), spec(&long_a), spec(&long_b)],
    );
    assert_eq!(t[0].mcp_name, "short");
    for tool in &t {
        assert!(
            format!("ptkab12cd07_{}", tool.mcp_name).len() <= 64,
            "{}",
            tool.mcp_name
        );
    }
    assert_ne!(t[1].mcp_name, t[2].mcp_name);
    assert!(is_slot_name("ptkab12cd07"));
    assert!(!is_slot_name("ptk07"));
    assert!(!is_slot_name("xyzab12cd07"));
    assert!(!is_slot_name("ptkAB12CD07"));
    assert!(is_slot_tool("ptkab12cd07_lookup"));
    assert!(!is_slot_tool("ptkab12cd07"));
    assert!(!is_slot_tool("bash"));
}

/// A step may make any number of calls: every one reaches the run, however many wait
/// unread (a 64-entry queue refused the 65th silently and the step never completed).
#[test]
fn any_number_of_calls_waits_for_the_run() {
    let config = crate::config::OpenCodeConfig {
        base_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    let slots = Slots::new(
        OpenCodeClient::new(&config).unwrap(),
        2,
        Duration::from_secs(1),
    );
    let (index, _, mut calls, _, _) = slots.claim(&[spec("f")], &None).unwrap();
    let name = slots.name(index);
    let replies: Vec<_> = (0..300)
        .map(|i| slots.deliver(&name, "f".into(), json!({ "i": i })))
        .collect();
    assert!(replies.iter().all(Option::is_some), "a call was refused");
    let mut got = 0;
    while let Ok(call) = calls.try_recv() {
        assert_eq!(call.arguments["i"], got);
        got += 1;
    }
    assert_eq!(got, 300);
}

#[test]
fn each_start_names_its_own_slots() {
    let config = crate::config::OpenCodeConfig {
        base_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    let client = OpenCodeClient::new(&config).unwrap();
    let (a, b) = (
        Slots::new(client.clone(), 2, Duration::from_secs(1)),
        Slots::new(client, 2, Duration::from_secs(1)),
    );
    let name = a.name(1);
    assert!(is_slot_name(&name), "{name}");
    assert_eq!(a.index_of(&name), Some(1));
    assert_eq!(b.index_of(&name), None, "another start's slot is not ours");
}
