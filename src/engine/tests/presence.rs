//! Presence lists through the engine: joins and leaves by call, by logout, by a token
//! for another member and by `ttl`, one entry per member, and the events' indices.

use std::time::Duration;

use super::*;
use proptest::prelude::*;

const PRESENCE: &str = include_str!("../../../tests/config/valid/presence.yaml");
const ROOM: &str = "chat.room.r1.members";
const LOBBY: &str = "lobby.members";

fn t() -> T {
    let clock = Clock::manual();
    T {
        config: Config::parse("p.yaml", PRESENCE).unwrap_or_else(|e| panic!("{e}")),
        engine: Engine::new(MemoryStore::default(), clock.clone()),
        clock,
    }
}

fn user(name: &str) -> Value {
    json!({"userId": name.len(), "name": name})
}

fn login(name: &str) -> String {
    json!({ "token": user(name) }).to_string()
}

impl T {
    fn members(&mut self, rid: &str) -> Value {
        let out = self.handle(Request::Get { rid });
        reply(&out)["result"]["collection"].clone()
    }

    /// `method` on `rid` by `cid`, whose token the record holds.
    fn presence(&mut self, rid: &str, method: &str, cid: &str) -> Outcome {
        self.call(rid, method, &json!({ "cid": cid }).to_string())
    }

    fn sweep(&mut self) -> Vec<(String, Value)> {
        let events = self.engine.presence_sweep(&self.config);
        events
            .iter()
            .map(|(s, p)| (s.clone(), serde_json::from_slice(p).unwrap()))
            .collect()
    }
}

fn add(rid: &str, value: Value, idx: usize) -> (String, Value) {
    (
        format!("event.{rid}.add"),
        json!({"value": value, "idx": idx}),
    )
}

fn remove(rid: &str, idx: usize) -> (String, Value) {
    (format!("event.{rid}.remove"), json!({ "idx": idx }))
}

#[test]
fn a_member_is_listed_once_in_join_order_however_many_connections_it_has() {
    let mut t = t();
    for (cid, name) in [("a1", "ann"), ("b1", "bob"), ("a2", "ann")] {
        t.token(cid, &login(name));
    }
    let out = t.presence(ROOM, "join", "a1");
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(events(&out), vec![add(ROOM, json!("ann"), 0)]);
    assert_eq!(
        events(&t.presence(ROOM, "join", "b1")),
        vec![add(ROOM, json!("bob"), 1)]
    );
    // A second tab adds nothing; closing one of two removes nothing.
    assert!(t.presence(ROOM, "join", "a2").events.is_empty());
    assert!(t.presence(ROOM, "leave", "a1").events.is_empty());
    assert_eq!(t.members(ROOM), json!(["ann", "bob"]));
    assert_eq!(
        events(&t.presence(ROOM, "leave", "a2")),
        vec![remove(ROOM, 0)]
    );
    assert_eq!(t.members(ROOM), json!(["bob"]));
    // Leaving twice, or without joining: nothing.
    let out = t.presence(ROOM, "leave", "a2");
    assert_eq!(reply(&out), json!({"result": null}));
    assert!(out.events.is_empty());
}

#[test]
fn a_logout_or_a_token_for_another_member_leaves() {
    let mut t = t();
    for (cid, name) in [("a1", "ann"), ("b1", "bob"), ("c1", "cat")] {
        t.token(cid, &login(name));
        t.presence(ROOM, "join", cid);
    }
    let out = t.token("b1", LOGOUT);
    assert!(out.contains(&remove(ROOM, 1)), "{out:?}");
    assert_eq!(t.members(ROOM), json!(["ann", "cat"]));
    // A token for the same member keeps the connection in.
    let same = json!({"token": {"userId": 3, "name": "ann", "role": "x"}}).to_string();
    assert!(!t.token("a1", &same).iter().any(|(s, _)| s.contains(ROOM)));
    // Another member: out, and not in as the new one until it joins.
    let out = t.token("a1", &login("dan"));
    assert!(out.contains(&remove(ROOM, 0)), "{out:?}");
    assert_eq!(t.members(ROOM), json!(["cat"]));
}

#[test]
fn connections_that_neither_join_nor_ping_for_ttl_leave() {
    let mut t = t();
    for (cid, name) in [("a1", "ann"), ("b1", "bob")] {
        t.token(cid, &login(name));
        t.presence(ROOM, "join", cid);
    }
    t.clock.advance(Duration::from_secs(40));
    assert_eq!(
        reply(&t.presence(ROOM, "ping", "b1")),
        json!({"result": null})
    );
    t.clock.advance(Duration::from_secs(20));
    assert_eq!(t.sweep(), vec![remove(ROOM, 0)], "ann, not seen for 60s");
    assert_eq!(t.members(ROOM), json!(["bob"]));
    let out = t.presence(ROOM, "ping", "a1");
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(
        error_message(&out).contains("call join"),
        "{}",
        error_message(&out)
    );
    t.clock.advance(Duration::from_secs(40));
    assert_eq!(t.sweep(), vec![remove(ROOM, 0)]);
    assert_eq!(t.members(ROOM), json!([]));
    assert_eq!(t.sweep(), vec![]);
}

#[test]
fn only_a_join_or_a_ping_keeps_a_connection_listed() {
    let mut t = t();
    for (cid, name) in [("a1", "ann"), ("b1", "bob")] {
        t.token(cid, &login(name));
        t.presence(ROOM, "join", cid);
    }
    t.clock.advance(Duration::from_secs(40));
    // Ann's connection gets the list and asks access to it; bob's pings.
    t.members(ROOM);
    let access = json!({"cid": "a1", "token": user("ann")}).to_string();
    assert_eq!(
        reply(&t.access(ROOM, &access))["result"]["get"],
        json!(true)
    );
    assert_eq!(
        reply(&t.presence(ROOM, "ping", "b1")),
        json!({"result": null})
    );
    t.clock.advance(Duration::from_secs(20));
    assert_eq!(
        t.sweep(),
        vec![remove(ROOM, 0)],
        "ann's get and access do not count"
    );
    assert_eq!(t.members(ROOM), json!(["bob"]));
}

#[test]
fn joins_are_refused_past_max_members_without_a_member_or_by_the_join_rule() {
    let mut t = t();
    for (i, name) in ["ann", "bob", "cat", "dan"].iter().enumerate() {
        t.token(&format!("c{i}"), &login(name));
    }
    for i in 0..3 {
        t.presence(ROOM, "join", &format!("c{i}"));
    }
    let out = t.presence(ROOM, "join", "c3");
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(error_message(&out).contains("max_members 3"));
    // Logged out: the call rule denies; in the lobby, `presence.join` does.
    let out = t.presence(ROOM, "join", "nobody");
    assert_eq!(error_code(&out), "system.accessDenied");
    let out = t.presence(LOBBY, "join", "nobody");
    assert_eq!(error_code(&out), "system.accessDenied");
    // A token without the member's claim: nothing to list.
    t.token("x1", &json!({"token": {"role": "guest"}}).to_string());
    let out = t.presence("chat.room.r2.members", "join", "x1");
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(error_message(&out).contains("gives nothing"));
}

#[test]
fn reference_members_and_what_the_backend_may_do() {
    let mut t = t();
    t.token("a1", &login("ann"));
    let out = t.presence(LOBBY, "join", "a1");
    assert_eq!(
        events(&out),
        vec![add(LOBBY, json!({"rid": "users.user.3"}), 0)]
    );
    assert_eq!(t.members(LOBBY), json!([{"rid": "users.user.3"}]));
    let out = t.handle(Request::ApiAdd {
        rid: LOBBY,
        payload: br#"{"value": {"rid": "users.user.9"}}"#,
    });
    assert!(error_message(&out).contains("presence list"));
    let out = t.handle(Request::ApiReset {
        rid: LOBBY,
        payload: b"",
    });
    assert_eq!(events(&out), vec![remove(LOBBY, 0)]);
    assert_eq!(
        error_code(&t.presence(LOBBY, "ping", "a1")),
        "system.invalidParams"
    );
    // Forgotten by the index too: a logout changes no list.
    assert!(!t.token("a1", LOGOUT).iter().any(|(s, _)| s.contains(LOBBY)));
}

#[test]
fn a_reload_that_changes_the_member_empties_the_list() {
    let mut t = t();
    t.token("a1", &login("ann"));
    t.presence(ROOM, "join", "a1");
    let new = PRESENCE.replace("member: \"{{token.name}}\"", "member: \"{{token.userId}}\"");
    let new = Config::parse("p.yaml", &new).unwrap();
    let dropped = t.engine.reloaded(&t.config, &new);
    t.config = new;
    assert_eq!(dropped.total(), 1);
    assert_eq!(t.members(ROOM), json!([]));
    assert!(!t.token("a1", LOGOUT).iter().any(|(s, _)| s.contains(ROOM)));
    // Same member and ttl, another join rule: kept.
    let mut t2 = self::t();
    t2.token("a1", &login("ann"));
    t2.presence(ROOM, "join", "a1");
    let rule = Config::parse(
        "p.yaml",
        &PRESENCE.replace("join: token != null", "join: \"true\""),
    )
    .unwrap();
    assert_eq!(t2.engine.reloaded(&t2.config, &rule).total(), 0);
    t2.config = rule;
    assert_eq!(t2.members(ROOM), json!(["ann"]));
}

impl T {
    /// `method` on `rid` by `cid`, with the token the call carries (as Resgate sends
    /// it): with the shared store, the list's owner may hold no record of the caller.
    fn presence_as(&mut self, rid: &str, method: &str, cid: &str, name: &str) -> Outcome {
        let payload = json!({ "cid": cid, "token": user(name) }).to_string();
        self.call(rid, method, &payload)
    }

    /// The step of a token event on the lists `which` says yes to.
    fn token_step(
        &mut self,
        cid: &str,
        payload: &str,
        which: impl Fn(&str) -> bool,
    ) -> Vec<(String, Value)> {
        self.engine
            .presence_token_event(&self.config, cid, payload.as_bytes(), which)
            .iter()
            .map(|(s, p)| (s.clone(), serde_json::from_slice(p).unwrap()))
            .collect()
    }
}

#[test]
fn apart_a_token_event_leaves_only_through_its_step_on_the_lists_partition() {
    let mut t = t();
    t.engine.presence_apart();
    for (cid, name) in [("a1", "ann"), ("b1", "bob")] {
        let out = t.presence_as(ROOM, "join", cid, name);
        assert_eq!(reply(&out), json!({"result": null}));
    }
    t.presence_as(LOBBY, "join", "a1", "ann");
    // Applied as a token event, a logout changes no list.
    assert!(!t.token("a1", LOGOUT).iter().any(|(s, _)| s.contains(ROOM)));
    assert_eq!(t.members(ROOM), json!(["ann", "bob"]));
    // Its step on the lists of another partition changes nothing; on the room's, ann
    // leaves the room (and only the room).
    assert_eq!(t.token_step("a1", LOGOUT, |_| false), vec![]);
    assert_eq!(
        t.token_step("a1", LOGOUT, |rid| rid == ROOM),
        vec![remove(ROOM, 0)]
    );
    assert_eq!(t.members(ROOM), json!(["bob"]));
    assert_eq!(t.members(LOBBY), json!([{"rid": "users.user.3"}]));
    // A token for the same member keeps it; one for another member does not; a
    // malformed event, or one without a token, changes nothing.
    let same = json!({"token": {"userId": 3, "name": "bob", "role": "x"}}).to_string();
    assert_eq!(t.token_step("b1", &same, |_| true), vec![]);
    for bad in ["nope", "{}", r#"{"token": "#] {
        assert_eq!(t.token_step("b1", bad, |_| true), vec![], "{bad}");
    }
    assert_eq!(t.token_step("b1 x", LOGOUT, |_| true), vec![], "not a cid");
    assert_eq!(
        t.token_step("b1", &login("dan"), |_| true),
        vec![remove(ROOM, 0)]
    );
    assert_eq!(t.members(ROOM), json!([]));
    // Left: a second step finds nothing.
    assert_eq!(t.token_step("b1", LOGOUT, |_| true), vec![]);
}

#[test]
fn a_ping_whose_token_gives_another_member_leaves_and_asks_for_a_join() {
    let mut t = t();
    t.engine.presence_apart();
    for (cid, name) in [("a1", "ann"), ("b1", "bob"), ("c1", "cat")] {
        t.presence_as(ROOM, "join", cid, name);
    }
    // A token event whose step this list's owner never applied (it arrived while
    // nobody served the list): ann's next ping, with the token her record has now,
    // says who she is.
    assert!(!t
        .token("a1", &login("dan"))
        .iter()
        .any(|(s, _)| s.contains(ROOM)));
    let out = t.presence(ROOM, "ping", "a1");
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(
        error_message(&out).contains("call join"),
        "{}",
        error_message(&out)
    );
    assert_eq!(events(&out), vec![remove(ROOM, 0)]);
    assert_eq!(t.members(ROOM), json!(["bob", "cat"]));
    // A connection of another partition (no record here, as the service forgets it
    // after each message): the token its ping carries decides.
    use crate::store::UnitKey;
    t.engine
        .store_mut()
        .forget(&UnitKey::Connection("b1".into()));
    let out = t.presence_as(ROOM, "ping", "b1", "eve");
    assert_eq!(events(&out), vec![remove(ROOM, 0)]);
    assert_eq!(t.members(ROOM), json!(["cat"]));
    // The same member pings as before.
    t.engine
        .store_mut()
        .forget(&UnitKey::Connection("c1".into()));
    assert_eq!(
        reply(&t.presence_as(ROOM, "ping", "c1", "cat")),
        json!({"result": null})
    );
    // On one instance the token event moved it already: its ping is refused alone.
    let mut t = self::t();
    t.token("a1", &login("ann"));
    t.presence(ROOM, "join", "a1");
    assert!(t.token("a1", &login("dan")).contains(&remove(ROOM, 0)));
    let out = t.presence(ROOM, "ping", "a1");
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(out.events.is_empty());
}

#[test]
fn a_list_loaded_from_elsewhere_is_indexed_and_each_connection_gets_a_ttl_from_its_load() {
    use crate::presence::Members;
    use crate::store::{Unit, UnitKey, Written};
    let mut t = t();
    t.engine.presence_apart();
    t.clock.advance(Duration::from_secs(100));
    // As the bucket's record reads back: no times kept.
    let members = Members::from_groups(
        vec![
            (json!("ann"), vec!["a1".into(), "a2".into()]),
            (json!("bob"), vec!["b1".into()]),
            (json!("cat"), vec!["c1".into()]),
        ],
        0,
    );
    t.engine.store_mut().insert(
        UnitKey::Shared(ROOM.into()),
        Unit::Shared(Written::Presence(Box::new(members))),
        100,
    );
    t.engine.presence_loaded(ROOM);
    assert_eq!(t.members(ROOM), json!(["ann", "bob", "cat"]));
    // A token event finds its connection through the index.
    assert_eq!(
        t.token_step("b1", LOGOUT, |rid| rid == ROOM),
        vec![remove(ROOM, 1)]
    );
    // Nobody is due before a whole ttl from the load; then those that did not ping go.
    t.clock.advance(Duration::from_secs(59));
    assert_eq!(t.engine.presence_due(&t.config), Vec::<Box<str>>::new());
    assert_eq!(
        reply(&t.presence_as(ROOM, "ping", "a2", "ann")),
        json!({"result": null})
    );
    t.clock.advance(Duration::from_secs(1));
    assert_eq!(
        t.engine.presence_due(&t.config),
        vec![Box::<str>::from(ROOM)]
    );
    let out: Vec<(String, Value)> = t
        .engine
        .presence_expire(&t.config, ROOM)
        .iter()
        .map(|(s, p)| (s.clone(), serde_json::from_slice(p).unwrap()))
        .collect();
    assert_eq!(out, vec![remove(ROOM, 1)], "cat; ann keeps a2");
    assert_eq!(t.members(ROOM), json!(["ann"]));
    // Its partition went elsewhere: the index forgets it, and a token event's step
    // finds nothing here.
    t.engine.presence_forget(|rid| rid != ROOM);
    assert!(t.engine.presence_joined("a2").is_empty());
    assert_eq!(t.token_step("a2", LOGOUT, |_| true), vec![]);
}

proptest! {
    /// A gateway's copy of the list, kept from the events alone, equals the get after
    /// every join, leave, ping, login, logout and sweep, in any order.
    #[test]
    fn a_gateways_copy_from_the_events_equals_the_get(
        steps in proptest::collection::vec((0u8..6, 0u8..4, 0u8..3), 1..50),
    ) {
        let mut t = t();
        let names = ["ann", "bob", "cat"];
        let mut shadow: Vec<Value> = Vec::new();
        for (op, c, n) in steps {
            let cid = format!("c{c}");
            let events = match op {
                0 | 1 => events(&t.presence(ROOM, "join", &cid)),
                2 => events(&t.presence(ROOM, "leave", &cid)),
                3 => t.token(&cid, &login(names[n as usize])),
                4 => t.token(&cid, LOGOUT),
                _ => {
                    t.clock.advance(Duration::from_secs(25));
                    t.presence(ROOM, "ping", &cid);
                    t.sweep()
                }
            };
            fold_list(&mut shadow, ROOM, &events).map_err(TestCaseError::fail)?;
            prop_assert_eq!(Value::Array(shadow.clone()), t.members(ROOM));
        }
    }
}

#[test]
fn a_collection_or_a_model_that_turns_into_a_presence_list_or_back_keeps_nothing() {
    // A backend's collection of names, then the same name as a presence list.
    let list = "version: 1\nresources:\n  chat.room.{room}.members:\n    collection:\n      item: { type: string }\n    access:\n      get: \"true\"\n";
    let old = Config::parse("p.yaml", list).unwrap();
    let clock = Clock::manual();
    let mut t = T {
        config: old,
        engine: Engine::new(MemoryStore::default(), clock.clone()),
        clock,
    };
    let out = t.handle(Request::ApiAdd {
        rid: ROOM,
        payload: br#"{"value": "zed"}"#,
    });
    assert_eq!(events(&out), vec![add(ROOM, json!("zed"), 0)]);
    let new = Config::parse("p.yaml", PRESENCE).unwrap();
    let dropped = t.engine.reloaded(&t.config, &new);
    t.config = new;
    assert_eq!(dropped.total(), 1);
    assert_eq!(t.members(ROOM), json!([]));
    // Nobody listed who never joined: a join adds at 0.
    t.token("a1", &login("ann"));
    assert_eq!(
        events(&t.presence(ROOM, "join", "a1")),
        vec![add(ROOM, json!("ann"), 0)]
    );
    // And back: the members go, and a logout changes nothing.
    let back = Config::parse("p.yaml", list).unwrap();
    assert_eq!(t.engine.reloaded(&t.config, &back).total(), 1);
    t.config = back;
    assert_eq!(t.members(ROOM), json!([]));
    assert!(!t.token("a1", LOGOUT).iter().any(|(s, _)| s.contains(ROOM)));
    // A model's written values go too.
    let model = list.replace(
        "    collection:\n      item: { type: string }\n",
        "    fields:\n      topic: { type: string }\n",
    );
    let mut t = self::t();
    t.config = Config::parse("p.yaml", &model).unwrap();
    let out = t.handle(Request::ApiSet {
        rid: ROOM,
        payload: br#"{"values": {"topic": "hi"}}"#,
    });
    assert_eq!(reply(&out), json!({"result": null}));
    let new = Config::parse("p.yaml", PRESENCE).unwrap();
    let dropped = t.engine.reloaded(&t.config, &new);
    t.config = new;
    assert_eq!(dropped.total(), 1);
    assert!(
        dropped.describe().contains("now a presence list"),
        "{}",
        dropped.describe()
    );
    assert_eq!(t.members(ROOM), json!([]));
    t.token("a1", &login("ann"));
    t.presence(ROOM, "join", "a1");
    let back = Config::parse("p.yaml", &model).unwrap();
    assert_eq!(t.engine.reloaded(&t.config, &back).total(), 1);
    t.config = back;
    let out = t.handle(Request::Get { rid: ROOM });
    assert_eq!(reply(&out)["result"]["model"], json!({"topic": null}));
}
