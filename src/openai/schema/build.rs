//! From a schema document to its subschema graph: every subschema a node (by JSON pointer),
//! in-place edges (`$ref`, `allOf`, `not`, …: the same instance value) and descending edges
//! (`properties`, `items`, …: a value inside it). Only references within the document are
//! followed, and `$id` only at the top. The bounds are checked on the graph, in
//! [`super::bounds`].

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{Node, Step};
use crate::error::ApiError;
use crate::openai::validate::bad;

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

/// Walks `schema` (found at `param`) into its subschema graph's nodes: every subschema once, by
/// JSON pointer, with its in-place and descending edges and every `$ref` resolved; or a 400
/// naming `param` (a nested `$id`, a reference outside the schema or to nothing).
pub(super) fn build(schema: &Value, param: &str) -> Result<Vec<Node>, ApiError> {
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
    Ok(builder.nodes)
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

/// The graph under construction.
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
    /// A 400 naming the schema's param.
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

    /// [`walk`](Self::walk) for a value that is a schema (an object or a boolean); `None` for
    /// anything else (which the compiler rejects).
    fn child(&mut self, value: &'a Value, pointer: String) -> Result<Option<usize>, ApiError> {
        match value {
            Value::Object(_) | Value::Bool(_) => self.walk(value, pointer).map(Some),
            _ => Ok(None),
        }
    }

    /// The edges of object schema `idx`: `$ref`s (resolved later), in-place keywords, and
    /// keywords that descend into properties or items; definitions are walked, not linked.
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
