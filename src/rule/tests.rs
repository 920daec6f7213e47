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
