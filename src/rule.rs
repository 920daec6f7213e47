//! Access rules: CEL expressions compiled at load and evaluated per request over
//! `cid`, `token`, `params`, `query` and `model`. Anything but `true` denies.

use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr};
use cel::{Context, Env, IdedExpr, Program};
use serde_json::Value;

/// The variables a rule may read.
pub const VARIABLES: [&str; 5] = ["cid", "token", "params", "query", "model"];
const CID: usize = 0;
const TOKEN: usize = 1;
const PARAMS: usize = 2;
const QUERY: usize = 3;
const MODEL: usize = 4;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled CEL access rule.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<Program>,
    /// Which of [`VARIABLES`] the rule reads, in that order; only those are bound.
    reads: [bool; 5],
}

/// Why a rule was refused at load; `pos` is the 1-based line and column in the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub message: String,
    pub pos: Option<(usize, usize)>,
}

/// The values a rule is evaluated over. `model` is only built when the rule reads it.
pub struct RuleInput<'a> {
    pub cid: &'a str,
    pub token: Option<&'a Value>,
    pub params: &'a [(&'a str, &'a str)],
    pub query: Option<&'a str>,
    pub model: Option<&'a Value>,
}

impl Rule {
    pub fn compile(source: &str) -> Result<Rule, RuleError> {
        let program = ENV.compile(source).map_err(|errs| {
            let first = errs.errors.first();
            RuleError {
                message: format!(
                    "CEL syntax: {}",
                    first.map_or("invalid expression".to_string(), |e| tidy_parse_error(
                        &e.msg
                    ))
                ),
                // The parser's positions are 1-based already.
                pos: first.and_then(|e| {
                    (e.pos.0 > 0 && e.pos.1 > 0).then_some((e.pos.0 as usize, e.pos.1 as usize))
                }),
            }
        })?;
        let mut free = Vec::new();
        free_variables(program.expression(), &mut Vec::new(), &mut free);
        free.sort_unstable();
        if let Some(var) = free.iter().find(|v| !VARIABLES.contains(v)) {
            return Err(RuleError {
                message: format!(
                    "rule reads unknown variable `{var}` (rules can read {})",
                    VARIABLES.join(", ")
                ),
                pos: None,
            });
        }
        let reads = VARIABLES.map(|v| free.contains(&v));
        Ok(Rule {
            source: source.to_string(),
            program: Arc::new(program),
            reads,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn reads_token(&self) -> bool {
        self.reads[TOKEN]
    }

    pub fn reads_model(&self) -> bool {
        self.reads[MODEL]
    }

    /// Evaluates the rule: `Ok(true)` grants, `Ok(false)` denies, `Err` is a rule that
    /// failed at run time (the caller denies and logs it).
    pub fn eval(&self, input: &RuleInput) -> Result<bool, String> {
        // Converting values into CEL costs more than most rules do, so only the
        // variables the rule reads are bound.
        let mut ctx = Context::with_env(ENV.clone());
        let err = |e: cel::SerializationError| e.to_string();
        if self.reads[CID] {
            ctx.add_variable_from_value(VARIABLES[CID], input.cid.to_string());
        }
        if self.reads[TOKEN] {
            ctx.add_variable(VARIABLES[TOKEN], input.token.unwrap_or(&Value::Null))
                .map_err(err)?;
        }
        if self.reads[PARAMS] {
            let params: std::collections::HashMap<&str, &str> =
                input.params.iter().copied().collect();
            ctx.add_variable(VARIABLES[PARAMS], params).map_err(err)?;
        }
        if self.reads[QUERY] {
            ctx.add_variable(VARIABLES[QUERY], input.query)
                .map_err(err)?;
        }
        if self.reads[MODEL] {
            ctx.add_variable(VARIABLES[MODEL], input.model.unwrap_or(&Value::Null))
                .map_err(err)?;
        }
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("rule gave {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The parser's message without its prefix and without the list of every token it
/// would have accepted, which is long and says little to a person.
fn tidy_parse_error(msg: &str) -> String {
    let msg = msg.trim_start_matches("Syntax error: ");
    let msg = msg.split(" expecting ").next().unwrap_or(msg);
    let msg = msg.replace("'<EOF>'", "end of expression");
    match msg.strip_prefix("mismatched input ") {
        Some(rest) => format!("unexpected {rest}"),
        None => msg,
    }
}

/// Collects the variables an expression reads that no comprehension (`exists`, `all`,
/// `map`, ...) binds. The crate's own `references()` counts bound names too.
fn free_variables<'e>(expr: &'e IdedExpr, bound: &mut Vec<&'e str>, out: &mut Vec<&'e str>) {
    let entries =
        |entries: &'e [IdedEntryExpr], bound: &mut Vec<&'e str>, out: &mut Vec<&'e str>| {
            for entry in entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => free_variables(&f.value, bound, out),
                    EntryExpr::MapEntry(m) => {
                        free_variables(&m.key, bound, out);
                        free_variables(&m.value, bound, out);
                    }
                }
            }
        };
    match &expr.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@')
                && !bound.contains(&name.as_str())
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, bound, out);
            }
            for arg in &call.args {
                free_variables(arg, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let before = bound.len();
            bound.push(&c.iter_var);
            bound.extend(c.iter_var2.as_deref());
            bound.push(&c.accu_var);
            free_variables(&c.loop_cond, bound, out);
            free_variables(&c.loop_step, bound, out);
            free_variables(&c.result, bound, out);
            bound.truncate(before);
        }
        Expr::List(list) => {
            for e in &list.elements {
                free_variables(e, bound, out);
            }
        }
        Expr::Map(map) => entries(&map.entries, bound, out),
        Expr::Struct(st) => entries(&st.entries, bound, out),
        Expr::Select(sel) => free_variables(&sel.operand, bound, out),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rule({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input<'a>(
        cid: &'a str,
        token: Option<&'a Value>,
        params: &'a [(&'a str, &'a str)],
    ) -> RuleInput<'a> {
        RuleInput {
            cid,
            token,
            params,
            query: None,
            model: None,
        }
    }

    #[test]
    fn own_connection_rule() {
        let r = Rule::compile("cid == params.cid").unwrap();
        assert_eq!(r.eval(&input("c1", None, &[("cid", "c1")])), Ok(true));
        assert_eq!(r.eval(&input("c2", None, &[("cid", "c1")])), Ok(false));
        assert!(!r.reads_token());
    }

    #[test]
    fn token_rules() {
        let r = Rule::compile("cid == params.cid && token != null").unwrap();
        assert!(r.reads_token());
        assert_eq!(r.eval(&input("c1", None, &[("cid", "c1")])), Ok(false));
        let token = json!({"role": "admin"});
        assert_eq!(
            r.eval(&input("c1", Some(&token), &[("cid", "c1")])),
            Ok(true)
        );
        let r = Rule::compile("token.role == 'admin'").unwrap();
        assert_eq!(r.eval(&input("c1", Some(&token), &[])), Ok(true));
    }

    #[test]
    fn runtime_errors_and_non_booleans_are_errors() {
        let r = Rule::compile("token.role == 'admin'").unwrap();
        assert!(r.eval(&input("c1", None, &[])).is_err());
        let r = Rule::compile("params.cid").unwrap();
        assert!(r.eval(&input("c1", None, &[("cid", "c1")])).is_err());
    }

    #[test]
    fn model_and_query() {
        let r = Rule::compile("model.owner == cid && query == null").unwrap();
        assert!(r.reads_model());
        let model = json!({"owner": "c1"});
        let mut i = input("c1", None, &[]);
        i.model = Some(&model);
        assert_eq!(r.eval(&i), Ok(true));
        i.query = Some("x=1");
        assert_eq!(r.eval(&i), Ok(false));
    }

    #[test]
    fn comprehension_variables_are_not_unknown() {
        let r = Rule::compile("token.roles.exists(r, r == 'admin')").unwrap();
        let token = json!({"roles": ["user", "admin"]});
        assert_eq!(r.eval(&input("c1", Some(&token), &[])), Ok(true));
    }

    #[test]
    fn rejects_bad_syntax_and_unknown_variables() {
        let e = Rule::compile("cid == )").unwrap_err();
        assert!(
            e.message.starts_with("CEL syntax: unexpected ')'"),
            "{}",
            e.message
        );
        assert_eq!(e.pos, Some((1, 8)), "the column of `)`");
        let e = Rule::compile("user == 1").unwrap_err();
        assert!(
            e.message.contains("unknown variable `user`"),
            "{}",
            e.message
        );
    }
}
