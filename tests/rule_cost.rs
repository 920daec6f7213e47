//! A rule's evaluation is bounded by its step budget, whatever the token it reads: a rule
//! that `check` accepts but that runs out of steps on a large token denies, is counted
//! and logged once, and the requests sent beside it are answered.

mod common;

use common::logs::Logs;
use common::*;
use serde_json::{json, Value};

/// `matches` compiles each pattern it is given: a regex from every item of a token list
/// passes the load-time estimate (it counts a call as one step) and costs a compilation
/// per item at run time.
const YAML: &str = r#"version: 1
resources:
  session.slow.{cid}:
    fields:
      name: { type: string, from: "{{token.name}}" }
    access:
      get: "token != null && token.l.exists(g, 'x'.matches(g))"
  session.fast.{cid}:
    fields:
      name: { type: string, from: "{{token.name}}" }
    access:
      get: cid == params.cid
"#;

#[tokio::test]
async fn a_rule_out_of_steps_denies_and_the_others_are_served() {
    let logs = Logs::capture("info");
    let server = NatsServer::start();
    let (_connres, gw) = start(&server, YAML).await;
    // 1,500 distinct patterns, the last of which matches, under the default 16 KiB
    // token: unbounded, the rule grants after 1,500 compilations.
    let mut patterns: Vec<String> = (0..1499).map(|i| format!("p{i}")).collect();
    patterns.push("x".into());
    let big = json!({ "name": "ann", "l": patterns });
    assert!(big.to_string().len() < 16 * 1024);
    let small = json!({ "name": "ann", "l": ["p1", "x"] });
    let before = connres::rule::OVER_BUDGET.get();

    // Three cut-off evaluations and a request to another resource after each, sent
    // without waiting for any reply.
    let (slow1, fast1, slow2, fast2, slow3, fast3) = tokio::join!(
        gw.access("session.slow.c1", "c1", big.clone()),
        gw.access("session.fast.c1", "c1", Value::Null),
        gw.access("session.slow.c2", "c2", big.clone()),
        gw.access("session.fast.c2", "c2", Value::Null),
        gw.access("session.slow.c3", "c3", big.clone()),
        gw.access("session.fast.c3", "c3", Value::Null),
    );
    for denied in [&slow1, &slow2, &slow3] {
        assert_ne!(denied["result"]["get"], json!(true), "{denied}");
    }
    for granted in [&fast1, &fast2, &fast3] {
        assert_eq!(granted["result"]["get"], json!(true), "{granted}");
    }
    assert_eq!(connres::rule::OVER_BUDGET.get(), before + 3);
    // Logged once, with the rule and why, however often it happened.
    let lines = logs.matching(&["ran out of steps"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("session.slow.{cid}"), "{}", lines[0]);

    // The same rule over a small token grants: the budget is per evaluation.
    let ok = gw.access("session.slow.c4", "c4", small).await;
    assert_eq!(ok["result"]["get"], json!(true), "{ok}");
    assert_eq!(connres::rule::OVER_BUDGET.get(), before + 3);
}
