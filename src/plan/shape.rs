//! How a resource's declared shape changes, as the plan shows it: a model's fields
//! added, removed and changed; a collection's item, `max_items` and `writable`; a
//! presence list's `member`, `max_members`, `join` and `ttl`; and a resource that turns
//! from a model into a collection or a presence list, or back. What the reload does to
//! stored values is said where it drops some (`engine/migrate.rs` drops them).

use crate::collection::CollectionDef;
use crate::config::Resource;
use crate::field::FieldDef;
use crate::presence::PresenceDef;

/// A model's fields: `+ name (type)`, `- name`, `~ name (what changed)`. Nothing when
/// either is a collection ([`collection_changes`] says what happens then).
pub(super) fn field_changes(o: &Resource, n: &Resource) -> Vec<String> {
    let mut out = Vec::new();
    if o.collection.is_some() || n.collection.is_some() {
        return out;
    }
    for f in &n.fields {
        match o.field(&f.name) {
            None => out.push(format!("+ {} ({})", f.name, f.ty)),
            Some(old) => {
                let what = what_changed(old, f);
                if !what.is_empty() {
                    out.push(format!("~ {} ({})", f.name, what.join(", ")));
                }
            }
        }
    }
    for f in &o.fields {
        if n.field(&f.name).is_none() {
            let dropped = if f.writable.ever() {
                ", written values dropped"
            } else {
                ""
            };
            out.push(format!("- {}{dropped}", f.name));
        }
    }
    out
}

fn what_changed(a: &FieldDef, b: &FieldDef) -> Vec<String> {
    let mut what = Vec::new();
    if a.ty != b.ty {
        what.push(format!("type {} -> {}", a.ty, b.ty));
    }
    if a.default != b.default {
        what.push(format!("default {} -> {}", a.default, b.default));
    }
    let source = |f: &FieldDef| f.source.as_ref().map(|t| t.source().to_string());
    if source(a) != source(b) {
        what.push("from".to_string());
    }
    let (x, y) = (&a.constraints, &b.constraints);
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    for ((name, old), (_, new)) in x.as_written().into_iter().zip(y.as_written()) {
        if old != new {
            what.push(format!("{name} {} -> {}", show(&old), show(&new)));
        }
    }
    if x != y && b.writable.ever() {
        what.push("stored values re-checked, invalid ones dropped".to_string());
    }
    if a.writable != b.writable {
        what.push(format!("writable {} -> {}", a.writable, b.writable));
    }
    what
}

/// A collection's changes: `item: <what changed> (...)`, `max_items A -> B`,
/// `writable A -> B`; or `now a collection (...)`, `now a model (...)` for a resource
/// that turns from one into the other (what it held goes). Nothing for two models, nor
/// where either is a presence list ([`presence_changes`] says what happens then).
pub(super) fn collection_changes(o: &Resource, n: &Resource) -> Vec<String> {
    if o.presence.is_some() || n.presence.is_some() {
        return Vec::new();
    }
    match (&o.collection, &n.collection) {
        (None, None) => Vec::new(),
        (None, Some(c)) => {
            let written = o.fields.iter().any(|f| f.source.is_none());
            let dropped = match written {
                true => ": the model's written values are dropped",
                false => "",
            };
            vec![format!("now a collection ({}){dropped}", describe(c))]
        }
        (Some(_), None) => {
            let fields: Vec<&str> = n.fields.iter().map(|f| f.name.as_str()).collect();
            vec![format!(
                "now a model (fields {}): its items are dropped",
                fields.join(", ")
            )]
        }
        (Some(a), Some(b)) => {
            let mut out = Vec::new();
            let item = what_changed(&a.item, &b.item);
            if !item.is_empty() {
                let rechecked =
                    match a.item.ty != b.item.ty || a.item.constraints != b.item.constraints {
                        true => " (stored items re-checked, those that no longer fit dropped)",
                        false => "",
                    };
                out.push(format!("item: {}{rechecked}", item.join(", ")));
            }
            if a.max_items != b.max_items {
                let past = match b.max_items < a.max_items {
                    true => " (items past it are dropped, from the end)",
                    false => "",
                };
                out.push(format!(
                    "max_items {} -> {}{past}",
                    a.max_items, b.max_items
                ));
            }
            if a.writable != b.writable {
                out.push(format!("writable {} -> {}", a.writable, b.writable));
            }
            out
        }
    }
}

/// `item string, max_length 40, max_items 20, writable true`.
fn describe(c: &CollectionDef) -> String {
    let mut parts = vec![format!("item {}", c.item.ty)];
    parts.extend(
        c.item
            .constraints
            .as_written()
            .into_iter()
            .filter_map(|(name, v)| Some(format!("{name} {}", v?))),
    );
    parts.push(format!("max_items {}", c.max_items));
    parts.push(format!("writable {}", c.writable));
    parts.join(", ")
}

/// A presence list's changes, in one line: `member A -> B`, `max_members A -> B`,
/// `join A -> B`, `ttl A -> B`, then what the reload does to its members (a changed
/// `member` or a lowered `max_members` empties the list, and its members join again;
/// otherwise they are kept). Or `now a presence list (...)` for a model or a collection
/// that becomes one (what it held goes), and `now a model (...)` or `now a collection
/// (...)` for a list that stops being one (its members go). Nothing when neither is a
/// presence list.
pub(super) fn presence_changes(o: &Resource, n: &Resource) -> Vec<String> {
    match (&o.presence, &n.presence) {
        (None, None) => Vec::new(),
        (None, Some(p)) => {
            let lost = match &o.collection {
                Some(_) => ": its items are dropped",
                None if o.fields.iter().any(|f| f.source.is_none()) => {
                    ": the model's written values are dropped"
                }
                None => "",
            };
            vec![format!(
                "now a presence list ({}){lost}",
                describe_presence(p)
            )]
        }
        (Some(_), None) => {
            let now = match &n.collection {
                Some(c) => format!("now a collection ({})", describe(c)),
                None => {
                    let fields: Vec<&str> = n.fields.iter().map(|f| f.name.as_str()).collect();
                    format!("now a model (fields {})", fields.join(", "))
                }
            };
            vec![format!("{now}: its members are dropped")]
        }
        (Some(a), Some(b)) => {
            let mut changes = Vec::new();
            let mut empties = Vec::new();
            if a.member != b.member || a.is_ref != b.is_ref {
                changes.push(format!("member {} -> {}", member(a), member(b)));
                empties.push("member changed");
            }
            if a.max_members != b.max_members {
                changes.push(format!(
                    "max_members {} -> {}",
                    a.max_members, b.max_members
                ));
                if b.max_members < a.max_members {
                    empties.push("max_members lowered");
                }
            }
            if join(a) != join(b) {
                changes.push(format!("join {} -> {}", join(a), join(b)));
            }
            if a.ttl != b.ttl {
                changes.push(format!(
                    "ttl {} -> {}",
                    humantime::format_duration(a.ttl),
                    humantime::format_duration(b.ttl)
                ));
            }
            if changes.is_empty() {
                return Vec::new();
            }
            let effect = match empties.is_empty() {
                true => "its members are kept".to_string(),
                false => format!(
                    "the list is emptied and its members join again ({})",
                    empties.join(", ")
                ),
            };
            vec![format!("{}: {effect}", changes.join(", "))]
        }
    }
}

/// `` `{{token.name}}` ``, or `` ref `users.user.{{token.userId}}` `` for references.
fn member(p: &PresenceDef) -> String {
    let kind = if p.is_ref { "ref " } else { "" };
    format!("{kind}`{}`", p.member.source())
}

/// The `join` rule's text, or `(none)`.
fn join(p: &PresenceDef) -> String {
    p.join
        .as_ref()
        .map_or("(none)".to_string(), |r| format!("`{}`", r.source()))
}

/// `member `{{token.name}}`, join `token != null`, ttl 1m, max_members 3`.
fn describe_presence(p: &PresenceDef) -> String {
    format!(
        "member {}, join {}, ttl {}, max_members {}",
        member(p),
        join(p),
        humantime::format_duration(p.ttl),
        p.max_members
    )
}
