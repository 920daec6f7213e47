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
        c.model_mut("a.c1");
        c.model_mut("b.c1");
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
        c.model_mut("a.c1");
    });
    assert_eq!(s.take_changed(), c1(), "a model remembered");
    // A get filling its cached reply, or a touch, changes nothing that is kept.
    s.update_connection("c1", 1, |c| {
        c.model_mut("a.c1").reply.set(1, bytes::Bytes::new());
    });
    assert!(s.touch_connection("c1", 3));
    assert_eq!(s.take_changed(), Vec::<UnitKey>::new());
    // Whether the token is confirmed is kept (a new owner trusts it or not).
    s.update_existing("c1", 2, |c| c.confirmed = true);
    assert_eq!(s.take_changed(), c1(), "confirmed");
    s.update_existing("c1", 4, |c| {
        c.model_mut("a.c1").written_mut().insert("x", Value::Null)
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
        c.model_mut("a.c1");
        c.model_mut("b.c1");
    });
    s.update_shared("public.a", 2, |w| w.insert("x", Value::Null));
    s.update_connection("c2", 3, |_| {});
    s.update_connection("c3", 4, |_| {});
    s.take_changed();
    assert_eq!(s.entries(), 5);
    assert_eq!(s.evict_oldest(5, 64, |_| false), Vec::new());
    // c1 (two entries) must stay: public.a and c2 go.
    let c1 = UnitKey::Connection("c1".into());
    let gone = s.evict_oldest(3, 64, |k| *k == c1);
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
    assert_eq!(s.evict_oldest(0, 1, |_| false).len(), 1);
    assert_eq!(s.entries(), 1);
}
