//! How long rules take at the step budget: `cargo run --release --example rule_cost`.
//! Each line: a rule, the input it runs on, the steps it took (or that it ran out), and
//! the median time of an evaluation over a few runs.

use std::time::{Duration, Instant};

use connres::rule::{Rule, RuleInput, MAX_STEPS};
use serde_json::{json, Value};

fn main() {
    let numbers = |n: usize| json!({ "l": (0..n).collect::<Vec<_>>() });
    let words = |n: usize| json!({ "l": (0..n).map(|i| format!("group-{i}")).collect::<Vec<_>>() });
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "nested all, 3,000 numbers",
            "token.l.all(a, token.l.all(b, a == b || true))".into(),
            numbers(3000),
        ),
        (
            "scan inside a loop, 5,000 numbers",
            "token.l.exists(a, a in token.l && a < 0)".into(),
            numbers(5000),
        ),
        (
            "three nested all, 300 numbers",
            "token.l.all(a, token.l.all(b, token.l.all(c, a + b + c > 0)))".into(),
            numbers(300),
        ),
        (
            "one loop, 8,192 numbers",
            "token.l.exists(a, a == -1)".into(),
            numbers(8192),
        ),
        (
            "one loop with a literal scan, 8,192 words",
            "token.l.exists(g, g in ['admin', 'ops', 'dev'])".into(),
            words(8192),
        ),
        (
            "string functions, 8,192 words",
            "token.l.exists(g, g.startsWith('x') || g.contains('zz') || g.matches('^q+$'))".into(),
            words(8192),
        ),
        (
            "a regex from every item, 8,192 words",
            "token.l.exists(g, 'x'.matches(g))".into(),
            words(8192),
        ),
        (
            "a regex that compiles big",
            "'aaa'.matches(token.p)".into(),
            json!({ "p": "((a{100}){100}){100}" }),
        ),
    ];
    println!("budget: {MAX_STEPS} steps");
    for (name, source, token) in cases {
        // Estimated for one-item lists: the point is what evaluation does with any input.
        let rule = Rule::compile_for(&source, 1).expect("compiles");
        let input = RuleInput {
            cid: "c1",
            token: Some(&token),
            params: &[],
            query: None,
            model: None,
            values: None,
        };
        let mut times: Vec<Duration> = Vec::new();
        let mut result = Ok(false);
        for _ in 0..9 {
            let start = Instant::now();
            result = rule.eval(&input);
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "{name}: {:?} in {:.2} ms (median of 9)",
            result.map_err(|e| e.chars().take(40).collect::<String>()),
            times[4].as_secs_f64() * 1e3
        );
    }
}
