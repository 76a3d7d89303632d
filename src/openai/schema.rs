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
mod bounds;
mod build;

use serde_json::Value;

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
/// One subschema: where it is, and its in-place and descending edges (node indices).
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
/// The bounds above, checked without compiling anything: a 400 naming `param` (and, inside
/// the message, the JSON pointer of the offending subschema).
pub fn check(schema: &Value, param: &str) -> Result<Graph, ApiError> {
    measure(schema, param)?;
    let graph = Graph {
        nodes: build::build(schema, param)?,
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

#[cfg(test)]
mod tests;
