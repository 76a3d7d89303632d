use super::*;
use proptest::prelude::*;
use serde_json::{json, Map};

fn message_of(e: ApiError) -> (String, String) {
    match e {
        ApiError::InvalidRequest { message, param, .. } => (message, param.unwrap_or_default()),
        e => panic!("unexpected {e:?}"),
    }
}

fn refused(schema: Value) -> String {
    let (message, param) = message_of(check(&schema, "p").expect_err("refused"));
    assert_eq!(param, "p");
    message
}

#[test]
fn the_campaigns_cycle_is_refused() {
    let m = refused(
        json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"},
        "b": {"$ref": "#/$defs/a"}}}),
    );
    assert!(m.contains("cycle"), "{m}");
}

#[test]
fn in_place_cycles_of_every_kind_are_refused() {
    for schema in [
        json!({"$ref": "#"}),
        json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        json!({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]},
            "b": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
        json!({"$defs": {"a": {"not": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"}),
        json!({"$defs": {"a": {"if": {"$ref": "#/$defs/a"}}}, "properties": {"x": {"$ref": "#/$defs/a"}}}),
        json!({"$defs": {"a": {"$anchor": "here", "oneOf": [{"$ref": "#here"}]}}}),
        json!({"definitions": {"a": {"$ref": "#/definitions/%61"}}}),
    ] {
        let m = refused(schema.clone());
        assert!(m.contains("cycle"), "{schema}: {m}");
    }
}

#[test]
fn recursion_through_a_descending_keyword_is_fine() {
    for schema in [
        json!({"type": "object", "properties": {"child": {"$ref": "#"}}}),
        json!({"$defs": {"node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"}),
        json!({"$defs": {"expr": {"oneOf": [
            {"type": "object", "properties": {"left": {"$ref": "#/$defs/expr"},
                "right": {"$ref": "#/$defs/expr"}}},
            {"type": "number"}]}}, "$ref": "#/$defs/expr"}),
        json!({"additionalProperties": {"$ref": "#"}}),
    ] {
        let checked = compile(&schema, "p").unwrap_or_else(|e| panic!("{schema}: {e:?}"));
        assert_eq!(checked.validate(&json!({})), Ok(()));
    }
}

#[test]
fn references_must_stay_inside_and_resolve() {
    for (schema, says) in [
        (json!({"$ref": "https://example.com/s.json"}), "outside"),
        (json!({"$ref": "other.json#/a"}), "outside"),
        (json!({"$ref": "#/$defs/missing"}), "nothing"),
        (json!({"$ref": "#nowhere"}), "anchor"),
        (json!({"$ref": "#/%zz"}), "fragment"),
        (json!({"$ref": 5}), "string"),
        (
            json!({"properties": {"a": {"$id": "inner", "type": "string"}}}),
            "$id",
        ),
    ] {
        let m = refused(schema.clone());
        assert!(m.contains(says), "{schema}: {m}");
    }
    // A `$id` at the top, and `$id`-named things that are not schemas, are fine.
    check(
        &json!({"$id": "urn:x", "properties": {"$id": {"type": "string"}},
        "enum": [{"$id": "x"}]}),
        "p",
    )
    .unwrap();
}

#[test]
fn size_depth_and_expansion_are_bounded() {
    let mut deep = json!({"type": "string"});
    for _ in 0..MAX_DEPTH {
        deep = json!({"items": deep});
    }
    assert!(refused(deep).contains("deeply"));

    let wide: Map<String, Value> = (0..MAX_NODES)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    assert!(refused(json!({"properties": wide})).contains("too large"));

    // 2^20 paths in place without any cycle: d0 → [d1, d1], d1 → [d2, d2], …
    let defs: Map<String, Value> = (0..20)
        .map(|i| {
            let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
            (format!("d{i}"), json!({"allOf": [next.clone(), next]}))
        })
        .chain([("d20".to_string(), json!({"type": "string"}))])
        .collect();
    let m = refused(json!({"$defs": defs, "$ref": "#/$defs/d0"}));
    assert!(m.contains("expands"), "{m}");
}

/// `anyOf` of two branches that both recurse into `c`: 2^depth (subschema, value) pairs.
fn doubling() -> Value {
    json!({"$defs": {"n": {"anyOf": [
        {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}},
        {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}, "required": ["c"]}]}},
        "$ref": "#/$defs/n"})
}

fn nested(depth: usize) -> Value {
    let mut v = json!({});
    for _ in 0..depth {
        v = json!({"c": v});
    }
    v
}

#[test]
fn validation_refuses_an_instance_past_the_budget() {
    let checked = compile(&doubling(), "p").unwrap();
    assert_eq!(checked.validate(&nested(5)), Ok(()));
    let started = std::time::Instant::now();
    assert_eq!(checked.validate(&nested(40)), Err(Rejected::TooCostly));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn cost_counts_every_path() {
    let graph = check(&doubling(), "p").unwrap();
    // root ($ref) → n → 2 branches: 4 pairs at the top; each level doubles the branches.
    assert_eq!(graph.cost(&json!({}), u64::MAX), Some(4));
    assert_eq!(graph.cost(&nested(1), u64::MAX), Some(4 + 2 * 4));
    assert_eq!(graph.cost(&nested(3), 10), None);
    let simple = check(&json!({"type": "array", "items": {"type": "integer"}}), "p").unwrap();
    assert_eq!(simple.cost(&json!([1, 2, 3]), u64::MAX), Some(4));
}

#[test]
fn validation_reports_problems() {
    let checked = compile(&json!({"type": "object", "required": ["a"]}), "p").unwrap();
    match checked.validate(&json!({"b": 1})) {
        Err(Rejected::Invalid(problems)) => assert!(problems[0].contains("\"a\""), "{problems:?}"),
        other => panic!("{other:?}"),
    }
}

/// One definition of a generated schema: what it does with the value it is applied to.
#[derive(Debug, Clone)]
enum Def {
    Ref(usize),
    AllOf(Vec<usize>),
    AnyOf(Vec<usize>),
    Property(usize),
    Items(usize),
    Leaf,
}

fn def_strategy(n: usize) -> impl Strategy<Value = Def> {
    prop_oneof![
        (0..n).prop_map(Def::Ref),
        prop::collection::vec(0..n, 1..4).prop_map(Def::AllOf),
        prop::collection::vec(0..n, 1..4).prop_map(Def::AnyOf),
        (0..n).prop_map(Def::Property),
        (0..n).prop_map(Def::Items),
        Just(Def::Leaf),
    ]
}

fn graph_strategy() -> impl Strategy<Value = Vec<Def>> {
    (1usize..9).prop_flat_map(|n| prop::collection::vec(def_strategy(n), n))
}

fn schema_of(defs: &[Def]) -> Value {
    let r = |i: &usize| json!({"$ref": format!("#/$defs/d{i}")});
    let defs: Map<String, Value> = defs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = match d {
                Def::Ref(t) => r(t),
                Def::AllOf(ts) => json!({"allOf": ts.iter().map(r).collect::<Vec<_>>()}),
                Def::AnyOf(ts) => json!({"anyOf": ts.iter().map(r).collect::<Vec<_>>()}),
                Def::Property(t) => json!({"type": "object", "properties": {"x": r(t)}}),
                Def::Items(t) => json!({"type": "array", "items": r(t)}),
                Def::Leaf => json!({"type": ["object", "array", "integer"]}),
            };
            (format!("d{i}"), v)
        })
        .collect();
    json!({"$defs": defs, "$ref": "#/$defs/d0"})
}

/// The oracle: a cycle among in-place edges (`$ref`, `allOf`, `anyOf`) reachable from anywhere.
fn has_in_place_cycle(defs: &[Def]) -> bool {
    let edges = |d: &Def| -> Vec<usize> {
        match d {
            Def::Ref(t) => vec![*t],
            Def::AllOf(ts) | Def::AnyOf(ts) => ts.clone(),
            _ => Vec::new(),
        }
    };
    // A cycle exists iff some node reaches itself.
    (0..defs.len()).any(|start| {
        let mut seen = vec![false; defs.len()];
        let mut stack = edges(&defs[start]);
        while let Some(n) = stack.pop() {
            if n == start {
                return true;
            }
            if !std::mem::replace(&mut seen[n], true) {
                stack.extend(edges(&defs[n]));
            }
        }
        false
    })
}

fn instance_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(json!(1)), Just(json!({})), Just(json!([]))];
    leaf.prop_recursive(8, 64, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|v| json!({ "x": v })),
            prop::collection::vec(inner, 0..4).prop_map(Value::Array),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every generated `$ref` graph gets a bounded answer: refused exactly when it has a cycle
    /// in place (checked against an independent oracle *before* anything is validated), and
    /// otherwise validated within the budget, promptly.
    #[test]
    fn generated_ref_graphs_get_a_bounded_answer(defs in graph_strategy(), instance in instance_strategy()) {
        let schema = schema_of(&defs);
        let cyclic = has_in_place_cycle(&defs);
        match compile(&schema, "p") {
            Err(e) => {
                let (message, param) = message_of(e);
                prop_assert_eq!(param, "p");
                prop_assert!(cyclic || message.contains("expands"), "refused without a cycle: {}", message);
            }
            Ok(checked) => {
                prop_assert!(!cyclic, "a cycle was accepted: {}", schema);
                let started = std::time::Instant::now();
                let _ = checked.validate(&instance);
                prop_assert!(started.elapsed() < std::time::Duration::from_secs(5));
            }
        }
    }

    /// Arbitrary JSON is never a panic: a 400 or a checked schema.
    #[test]
    fn arbitrary_documents_never_panic(doc in instance_strategy()) {
        let _ = check(&doc, "p");
    }
}
