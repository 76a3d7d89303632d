//! Client-supplied JSON Schemas, bounded: checked when the request arrives, validated on a
//! budget.
//!
//! A client hands the gateway JSON Schemas in three places: `response_format.json_schema.schema`
//! (chat), `text.format.schema` (Responses) and every function tool's `parameters` (served to
//! OpenCode as the MCP tool's `inputSchema`). The gateway compiles them and validates the
//! model's structured answer against the first two. A schema is code the client runs on the
//! gateway, so before anything is compiled it must pass [`check`]:
//!
//! - **size**: at most [`MAX_NODES`] JSON values, nested at most [`MAX_DEPTH`] deep;
//! - **references**: every `$ref` points into the schema itself (`#`, `#/json/pointer`,
//!   `#anchor`) and resolves; a `$id` only at the top (a nested one would move what `#` means);
//! - **no reference cycle in place**: a chain of `$ref`s (or `allOf`/`anyOf`/`oneOf`/`not`/
//!   `if`/`then`/`else`/`dependentSchemas`) that comes back to where it started without a
//!   keyword that descends into the instance (`properties`, `items`, …) would evaluate forever
//!   at one place of the instance: it cannot describe any value. (jsonschema 0.26 compiles
//!   `a → b → a` and then grows without bound validating anything against it.) A cycle that
//!   passes through `properties` or `items` is an ordinary recursive schema and is fine;
//! - **bounded expansion in place**: following those in-place keywords from any subschema
//!   reaches at most [`MAX_EXPANSION`] subschemas (nested `allOf: [$ref, $ref]` doubles at
//!   every level without a cycle).
//!
//! Even a schema that passes can make validation of one instance expensive (`anyOf` of two
//! branches that both recurse into the same property doubles the work at every level of the
//! instance). So [`Checked::validate`] first counts, exactly and in time proportional to the
//! count, how many (subschema, instance value) pairs the validator would visit, and refuses to
//! validate past [`VALIDATION_BUDGET`]: the caller gets a clear error, never unvalidated text
//! and never an unbounded validation.
//!
//! Why not only the crate: `jsonschema` is kept for validation itself (complete drafts, well
//! kept). 0.26 compiled `a → b → a` and then grew by about 1 GB/s validating anything against
//! it (or overflowed a 2 MiB task stack); 0.61, used now, validates such a schema at once but
//! lets every value pass, which is no answer either, and neither version has resource limits
//! or a way to interrupt a running validation. The checks here are small, need no other
//! crate, and hold whatever version validates.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::validate::bad;
use crate::error::ApiError;

/// Most JSON values one schema may hold (objects, arrays and scalars alike).
pub const MAX_NODES: usize = 50_000;
/// Deepest nesting of a schema document.
pub const MAX_DEPTH: usize = 64;
/// Most subschemas that in-place keywords (`$ref`, `allOf`, …) may reach from one subschema.
pub const MAX_EXPANSION: u64 = 5_000;
/// Most (subschema, instance value) pairs one validation may visit.
pub const VALIDATION_BUDGET: u64 = 1_000_000;

/// Keywords whose subschemas apply to the same instance value.
const IN_PLACE_LISTS: [&str; 3] = ["allOf", "anyOf", "oneOf"];
const IN_PLACE_ONE: [&str; 4] = ["not", "if", "then", "else"];
const IN_PLACE_MAPS: [&str; 2] = ["dependentSchemas", "dependencies"];
/// Keywords whose subschemas apply to values of any key of an object.
const ANY_PROPERTY: [&str; 3] = [
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
];
/// Keywords whose subschemas apply to any element of an array.
const ANY_ITEM: [&str; 3] = ["additionalItems", "unevaluatedItems", "contains"];
/// Keywords holding subschemas that apply only when referenced.
const DEFINITIONS: [&str; 2] = ["$defs", "definitions"];

/// Where a descending subschema applies, relative to the value it is checked against.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// The value of one key of an object.
    Key(String),
    /// The value of any key of an object.
    AnyKey,
    /// One element of an array.
    Index(usize),
    /// Any element of an array.
    AnyIndex,
}

#[derive(Debug, Default)]
struct Node {
    pointer: String,
    in_place: Vec<usize>,
    descend: Vec<(Step, usize)>,
}

/// A schema that passed [`check`]: its subschema graph, for the validation budget.
#[derive(Debug)]
pub struct Graph {
    nodes: Vec<Node>,
}

/// A checked and compiled client schema.
pub struct Checked {
    graph: Graph,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("subschemas", &self.graph.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Why an instance was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// It does not follow the schema (the first few problems).
    Invalid(Vec<String>),
    /// Validating it would visit more than [`VALIDATION_BUDGET`] (subschema, value) pairs.
    TooCostly,
}

/// Checks `schema` (found at `param` in the request) and compiles it, or a 400 naming `param`.
pub fn compile(schema: &Value, param: &str) -> Result<Checked, ApiError> {
    let graph = check(schema, param)?;
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| bad(format!("Invalid JSON Schema: {e}"), param))?;
    Ok(Checked { graph, validator })
}

impl Checked {
    /// Validates `instance`, within the budget.
    pub fn validate(&self, instance: &Value) -> Result<(), Rejected> {
        if self.graph.cost(instance, VALIDATION_BUDGET).is_none() {
            return Err(Rejected::TooCostly);
        }
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let problems: Vec<String> = self
            .validator
            .iter_errors(instance)
            .take(3)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .collect();
        Err(Rejected::Invalid(problems))
    }
}

/// The bounds above, checked without compiling anything: a 400 naming `param` (and, inside
/// the message, the JSON pointer of the offending subschema).
pub fn check(schema: &Value, param: &str) -> Result<Graph, ApiError> {
    measure(schema, param)?;
    let mut builder = Builder {
        root: schema,
        param,
        nodes: Vec::new(),
        at: HashMap::new(),
        anchors: HashMap::new(),
        pending_refs: Vec::new(),
    };
    builder.collect_anchors(schema, "", 0)?;
    builder.walk(schema, String::new())?;
    builder.resolve_refs()?;
    let graph = Graph {
        nodes: builder.nodes,
    };
    graph.check_in_place(param)?;
    Ok(graph)
}

/// Size and depth of the whole document, iteratively (no recursion on client input).
fn measure(schema: &Value, param: &str) -> Result<(), ApiError> {
    let mut stack = vec![(schema, 1usize)];
    let mut count = 0usize;
    while let Some((value, depth)) = stack.pop() {
        count += 1;
        if count > MAX_NODES {
            return Err(bad(
                format!("The JSON Schema is too large: at most {MAX_NODES} values are accepted."),
                param,
            ));
        }
        if depth > MAX_DEPTH {
            return Err(bad(
                format!("The JSON Schema is nested too deeply: at most {MAX_DEPTH} levels are accepted."),
                param,
            ));
        }
        match value {
            Value::Object(o) => stack.extend(o.values().map(|v| (v, depth + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// JSON pointer escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Percent-decoding of a URI fragment (`%24defs` → `$defs`); `None` if malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

struct Builder<'a> {
    root: &'a Value,
    param: &'a str,
    nodes: Vec<Node>,
    /// Node of each walked subschema, by JSON pointer.
    at: HashMap<String, usize>,
    /// `$anchor` names → JSON pointer.
    anchors: HashMap<String, String>,
    /// (node, `$ref` value) to resolve once every subschema is known.
    pending_refs: Vec<(usize, String)>,
}

impl<'a> Builder<'a> {
    fn fail(&self, message: String) -> ApiError {
        bad(message, self.param)
    }

    /// Every `$anchor` in the document (anywhere: a reference may point into any subschema).
    fn collect_anchors(
        &mut self,
        value: &Value,
        pointer: &str,
        depth: usize,
    ) -> Result<(), ApiError> {
        // `measure` bounded the depth already; this recursion follows the same document.
        match value {
            Value::Object(o) => {
                if let Some(Value::String(anchor)) = o.get("$anchor") {
                    self.anchors.insert(anchor.clone(), pointer.to_string());
                }
                if depth > 0
                    && o.contains_key("$id")
                    && o.get("$id").is_some_and(Value::is_string)
                    && is_schema_position(pointer)
                {
                    return Err(self.fail(format!(
                        "`$id` is accepted only at the top of the JSON Schema (found at `#{pointer}`)."
                    )));
                }
                for (k, v) in o {
                    self.collect_anchors(v, &format!("{pointer}/{}", escape(k)), depth + 1)?;
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.collect_anchors(v, &format!("{pointer}/{i}"), depth + 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Registers the subschema at `pointer` (and those inside it); its node index.
    fn walk(&mut self, value: &'a Value, pointer: String) -> Result<usize, ApiError> {
        if let Some(&idx) = self.at.get(&pointer) {
            return Ok(idx);
        }
        let idx = self.nodes.len();
        self.nodes.push(Node {
            pointer: pointer.clone(),
            ..Node::default()
        });
        self.at.insert(pointer.clone(), idx);
        let Value::Object(obj) = value else {
            // `true`, `false` (or anything else, which the compiler rejects): a leaf.
            return Ok(idx);
        };
        self.walk_object(idx, obj, &pointer)?;
        Ok(idx)
    }

    fn child(&mut self, value: &'a Value, pointer: String) -> Result<Option<usize>, ApiError> {
        match value {
            Value::Object(_) | Value::Bool(_) => self.walk(value, pointer).map(Some),
            _ => Ok(None),
        }
    }

    fn walk_object(
        &mut self,
        idx: usize,
        obj: &'a Map<String, Value>,
        pointer: &str,
    ) -> Result<(), ApiError> {
        let at = |k: &str| format!("{pointer}/{}", escape(k));
        for key in ["$ref", "$dynamicRef", "$recursiveRef"] {
            if let Some(r) = obj.get(key) {
                let Value::String(r) = r else {
                    return Err(self.fail(format!("`{key}` at `#{pointer}` must be a string.")));
                };
                let target = if key == "$ref" {
                    r.clone()
                } else {
                    "#".to_string()
                };
                self.pending_refs.push((idx, target));
            }
        }
        for key in IN_PLACE_LISTS {
            if let Some(Value::Array(list)) = obj.get(key) {
                for (i, v) in list.iter().enumerate() {
                    if let Some(c) = self.child(v, format!("{}/{i}", at(key)))? {
                        self.nodes[idx].in_place.push(c);
                    }
                }
            }
        }
        for key in IN_PLACE_ONE {
            if let Some(v) = obj.get(key) {
                if let Some(c) = self.child(v, at(key))? {
                    self.nodes[idx].in_place.push(c);
                }
            }
        }
        for key in IN_PLACE_MAPS {
            if let Some(Value::Object(map)) = obj.get(key) {
                for (k, v) in map {
                    if let Some(c) = self.child(v, format!("{}/{}", at(key), escape(k)))? {
                        self.nodes[idx].in_place.push(c);
                    }
                }
            }
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            for (k, v) in props {
                if let Some(c) = self.child(v, format!("{}/{}", at("properties"), escape(k)))? {
                    self.nodes[idx].descend.push((Step::Key(k.clone()), c));
                }
            }
        }
        if let Some(Value::Object(props)) = obj.get("patternProperties") {
            for (k, v) in props {
                if let Some(c) =
                    self.child(v, format!("{}/{}", at("patternProperties"), escape(k)))?
                {
                    self.nodes[idx].descend.push((Step::AnyKey, c));
                }
            }
        }
        for key in ANY_PROPERTY {
            if let Some(v) = obj.get(key) {
                if let Some(c) = self.child(v, at(key))? {
                    self.nodes[idx].descend.push((Step::AnyKey, c));
                }
            }
        }
        for key in ANY_ITEM {
            if let Some(v) = obj.get(key) {
                if let Some(c) = self.child(v, at(key))? {
                    self.nodes[idx].descend.push((Step::AnyIndex, c));
                }
            }
        }
        // `items`: one schema for every element, or (before 2020-12) one per position.
        match obj.get("items") {
            Some(Value::Array(list)) => {
                for (i, v) in list.iter().enumerate() {
                    if let Some(c) = self.child(v, format!("{}/{i}", at("items")))? {
                        self.nodes[idx].descend.push((Step::Index(i), c));
                    }
                }
            }
            Some(v) => {
                if let Some(c) = self.child(v, at("items"))? {
                    self.nodes[idx].descend.push((Step::AnyIndex, c));
                }
            }
            None => {}
        }
        if let Some(Value::Array(list)) = obj.get("prefixItems") {
            for (i, v) in list.iter().enumerate() {
                if let Some(c) = self.child(v, format!("{}/{i}", at("prefixItems")))? {
                    self.nodes[idx].descend.push((Step::Index(i), c));
                }
            }
        }
        for key in DEFINITIONS {
            if let Some(Value::Object(defs)) = obj.get(key) {
                for (k, v) in defs {
                    self.child(v, format!("{}/{}", at(key), escape(k)))?;
                }
            }
        }
        Ok(())
    }

    /// Resolves every `$ref` to a node, walking targets that sit outside the usual keywords.
    fn resolve_refs(&mut self) -> Result<(), ApiError> {
        let mut i = 0;
        while i < self.pending_refs.len() {
            let (idx, reference) = self.pending_refs[i].clone();
            i += 1;
            let from = self.nodes[idx].pointer.clone();
            let Some(fragment) = reference.strip_prefix('#') else {
                return Err(self.fail(format!(
                    "`$ref` {reference:?} at `#{from}` points outside the schema: only references within it (`#`, `#/$defs/...`) are supported."
                )));
            };
            let decoded = percent_decode(fragment).ok_or_else(|| {
                self.fail(format!(
                    "`$ref` {reference:?} at `#{from}` is not a valid URI fragment."
                ))
            })?;
            let pointer = if decoded.is_empty() || decoded.starts_with('/') {
                decoded
            } else {
                self.anchors.get(&decoded).cloned().ok_or_else(|| {
                    self.fail(format!(
                        "`$ref` {reference:?} at `#{from}` names no `$anchor` of the schema."
                    ))
                })?
            };
            let root = self.root;
            let target = root.pointer(&pointer).ok_or_else(|| {
                self.fail(format!(
                    "`$ref` {reference:?} at `#{from}` points at nothing in the schema."
                ))
            })?;
            let node = match self.at.get(&pointer) {
                Some(&n) => n,
                None => self.walk(target, pointer)?,
            };
            self.nodes[idx].in_place.push(node);
        }
        Ok(())
    }
}

/// Whether `pointer` names a place where a subschema (rather than, say, an `enum` value or a
/// `properties` name) sits: it does not end inside `enum`, `const`, `examples` or `default`.
fn is_schema_position(pointer: &str) -> bool {
    !["/enum/", "/const", "/examples/", "/default"]
        .iter()
        .any(|k| pointer.contains(k))
}

impl Graph {
    /// No cycle through in-place edges, and bounded expansion from every node.
    fn check_in_place(&self, param: &str) -> Result<(), ApiError> {
        // Iterative depth-first search; `order` collects nodes after their children.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let n = self.nodes.len();
        let mut mark = vec![Mark::New; n];
        let mut order = Vec::with_capacity(n);
        for start in 0..n {
            if mark[start] != Mark::New {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            mark[start] = Mark::Open;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = self.nodes[node].in_place.get(*next) {
                    *next += 1;
                    match mark[child] {
                        Mark::New => {
                            mark[child] = Mark::Open;
                            stack.push((child, 0));
                        }
                        Mark::Open => {
                            return Err(bad(
                                format!(
                                    "The JSON Schema has a `$ref` cycle with no keyword in between that descends into the value (through `#{}`): it cannot describe any value.",
                                    self.nodes[child].pointer
                                ),
                                param,
                            ));
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                    order.push(node);
                    stack.pop();
                }
            }
        }
        let mut expansion = vec![0u64; n];
        for node in order {
            let size = self.nodes[node]
                .in_place
                .iter()
                .fold(1u64, |acc, &c| acc.saturating_add(expansion[c]));
            if size > MAX_EXPANSION {
                return Err(bad(
                    format!(
                        "The JSON Schema expands to more than {MAX_EXPANSION} subschemas at one place (`$ref`, `allOf`, `anyOf`, `oneOf` nested at `#{}`).",
                        self.nodes[node].pointer
                    ),
                    param,
                ));
            }
            expansion[node] = size;
        }
        Ok(())
    }

    /// How many (subschema, instance value) pairs validating `instance` visits, counting every
    /// path as the validator walks it; `None` as soon as that passes `budget`. The work done is
    /// proportional to the count, so this is bounded by the budget too.
    pub fn cost(&self, instance: &Value, budget: u64) -> Option<u64> {
        if self.nodes.is_empty() {
            return Some(0);
        }
        let mut total = 0u64;
        let mut root = HashMap::new();
        self.expand(0, 1, &mut root, &mut total, budget)?;
        let mut stack: Vec<(&Value, HashMap<usize, u64>)> = vec![(instance, root)];
        while let Some((value, applied)) = stack.pop() {
            let children: Vec<(Step, &Value)> = match value {
                Value::Object(o) => o.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (Step::Index(i), v))
                    .collect(),
                _ => Vec::new(),
            };
            for (step, child) in children {
                let mut next = HashMap::new();
                for (&node, &mult) in &applied {
                    for (edge, target) in &self.nodes[node].descend {
                        if step_matches(edge, &step) {
                            self.expand(*target, mult, &mut next, &mut total, budget)?;
                        }
                    }
                }
                if !next.is_empty() {
                    stack.push((child, next));
                }
            }
        }
        Some(total)
    }

    /// Adds `node` and everything its in-place edges reach (each path counted `mult` times).
    fn expand(
        &self,
        node: usize,
        mult: u64,
        into: &mut HashMap<usize, u64>,
        total: &mut u64,
        budget: u64,
    ) -> Option<()> {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            *total = total.saturating_add(mult);
            if *total > budget {
                return None;
            }
            let slot = into.entry(n).or_insert(0);
            *slot = slot.saturating_add(mult);
            stack.extend(self.nodes[n].in_place.iter().copied());
        }
        Some(())
    }
}

fn step_matches(edge: &Step, step: &Step) -> bool {
    match (edge, step) {
        (Step::Key(a), Step::Key(b)) => a == b,
        (Step::AnyKey, Step::Key(_)) => true,
        (Step::Index(a), Step::Index(b)) => a == b,
        (Step::AnyIndex, Step::Index(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
