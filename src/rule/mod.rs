//! Rules: CEL expressions compiled at load and evaluated per request over `cid`,
//! `token`, `params`, `query` and `model`, and in a call's rules over `values` and
//! `fields` too. Anything but `true` denies.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program};
use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value};

/// The variables a rule may read. `values` and `fields` describe a call: only the
/// rules of a call (`access.call`, a field's `writable`) may read them.
pub const VARIABLES: [&str; 7] = [
    "cid", "token", "params", "query", "model", "values", "fields",
];
const CID: usize = 0;
const TOKEN: usize = 1;
const PARAMS: usize = 2;
const QUERY: usize = 3;
const MODEL: usize = 4;
const VALUES: usize = 5;
const FIELDS: usize = 6;

mod check;
mod cost;
mod native;
mod reads;

pub use check::{Keys, Schema};
use native::Native;
use reads::Reads;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled CEL access rule.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<Program>,
    /// Which of [`VARIABLES`] the rule reads, in that order; only those are bound.
    reads: [bool; 7],
    /// The captures the rule selects as `params.<name>`.
    params: Vec<String>,
    /// The rule without CEL, when it has one of the common shapes (see [`native`]).
    native: Option<Native>,
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
    /// The values a call writes, by field (see [`crate::config::Resource::call_values`]);
    /// `None` where there is no call (an access request): `values` is then `{}` and
    /// `fields` `[]`.
    pub values: Option<&'a Map<String, Value>>,
}

impl Rule {
    /// Compiles a rule for input of the default sizes (see [`Rule::compile_for`]).
    pub fn compile(source: &str) -> Result<Rule, RuleError> {
        Rule::compile_for(source, input_items(crate::config::DEFAULT_MAX_TOKEN_BYTES))
    }

    /// Compiles a rule whose input lists (from the token, the model, a call) hold at most
    /// `input_items` items: a rule whose estimated cost (see [`cost`]) passes
    /// [`MAX_STEPS`] is refused.
    pub fn compile_for(source: &str, input_items: u64) -> Result<Rule, RuleError> {
        if source.len() > MAX_LENGTH {
            return Err(RuleError {
                message: format!(
                    "rule is {} bytes long; at most {MAX_LENGTH}: split it into simpler rules",
                    source.len()
                ),
                pos: None,
            });
        }
        if nesting(source) > MAX_NESTING {
            return Err(RuleError {
                message: format!("rule nests brackets deeper than {MAX_NESTING} levels"),
                pos: None,
            });
        }
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
        let mut walk = Reads::default();
        walk.visit(program.expression(), 1);
        if walk.too_deep {
            return Err(RuleError {
                message: format!(
                    "rule is nested deeper than {MAX_DEPTH} operators and brackets; split it into simpler rules"
                ),
                pos: None,
            });
        }
        let mut free = walk.free;
        free.sort_unstable();
        if let Some(var) = free.iter().find(|v| !VARIABLES.contains(v)) {
            // `yes`, `on`: a YAML 1.1 boolean, which YAML 1.2 reads as a string.
            let hint = match var.to_ascii_lowercase().as_str() {
                "yes" | "no" | "on" | "off" | "y" | "n" if source.trim() == *var => {
                    "; YAML reads only true and false as booleans: write true or false"
                }
                _ => "",
            };
            return Err(RuleError {
                message: format!(
                    "rule reads unknown variable `{var}` (rules can read {}){hint}",
                    VARIABLES.join(", ")
                ),
                pos: None,
            });
        }
        let steps = cost::estimate(program.expression(), input_items);
        if steps > MAX_STEPS {
            return Err(RuleError {
                message: format!(
                    "rule may take {} steps in one evaluation, over the budget of {MAX_STEPS}: \
                     comprehensions (all, exists, exists_one, map, filter) multiply, and a list \
                     read from the token, the model or a call may hold {input_items} items; \
                     iterate smaller lists, test membership with `x in list`, lower \
                     state.max_token_bytes, or split the rule",
                    if steps == u64::MAX {
                        "more than 10^19".to_string()
                    } else {
                        steps.to_string()
                    }
                ),
                pos: None,
            });
        }
        let reads = VARIABLES.map(|v| free.contains(&v));
        let params = walk.params.iter().map(|p| p.to_string()).collect();
        let native = Native::of(program.expression());
        Ok(Rule {
            source: source.to_string(),
            program: Arc::new(program),
            reads,
            params,
            native,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The captures the rule reads as `params.<name>`.
    pub fn params_read(&self) -> &[String] {
        &self.params
    }

    pub fn reads_token(&self) -> bool {
        self.reads[TOKEN]
    }

    pub fn reads_model(&self) -> bool {
        self.reads[MODEL]
    }

    /// The call variables (`values`, `fields`) the rule reads, in that order.
    pub fn call_variables_read(&self) -> Vec<&'static str> {
        [VALUES, FIELDS]
            .into_iter()
            .filter(|&i| self.reads[i])
            .map(|i| VARIABLES[i])
            .collect()
    }

    /// True when the rule reads what a call writes (`values` or `fields`).
    pub fn reads_call(&self) -> bool {
        self.reads[VALUES] || self.reads[FIELDS]
    }

    /// Evaluates the rule: `Ok(true)` grants, `Ok(false)` denies, `Err` is a rule that
    /// failed at run time (the caller denies and logs it). A rule of a common shape is
    /// evaluated natively, with the same result.
    pub fn eval(&self, input: &RuleInput) -> Result<bool, String> {
        match self.native.as_ref().and_then(|n| n.eval(input)) {
            Some(b) => Ok(b),
            None => self.eval_cel(input),
        }
    }

    /// True when the rule is evaluated without CEL (for a rule of a resource, whose
    /// captures the compiler checked, always).
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// Evaluates the rule with CEL.
    fn eval_cel(&self, input: &RuleInput) -> Result<bool, String> {
        // Converting values into CEL costs more than most rules do, so only the
        // variables the rule reads are bound.
        let mut ctx = Context::with_env(ENV.clone());
        if self.reads[CID] {
            ctx.add_variable_from_value(VARIABLES[CID], input.cid.to_string());
        }
        if self.reads[TOKEN] {
            let token = to_cel(input.token.unwrap_or(&Value::Null));
            ctx.add_variable_from_value(VARIABLES[TOKEN], token);
        }
        if self.reads[PARAMS] {
            let params: HashMap<String, String> = input
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ctx.add_variable_from_value(VARIABLES[PARAMS], params);
        }
        if self.reads[QUERY] {
            let query = input
                .query
                .map_or(cel::Value::Null, |q| q.to_string().into());
            ctx.add_variable_from_value(VARIABLES[QUERY], query);
        }
        if self.reads[MODEL] {
            let model = to_cel(input.model.unwrap_or(&Value::Null));
            ctx.add_variable_from_value(VARIABLES[MODEL], model);
        }
        let no_call = Map::new();
        let values = input.values.unwrap_or(&no_call);
        if self.reads[VALUES] {
            ctx.add_variable_from_value(VARIABLES[VALUES], to_cel_map(values));
        }
        if self.reads[FIELDS] {
            let mut names: Vec<&String> = values.keys().collect();
            names.sort_unstable();
            let names = names
                .into_iter()
                .map(|n| cel::Value::String(Arc::new(n.clone())))
                .collect();
            ctx.add_variable_from_value(VARIABLES[FIELDS], cel::Value::List(Arc::new(names)));
        }
        let (result, spent) = cel::budget::run(MAX_STEPS, || self.program.execute(&ctx));
        if spent.exhausted {
            OVER_BUDGET.inc();
            return Err(format!(
                "rule ran out of steps: its evaluation passed the budget of {MAX_STEPS} steps"
            ));
        }
        match result {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("rule gave {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// JSON as CEL values. Whole numbers become `int` (not `uint`, as serde would make of
/// non-negative ones), so `model.size + 1` works with CEL's int literals.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => to_cel_map(map),
    }
}

fn to_cel_map(map: &Map<String, Value>) -> cel::Value {
    let map: HashMap<cel::objects::Key, cel::Value> = map
        .iter()
        .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
        .collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

/// The steps one evaluation may take (see `cel::budget`): each expression evaluated
/// costs one, plus the length of the list or map it gives (a string's, in 64-byte
/// units). Past it the rule errors, which denies. A budget's worth takes a few
/// milliseconds of one core (docs/rules.md gives the measured figure).
pub const MAX_STEPS: u64 = 100_000;

/// The most items a list in `bytes` of JSON can hold (`[0,0,...]`: two bytes an item).
pub fn input_items(bytes: usize) -> u64 {
    (bytes / 2) as u64
}

/// Evaluations that ran out of steps, since start (`connres_rule_budget_exceeded_total`).
pub static OVER_BUDGET: LazyLock<Counter> = LazyLock::new(Counter::default);

/// How deeply brackets may nest in a rule. The CEL parser recurses per level and would
/// exhaust a thread's stack long before its own limit in unoptimised builds.
const MAX_NESTING: usize = 32;

/// How long a rule may be. The parser builds its tree recursively too: this bounds
/// how deep that goes (a few thousand levels are fine on a 2 MiB stack in an optimised
/// build) before the depth check below can look at the tree.
const MAX_LENGTH: usize = 4096;

/// How deep a rule's expression tree may be. Evaluation recurses per level, and a flat
/// chain such as `1 + 1 + ... + 1` parses into a tree as deep as it is long, without a
/// single bracket: a few thousand levels exhaust the stack at the first request (an
/// unoptimised build needs about 35 KiB a level). Real rules are a handful of levels
/// deep.
const MAX_DEPTH: usize = 32;

fn nesting(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The parser's message without its prefix and without the list of every token it
/// would have accepted, which is long and says little to a person.
fn tidy_parse_error(msg: &str) -> String {
    if msg.contains("Recursion limit") {
        return "expression nested too deeply".to_string();
    }
    let msg = msg.trim_start_matches("Syntax error: ");
    let msg = msg.split(" expecting ").next().unwrap_or(msg);
    let msg = msg.replace("'<EOF>'", "end of expression");
    match msg.strip_prefix("mismatched input ") {
        Some(rest) => format!("unexpected {rest}"),
        None => msg,
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
mod tests;
