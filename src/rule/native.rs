//! The common rule shapes, recognised at load and evaluated without CEL: `true`,
//! `false`, `cid == params.X` (either way round), `token != null`, `token == null`, and
//! `&&`, `||`, `!` and brackets over these. None of these parts can fail at run time
//! (the compiler refuses `params.X` unless X is a capture, and a capture is always a
//! string), so each gives exactly what CEL gives: a boolean, with `&&` and `||` plain
//! logic. Anything else is left to CEL.

use cel::common::ast::{operators, Expr, LiteralValue};
use cel::IdedExpr;

use super::RuleInput;

/// A rule in one of the shapes above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Native {
    Const(bool),
    /// `cid == params.<capture>`
    CidIs(String),
    /// `token == null` (`false`: `token != null`)
    TokenNull(bool),
    Not(Box<Native>),
    And(Box<Native>, Box<Native>),
    Or(Box<Native>, Box<Native>),
}

impl Native {
    /// The native form of an expression, if it has one.
    pub(super) fn of(expr: &IdedExpr) -> Option<Native> {
        Some(match &expr.expr {
            Expr::Literal(LiteralValue::Boolean(b)) => Native::Const(**b),
            Expr::Call(call) if call.target.is_none() => {
                let args = &call.args;
                match (call.func_name.as_str(), args.len()) {
                    (operators::LOGICAL_AND, 2) => Native::And(
                        Box::new(Native::of(&args[0])?),
                        Box::new(Native::of(&args[1])?),
                    ),
                    (operators::LOGICAL_OR, 2) => Native::Or(
                        Box::new(Native::of(&args[0])?),
                        Box::new(Native::of(&args[1])?),
                    ),
                    (operators::LOGICAL_NOT, 1) => Native::Not(Box::new(Native::of(&args[0])?)),
                    (operators::EQUALS | operators::NOT_EQUALS, 2) => {
                        let eq = call.func_name == operators::EQUALS;
                        let atom = comparison(&args[0], &args[1])
                            .or_else(|| comparison(&args[1], &args[0]))?;
                        match atom {
                            Native::TokenNull(_) => Native::TokenNull(eq),
                            other if eq => other,
                            other => Native::Not(Box::new(other)),
                        }
                    }
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// The rule's result; `None` only when a capture it compares is not among the
    /// params (never for a rule of a resource: the compiler refuses it), which CEL
    /// then answers with its error.
    pub(super) fn eval(&self, input: &RuleInput) -> Option<bool> {
        Some(match self {
            Native::Const(b) => *b,
            Native::CidIs(name) => {
                let (_, value) = input.params.iter().find(|(n, _)| n == name)?;
                *value == input.cid
            }
            Native::TokenNull(null) => *null == input.token.is_none_or(|t| t.is_null()),
            Native::Not(a) => !a.eval(input)?,
            Native::And(a, b) => a.eval(input)? && b.eval(input)?,
            Native::Or(a, b) => a.eval(input)? || b.eval(input)?,
        })
    }
}

/// `cid == params.X` or `token == null` read left to right (the caller tries both
/// orders); the token's form says `==`, the caller makes it `!=`.
fn comparison(left: &IdedExpr, right: &IdedExpr) -> Option<Native> {
    match (&left.expr, &right.expr) {
        (Expr::Ident(cid), Expr::Select(sel))
            if cid == "cid"
                && !sel.test
                && matches!(&sel.operand.expr, Expr::Ident(p) if p == "params") =>
        {
            Some(Native::CidIs(sel.field.clone()))
        }
        (Expr::Ident(token), Expr::Literal(LiteralValue::Null)) if token == "token" => {
            Some(Native::TokenNull(true))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Rule, RuleInput};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn native(source: &str) -> bool {
        Rule::compile(source).unwrap().native.is_some()
    }

    #[test]
    fn recognises_the_common_shapes_only() {
        for s in [
            "true",
            "false",
            "cid == params.cid",
            "params.cid == cid",
            "cid != params.cid",
            "token != null",
            "null != token",
            "token == null",
            "cid == params.cid && token != null",
            "(cid == params.cid || false) && !(token == null)",
        ] {
            assert!(native(s), "{s}");
        }
        for s in [
            "token.role == 'admin'",
            "cid == 'c1'",
            "has(params.cid)",
            "cid == params.cid && token.role == 'admin'",
            "model.owner == cid",
            "query == null",
            "params.cid == params.cid",
            "cid == cid",
            "1 == 1",
            "token",
        ] {
            assert!(!native(s), "{s}");
        }
    }

    /// Expressions of the native shapes and of their near misses.
    fn expr() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("cid == params.cid".to_string()),
            Just("params.room == cid".to_string()),
            Just("cid != params.room".to_string()),
            Just("token != null".to_string()),
            Just("null == token".to_string()),
            Just("token == null".to_string()),
            // Not native: they go to CEL, and may fail there.
            Just("token.role == 'admin'".to_string()),
            Just("cid == 'c1'".to_string()),
        ];
        leaf.prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || ({b})")),
                inner.prop_map(|a| format!("!({a})")),
            ]
        })
    }

    fn token() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(json!({"role": "admin"}))),
            Just(Some(json!({"role": "user", "n": 1}))),
            Just(Some(json!("text"))),
            Just(Some(json!([]))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Native evaluation gives exactly CEL's result: the same boolean, and an error
        /// where CEL has one (a rule with a non-native part is all CEL's).
        #[test]
        fn native_evaluation_is_cel_evaluation(
            source in expr(),
            cid in prop_oneof![Just("c1"), Just("c2"), Just("")],
            cid_param in prop_oneof![Just("c1"), Just("c2")],
            room in prop_oneof![Just("c1"), Just("lobby")],
            token in token(),
        ) {
            let rule = Rule::compile(&source).unwrap();
            let params = [("cid", cid_param), ("room", room)];
            let input = RuleInput {
                cid,
                token: token.as_ref(),
                params: &params,
                query: None,
                model: None,
                values: None,
            };
            let cel = rule.eval_cel(&input);
            prop_assert_eq!(rule.eval(&input), cel.clone(), "{}", source);
            if let Some(n) = &rule.native {
                prop_assert_eq!(n.eval(&input).ok_or(()), cel.map_err(|_| ()), "{}", source);
            }
        }
    }
}
