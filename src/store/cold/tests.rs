use super::*;

fn conn(cid: &str) -> UnitKey {
    UnitKey::Connection(cid.into())
}

fn shared(rid: &str) -> UnitKey {
    UnitKey::Shared(rid.into())
}

/// Whether `key` is one of `keys` (the units in memory).
fn among(keys: &[UnitKey]) -> impl Fn(&UnitKey) -> bool + '_ {
    move |k| keys.contains(k)
}

fn nothing(_: &UnitKey) -> bool {
    false
}

#[test]
fn a_cold_unit_is_read_before_the_message_that_needs_it() {
    let mut s: ColdSet<&str> = ColdSet::new(1);
    assert!(s.is_idle());
    assert_eq!(s.evict(conn("c1"), 5, 10), Evicted::Tracked);
    assert!(!s.is_idle());
    assert!(s.needs_read(&conn("c1"), false, false));
    assert!(!s.needs_read(&conn("c2"), false, false), "never stored");
    s.hold(0, "get c1", vec![conn("c1")]);
    assert!(s.pinned(&conn("c1")));
    assert_eq!(s.pop_ready(0, nothing, nothing), None);
    let id = s.start_read(&conn("c1"), false).unwrap();
    assert_eq!(s.start_read(&conn("c1"), false), None, "one read at a time");
    assert_eq!(
        s.read_done(&conn("c1"), id, ReadResult::Found, true),
        Done::Insert { confirmed: None }
    );
    assert!(s.is_empty());
    // In memory now.
    let memory = [conn("c1")];
    assert_eq!(s.pop_ready(0, among(&memory), nothing), Some("get c1"));
    assert!(!s.pinned(&conn("c1")));
    assert!(s.is_idle());
}

#[test]
fn later_items_of_a_partition_wait_behind_the_first_in_order() {
    let mut s: ColdSet<u32> = ColdSet::new(1);
    s.evict(conn("c1"), 0, 10);
    s.evict(conn("c2"), 0, 10);
    s.hold(0, 1, vec![conn("c1")]);
    s.hold(0, 2, vec![]);
    s.hold(0, 3, vec![conn("c2")]);
    s.hold(0, 4, vec![conn("c3")]);
    assert_eq!(s.held_count(), 4);
    assert_eq!(
        s.pop_ready(0, nothing, nothing),
        None,
        "2 is ready, 1 is not"
    );
    let id1 = s.start_read(&conn("c1"), false).unwrap();
    let id2 = s.start_read(&conn("c2"), false).unwrap();
    // c2 comes back first: nothing moves until c1 does.
    s.read_done(&conn("c2"), id2, ReadResult::Found, true);
    let mut memory = vec![conn("c2")];
    assert_eq!(s.pop_ready(0, among(&memory), nothing), None);
    s.read_done(&conn("c1"), id1, ReadResult::Found, true);
    memory.push(conn("c1"));
    let order: Vec<u32> = std::iter::from_fn(|| s.pop_ready(0, among(&memory), nothing)).collect();
    assert_eq!(order, [1, 2, 3, 4]);
    assert_eq!(s.held_partitions(), Vec::<u32>::new());
}

#[test]
fn a_forgotten_partition_returns_its_held_items_and_its_reads_go_stale() {
    let n = 8;
    let (a, b) = two_partitions(n);
    let (pa, pb) = (partition(&a, n), partition(&b, n));
    let mut s: ColdSet<&str> = ColdSet::new(n);
    s.evict(a.clone(), 0, 10);
    s.evict(b.clone(), 0, 10);
    s.hold(pa, "x", vec![a.clone()]);
    s.hold(pa, "y", vec![]);
    let id = s.start_read(&a, false).unwrap();
    assert_eq!(s.forget(pa), ["x", "y"]);
    assert!(!s.pinned(&a) && !s.has_held(pa));
    assert_eq!(s.read_done(&a, id, ReadResult::Found, true), Done::Stale);
    assert!(!s.needs_read(&a, false, false));
    // The other partition's cold unit stays.
    assert!(s.needs_read(&b, false, false));
    assert_eq!(s.forget(pb), Vec::<&str>::new());
    assert!(s.is_idle());
}

/// Two connections in different partitions.
fn two_partitions(n: u32) -> (UnitKey, UnitKey) {
    let a = conn("a");
    let b = (0..)
        .map(|i| conn(&format!("b{i}")))
        .find(|b| partition(b, n) != partition(&a, n))
        .unwrap();
    (a, b)
}

#[test]
fn a_failed_read_a_message_waits_for_is_tried_again() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    s.evict(conn("c1"), 0, 10);
    s.hold(0, (), vec![conn("c1")]);
    let id = s.start_read(&conn("c1"), false).unwrap();
    assert_eq!(
        s.read_done(&conn("c1"), id, ReadResult::Failed, true),
        Done::Retry
    );
    assert!(s.needs_read(&conn("c1"), false, false), "still cold");
    assert_eq!(s.start_read(&conn("c1"), false), None, "retried by `retry`");
    let again = s.retry();
    assert_eq!(again.len(), 1);
    assert_eq!(s.retry(), Vec::new(), "once");
    let (key, id2) = again.into_iter().next().unwrap();
    assert_eq!(s.read_done(&key, id, ReadResult::Found, true), Done::Stale);
    assert_eq!(
        s.read_done(&key, id2, ReadResult::Found, true),
        Done::Insert { confirmed: None }
    );
}

#[test]
fn a_cold_unit_idle_past_the_ttl_is_read_and_expired() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    s.evict(conn("old"), 10, 10);
    s.evict(shared("public.a"), 20, 10);
    s.evict(conn("young"), 90, 10);
    let due = s.expired(100, 80, 64, |_| true);
    let keys: Vec<&UnitKey> = due.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [&conn("old"), &shared("public.a")]);
    assert_eq!(s.expired(100, 80, 64, |_| true), Vec::new(), "in flight");
    assert_eq!(
        s.read_done(&conn("old"), due[0].1, ReadResult::Found, true),
        Done::Expire
    );
    assert_eq!(
        s.read_done(&shared("public.a"), due[1].1, ReadResult::Absent, true),
        Done::Gone
    );
    assert_eq!(s.len(), 1);
    // Not in a partition held here: not even read.
    assert_eq!(s.expired(200, 80, 64, |_| false), Vec::new());
}

#[test]
fn an_expiring_unit_a_message_needs_is_read_back_instead() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    s.evict(conn("c1"), 0, 10);
    let due = s.expired(100, 50, 64, |_| true);
    s.hold(0, (), vec![conn("c1")]);
    assert!(s.needs_read(&conn("c1"), false, false));
    assert_eq!(
        s.read_done(&conn("c1"), due[0].1, ReadResult::Found, true),
        Done::Insert { confirmed: None }
    );
}

#[test]
fn expiry_stays_cold_when_its_read_fails_or_the_partition_is_not_held() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    s.evict(conn("c1"), 0, 10);
    let due = s.expired(100, 50, 64, |_| true);
    assert_eq!(
        s.read_done(&conn("c1"), due[0].1, ReadResult::Failed, true),
        Done::Later
    );
    let due = s.expired(100, 50, 64, |_| true);
    assert_eq!(
        s.read_done(&conn("c1"), due[0].1, ReadResult::Found, false),
        Done::Later
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s.expired(100, 50, 64, |_| true).len(), 1, "the next sweep");
}

#[test]
fn expiry_reads_in_flight_are_bounded() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    for i in 0..10 {
        s.evict(conn(&format!("c{i}")), 0, 100);
    }
    assert_eq!(s.expired(100, 50, 4, |_| true).len(), 4);
    assert_eq!(s.expired(100, 50, 4, |_| true).len(), 0);
}

#[test]
fn doubt_and_confirmation_reach_the_record_when_it_is_read_back() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    s.evict(conn("c1"), 0, 10);
    s.evict(conn("c2"), 0, 10);
    s.evict(shared("public.a"), 0, 10);
    s.set_confirmed(0, |_| true, false);
    s.set_confirmed(0, |cid| cid == "c2", true);
    let a = s.start_read(&conn("c1"), false).unwrap();
    let b = s.start_read(&conn("c2"), false).unwrap();
    assert_eq!(
        s.read_done(&conn("c1"), a, ReadResult::Found, true),
        Done::Insert {
            confirmed: Some(false)
        }
    );
    assert_eq!(
        s.read_done(&conn("c2"), b, ReadResult::Found, true),
        Done::Insert {
            confirmed: Some(true)
        }
    );
}

#[test]
fn past_its_bound_a_partition_overflows_and_every_unit_not_in_memory_is_read() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    assert_eq!(s.evict(conn("c1"), 0, 2), Evicted::Tracked);
    assert_eq!(s.evict(conn("c2"), 0, 2), Evicted::Tracked);
    assert_eq!(
        s.evict(conn("c3"), 0, 2),
        Evicted::Untracked { first: true }
    );
    assert_eq!(
        s.evict(conn("c4"), 0, 2),
        Evicted::Untracked { first: false }
    );
    assert_eq!(s.len(), 2);
    // Any unit not in memory may be in the bucket, unless a write of it is pending.
    assert!(s.needs_read(&conn("new"), false, false));
    assert!(!s.needs_read(&conn("new"), false, true));
    assert!(!s.needs_read(&conn("new"), true, false));
    let id = s.start_read(&conn("new"), false).unwrap();
    assert_eq!(
        s.read_done(&conn("new"), id, ReadResult::Absent, true),
        Done::Gone
    );
    assert!(!s.needs_read(&conn("new"), false, false), "known absent");
    // Evicted after it was created: no longer known absent.
    s.evict(conn("new"), 0, 2);
    assert!(s.needs_read(&conn("new"), false, false));
    // Doubt reaches the untracked ones.
    s.set_confirmed(0, |_| true, false);
    let id = s.start_read(&conn("c3"), false).unwrap();
    assert_eq!(
        s.read_done(&conn("c3"), id, ReadResult::Found, true),
        Done::Insert {
            confirmed: Some(false)
        }
    );
    assert!(s.names(0, None).overflowed);
    s.forget(0);
    assert!(s.is_idle());
    assert!(!s.needs_read(&conn("c4"), false, false));
}

#[test]
fn absent_keys_are_bounded() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    s.evict(conn("c0"), 0, 0);
    for i in 0..ABSENT_MAX + 10 {
        let k = conn(&format!("n{i}"));
        let id = s.start_read(&k, false).unwrap();
        s.read_done(&k, id, ReadResult::Absent, true);
    }
    assert!(s.needs_read(&conn("n0"), false, false), "forgotten first");
    assert!(!s.needs_read(&conn(&format!("n{}", ABSENT_MAX + 9)), false, false));
}

#[test]
fn a_reset_names_the_cold_units_of_its_partition() {
    let n = 8;
    let (a, b) = two_partitions(n);
    let pa = partition(&a, n);
    let rid = (0..)
        .map(|i| format!("public.m{i}"))
        .find(|r| partition(&shared(r), n) == pa)
        .unwrap();
    let mut s: ColdSet<()> = ColdSet::new(n);
    s.evict(b, 0, 10);
    assert_eq!(s.names(pa, None), ColdNames::default());
    s.evict(shared(&rid), 5, 10);
    s.evict(a, 10, 10);
    assert_eq!(
        s.names(pa, None),
        ColdNames {
            connections: true,
            shared: vec![rid.as_str().into()],
            overflowed: false
        }
    );
    // Touched since 6: the connection only.
    assert_eq!(
        s.names(pa, Some(6)),
        ColdNames {
            connections: true,
            shared: vec![],
            overflowed: false
        }
    );
}

#[test]
fn clearing_a_partition_keeps_its_held_items() {
    let mut s: ColdSet<u8> = ColdSet::new(1);
    s.evict(conn("c1"), 0, 10);
    s.hold(0, 7, vec![conn("c1")]);
    let id = s.start_read(&conn("c1"), false).unwrap();
    // Its units were loaded again (the partition installed): c1 is in memory.
    s.clear_keys(0);
    assert_eq!(
        s.read_done(&conn("c1"), id, ReadResult::Found, true),
        Done::Stale
    );
    let memory = [conn("c1")];
    assert_eq!(s.pop_ready(0, among(&memory), nothing), Some(7));
}

#[test]
fn a_unit_read_back_is_no_longer_named_nor_doubted() {
    let mut s: ColdSet<()> = ColdSet::new(1);
    s.evict(conn("c1"), 0, 10);
    let id = s.start_read(&conn("c1"), false).unwrap();
    s.read_done(&conn("c1"), id, ReadResult::Found, true);
    assert_eq!(s.names(0, None), ColdNames::default());
    // Evicted again: named again, and what the protocol decides reaches it.
    s.evict(conn("c1"), 3, 10);
    s.set_confirmed(0, |_| true, false);
    assert!(s.names(0, None).connections);
    let id = s.start_read(&conn("c1"), false).unwrap();
    assert_eq!(
        s.read_done(&conn("c1"), id, ReadResult::Found, true),
        Done::Insert {
            confirmed: Some(false)
        }
    );
}
