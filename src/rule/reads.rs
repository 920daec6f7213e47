//! What a rule reads: its free variables and the captures it selects from `params`.

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr};
use cel::IdedExpr;

use super::MAX_DEPTH;

/// What an expression reads: the variables no comprehension (`exists`, `all`, `map`,
/// ...) binds, and the captures it selects from `params`. The crate's own
/// `references()` counts bound names too.
/// The walk stops descending past [`MAX_DEPTH`] and says so, so it never recurses
/// deeper than that itself.
#[derive(Default)]
pub(super) struct Reads<'e> {
    bound: Vec<&'e str>,
    pub(super) free: Vec<&'e str>,
    pub(super) params: Vec<&'e str>,
    pub(super) too_deep: bool,
}

impl<'e> Reads<'e> {
    pub(super) fn visit(&mut self, expr: &'e IdedExpr, depth: usize) {
        if depth > MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        let next = depth + 1;
        match &expr.expr {
            Expr::Ident(name) => {
                if !name.starts_with('@')
                    && !self.bound.contains(&name.as_str())
                    && !self.free.contains(&name.as_str())
                {
                    self.free.push(name);
                }
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.visit(target, next);
                }
                call.args.iter().for_each(|a| self.visit(a, next));
            }
            Expr::Comprehension(c) => {
                self.visit(&c.iter_range, next);
                self.visit(&c.accu_init, next);
                let before = self.bound.len();
                self.bound.push(&c.iter_var);
                self.bound.extend(c.iter_var2.as_deref());
                self.bound.push(&c.accu_var);
                self.visit(&c.loop_cond, next);
                self.visit(&c.loop_step, next);
                self.visit(&c.result, next);
                self.bound.truncate(before);
            }
            Expr::List(list) => list.elements.iter().for_each(|e| self.visit(e, next)),
            Expr::Map(map) => self.entries(&map.entries, next),
            Expr::Struct(st) => self.entries(&st.entries, next),
            Expr::Select(sel) => {
                if matches!(&sel.operand.expr, Expr::Ident(n) if n == "params")
                    && !self.bound.contains(&"params")
                    && !self.params.contains(&sel.field.as_str())
                {
                    self.params.push(&sel.field);
                }
                self.visit(&sel.operand, next);
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entries(&mut self, entries: &'e [IdedEntryExpr], depth: usize) {
        for entry in entries {
            match &entry.expr {
                EntryExpr::StructField(f) => self.visit(&f.value, depth),
                EntryExpr::MapEntry(m) => {
                    self.visit(&m.key, depth);
                    self.visit(&m.value, depth);
                }
            }
        }
    }
}
