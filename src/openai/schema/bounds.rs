//! What a schema's graph allows: no in-place cycle and bounded in-place expansion (checked once,
//! when the request arrives), and the exact cost of validating one instance (counted before each
//! validation, against [`VALIDATION_BUDGET`](super::VALIDATION_BUDGET)).

use std::collections::HashMap;

use serde_json::Value;

use super::{Graph, Step, MAX_EXPANSION};
use crate::error::ApiError;
use crate::openai::validate::bad;

impl Graph {
    /// No cycle through in-place edges, and bounded expansion from every node.
    pub(super) fn check_in_place(&self, param: &str) -> Result<(), ApiError> {
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

/// Whether a descending edge applies to the instance value reached by `step`.
fn step_matches(edge: &Step, step: &Step) -> bool {
    match (edge, step) {
        (Step::Key(a), Step::Key(b)) => a == b,
        (Step::AnyKey, Step::Key(_)) => true,
        (Step::Index(a), Step::Index(b)) => a == b,
        (Step::AnyIndex, Step::Index(_)) => true,
        _ => false,
    }
}
