//! Carrying state across a reload: written values stay where they still fit the new
//! declaration, and state of resources no longer declared is dropped. Only what the new
//! config can invalidate is visited. Units loaded from the shared store go through the
//! same checks ([`fit_unit`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::Engine;
use crate::config::{Config, Resource};
use crate::store::{Store, Written};

/// The written values a reload (or a load from the shared store) dropped, by where they
/// were written: the pattern, the field and why the value could not stay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DroppedValues {
    /// How many values, by `(pattern, field, why)`; the pattern is
    /// [`crate::metrics::NO_RESOURCE`] for a loaded name the config does not declare.
    pub places: BTreeMap<(String, String, &'static str), usize>,
}

impl DroppedValues {
    /// How many values were dropped.
    pub fn total(&self) -> usize {
        self.places.values().sum()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Counts `n` values of `field` of `pattern` dropped for `why`.
    pub fn add(&mut self, pattern: &str, field: &str, why: &'static str, n: usize) {
        *self
            .places
            .entry((pattern.to_string(), field.to_string(), why))
            .or_default() += n;
    }

    /// Counts those of `other` too.
    pub fn extend(&mut self, other: DroppedValues) {
        for ((pattern, field, why), n) in other.places {
            *self.places.entry((pattern, field, why)).or_default() += n;
        }
    }

    /// `pattern field: count (why)`, `; `-separated: what the reload's log line says.
    pub fn describe(&self) -> String {
        self.places
            .iter()
            .map(|((pattern, field, why), n)| format!("{pattern} {field}: {n} ({why})"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Written values dropped, by (old pattern, field, why).
type Dropped<'a> = HashMap<(&'a str, &'a str, &'static str), usize>;

/// Keeps the written values of a model of `old` that fit `new` (none when the model
/// goes: `None`), and counts the others in `dropped`.
fn drop_values<'a>(
    dropped: &mut Dropped<'a>,
    old: &'a Resource,
    new: Option<&Resource>,
    written: &mut Written,
) {
    if let Some(whys) = fit_shape(new, written) {
        for why in whys {
            *dropped
                .entry((old.pattern.as_str(), "item", why))
                .or_default() += 1;
        }
        return;
    }
    written.retain(|name, value| {
        let keep = new.is_some_and(|n| {
            n.field(name)
                .is_some_and(|f| f.source.is_none() && f.check(value).is_ok())
        });
        if !keep {
            // Every written value was written to a field of the old config.
            let field = old.field(name).map_or("?", |f| f.name.as_str());
            let why = why_dropped(old, new, name);
            *dropped
                .entry((old.pattern.as_str(), field, why))
                .or_default() += 1;
        }
        keep
    });
}

/// Why a value written to `field` of `old` cannot stay under `new` (`None`: the
/// pattern is gone, and the model with it; patterns never overlap, so a name that
/// matches another pattern now lost its own).
fn why_dropped(old: &Resource, new: Option<&Resource>, field: &str) -> &'static str {
    let Some(new) = new else {
        return "resource removed";
    };
    match (old.field(field), new.field(field)) {
        _ if new.collection.is_some() => "now a collection",
        (_, None) => "field removed",
        (_, Some(g)) if g.source.is_some() => "field now derived",
        (Some(f), Some(g)) if f.ty != g.ty => "type changed",
        _ => "fails the field's new constraints",
    }
}

impl<S: Store> Engine<S> {
    /// Brings the store in line with a new config. A written value survives when its
    /// field still exists, is still written rather than derived, and the value still
    /// passes the field's type and constraints; otherwise the field follows its default.
    /// `from` fields need nothing: they are computed from the token on every read.
    /// Gateways learn of the changes from the `system.reset` the reload publishes.
    /// Returns the written values dropped, for the reload's log line.
    ///
    /// State belongs to its pattern: when a name now matches another pattern (or none),
    /// its state is dropped, so a reload never hands one resource's values to another.
    ///
    /// Only the patterns whose stored state the new config can invalidate are visited
    /// (see [`invalidated`]); a reload that changes rules, defaults or descriptions, or
    /// adds resources or fields, visits nothing, however much state there is.
    pub fn reloaded(&mut self, old: &Config, new: &Config) -> DroppedValues {
        let invalidated = invalidated(old, new);
        self.carry_over(old, new, &invalidated)
    }

    /// [`Engine::reloaded`], told which patterns' state the new config can invalidate
    /// ([`invalidated_patterns`], worked out beside the serving task).
    pub fn reloaded_knowing(
        &mut self,
        old: &Config,
        new: &Config,
        invalidated: &[String],
    ) -> DroppedValues {
        let invalidated = invalidated.iter().map(String::as_str).collect();
        self.carry_over(old, new, &invalidated)
    }

    fn carry_over(
        &mut self,
        old: &Config,
        new: &Config,
        invalidated: &HashSet<&str>,
    ) -> DroppedValues {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // No reply cached under the old config is served under the new one.
        self.stamp += 1;
        if invalidated.is_empty() {
            return DroppedValues::default();
        }
        // `None`: the name's state is not affected. `Some((old, None))`: it is dropped.
        // `Some((old, Some(res)))`: its values are re-checked against `res`.
        let affected = |rid: &str| -> Option<(&Arc<Resource>, Option<Arc<Resource>>)> {
            let o = old.resource_of(rid)?;
            if !invalidated.contains(o.pattern.as_str()) {
                return None;
            }
            let n = new
                .resource_of(rid)
                .filter(|n| n.pattern == o.pattern)
                .cloned();
            Some((o, n))
        };
        // Dropped values by (old pattern, field, why): keys borrowed from the old config.
        let mut dropped: Dropped = HashMap::new();
        self.store.for_each_connection(|cid, conn| {
            conn.models.retain_mut(|m| match affected(&m.rid(cid)) {
                None => true,
                Some((o, n)) => {
                    drop_values(&mut dropped, o, n.as_deref(), m.written_mut());
                    n.is_some_and(|n| n.follows_token() || !m.written().is_empty())
                }
            });
            conn.retain_granted(|rid| !matches!(affected(rid), Some((_, None))));
        });
        self.store
            .retain_shared(|rid, written| match affected(rid) {
                None => true,
                Some((o, n)) => {
                    drop_values(&mut dropped, o, n.as_deref(), written);
                    n.is_some()
                }
            });
        if old.resources.iter().any(|r| r.presence.is_some()) {
            self.rebuild_presence_index();
        }
        let places = dropped
            .into_iter()
            .map(|((p, f, why), n)| ((p.to_string(), f.to_string(), why), n))
            .collect();
        DroppedValues { places }
    }
}

/// Why a value loaded for `field` of `res` cannot stay (`None`: it can), in the words
/// of [`why_dropped`]: the unit was written under a config that declared the field
/// and accepted the value.
fn unfit(res: &Resource, field: &str, value: &Value) -> Option<&'static str> {
    let Some(f) = res.field(field) else {
        return Some("field removed");
    };
    if f.source.is_some() {
        return Some("field now derived");
    }
    match f.check(value) {
        Ok(()) => None,
        Err(_) if !f.is_of_type(value) => Some("type changed"),
        Err(_) => Some("fails the field's new constraints"),
    }
}

/// Why the written values of a loaded name go with it: no pattern of the config
/// declares the name (or not as the unit's, see [`fit_unit`]).
const NOT_DECLARED: &str = "name not declared";

/// Whether every written value fits `res`.
fn fits(res: &Resource, written: &Written) -> bool {
    // A presence list read back: its members as the list serves them (one past a
    // lowered `max_members` stays: only new members are refused), made by this
    // `member` (docs/scaling.md).
    if let (Some(p), Some(c)) = (&res.presence, &res.collection) {
        // One made by another `member` (a restart with an edited file) goes: its
        // connections join again. One stored before this was kept says nothing.
        return matches!(written, Written::Presence(m)
                if m.made_by().is_none_or(|by| by == &*p.made_by))
            && written.items().iter().all(|v| c.item.check(v).is_ok());
    }
    if let Some(c) = &res.collection {
        let items = written.items();
        return matches!(written, Written::Items(_))
            && items.len() <= c.max_items
            && items.iter().all(|v| c.item.check(v).is_ok());
    }
    matches!(written, Written::Fields(_))
        && written
            .iter()
            .all(|(name, value)| unfit(res, name, value).is_none())
}

/// A collection's items kept where they fit `res`, or field values written to what is
/// now a collection: what goes, and why, one entry per value (`None`: `written` holds
/// field values and `res` is a model, which the caller fits field by field). The items
/// past a lowered `max_items` go from the end.
fn fit_shape(res: Option<&Resource>, written: &mut Written) -> Option<Vec<&'static str>> {
    let collection = res.and_then(|r| r.collection.as_ref());
    match (&mut *written, collection) {
        // Visited only when the list's declaration changed: its members join again.
        (Written::Presence(p), _) => {
            let whys = vec!["presence list changed"; p.values().len()];
            written.clear();
            Some(whys)
        }
        // A presence list lists connections that joined: what a collection or a model
        // held before goes.
        (_, Some(_)) if res.is_some_and(|r| r.presence.is_some()) => {
            let whys = vec!["now a presence list"; written.len()];
            written.clear();
            Some(whys)
        }
        (Written::Fields(_), None) => None,
        (Written::Fields(_), Some(_)) => {
            let whys = vec!["now a collection"; written.len()];
            written.clear();
            Some(whys)
        }
        (Written::Items(items), None) => {
            let why = if res.is_some() {
                "now a model"
            } else {
                "resource removed"
            };
            let whys = vec![why; items.len()];
            written.clear();
            Some(whys)
        }
        (Written::Items(items), Some(c)) => {
            let mut whys = Vec::new();
            items.retain(|v| match c.item.check(v) {
                Ok(()) => true,
                Err(_) if !c.item.is_of_type(v) => {
                    whys.push("type changed");
                    false
                }
                Err(_) => {
                    whys.push("fails the item's new constraints");
                    false
                }
            });
            if items.len() > c.max_items {
                whys.extend(vec!["past the new max_items"; items.len() - c.max_items]);
                items.truncate(c.max_items);
            }
            Some(whys)
        }
    }
}

/// Keeps the written values that fit `res`, counting the others in `dropped`.
fn keep_fitting(res: &Resource, written: &mut Written, dropped: &mut DroppedValues) {
    let pattern = res.pattern.as_str();
    if let Some(whys) = fit_shape(Some(res), written) {
        for why in whys {
            dropped.add(pattern, "item", why, 1);
        }
        return;
    }
    written.retain(|name, value| match unfit(res, name, value) {
        None => true,
        Some(why) => {
            dropped.add(pattern, name, why, 1);
            false
        }
    });
}

/// Counts every value of `written` as dropped because its name is not declared.
fn not_declared(written: &Written, dropped: &mut DroppedValues) {
    let items = written.items().len();
    if items > 0 {
        dropped.add(crate::metrics::NO_RESOURCE, "item", NOT_DECLARED, items);
    }
    for (name, _) in written.iter() {
        dropped.add(crate::metrics::NO_RESOURCE, name, NOT_DECLARED, 1);
    }
}

/// Brings a unit loaded from the shared store in line with `config`, as a reload does
/// with what is in memory (the unit may have been written under another config): a
/// written value stays where its field still exists, is still written and passes the
/// field's checks; state of names no pattern (or another pattern) matches now goes.
/// The written values that go are counted in `dropped` (for the log line of the load).
/// Says whether anything changed (the unit is then written back).
pub fn fit_unit(
    config: &Config,
    unit: &mut crate::store::Unit,
    key: &crate::store::UnitKey,
    dropped: &mut DroppedValues,
) -> bool {
    use crate::store::{Unit, UnitKey};
    let mut changed = false;
    match (unit, key) {
        (Unit::Connection(conn), UnitKey::Connection(cid)) => {
            conn.models.retain_mut(|m| {
                let rid = m.rid(cid);
                let Some(res) = config
                    .resource_of(&rid)
                    .filter(|r| r.pattern.cid_of(&rid) == Some(&**cid))
                else {
                    not_declared(m.written(), dropped);
                    changed = true;
                    return false;
                };
                // Through `written_mut` only when a value goes (it drops the cached
                // reply).
                if !fits(res, m.written()) {
                    keep_fitting(res, m.written_mut(), dropped);
                    changed = true;
                }
                let keep = res.follows_token() || !m.written().is_empty();
                changed |= !keep;
                keep
            });
            changed |= conn.retain_granted(|rid| config.resource_of(rid).is_some());
        }
        (Unit::Shared(written), UnitKey::Shared(rid)) => match config.resource_of(rid) {
            Some(res) if res.pattern.cid_of(rid).is_none() => {
                if !fits(res, written) {
                    keep_fitting(res, written, dropped);
                    changed = true;
                }
            }
            _ => {
                not_declared(written, dropped);
                changed = !written.is_empty();
                written.clear();
            }
        },
        _ => {}
    }
    changed
}

/// The patterns whose stored state a new config can invalidate: removed ones, and ones
/// where a field without `from` (one that may hold written values) was removed, became
/// derived, or changed its type or constraints.
/// The patterns of `old` whose stored state `new` can invalidate, as
/// [`Engine::reloaded`] finds them: for the reloader to work out beside the serving task.
pub fn invalidated_patterns(old: &Config, new: &Config) -> Vec<String> {
    invalidated(old, new)
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn invalidated<'a>(old: &'a Config, new: &Config) -> HashSet<&'a str> {
    old.resources
        .iter()
        .filter(|o| {
            let Some(n) = new.resource(o.pattern.as_str()) else {
                return true;
            };
            let members_break = match (&o.presence, &n.presence) {
                (Some(a), Some(b)) => a.member != b.member || a.is_ref != b.is_ref,
                (None, None) => false,
                _ => true,
            };
            let items_break = members_break
                || match (&o.collection, &n.collection) {
                    (None, None) => false,
                    (Some(a), Some(b)) => {
                        a.item.ty != b.item.ty
                            || a.item.constraints != b.item.constraints
                            || b.max_items < a.max_items
                    }
                    _ => true,
                };
            items_break
                || o.fields.iter().filter(|f| f.source.is_none()).any(|f| {
                    n.field(&f.name).is_none_or(|g| {
                        g.source.is_some() || g.ty != f.ty || g.constraints != f.constraints
                    })
                })
        })
        .map(|o| o.pattern.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::engine::{Engine, Request};
    use crate::store::Store;
    use serde_json::{json, Value};

    fn config(prefs_fields: &str) -> Config {
        Config::parse(
            "t.yaml",
            &format!(
                "version: 1\nresources:\n  session.prefs.{{cid}}:\n    fields:\n{prefs_fields}    access:\n      get: 'true'\n"
            ),
        )
        .unwrap()
    }

    fn get(engine: &mut Engine, config: &Config, rid: &str) -> Value {
        let out = engine.handle(config, Request::Get { rid });
        let v: Value = serde_json::from_slice(&out.reply.unwrap()).unwrap();
        v["result"]["model"].clone()
    }

    fn api_set(engine: &mut Engine, config: &Config, rid: &str, values: Value) {
        let payload = json!({ "values": values }).to_string();
        let out = engine.handle(
            config,
            Request::ApiSet {
                rid,
                payload: payload.as_bytes(),
            },
        );
        assert_eq!(out.reply.as_deref(), Some(&b"{\"result\":null}"[..]));
    }

    #[test]
    fn only_changes_that_can_invalidate_stored_values_visit_state() {
        let base = "      theme: { type: string, default: light, writable: true }\n      name: { type: string, from: \"{{token.name}}\" }\n";
        let old = config(base);
        let invalidates = |fields: &str| !super::invalidated(&old, &config(fields)).is_empty();
        // Nothing stored can become invalid: defaults, descriptions, derived fields,
        // added fields, `writable`.
        assert!(!invalidates(&base.replace("light", "dark")));
        assert!(!invalidates(
            &base.replace("writable: true", "writable: false")
        ));
        assert!(!invalidates(&base.replace("token.name", "token.nick")));
        assert!(!invalidates(&format!(
            "{base}      extra: {{ type: integer }}\n"
        )));
        // A written field removed, derived, retyped or constrained can.
        assert!(invalidates(
            "      name: { type: string, from: \"{{token.name}}\" }\n"
        ));
        assert!(invalidates(
            &base.replace("default: light, writable: true", "from: \"x\"")
        ));
        assert!(invalidates(
            &base.replace("type: string, default: light", "type: integer")
        ));
        assert!(invalidates(
            &base.replace("light,", "light, enum: [light, dark],")
        ));
        // So can a removed resource; its rules alone cannot.
        let other = Config::parse(
            "t.yaml",
            "version: 1\nresources:\n  other.{cid}:\n    fields: {}\n",
        )
        .unwrap();
        assert!(!super::invalidated(&old, &other).is_empty());
        let rules = Config::parse(
            "t.yaml",
            &format!("version: 1\nresources:\n  session.prefs.{{cid}}:\n    fields:\n{base}    access:\n      get: 'false'\n"),
        )
        .unwrap();
        assert!(super::invalidated(&old, &rules).is_empty());
    }

    #[test]
    fn written_values_survive_when_they_still_fit() {
        let old = config("      theme: { type: string, default: light }\n      size: { type: integer, default: 14 }\n      gone: { type: string }\n");
        let mut engine = Engine::default();
        api_set(
            &mut engine,
            &old,
            "session.prefs.c1",
            json!({"theme": "dark", "size": 30, "gone": "x"}),
        );
        let new = config("      theme: { type: string, default: light, enum: [light, dark] }\n      size: { type: integer, default: 12, max: 20 }\n");
        let dropped = engine.reloaded(&old, &new);
        assert_eq!(dropped.total(), 2);
        assert_eq!(
            dropped.describe(),
            "session.prefs.{cid} gone: 1 (field removed); session.prefs.{cid} size: 1 (fails the field's new constraints)"
        );
        assert_eq!(
            get(&mut engine, &new, "session.prefs.c1"),
            json!({"theme": "dark", "size": 12})
        );
        // A field that comes back later does not resurrect the dropped value.
        let again = config("      theme: { type: string, default: light }\n      size: { type: integer, default: 12 }\n      gone: { type: string }\n");
        assert_eq!(
            engine.reloaded(&new, &again),
            super::DroppedValues::default()
        );
        assert_eq!(
            get(&mut engine, &again, "session.prefs.c1")["gone"],
            json!(null)
        );
    }

    #[test]
    fn the_reloader_s_precomputed_patterns_carry_state_over_the_same_way() {
        // What the reloader works out beside the serving task gives what the engine
        // works out itself.
        let old = config("      theme: { type: string }\n      size: { type: integer }\n");
        let new = config("      theme: { type: string }\n      size: { type: integer, max: 20 }\n");
        assert_eq!(
            super::invalidated_patterns(&old, &new),
            vec!["session.prefs.{cid}".to_string()]
        );
        let (mut a, mut b) = (Engine::default(), Engine::default());
        for engine in [&mut a, &mut b] {
            api_set(
                engine,
                &old,
                "session.prefs.c1",
                json!({"theme": "x", "size": 30}),
            );
        }
        let by_itself = a.reloaded(&old, &new);
        let told = b.reloaded_knowing(&old, &new, &super::invalidated_patterns(&old, &new));
        assert_eq!(by_itself, told);
        assert_eq!(told.total(), 1);
        assert_eq!(
            get(&mut a, &new, "session.prefs.c1"),
            get(&mut b, &new, "session.prefs.c1")
        );
    }

    #[test]
    fn a_reload_says_which_values_it_dropped_and_why() {
        let old = config(
            "      a: { type: string }\n      b: { type: string }\n      c: { type: integer }\n",
        );
        let mut engine = Engine::default();
        for rid in ["session.prefs.c1", "session.prefs.c2"] {
            api_set(&mut engine, &old, rid, json!({"a": "x", "b": "y", "c": 3}));
        }
        let new = config("      a: { type: integer }\n      b: { type: string, from: \"{{token.name}}\" }\n      c: { type: integer }\n");
        let dropped = engine.reloaded(&old, &new);
        assert_eq!(
            dropped.describe(),
            "session.prefs.{cid} a: 2 (type changed); session.prefs.{cid} b: 2 (field now derived)"
        );
        assert_eq!(dropped.total(), 4);
        assert_eq!(get(&mut engine, &new, "session.prefs.c1")["c"], json!(3));
    }

    #[test]
    fn unwritten_fields_follow_a_new_default() {
        let old = config("      theme: { type: string, default: light }\n");
        let mut engine = Engine::default();
        assert_eq!(
            get(&mut engine, &old, "session.prefs.c1"),
            json!({"theme": "light"})
        );
        let new = config("      theme: { type: string, default: dark }\n");
        engine.reloaded(&old, &new);
        assert_eq!(
            get(&mut engine, &new, "session.prefs.c1"),
            json!({"theme": "dark"})
        );
    }

    #[test]
    fn state_never_moves_to_another_pattern() {
        let old = Config::parse(
            "t.yaml",
            "version: 1\nresources:\n  x.{cid}.secret:\n    fields:\n      v: { type: string }\n    access:\n      get: cid == params.cid\n",
        )
        .unwrap();
        let mut engine = Engine::default();
        api_set(&mut engine, &old, "x.c1.secret", json!({"v": "c1-private"}));
        let new = Config::parse(
            "t.yaml",
            "version: 1\nresources:\n  x.{owner}.{cid}:\n    fields:\n      v: { type: string }\n    access:\n      get: cid == params.cid\n",
        )
        .unwrap();
        engine.reloaded(&old, &new);
        assert_eq!(get(&mut engine, &new, "x.c1.secret"), json!({"v": null}));
        assert!(engine
            .store()
            .connection("c1")
            .is_none_or(|c| c.models.is_empty() && c.granted().is_empty()));
    }

    #[test]
    fn state_of_removed_resources_is_dropped() {
        let old = config("      theme: { type: string }\n");
        let mut engine = Engine::default();
        api_set(
            &mut engine,
            &old,
            "session.prefs.c1",
            json!({"theme": "dark"}),
        );
        let other = Config::parse(
            "t.yaml",
            "version: 1\nresources:\n  other.{cid}:\n    fields: {}\n",
        )
        .unwrap();
        assert_eq!(
            engine.reloaded(&old, &other).describe(),
            "session.prefs.{cid} theme: 1 (resource removed)"
        );
        assert!(engine
            .store()
            .connection("c1")
            .is_none_or(|c| c.model("c1", "session.prefs.c1").is_none()));
        assert!(engine
            .store()
            .connection("c1")
            .is_none_or(|c| c.models.is_empty() && c.granted().is_empty()));
        engine.reloaded(&other, &old);
        assert_eq!(
            get(&mut engine, &old, "session.prefs.c1"),
            json!({"theme": null})
        );
    }

    /// A unit loaded from the shared store, written under another config, loses the
    /// values this config does not keep, each counted with its pattern, field and
    /// why, as a reload counts them.
    #[test]
    fn a_loaded_unit_says_which_values_it_dropped_and_why() {
        use crate::store::record::decode_unit;
        use crate::store::{Unit, UnitKey};
        let new = Config::parse(
            "t.yaml",
            "version: 1\nresources:\n  session.prefs.{cid}:\n    fields:\n      theme: { type: string, default: light, enum: [light, sepia] }\n      size: { type: string }\n      nick: { type: string, from: \"{{token.name}}\" }\n      kept: { type: integer }\n  board.{id}:\n    fields:\n      title: { type: string, max_length: 3 }\n",
        )
        .unwrap();
        let key = UnitKey::Connection("c1".into());
        let stored = json!({
            "models": [
                {"rid": "session.prefs.c1", "written": {
                    "theme": "dark", "size": 30, "nick": "x", "gone": 1, "kept": 7
                }},
                {"rid": "old.thing.c1", "written": {"a": 1, "b": 2}},
            ]
        });
        let mut unit = decode_unit(&key, stored.to_string().as_bytes()).unwrap();
        let mut dropped = super::DroppedValues::default();
        assert!(super::fit_unit(&new, &mut unit, &key, &mut dropped));
        assert_eq!(
            dropped.describe(),
            "- a: 1 (name not declared); - b: 1 (name not declared); \
             session.prefs.{cid} gone: 1 (field removed); \
             session.prefs.{cid} nick: 1 (field now derived); \
             session.prefs.{cid} size: 1 (type changed); \
             session.prefs.{cid} theme: 1 (fails the field's new constraints)"
        );
        assert_eq!(dropped.total(), 6);
        let Unit::Connection(conn) = &unit else {
            panic!("a connection")
        };
        assert_eq!(conn.models.len(), 1);
        assert_eq!(
            conn.models[0].written().iter().collect::<Vec<_>>(),
            vec![("kept", &json!(7))]
        );
        // A shared unit: counted under its pattern, added to what is counted already.
        let key = UnitKey::Shared("board.b1".into());
        let mut unit = decode_unit(&key, br#"{"written": {"title": "long"}}"#).unwrap();
        assert!(super::fit_unit(&new, &mut unit, &key, &mut dropped));
        assert_eq!(dropped.total(), 7);
        assert!(dropped
            .describe()
            .contains("board.{id} title: 1 (fails the field's new constraints)"));
        // A unit that fits changes nothing and counts nothing.
        let mut unit = decode_unit(&key, br#"{"written": {"title": "abc"}}"#).unwrap();
        let mut none = super::DroppedValues::default();
        assert!(!super::fit_unit(&new, &mut unit, &key, &mut none));
        assert!(none.is_empty());
    }

    /// A presence list read back stays as it was when it is still a presence list
    /// whose members fit; a list whose name is now a model, or members that are not
    /// valid references, go (counted as a reload counts them).
    #[test]
    fn a_loaded_presence_list_stays_when_its_members_fit() {
        use crate::store::record::decode_unit;
        use crate::store::{Unit, UnitKey, Written};
        let config = Config::parse(
            "t.yaml",
            "version: 1
resources:
  room.{r}:
    presence:
      member: \"{{token.name}}\"
      max_members: 1
  lobby:
    presence:
      member: { ref: \"users.user.{{token.id}}\" }
  board.{id}:
    fields:
      title: { type: string }
",
        )
        .unwrap();
        let stored = br#"{"members": [{"member": "ann lee", "conns": ["c1"]}, {"member": "bob", "conns": ["c2", "c3"]}]}"#;
        // Kept past a lowered `max_members`: only new members are refused.
        let key = UnitKey::Shared("room.r1".into());
        let mut unit = decode_unit(&key, stored).unwrap();
        let mut dropped = super::DroppedValues::default();
        assert!(!super::fit_unit(&config, &mut unit, &key, &mut dropped));
        assert!(dropped.is_empty());
        let Unit::Shared(Written::Presence(m)) = &unit else {
            panic!("a presence list")
        };
        assert_eq!(m.values(), &[json!("ann lee"), json!("bob")]);
        assert_eq!(m.connections(), 3);
        // "ann lee" is not a reference: the list goes.
        let key = UnitKey::Shared("lobby".into());
        let mut unit = decode_unit(&key, stored).unwrap();
        assert!(super::fit_unit(&config, &mut unit, &key, &mut dropped));
        assert_eq!(dropped.describe(), "lobby item: 2 (presence list changed)");
        assert!(matches!(&unit, Unit::Shared(w) if w.is_empty()));
        // Made by another `member` template: the list goes; by this one, it stays.
        let key = UnitKey::Shared("room.r1".into());
        for (made_by, kept) in [("{{token.email}}", false), ("{{token.name}}", true)] {
            let stored = format!(
                r#"{{"members": [{{"member": "bob", "conns": ["c2"]}}], "made_by": "{made_by}"}}"#
            );
            let mut unit = decode_unit(&key, stored.as_bytes()).unwrap();
            let mut dropped = super::DroppedValues::default();
            assert_eq!(
                super::fit_unit(&config, &mut unit, &key, &mut dropped),
                !kept,
                "{made_by}"
            );
            assert_eq!(
                matches!(&unit, Unit::Shared(w) if w.is_empty()),
                !kept,
                "{made_by}"
            );
        }
        // Now a model: the list goes.
        let key = UnitKey::Shared("board.b1".into());
        let mut unit = decode_unit(&key, stored).unwrap();
        let mut dropped = super::DroppedValues::default();
        assert!(super::fit_unit(&config, &mut unit, &key, &mut dropped));
        assert_eq!(dropped.total(), 2);
        assert!(matches!(&unit, Unit::Shared(w) if w.is_empty()));
    }
}
