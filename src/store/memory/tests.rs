use super::*;
use serde_json::Value;

#[test]
fn records_are_created_unconfirmed_and_unconfirmed_after_reconnect() {
    let mut s = MemoryStore::default();
    assert!(s.connection("c1").is_none());
    s.update_connection("c1", 0, |c| {
        assert!(!c.confirmed && c.token.is_none());
        c.confirmed = true;
    });
    s.unconfirm_all();
    assert!(!s.connection("c1").unwrap().confirmed);
}

#[test]
fn entries_count_models_and_records_without_models() {
    let mut s = MemoryStore::default();
    s.update_connection("c1", 0, |_| {});
    assert_eq!(s.entries(), 1);
    s.update_connection("c1", 0, |c| {
        c.model_mut("c1", "a.c1");
        c.model_mut("c1", "b.c1");
        c.grant("x.c2");
        c.grant("x.c2");
    });
    assert_eq!(s.entries(), 3);
    s.update_shared("public.board", 0, |w| w.insert("x", Value::Bool(true)));
    assert_eq!(s.entries(), 4);
    // An empty shared model is not kept.
    s.update_shared("public.other", 0, |_| {});
    assert_eq!((s.entries(), s.shared_models()), (4, 1));
    s.remove_connection("c1");
    assert_eq!(s.entries(), 1);
    s.retain_shared(|_, _| false);
    assert_eq!(s.entries(), 0);
}

#[test]
fn only_changes_to_what_is_kept_are_listed() {
    let mut s = MemoryStore::default();
    s.track_changes();
    let c1 = || vec![UnitKey::Connection("c1".into())];
    s.update_connection("c1", 0, |_| {});
    assert_eq!(s.take_changed(), c1(), "created");
    s.update_connection("c1", 0, |c| {
        c.model_mut("c1", "a.c1");
    });
    assert_eq!(s.take_changed(), c1(), "a model remembered");
    // A get filling its cached reply, or a touch, changes nothing that is kept.
    s.update_connection("c1", 1, |c| {
        c.model_mut("c1", "a.c1").set_reply(1, bytes::Bytes::new());
    });
    assert!(s.touch_connection("c1", 3));
    assert_eq!(s.take_changed(), Vec::<UnitKey>::new());
    // Whether the token is confirmed is kept (a new owner trusts it or not).
    s.update_existing("c1", 2, |c| c.confirmed = true);
    assert_eq!(s.take_changed(), c1(), "confirmed");
    s.update_existing("c1", 4, |c| {
        c.model_mut("c1", "a.c1")
            .written_mut()
            .insert("x", Value::Null)
    });
    assert_eq!(s.take_changed(), c1(), "a written value");
    s.update_existing("c1", 5, |c| c.replace_token(None));
    s.update_existing("c1", 5, |c| c.grant("b.c2"));
    assert_eq!(s.take_changed(), c1(), "the token and a grant, listed once");
    s.update_existing("c1", 6, |c| c.models.clear());
    assert_eq!(s.take_changed(), c1(), "models removed in place");
    s.update_shared("public.a", 7, |w| w.insert("x", Value::Null));
    s.remove_connection("c1");
    assert_eq!(
        s.take_changed(),
        vec![
            UnitKey::Connection("c1".into()),
            UnitKey::Shared("public.a".into())
        ]
    );
}

#[test]
fn the_least_recently_touched_unit_goes_first() {
    let mut s = MemoryStore::default();
    s.update_connection("c1", 1, |_| {});
    s.update_shared("public.a", 2, |w| w.insert("x", Value::Null));
    s.update_connection("c2", 3, |_| {});
    assert!(s.touch_connection("c1", 4));
    assert!(!s.touch_connection("c9", 4));
    assert_eq!(s.oldest(), Some(2));
    let order: Vec<String> = std::iter::from_fn(|| s.pop_oldest())
        .map(|d| match d {
            Dropped::Connection { cid, .. } => cid.to_string(),
            Dropped::Model { rid, .. } => rid.to_string(),
        })
        .collect();
    assert_eq!(order, ["public.a", "c2", "c1"]);
    assert_eq!(s.entries(), 0);
}

#[test]
fn eviction_takes_the_least_recently_touched_units_it_may_and_lists_no_change() {
    let mut s = MemoryStore::default();
    s.track_changes();
    s.update_connection("c1", 1, |c| {
        c.model_mut("c1", "a.c1");
        c.model_mut("c1", "b.c1");
    });
    s.update_shared("public.a", 2, |w| w.insert("x", Value::Null));
    s.update_connection("c2", 3, |_| {});
    s.update_connection("c3", 4, |_| {});
    s.take_changed();
    assert_eq!(s.entries(), 5);
    assert_eq!(s.evict_oldest(5, usize::MAX, 64, |_| false), Vec::new());
    // c1 (two entries) must stay: public.a and c2 go.
    let c1 = UnitKey::Connection("c1".into());
    let gone = s.evict_oldest(3, usize::MAX, 64, |k| *k == c1);
    assert_eq!(
        gone,
        vec![
            (UnitKey::Shared("public.a".into()), 2),
            (UnitKey::Connection("c2".into()), 3)
        ]
    );
    assert_eq!(s.entries(), 3);
    assert!(s.contains(&c1) && !s.contains(&UnitKey::Connection("c2".into())));
    assert_eq!(s.take_changed(), Vec::<UnitKey>::new(), "nothing to write");
    // At most `budget` units.
    assert_eq!(s.evict_oldest(0, usize::MAX, 1, |_| false).len(), 1);
    assert_eq!(s.entries(), 1);
}

fn recount(s: &MemoryStore) -> usize {
    s.recount_bytes()
}

#[test]
fn bytes_count_the_token_values_and_replies_of_each_unit_through_every_change() {
    use super::super::size::{value_bytes, ALLOCATION, SLOT};
    use serde_json::json;
    let mut s = MemoryStore::default();
    assert_eq!(s.bytes(), 0);
    s.update_connection("c1", 0, |_| {});
    assert_eq!(s.bytes(), UNIT_OVERHEAD);
    // A token: its canonical text and the block that holds it.
    let token = json!({"userId": 7, "name": "Ann"});
    let token_bytes = r#"{"name":"Ann","userId":7}"#.len() + ALLOCATION;
    s.update_connection("c1", 0, |c| {
        c.replace_token(Some(crate::store::Token::new(&token)))
    });
    assert_eq!(s.bytes(), UNIT_OVERHEAD + token_bytes);
    // A written value: its slot (which holds a field name of up to 16 bytes) and the
    // value; overwritten, the new one.
    let field = |v: &Value| SLOT + value_bytes(v);
    s.update_existing("c1", 1, |c| {
        c.model_mut("c1", "p.c1")
            .written_mut()
            .insert("bio", "hello".into())
    });
    assert_eq!(
        s.bytes(),
        UNIT_OVERHEAD + token_bytes + field(&json!("hello"))
    );
    s.update_existing("c1", 1, |c| {
        c.model_mut("c1", "p.c1")
            .written_mut()
            .insert("bio", "hello, world".into())
    });
    let written = field(&json!("hello, world"));
    assert_eq!(s.bytes(), UNIT_OVERHEAD + token_bytes + written);
    // A cached reply: its bytes, until the next write clears it.
    s.update_existing("c1", 2, |c| {
        c.model_mut("c1", "p.c1")
            .set_reply(1, bytes::Bytes::from_static(b"0123456789"));
    });
    assert_eq!(s.bytes(), UNIT_OVERHEAD + token_bytes + written + 10);
    // Logged out, its values reset: the record alone.
    s.update_existing("c1", 3, |c| {
        c.replace_token(None);
        c.model_mut("c1", "p.c1").written_mut().clear();
    });
    assert_eq!(s.bytes(), UNIT_OVERHEAD);
    // A collection's items, added and removed: each in its slot.
    s.update_existing("c1", 4, |c| {
        let items = c.model_mut("c1", "l.c1").written_mut().items_mut();
        items.push("a".into());
        items.push(json!([1, 2]));
    });
    let (a, list) = (
        SLOT + value_bytes(&json!("a")),
        SLOT + value_bytes(&json!([1, 2])),
    );
    assert_eq!(s.bytes(), UNIT_OVERHEAD + a + list);
    s.update_existing("c1", 4, |c| {
        c.model_mut("c1", "l.c1")
            .written_mut()
            .items_mut()
            .remove(0);
    });
    assert_eq!(s.bytes(), UNIT_OVERHEAD + list);
    // A model without a cid counts a unit of its own; emptied, it goes.
    s.update_shared("board.b", 5, |w| w.insert("title", "hi".into()));
    let board = UNIT_OVERHEAD + SLOT + value_bytes(&json!("hi"));
    assert_eq!(s.bytes(), UNIT_OVERHEAD + list + board);
    // A presence list: what its members say.
    let mut members = crate::presence::Members::default();
    members.join("c1", "ann".into(), 5, 10).unwrap();
    s.update_shared("room.r", 5, |w| {
        w.members_mut().join("c1", "ann".into(), 5, 10).unwrap();
    });
    assert_eq!(
        s.bytes(),
        UNIT_OVERHEAD + list + board + UNIT_OVERHEAD + members.bytes()
    );
    s.update_shared("room.r", 5, |w| {
        w.members_mut().leave("c1");
    });
    s.update_shared("board.b", 5, |w| w.clear());
    assert_eq!(s.bytes(), UNIT_OVERHEAD + list);
    assert_eq!(s.bytes(), recount(&s));
    // Taken out (dropped, expired), a unit takes exactly what it added (a token of
    // 102 bytes of text).
    let long = json!("x".repeat(100));
    s.update_connection("c2", 6, |c| {
        c.replace_token(Some(crate::store::Token::new(&long)))
    });
    assert_eq!(s.bytes(), 2 * UNIT_OVERHEAD + list + 102 + ALLOCATION);
    assert!(matches!(s.pop_oldest(), Some(Dropped::Connection { cid, .. }) if &*cid == "c1"));
    assert_eq!(s.bytes(), UNIT_OVERHEAD + 102 + ALLOCATION);
    s.remove_connection("c2");
    assert_eq!(s.bytes(), 0);
}

#[test]
fn eviction_by_bytes_takes_the_least_recently_touched_units_until_the_bytes_fit() {
    let mut s = MemoryStore::default();
    let big = Value::String("x".repeat(998));
    for (i, cid) in ["c1", "c2", "c3"].into_iter().enumerate() {
        s.update_connection(cid, i as u32 + 1, |c| {
            c.replace_token(Some(crate::store::Token::new(&big.clone())))
        });
    }
    let unit = UNIT_OVERHEAD + 1000 + super::super::size::ALLOCATION;
    assert_eq!(s.bytes(), 3 * unit);
    // Within both bounds: nothing goes.
    assert_eq!(s.evict_oldest(usize::MAX, 3 * unit, 64, |_| false), vec![]);
    // One byte over: the coldest goes, whatever the entries say.
    let gone = s.evict_oldest(usize::MAX, 3 * unit - 1, 64, |_| false);
    assert_eq!(gone, vec![(UnitKey::Connection("c1".into()), 1)]);
    assert_eq!((s.bytes(), s.entries()), (2 * unit, 2));
    // A unit that must stay is passed over.
    let c2 = UnitKey::Connection("c2".into());
    let gone = s.evict_oldest(usize::MAX, unit, 64, |k| *k == c2);
    assert_eq!(gone, vec![(UnitKey::Connection("c3".into()), 3)]);
    assert_eq!(s.bytes(), unit);
}

mod accounting {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Whatever the changes, the bytes kept as they happen equal those counted
        /// afresh from every unit, and entries stay exact too.
        #[test]
        fn the_running_total_equals_a_recount_after_any_changes(
            steps in proptest::collection::vec((0u8..15, 0u8..4, 0usize..300), 1..80),
        ) {
            let mut s = MemoryStore::default();
            let mut now = 0;
            for (op, unit, size) in steps {
                now += 1;
                let cid = format!("c{unit}");
                let rid = format!("m.{cid}");
                let board = format!("board.{unit}");
                let text = Value::String("y".repeat(size));
                match op {
                    0 => s.update_connection(&cid, now, |c| {
                        c.replace_token(Some(crate::store::Token::new(&json!({"userId": unit, "blob": text}))))
                    }),
                    1 => s.update_connection(&cid, now, |c| {
                        c.replace_token(None);
                        for m in &mut c.models {
                            m.written_mut().clear();
                        }
                    }),
                    2 => {
                        s.update_existing(&cid, now, |c| {
                            c.model_mut(&cid, &rid).written_mut().insert("f", text)
                        });
                    }
                    3 => {
                        s.update_existing(&cid, now, |c| {
                            let reply = bytes::Bytes::from(vec![b'r'; size]);
                            c.model_mut(&cid, &rid).set_reply(1, reply);
                        });
                    }
                    4 => {
                        s.update_existing(&cid, now, |c| {
                            let items = c.model_mut(&cid, &format!("l.{cid}")).written_mut().items_mut();
                            items.insert(0, text);
                        });
                    }
                    5 => {
                        s.update_existing(&cid, now, |c| {
                            let items = c.model_mut(&cid, &format!("l.{cid}")).written_mut().items_mut();
                            if !items.is_empty() {
                                items.remove(size % items.len());
                            }
                        });
                    }
                    6 => {
                        s.remove_connection(&cid);
                    }
                    7 => {
                        s.pop_oldest();
                    }
                    8 => s.update_shared(&board, now, |w| match size % 3 {
                        0 => w.clear(),
                        _ => w.insert("title", text),
                    }),
                    9 => s.update_shared(&board, now, |w| {
                        let m = w.members_mut();
                        match size % 2 {
                            0 => drop(m.join(&cid, json!(format!("member{size}")), now, 100)),
                            _ => drop(m.leave(&cid)),
                        }
                    }),
                    10 => {
                        s.evict_oldest(usize::MAX, size * 20, 2, |_| false);
                    }
                    11 => s.for_each_connection(|_, c| {
                        if size % 2 == 0 {
                            c.models.clear();
                        }
                    }),
                    12 => s.retain_shared(|_, w| {
                        if size % 3 == 0 {
                            w.insert("extra", json!(size));
                        }
                        size % 2 == 0
                    }),
                    13 => {
                        let key = UnitKey::Connection(cid.clone().into());
                        let conn = Connection {
                            token: Some(crate::store::Token::new(&text)),
                            ..Connection::default()
                        };
                        s.insert(key.clone(), Unit::Connection(conn), now);
                        if size % 2 == 0 {
                            s.forget(&key);
                        }
                    }
                    _ => s.update_where(|c| c == cid, |c| {
                        c.model_mut(&cid, &rid).written_mut().insert("g", json!(size));
                    }),
                }
                prop_assert_eq!(s.bytes(), recount(&s));
                let entries: usize = s
                    .keys()
                    .map(|k| match &k {
                        UnitKey::Connection(cid) => s.connection(cid).unwrap().entries(),
                        UnitKey::Shared(_) => 1,
                    })
                    .sum();
                prop_assert_eq!(s.entries(), entries);
            }
        }
    }
}
