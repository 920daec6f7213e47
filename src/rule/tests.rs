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
        values: None,
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
fn rules_too_deep_to_evaluate_are_refused_at_load() {
    // A flat chain, no brackets: once a stack overflow at the first request.
    let chain = vec!["1"; 6000].join(" + ");
    let e = Rule::compile(&format!("{chain} == 6000")).unwrap_err();
    assert!(e.message.contains("at most 4096"), "{}", e.message);
    let e = Rule::compile(&vec!["1"; 150].join(" + ")).unwrap_err();
    assert!(e.message.contains("nested deeper than 32"), "{}", e.message);
    let e = Rule::compile(&vec!["'a'"; 40].join(" + ")).unwrap_err();
    assert!(e.message.contains("nested deeper"), "{}", e.message);
    // Long chains of && and || are fine (the parser balances them), and so are
    // realistic rules.
    let any = (0..200)
        .map(|i| format!("cid == 'c{i}'"))
        .collect::<Vec<_>>()
        .join(" || ");
    let r = Rule::compile(&any).unwrap();
    assert_eq!(r.eval(&input("c199", None, &[])), Ok(true));
    let sum = vec!["1"; 20].join(" + ");
    let r = Rule::compile(&format!("{sum} == 20")).unwrap();
    assert_eq!(r.eval(&input("c1", None, &[])), Ok(true));
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
fn whole_numbers_are_ints_for_arithmetic() {
    let r = Rule::compile("model.fontSize + 1 > 9 && token.n - 1 == 1").unwrap();
    let model = json!({"fontSize": 14});
    let token = json!({"n": 2});
    let mut i = input("c1", Some(&token), &[]);
    i.model = Some(&model);
    assert_eq!(r.eval(&i), Ok(true));
}

#[test]
fn params_read_are_listed() {
    let r =
        Rule::compile("cid == params.cid && params.room != '' && [1].all(params, true)").unwrap();
    assert_eq!(r.params_read(), ["cid", "room"]);
}

#[test]
fn deep_nesting_is_refused_at_load() {
    let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
    let e = Rule::compile(&deep).unwrap_err();
    assert!(e.message.contains("deeper than 32"), "{}", e.message);
    let ok = format!("{}true{}", "(".repeat(10), ")".repeat(10));
    assert!(Rule::compile(&ok).is_ok());
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

#[test]
fn a_call_s_values_and_fields() {
    let r = Rule::compile("fields.all(f, f == 'coupon') || values.items < 3").unwrap();
    assert!(r.reads_call());
    assert_eq!(r.call_variables_read(), ["values", "fields"]);
    let values = json!({"coupon": "X", "items": 5});
    let values = values.as_object().unwrap();
    let mut i = input("c1", None, &[]);
    i.values = Some(values);
    assert_eq!(r.eval(&i), Ok(false));
    let fewer = json!({"coupon": "X", "items": 2});
    i.values = fewer.as_object();
    assert_eq!(r.eval(&i), Ok(true));
    let coupon = json!({"coupon": "X"});
    i.values = coupon.as_object();
    assert_eq!(r.eval(&i), Ok(true));
    // No call (an access request): no values, no fields.
    i.values = None;
    assert_eq!(r.eval(&i), Ok(true));
    let r = Rule::compile("fields == ['a', 'b'] && size(values) == 2").unwrap();
    let unsorted: serde_json::Map<String, Value> =
        [("b".to_string(), json!(1)), ("a".to_string(), json!(2))]
            .into_iter()
            .collect();
    i.values = Some(&unsorted);
    assert_eq!(r.eval(&i), Ok(true), "fields are sorted");
    assert!(!Rule::compile("model.x == 1").unwrap().reads_call());
}

#[test]
fn a_yaml_1_1_boolean_gets_a_hint() {
    let e = Rule::compile("yes").unwrap_err();
    assert_eq!(
        e.message,
        "rule reads unknown variable `yes` (rules can read cid, token, params, query, model, values, fields); YAML reads only true and false as booleans: write true or false"
    );
    let e = Rule::compile("on && cid == 'a'").unwrap_err();
    assert!(!e.message.contains("YAML"), "{}", e.message);
}

/// A token with a list of `n` numbers under `l`.
fn long_list_token(n: usize) -> Value {
    json!({ "l": (0..n).collect::<Vec<_>>() })
}

#[test]
fn a_rule_that_runs_out_of_steps_denies() {
    // Accepted by the estimate for small tokens, quadratic in the token's list: with
    // 3,000 items, once 3.85 s an evaluation.
    let rule = Rule::compile_for("token.l.all(a, token.l.all(b, a == b || true))", 50).unwrap();
    let token = long_list_token(3000);
    let before = OVER_BUDGET.get();
    let e = rule.eval(&input("c1", Some(&token), &[])).unwrap_err();
    assert!(e.contains("ran out of steps"), "{e}");
    assert_eq!(OVER_BUDGET.get(), before + 1);
    // The same rule over a small list is fine.
    assert_eq!(
        rule.eval(&input("c1", Some(&long_list_token(40)), &[])),
        Ok(true)
    );
}

#[test]
fn running_out_of_steps_cannot_be_absorbed() {
    // `error || true` is true in CEL, and `exists` skips an erroring item: once out of
    // steps, everything after fails too, so neither can turn the cut-off into a grant.
    let token = long_list_token(3000);
    for source in [
        "token.l.all(a, token.l.all(b, a == b || true)) || true",
        "true && (token.l.exists(a, token.l.all(b, b >= 0) && a < 0) || true)",
        "token.l.exists(a, token.l.exists(b, a == b + 1 && false) || a == 2999)",
    ] {
        let rule = Rule::compile_for(source, 50).unwrap();
        let got = rule.eval(&input("c1", Some(&token), &[]));
        assert!(
            got.as_ref().is_err_and(|e| e.contains("ran out of steps")),
            "{source}: {got:?}"
        );
    }
}

#[test]
fn steps_count_the_work_of_scans_and_large_values() {
    // `in` over a 5,000-item list inside a loop over it: few expressions, but each
    // scan weighs the list it scans.
    let rule = Rule::compile_for("token.l.exists(a, a in token.l && a < 0)", 10).unwrap();
    let got = rule.eval(&input("c1", Some(&long_list_token(5000)), &[]));
    assert!(got.is_err_and(|e| e.contains("ran out of steps")));
    // Over 300 items the same rule takes about 300 * 300 steps: within the budget.
    assert_eq!(
        rule.eval(&input("c1", Some(&long_list_token(300)), &[])),
        Ok(false)
    );
}

#[test]
fn rules_past_the_budget_are_refused_at_load() {
    // Three nested `.all` over a 300-item literal: once 26.7 s an evaluation.
    let list = format!("[{}]", vec!["1"; 300].join(","));
    let source = format!("{list}.all(a, {list}.all(b, {list}.all(c, a + b + c > 0)))");
    let e = Rule::compile(&source).unwrap_err();
    assert!(
        e.message.contains("over the budget of 100000"),
        "{}",
        e.message
    );
    // Nested loops over a token list, at the default 16 KiB token.
    let e = Rule::compile("token.l.all(a, token.l.all(b, a == b || true))").unwrap_err();
    assert!(e.message.contains("may hold 8192 items"), "{}", e.message);
    // One loop with a short body over a token list is fine; a longer body passes the
    // budget at 8,192 items (and runs out of steps on such a token: see
    // examples/rule_cost.rs), not at a smaller state.max_token_bytes.
    Rule::compile("token.groups.exists(g, g == 'admin')").unwrap();
    Rule::compile("'admin' in token.groups || 'ops' in token.groups").unwrap();
    let longer = "token.groups.exists(g, g in ['admin', 'ops', 'dev'])";
    assert!(Rule::compile(longer).is_err());
    Rule::compile_for(longer, input_items(4096)).unwrap();
    // The estimate follows the token size a config allows.
    Rule::compile_for("token.l.all(a, token.l.all(b, a == b || true))", 50).unwrap();
    assert!(Rule::compile_for("token.groups.exists(g, g == 'admin')", 512 * 1024).is_err());
}
