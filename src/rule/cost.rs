//! A rule's worst-case cost, estimated at load in the steps [`super::MAX_STEPS`] counts,
//! so that `check` refuses a rule that would run out of them on large input instead of
//! letting it deny at run time.
//!
//! Every expression costs one step each time it is evaluated, and an expression inside a
//! comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) is evaluated once per
//! item: comprehensions multiply. A comprehension over a list literal runs as many times
//! as the literal has items; over anything a rule reads (the token, the model, a call's
//! values), up to `input_items` times, the most items a list of that many bytes of JSON
//! can hold. A list literal costs its length, and `x in list` the length of the list it
//! scans. The estimate is a guide, not a proof: evaluation itself is bounded by the
//! step budget whatever the estimate said.

use cel::common::ast::{operators, EntryExpr, Expr};
use cel::IdedExpr;

/// The variables a rule reads from outside, whose lists may hold `input_items` items.
const INPUTS: [&str; 6] = ["token", "params", "query", "model", "values", "fields"];

/// The estimate of one expression: the steps it takes, and the most items the value it
/// gives may hold (what a comprehension over it iterates, or `in` scans).
#[derive(Debug, Clone, Copy, Default)]
struct Est {
    steps: u64,
    items: u64,
}

/// Estimates the steps one evaluation of `expr` may take (saturating at `u64::MAX`).
pub(super) fn estimate(expr: &IdedExpr, input_items: u64) -> u64 {
    Walk {
        input_items,
        bound: Vec::new(),
    }
    .visit(expr)
    .steps
}

struct Walk<'e> {
    input_items: u64,
    /// The names comprehensions bind around the expression being walked, with the most
    /// items their values may hold.
    bound: Vec<(&'e str, u64)>,
}

impl<'e> Walk<'e> {
    fn visit(&mut self, expr: &'e IdedExpr) -> Est {
        let est = match &expr.expr {
            Expr::Literal(_) | Expr::Unspecified => Est::default(),
            Expr::Ident(name) => Est {
                steps: 0,
                items: self.items_of(name),
            },
            Expr::Select(sel) => {
                let operand = self.visit(&sel.operand);
                Est {
                    steps: operand.steps,
                    // A field is no bigger than what holds it; `has()` gives a boolean.
                    items: if sel.test { 0 } else { operand.items },
                }
            }
            Expr::List(list) => {
                let elements = self.all(list.elements.iter());
                let len = list.elements.len() as u64;
                Est {
                    steps: elements.steps.saturating_add(len),
                    items: elements.items.max(len),
                }
            }
            Expr::Map(map) => {
                let entries = self.all(map.entries.iter().flat_map(|e| match &e.expr {
                    EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
                    EntryExpr::StructField(f) => vec![&f.value],
                }));
                let len = map.entries.len() as u64;
                Est {
                    steps: entries.steps.saturating_add(len),
                    items: entries.items.max(len),
                }
            }
            Expr::Struct(st) => self.all(st.entries.iter().filter_map(|e| match &e.expr {
                EntryExpr::StructField(f) => Some(&f.value),
                EntryExpr::MapEntry(_) => None,
            })),
            Expr::Call(call) => {
                let parts: Vec<Est> = call
                    .target
                    .iter()
                    .map(|t| &**t)
                    .chain(call.args.iter())
                    .map(|e| self.visit(e))
                    .collect();
                let steps = parts.iter().fold(0u64, |s, p| s.saturating_add(p.steps));
                let max_items = parts.iter().map(|p| p.items).max().unwrap_or(0);
                match call.func_name.as_str() {
                    // `x in list` scans the list.
                    operators::IN => Est {
                        steps: steps.saturating_add(parts.last().map_or(0, |p| p.items)),
                        items: 0,
                    },
                    operators::ADD => Est {
                        steps,
                        items: parts.iter().fold(0u64, |s, p| s.saturating_add(p.items)),
                    },
                    operators::INDEX | operators::OPT_INDEX | operators::CONDITIONAL => Est {
                        steps,
                        items: max_items,
                    },
                    // Comparisons, logic, `size`, `contains` and the like give scalars.
                    name if name.starts_with('_') || name.starts_with('@') => {
                        Est { steps, items: 0 }
                    }
                    "size" | "contains" | "startsWith" | "endsWith" | "matches" | "has" => {
                        Est { steps, items: 0 }
                    }
                    _ => Est {
                        steps,
                        items: max_items,
                    },
                }
            }
            Expr::Comprehension(c) => {
                let range = self.visit(&c.iter_range);
                let init = self.visit(&c.accu_init);
                let runs = range.items;
                let before = self.bound.len();
                self.bound.push((&c.iter_var, range.items));
                if let Some(second) = &c.iter_var2 {
                    self.bound.push((second, range.items));
                }
                self.bound.push((&c.accu_var, 0));
                let cond = self.visit(&c.loop_cond);
                let step = self.visit(&c.loop_step);
                let result = self.visit(&c.result);
                self.bound.truncate(before);
                let body = cond.steps.saturating_add(step.steps);
                Est {
                    steps: range
                        .steps
                        .saturating_add(range.items)
                        .saturating_add(init.steps)
                        .saturating_add(runs.saturating_mul(body))
                        .saturating_add(result.steps),
                    // `map` and `filter` build a list of up to one item per run.
                    items: if matches!(c.accu_init.expr, Expr::List(_)) {
                        runs.max(step.items)
                    } else {
                        0
                    },
                }
            }
        };
        Est {
            steps: est.steps.saturating_add(1),
            items: est.items,
        }
    }

    fn all(&mut self, exprs: impl Iterator<Item = &'e IdedExpr>) -> Est {
        exprs.fold(Est::default(), |acc, e| {
            let est = self.visit(e);
            Est {
                steps: acc.steps.saturating_add(est.steps),
                items: acc.items.max(est.items),
            }
        })
    }

    fn items_of(&self, name: &str) -> u64 {
        if let Some((_, items)) = self.bound.iter().rev().find(|(n, _)| *n == name) {
            *items
        } else if INPUTS.contains(&name) {
            self.input_items
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(source: &str, input_items: u64) -> u64 {
        let env = cel::Env::stdlib();
        let program = env.compile(source).unwrap();
        estimate(program.expression(), input_items)
    }

    #[test]
    fn plain_rules_cost_their_size() {
        assert!(est("token != null && token.role == 'admin'", 8192) < 20);
        assert!(est("cid == params.cid", 8192) < 10);
    }

    #[test]
    fn comprehensions_multiply() {
        let one = est("token.groups.exists(g, g == 'admin')", 8192);
        assert!((8192..100_000).contains(&one), "{one}");
        let nested = est("token.l.all(a, token.l.all(b, a == b || true))", 8192);
        assert!(nested > 8192 * 8192, "{nested}");
        // Over a literal, its length counts: the 26.7 s rule.
        let list = format!("[{}]", vec!["1"; 300].join(","));
        let three = est(
            &format!("{list}.all(a, {list}.all(b, {list}.all(c, a + b + c > 0)))"),
            8192,
        );
        assert!(three > 27_000_000, "{three}");
        let small = est("[1, 2, 3].all(a, [1, 2, 3].all(b, a != b || a == b))", 8192);
        assert!(small < 200, "{small}");
    }

    #[test]
    fn a_scan_inside_a_loop_is_quadratic() {
        let scan = est("token.groups.exists(g, g in token.admins)", 8192);
        assert!(scan > 8192 * 8192, "{scan}");
        // A literal's scan costs its length, and building it each time too.
        let literal = est("token.groups.exists(g, g in ['a', 'b', 'c'])", 1000);
        assert!((10_000..20_000).contains(&literal), "{literal}");
    }

    #[test]
    fn an_element_is_no_bigger_than_its_list() {
        // Iterating an element of a token list: bounded by what the token may hold.
        let rows = est("token.rows.all(r, r.all(c, c > 0))", 100);
        assert!((10_000..100_000).contains(&rows), "{rows}");
        // Iterating what a map built: up to one item per run.
        let mapped = est("[1, 2, 3].map(x, x * 2).all(y, y > 0)", 8192);
        assert!(mapped < 100, "{mapped}");
    }
}
