//! Plans of presence lists: `member`, `max_members`, `join` and `ttl` changes and what
//! they do to the members, and resources that turn into or out of presence lists.

use super::*;

const PRESENCE: &str = include_str!("../../../tests/config/valid/presence.yaml");

fn presence_suites() -> Vec<Suite> {
    vec![crate::ruletest::parse(
        "presence.test.yaml",
        include_str!("../../../tests/config/valid/presence.test.yaml"),
    )
    .unwrap()]
}

/// `presence.yaml` with `from` replaced by `to`, which it must hold once.
fn presence_with(from: &str, to: &str) -> String {
    assert_eq!(PRESENCE.matches(from).count(), 1, "{from}");
    PRESENCE.replace(from, to)
}

#[test]
fn a_presence_list_s_member_and_lowered_max_members_empty_it_join_and_ttl_keep_it() {
    // The member changes: emptied, and named in the reset.
    let new = presence_with("member: \"{{token.name}}\"", "member: \"{{token.userId}}\"");
    let p = plan(&config(PRESENCE), &config(&new), &presence_suites());
    assert!(
        p.text.contains("presence lists changed:\n  chat.room.{room}.members: member `{{token.name}}` -> `{{token.userId}}`: the list is emptied and its members join again (member changed)\n"),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains(r#"system.reset:     {"resources":["chat.room.*.members"],"access":[]}"#),
        "{}",
        p.text
    );
    assert!(!p.text.contains("collections changed:"), "{}", p.text);
    // A reference instead of a string is a member change too.
    let new = presence_with(
        "member: \"{{token.name}}\"",
        "member: { ref: \"users.user.{{token.userId}}\" }",
    );
    let p = plan(&config(PRESENCE), &config(&new), &[]);
    assert!(
        p.text.contains("  chat.room.{room}.members: member `{{token.name}}` -> ref `users.user.{{token.userId}}`: the list is emptied and its members join again (member changed)\n"),
        "{}",
        p.text
    );

    // max_members lowered: emptied; the tested fourth member's join is refused sooner.
    let new = presence_with("max_members: 3", "max_members: 2");
    let p = plan(&config(PRESENCE), &config(&new), &presence_suites());
    assert_eq!(p.verdict, Verdict::DecisionsChange, "{}", p.text);
    assert!(
        p.text.contains("  chat.room.{room}.members: max_members 3 -> 2: the list is emptied and its members join again (max_members lowered)\n"),
        "{}",
        p.text
    );
    assert!(
        p.text.contains("presence.test.yaml:97:5: a room holds max_members 3 members; a full room still takes another tab: step 5 join ok -> invalid"),
        "{}",
        p.text
    );
    // Raised: kept.
    let new = presence_with("max_members: 3", "max_members: 5");
    let p = plan(&config(PRESENCE), &config(&new), &[]);
    assert!(
        p.text
            .contains("  chat.room.{room}.members: max_members 3 -> 5: its members are kept\n"),
        "{}",
        p.text
    );

    // join and ttl: kept, nothing to reset, no tested decision changes.
    let join = "join: token != null\n      ttl: 60s";
    let new = presence_with(join, "join: token.name != 'Zed'\n      ttl: 2m");
    let p = plan(&config(PRESENCE), &config(&new), &presence_suites());
    assert!(
        p.text.contains("presence lists changed:\n  chat.room.{room}.members: join `token != null` -> `token.name != 'Zed'`, ttl 1m -> 2m: its members are kept\n"),
        "{}",
        p.text
    );
    assert!(p.text.contains("system.reset:     none"), "{}", p.text);
    assert!(!p.text.contains("access rules changed:"), "{}", p.text);
    // The new rule errs on a token without a name, which then is denied, not invalid.
    assert!(
        p.text.contains(
            "a token without a name gives no member to join as: step 1 join invalid -> denied"
        ),
        "{}",
        p.text
    );
    let new = presence_with(join, "join: \"true\"\n      ttl: 60s");
    let p = plan(&config(PRESENCE), &config(&new), &presence_suites());
    assert_eq!(p.verdict, Verdict::Changes, "{}", p.text);
    assert!(
        p.text
            .contains("decisions that change for the rule tests (presence.test.yaml): none"),
        "{}",
        p.text
    );
}

#[test]
fn a_resource_that_turns_into_or_out_of_a_presence_list_says_what_it_loses() {
    // The lobby read by anyone, as a presence list, a collection and a model.
    let lobby = |shape: &str| {
        let at = PRESENCE.find("  lobby.members:").unwrap();
        format!(
            "{}  lobby.members:\n{shape}    access:\n      get: \"true\"\n",
            &PRESENCE[..at]
        )
    };
    let (presence, collection, model) = (
        config(&lobby(
            "    presence:\n      member: { ref: \"users.user.{{token.userId}}\" }\n",
        )),
        config(&lobby("    collection:\n      item: { type: ref }\n")),
        config(&lobby("    fields:\n      topic: { type: string }\n")),
    );
    let line = |old: &Config, new: &Config| {
        let p = plan(old, new, &[]);
        assert!(
            p.text
                .contains(r#"system.reset:     {"resources":["lobby.members"]"#),
            "{}",
            p.text
        );
        assert!(!p.text.contains("collections changed:"), "{}", p.text);
        assert!(!p.text.contains("fields changed:"), "{}", p.text);
        let at = p.text.find("presence lists changed:\n").expect(&p.text);
        p.text[at..].lines().nth(1).unwrap().to_string()
    };
    let described =
        "member ref `users.user.{{token.userId}}`, join (none), ttl 1m, max_members 1000";
    assert_eq!(
        line(&collection, &presence),
        format!("  lobby.members: now a presence list ({described}): its items are dropped")
    );
    assert_eq!(
        line(&model, &presence),
        format!("  lobby.members: now a presence list ({described}): the model's written values are dropped")
    );
    assert_eq!(
        line(&presence, &collection),
        "  lobby.members: now a collection (item ref, max_items 100, writable false): its members are dropped"
    );
    assert_eq!(
        line(&presence, &model),
        "  lobby.members: now a model (fields topic): its members are dropped"
    );

    // Added or removed, a presence list is named as one.
    let room = &PRESENCE[PRESENCE.find("  chat.room.{room}.members:").unwrap()
        ..PRESENCE.find("  lobby.members:").unwrap()];
    let without = PRESENCE.replace(room, "");
    let p = plan(&config(PRESENCE), &config(&without), &[]);
    assert!(
        p.text
            .contains("patterns removed: chat.room.{room}.members (presence list)\n"),
        "{}",
        p.text
    );
    let p = plan(&config(&without), &config(PRESENCE), &[]);
    assert!(
        p.text
            .contains("patterns added:   chat.room.{room}.members (presence list)\n"),
        "{}",
        p.text
    );
}
