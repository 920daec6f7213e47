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
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
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
    assert!(
        p.text.contains("tested requests of removed resources (no longer served):\n  resources.test.yaml:60:5: the session status is readable by its connection only, never writable: session.status.c1 (session.status.{cid}) was get granted, call.set denied, call.reset denied\n"),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains("decisions that change for the rule tests (resources.test.yaml): none"),
        "{}",
        p.text
    );
}

/// A resource whose cases come with it.
const NOTES: &str = "\n  session.note.{cid}:\n    fields:\n      text: { type: string, writable: true }\n    access:\n      get: cid == params.cid\n      call: { set: cid == params.cid }\n";

fn with_notes_cases() -> Vec<Suite> {
    let mut suites = suites();
    suites.push(
        crate::ruletest::parse(
            "notes.test.yaml",
            "tests:\n  - name: own note\n    resource: session.note.c1\n    cid: c1\n    get: true\n",
        )
        .unwrap(),
    );
    suites
}

#[test]
fn an_added_resource_and_its_cases_are_a_change_not_a_changed_decision() {
    let new = format!("{SHIPPED}{NOTES}");
    let p = plan(&config(SHIPPED), &config(&new), &with_notes_cases());
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
    assert!(
        p.text.contains("tested requests of added resources (served from now on):\n  notes.test.yaml:2:5: own note: session.note.c1 (session.note.{cid}) get granted, call.set granted, call.reset denied\n"),
        "{}",
        p.text
    );
    assert!(!p.text.contains("removed resources"), "{}", p.text);
    assert!(
        p.text
            .ends_with("the reload changes what is served (exit 2)\n"),
        "{}",
        p.text
    );
}

#[test]
fn a_served_decision_that_changes_beside_an_addition_is_exit_3() {
    let new = format!("{SHIPPED}{NOTES}").replace(
        "set: cid == params.cid && token != null",
        "set: cid == params.cid",
    );
    let p = plan(&config(SHIPPED), &config(&new), &with_notes_cases());
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(
        p.text.contains("tested requests of added resources"),
        "{}",
        p.text
    );
    assert!(
        p.text.contains("preferences cannot be set while logged out, but can be reset: call.set denied -> granted"),
        "{}",
        p.text
    );
    assert!(!p.text.contains("unserved"), "{}", p.text);
}

#[test]
fn a_writable_rule_change_is_a_field_change() {
    let new = SHIPPED.replace(
        "default: light, enum: [light, dark], writable: true",
        "default: light, enum: [light, dark], writable: token != null",
    );
    let p = plan(&config(SHIPPED), &config(&new), &suites());
    assert!(
        p.text
            .contains("session.prefs.{cid}: ~ theme (writable true -> `token != null`)"),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains(r#"system.reset:     {"resources":["session.prefs.*"],"access":[]}"#),
        "{}",
        p.text
    );
}

#[test]
fn the_decisions_of_a_sequence_are_compared_step_by_step() {
    let cases = crate::ruletest::parse(
        "seq.test.yaml",
        "tests:\n  - name: after logout\n    resource: session.prefs.c1\n    cid: c1\n    token: { userId: 1 }\n    steps:\n      - token: null\n        call: { set: false }\n      - set: { theme: dark }\n        outcome: denied\n",
    )
    .unwrap();
    let new = SHIPPED.replace(
        "set: cid == params.cid && token != null",
        "set: cid == params.cid",
    );
    let p = plan(&config(SHIPPED), &config(&new), &[cases]);
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(
        p.text.contains("  seq.test.yaml:2:5: after logout: step 1 call.set denied -> granted, step 2 set denied -> ok\n"),
        "{}",
        p.text
    );
}

#[test]
fn a_writable_rule_that_refuses_a_tested_set_changes_a_decision() {
    let new = SHIPPED.replace(
        "fontSize: { type: integer, default: 14, min: 8, max: 32, writable: true }",
        "fontSize: { type: integer, default: 14, min: 8, max: 32, writable: token.userId == 1 }",
    );
    let p = plan(&config(SHIPPED), &config(&new), &suites());
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(
        p.text
            .contains("preferences can be set after login: set ok -> invalid"),
        "{}",
        p.text
    );
}

const COLLECTIONS: &str = include_str!("../../tests/config/valid/collections.yaml");

fn collection_suites() -> Vec<Suite> {
    vec![crate::ruletest::parse(
        "collections.test.yaml",
        include_str!("../../tests/config/valid/collections.test.yaml"),
    )
    .unwrap()]
}

/// `collections.yaml` with the pins of a board declared as a model.
fn pins_as_a_model() -> String {
    let pins = "    collection:\n      item: { type: ref }\n    access:\n      get: \"true\"\n";
    assert!(COLLECTIONS.contains(pins));
    COLLECTIONS.replace(
        pins,
        "    fields:\n      pinned: { type: ref }\n    access:\n      get: \"true\"\n",
    )
}

#[test]
fn a_collection_s_item_max_items_and_writable_changes_are_described() {
    let recent =
        "      item: { type: string, max_length: 40 }\n      max_items: 20\n      writable: true\n";
    assert!(COLLECTIONS.contains(recent));
    let new = COLLECTIONS.replace(
        recent,
        "      item: { type: string, max_length: 8 }\n      max_items: 10\n      writable: cid == 'c9'\n",
    );
    let p = plan(&config(COLLECTIONS), &config(&new), &collection_suites());
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(
        p.text.contains("collections changed:\n  session.recent.{cid}: item: max_length 40 -> 8 (stored items re-checked, those that no longer fit dropped); max_items 20 -> 10 (items past it are dropped, from the end); writable true -> `cid == 'c9'`\n"),
        "{}",
        p.text
    );
    assert!(!p.text.contains("fields changed:"), "{}", p.text);
    assert!(
        p.text
            .contains(r#"system.reset:     {"resources":["session.recent.*"],"access":[]}"#),
        "{}",
        p.text
    );
    assert!(
        p.text.contains("  collections.test.yaml:19:5: pages are added at the end or at an index, and removed by index or by value: step 1 add ok -> denied, step 2 add ok -> denied, "),
        "{}",
        p.text
    );

    // More room and only a description: no item is dropped, nothing else is said.
    let new = COLLECTIONS
        .replace("max_items: 20", "max_items: 30")
        .replace(
            "item: { type: string, max_length: 40 }",
            "item: { type: string, max_length: 40, description: a path }",
        );
    let p = plan(&config(COLLECTIONS), &config(&new), &collection_suites());
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
    assert!(
        p.text
            .contains("collections changed:\n  session.recent.{cid}: max_items 20 -> 30\n"),
        "{}",
        p.text
    );
}

#[test]
fn a_resource_that_turns_into_a_model_or_a_collection_says_what_it_loses() {
    let (collection, model) = (config(COLLECTIONS), config(&pins_as_a_model()));
    let p = plan(&collection, &model, &collection_suites());
    assert!(
        p.text.contains(
            "collections changed:\n  board.{id}.pins: now a model (fields pinned): its items are dropped\n"
        ),
        "{}",
        p.text
    );
    // The model's fields are the switch's, not a field change.
    assert!(!p.text.contains("fields changed:"), "{}", p.text);
    assert!(
        p.text.contains(r#""resources":["board.*.pins"]"#),
        "{}",
        p.text
    );
    // The tested access answers name methods the model does not have.
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(
        p.text.contains("step 2 call.add denied -> (no such method), step 2 call.remove denied -> (no such method), step 2 call.set (no such method) -> denied, step 2 call.reset (no such method) -> denied"),
        "{}",
        p.text
    );

    let p = plan(&model, &collection, &[]);
    assert!(
        p.text.contains(
            "  board.{id}.pins: now a collection (item ref, max_items 100, writable false): the model's written values are dropped\n"
        ),
        "{}",
        p.text
    );
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
}

#[test]
fn a_collection_added_or_removed_is_named_as_one() {
    let start = COLLECTIONS.find("  session.tags.{cid}:").unwrap();
    let end = COLLECTIONS.find("  session.favorites.{cid}:").unwrap();
    let tags = &COLLECTIONS[start..end];
    let without = COLLECTIONS.replace(tags, "");
    let p = plan(&config(COLLECTIONS), &config(&without), &[]);
    assert!(
        p.text
            .contains("patterns removed: session.tags.{cid} (collection)\n"),
        "{}",
        p.text
    );
    assert!(
        p.text.contains(
            r#"system.reset:     {"resources":["session.tags.*"],"access":["session.tags.*"]}"#
        ),
        "{}",
        p.text
    );
    let p = plan(&config(&without), &config(COLLECTIONS), &[]);
    assert!(
        p.text
            .contains("patterns added:   session.tags.{cid} (collection)\n"),
        "{}",
        p.text
    );
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
}

#[test]
fn byte_limits_that_change_are_shown_with_the_other_state_bounds() {
    let new = SHIPPED.replace(
        "  max_entries: 1000000\n",
        "  max_entries: 1000000\n  max_bytes: 33554432\n  max_value_bytes: 4096\n",
    );
    let p = plan(&config(SHIPPED), &config(&new), &suites());
    assert!(
        p.text.contains(
            "  state: idle_ttl 1day -> 1day, max_entries 1000000 -> 1000000, max_bytes 1073741824 -> 33554432, max_value_bytes 65536 -> 4096 (applies at once)\n"
        ),
        "{}",
        p.text
    );
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
    // max_value_bytes only when it changes.
    let only_bytes = SHIPPED.replace(
        "  max_entries: 1000000\n",
        "  max_entries: 1000000\n  max_bytes: 2048\n",
    );
    let p = plan(&config(SHIPPED), &config(&only_bytes), &[]);
    assert!(
        p.text
            .contains("max_bytes 1073741824 -> 2048 (applies at once)\n"),
        "{}",
        p.text
    );
}

mod presence;

#[test]
fn a_changed_data_shape_is_described_and_its_stored_values_re_checked() {
    let shapes = include_str!("../../tests/config/valid/data-shapes.yaml");
    let new = shapes
        .replace("max: 99", "max: 10")
        .replace("          note: { type: string, optional: true }\n", "")
        .replace(
            "open: { type: boolean }",
            "open: { type: boolean, optional: true }",
        );
    let p = plan(&config(shapes), &config(&new), &[]);
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
    assert!(
        p.text.contains(
            "  session.cart.{cid}: item: fields {sku: string (max_length 20), qty: integer (min 1, max 99), note: string (optional)} -> {sku: string (max_length 20), qty: integer (min 1, max 10)} (stored items re-checked, those that no longer fit dropped)\n"
        ),
        "{}",
        p.text
    );
    assert!(
        p.text.contains("session.layout.{cid}: ~ window (fields {width: integer (min 100, max 10000), height: integer (min 100, max 10000), panel: data {side: string (enum [\"left\",\"right\"]), open: boolean} (optional)} -> {width: integer (min 100, max 10000), height: integer (min 100, max 10000), panel: data {side: string (enum [\"left\",\"right\"]), open: boolean (optional)} (optional)}, stored values re-checked, invalid ones dropped)"),
        "{}",
        p.text
    );
    assert!(
        p.text.contains(
            r#"system.reset:     {"resources":["session.cart.*","session.layout.*"],"access":[]}"#
        ),
        "{}",
        p.text
    );
}
