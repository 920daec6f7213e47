use super::*;

const SHIPPED: &str = include_str!("../../resources.yaml");

fn config(text: &str) -> Config {
    Config::parse("r.yaml", text).unwrap()
}

fn suites() -> Vec<Suite> {
    vec![crate::ruletest::parse(
        "resources.test.yaml",
        include_str!("../../resources.test.yaml"),
    )
    .unwrap()]
}

#[test]
fn the_same_config_plans_nothing() {
    let commented = format!("# a comment\n{SHIPPED}");
    let p = plan(&config(SHIPPED), &config(&commented), &suites());
    assert_eq!(p.verdict, Verdict::NoChange, "{}", p.text);
    assert!(p.text.contains("system.reset:     none"), "{}", p.text);
}

#[test]
fn a_rules_only_change_lists_the_rule_the_reset_and_the_decisions() {
    let new = SHIPPED.replace(
        "set: cid == params.cid && token != null",
        "set: cid == params.cid",
    );
    let p = plan(&config(SHIPPED), &config(&new), &suites());
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(p.text.contains("session.prefs.{cid}: call.set `cid == params.cid && token != null` -> `cid == params.cid`"), "{}", p.text);
    assert!(
        p.text
            .contains(r#"system.reset:     {"resources":[],"access":["session.prefs.*"]}"#),
        "{}",
        p.text
    );
    assert!(p.text.contains("preferences cannot be set while logged out, but can be reset: call.set denied -> granted"), "{}", p.text);
}

#[test]
fn a_field_change_and_a_removal() {
    let new = SHIPPED
        .replace("max: 32", "max: 40")
        .replace("      notice:    { type: string, max_length: 200 }\n", "");
    let new = new[..new.find("  # What backend services").unwrap()].to_string();
    let p = plan(&config(SHIPPED), &config(&new), &suites());
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(
        p.text.contains("patterns removed: session.status.{cid}"),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains("session.prefs.{cid}: ~ fontSize (max 32 -> 40, stored values"),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains(r#""resources":["session.prefs.*","session.status.*"]"#),
        "{}",
        p.text
    );
    assert!(p.text.contains("get granted -> unserved"), "{}", p.text);
}
