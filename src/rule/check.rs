//! Checking a rule against what is known of its resource before it ever runs: CEL is
//! dynamically typed, so a misspelt model field, a capture compared with a number or a
//! rule that gives a string would only ever deny, at run time. The check infers a
//! coarse type for each expression (unknown where the value comes from a token or a
//! comprehension) and reports what can only fail:
//! - `model.<field>` or `values.<field>` naming no field of the resource (with "did you
//!   mean"), and `model.<field>.<key>` naming no key of the data's declared shape;
//! - `==`, `!=`, `<`, ... between values of known, different kinds (a string and a
//!   number, say): always false or an error, never what was meant;
//! - a rule whose value is known not to be a boolean.

use cel::common::ast::{operators, Expr, LiteralValue};
use cel::IdedExpr;

use super::{Rule, MAX_DEPTH};
use crate::field::FieldType;

/// What a rule's resource declares: its fields and their types (`None`: a field whose
/// type is in error, which may hold anything), and the keys of its data fields that
/// declare a shape.
#[derive(Default)]
pub struct Schema<'a> {
    pub fields: Vec<(&'a str, Option<FieldType>)>,
    pub keys: Vec<(&'a str, &'a Keys)>,
}

/// The keys a data value declares (`fields:`): each with its type (`None`: in error),
/// and a data key's own keys when it declares them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keys(pub Vec<(String, Option<FieldType>, Option<Keys>)>);

/// A coarse CEL type. `Dyn` is anything (a token claim, a comprehension variable): it
/// never makes an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Number,
    String,
    Bytes,
    Null,
    List,
    Map,
    Dyn,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "a boolean",
            Ty::Number => "a number",
            Ty::String => "a string",
            Ty::Bytes => "bytes",
            Ty::Null => "null",
            Ty::List => "a list",
            Ty::Map => "a map",
            Ty::Dyn => "any value",
        }
    }

    /// The type a field's value has (null aside: every field can be null).
    fn of_field(ty: FieldType) -> Ty {
        match ty {
            FieldType::String | FieldType::Ref => Ty::String,
            FieldType::Integer | FieldType::Number => Ty::Number,
            FieldType::Boolean => Ty::Bool,
            FieldType::Data => Ty::Dyn,
        }
    }

    /// True when two values of these types can be equal or ordered: the same kind, or
    /// one unknown, or one null (fields and `query` can be null).
    fn comparable(self, other: Ty) -> bool {
        self == other
            || [self, other]
                .iter()
                .any(|t| matches!(t, Ty::Dyn | Ty::Null))
    }
}

impl Rule {
    /// Everything in the rule that can only deny, given `schema`; empty when the rule
    /// is fine.
    pub fn check(&self, schema: &Schema) -> Vec<String> {
        let mut check = Check {
            schema,
            bound: Vec::new(),
            problems: Vec::new(),
        };
        let ty = check.ty(self.program.expression(), 0);
        if !matches!(ty, Ty::Bool | Ty::Dyn) {
            check.problems.push(format!(
                "the rule gives {}, not true or false, so it always denies",
                ty.name()
            ));
        }
        check.problems
    }
}

struct Check<'s, 'a, 'e> {
    schema: &'s Schema<'a>,
    /// Names bound by comprehensions (`exists(r, ...)`): unknown values.
    bound: Vec<&'e str>,
    problems: Vec<String>,
}

impl<'e> Check<'_, '_, 'e> {
    fn ty(&mut self, expr: &'e IdedExpr, depth: usize) -> Ty {
        if depth > MAX_DEPTH {
            return Ty::Dyn; // Refused at compile already.
        }
        let next = depth + 1;
        match &expr.expr {
            Expr::Literal(lit) => match lit {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => {
                    Ty::Number
                }
                LiteralValue::String(_) => Ty::String,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Null => Ty::Null,
            },
            Expr::Ident(name) if self.bound.contains(&name.as_str()) => Ty::Dyn,
            Expr::Ident(name) => match name.as_str() {
                "cid" => Ty::String,
                "params" | "model" | "values" => Ty::Map,
                "fields" => Ty::List,
                // `query` is a string or null; `token` anything.
                _ => Ty::Dyn,
            },
            Expr::Select(sel) => {
                let operand = self.unbound_ident(&sel.operand);
                if sel.test {
                    // `has(x.f)`: a boolean, and no read of a missing field.
                    self.ty(&sel.operand, next);
                    return Ty::Bool;
                }
                match operand {
                    Some("params") => Ty::String,
                    Some(var @ ("model" | "values")) => self.field(var, &sel.field),
                    _ => {
                        self.ty(&sel.operand, next);
                        self.key(&sel.operand, &sel.field)
                    }
                }
            }
            Expr::Call(call) => {
                let target = call.target.as_deref().map(|t| self.ty(t, next));
                let args: Vec<Ty> = call.args.iter().map(|a| self.ty(a, next)).collect();
                self.call(&call.func_name, target, &args, &call.args)
            }
            Expr::Comprehension(c) => {
                self.ty(&c.iter_range, next);
                let accu = self.ty(&c.accu_init, next);
                let before = self.bound.len();
                self.bound.push(&c.iter_var);
                self.bound.extend(c.iter_var2.as_deref());
                self.bound.push(&c.accu_var);
                self.ty(&c.loop_cond, next);
                self.ty(&c.loop_step, next);
                let result = self.ty(&c.result, next);
                self.bound.truncate(before);
                // `all`/`exists` start from a boolean and give one; `map`/`filter` a list.
                match (accu, result) {
                    (Ty::Bool, _) => Ty::Bool,
                    (Ty::List, _) => Ty::List,
                    (_, r) => r,
                }
            }
            Expr::List(list) => {
                for e in &list.elements {
                    self.ty(e, next);
                }
                Ty::List
            }
            Expr::Map(_) | Expr::Struct(_) => Ty::Map,
            Expr::Unspecified => Ty::Dyn,
        }
    }

    /// The name of an identifier no comprehension binds.
    fn unbound_ident(&self, expr: &'e IdedExpr) -> Option<&'e str> {
        match &expr.expr {
            Expr::Ident(n) if !self.bound.contains(&n.as_str()) => Some(n),
            _ => None,
        }
    }

    /// `model.<name>` or `values.<name>` (`var`): the field's type.
    fn field(&mut self, var: &str, name: &str) -> Ty {
        if let Some((_, ty)) = self.schema.fields.iter().find(|(f, _)| *f == name) {
            return ty.map_or(Ty::Dyn, Ty::of_field);
        }
        let names: Vec<&str> = self.schema.fields.iter().map(|(f, _)| *f).collect();
        let hint = match crate::config::suggestion(name, &names) {
            Some(s) => format!("; did you mean `{var}.{s}`?"),
            None if names.is_empty() => " (it has no fields)".to_string(),
            None => format!(" (its fields: {})", names.join(", ")),
        };
        self.problems.push(format!(
            "`{var}.{name}` is not a field of this resource{hint}"
        ));
        Ty::Dyn
    }

    /// `model.<field>.<key>...` or `values.<field>.<key>...`: the path of field and
    /// keys `parent` reads (`None`: it reads something else).
    fn data_path(&self, parent: &'e IdedExpr) -> Option<(&'e str, Vec<&'e str>)> {
        let Expr::Select(sel) = &parent.expr else {
            return None;
        };
        if sel.test {
            return None;
        }
        match self.unbound_ident(&sel.operand) {
            Some(var @ ("model" | "values")) => Some((var, vec![sel.field.as_str()])),
            Some(_) => None,
            None => {
                let (var, mut path) = self.data_path(&sel.operand)?;
                path.push(&sel.field);
                Some((var, path))
            }
        }
    }

    /// `<parent>.<name>` where `parent` is a data value of a declared shape: the key's
    /// type, or a problem when the shape declares no such key. Anything else is of any
    /// type (a parent that is not a declared key was said where it is read).
    fn key(&mut self, parent: &'e IdedExpr, name: &str) -> Ty {
        let Some((var, path)) = self.data_path(parent) else {
            return Ty::Dyn;
        };
        let Some((_, mut keys)) = self.schema.keys.iter().find(|(f, _)| *f == path[0]) else {
            return Ty::Dyn;
        };
        for k in &path[1..] {
            match keys.0.iter().find(|(n, _, _)| n.as_str() == *k) {
                Some((_, _, Some(inner))) => keys = inner,
                _ => return Ty::Dyn,
            }
        }
        if let Some((_, ty, _)) = keys.0.iter().find(|(n, _, _)| n == name) {
            return ty.map_or(Ty::Dyn, Ty::of_field);
        }
        let parent = format!("{var}.{}", path.join("."));
        let names: Vec<&str> = keys.0.iter().map(|(n, _, _)| n.as_str()).collect();
        let hint = match crate::config::suggestion(name, &names) {
            Some(s) => format!("; did you mean `{parent}.{s}`?"),
            None => format!(" (its keys: {})", names.join(", ")),
        };
        self.problems.push(format!(
            "`{parent}.{name}` is not a key the data of `{parent}` declares{hint}"
        ));
        Ty::Dyn
    }

    fn call(&mut self, func: &str, target: Option<Ty>, args: &[Ty], exprs: &'e [IdedExpr]) -> Ty {
        use operators::*;
        match func {
            LOGICAL_AND | LOGICAL_OR | LOGICAL_NOT | NOT_STRICTLY_FALSE | IN => Ty::Bool,
            EQUALS | NOT_EQUALS | LESS | LESS_EQUALS | GREATER | GREATER_EQUALS => {
                if let ([a, b], [ea, eb]) = (args, exprs) {
                    if !a.comparable(*b) {
                        self.problems.push(format!(
                            "{} ({}) is compared with {} ({}): they can never be equal or ordered, so this is always false or an error",
                            show(ea),
                            a.name(),
                            show(eb),
                            b.name()
                        ));
                    }
                }
                Ty::Bool
            }
            ADD => match args {
                [a, b] if a == b && matches!(a, Ty::Number | Ty::String | Ty::List) => *a,
                _ => Ty::Dyn,
            },
            SUBSTRACT | MULTIPLY | DIVIDE | MODULO | NEGATE => {
                if args.iter().all(|t| *t == Ty::Number) {
                    Ty::Number
                } else {
                    Ty::Dyn
                }
            }
            CONDITIONAL => match args {
                [_, a, b] if a == b => *a,
                _ => Ty::Dyn,
            },
            "size" | "int" | "uint" | "double" => Ty::Number,
            "string" => Ty::String,
            "contains" | "startsWith" | "endsWith" | "matches" => Ty::Bool,
            // Indexing (`params['cid']`), unknown functions, and methods on unknown
            // values: nothing is known.
            _ => {
                let _ = target;
                Ty::Dyn
            }
        }
    }
}

/// A short rendering of simple expressions for messages: `cid`, `params.cid`,
/// `model.items`, literals; anything else is "an expression".
fn show(expr: &IdedExpr) -> String {
    fn path(expr: &IdedExpr) -> Option<String> {
        match &expr.expr {
            Expr::Ident(n) => Some(n.clone()),
            Expr::Select(s) if !s.test => Some(format!("{}.{}", path(&s.operand)?, s.field)),
            _ => None,
        }
    }
    if let Some(p) = path(expr) {
        return format!("`{p}`");
    }
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => format!("`{:?}`", s.inner()),
        Expr::Literal(LiteralValue::Int(i)) => format!("`{}`", i.inner()),
        Expr::Literal(LiteralValue::UInt(u)) => format!("`{}u`", u.inner()),
        Expr::Literal(LiteralValue::Double(d)) => format!("`{}`", d.inner()),
        Expr::Literal(LiteralValue::Boolean(b)) => format!("`{}`", b.inner()),
        _ => "an expression".to_string(),
    }
}

#[cfg(test)]
mod tests;
