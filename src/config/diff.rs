//! What a reload changes: old and new configs compared pattern by pattern.

use super::{Config, Resource};
use crate::collection::CollectionDef;
use crate::field::FieldDef;

/// The difference between two configs, in the gateway's pattern syntax where it is
/// published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Patterns only in the new config (subscribe before the swap).
    pub added: Vec<String>,
    /// Patterns only in the old config (unsubscribe after the swap).
    pub removed: Vec<String>,
    /// `system.reset` `resources`: patterns whose served model can differ, and removed ones.
    pub reset_resources: Vec<String>,
    /// `system.reset` `access`: patterns whose access rules changed, and removed ones.
    pub reset_access: Vec<String>,
    /// Auth names only in the new config (subscribe before the swap).
    pub auth_added: Vec<String>,
    /// Auth names only in the old config (unsubscribe after the swap).
    pub auth_removed: Vec<String>,
}

impl ConfigDiff {
    /// True when gateways need to be told nothing.
    pub fn needs_no_reset(&self) -> bool {
        self.reset_resources.is_empty() && self.reset_access.is_empty()
    }
}

/// Compares two configs. Resources are the same resource when their pattern text is the
/// same; a description alone changes nothing a gateway sees.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff::default();
    for o in &old.resources {
        match new.resource(o.pattern.as_str()) {
            None => {
                d.removed.push(o.pattern.as_str().to_string());
                d.reset_resources.push(o.pattern.wildcard());
                d.reset_access.push(o.pattern.wildcard());
            }
            Some(n) => {
                let model_changed = !same_model(o, n);
                if model_changed {
                    d.reset_resources.push(o.pattern.wildcard());
                }
                // Rules that read `model` may decide differently on a changed model.
                if o.access != n.access || (model_changed && n.access_reads_model()) {
                    d.reset_access.push(o.pattern.wildcard());
                }
            }
        }
    }
    for n in &new.resources {
        if old.resource(n.pattern.as_str()).is_none() {
            d.added.push(n.pattern.as_str().to_string());
        }
    }
    let names = |c: &Config| {
        c.auth
            .names
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>()
    };
    let (old_names, new_names) = (names(old), names(new));
    d.auth_added = new_names
        .iter()
        .filter(|n| !old_names.contains(n))
        .cloned()
        .collect();
    d.auth_removed = old_names
        .iter()
        .filter(|n| !new_names.contains(n))
        .cloned()
        .collect();
    d
}

/// Same field set and the same definition for every field (the same collection, and
/// a presence list with the same members), descriptions aside. A presence list's
/// `join` and `ttl` change nothing it serves.
fn same_model(a: &Resource, b: &Resource) -> bool {
    let members = |r: &Resource| r.presence.as_ref().map(|p| (p.member.clone(), p.is_ref));
    let strip = |f: &FieldDef| FieldDef {
        description: None,
        ..f.clone()
    };
    let strip_item = |c: &CollectionDef| CollectionDef {
        item: strip(&c.item),
        ..c.clone()
    };
    a.collection.as_ref().map(strip_item) == b.collection.as_ref().map(strip_item)
        && members(a) == members(b)
        && a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|(x, y)| strip(x) == strip(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(resources: &str) -> Config {
        Config::parse("t.yaml", &format!("version: 1\nresources:\n{resources}")).unwrap()
    }

    const USER: &str = "  session.user.{cid}:\n    fields:\n      name: { type: string, from: \"{{token.name}}\" }\n    access:\n      get: cid == params.cid\n";
    const PREFS: &str = "  session.prefs.{cid}:\n    fields:\n      theme: { type: string, default: light, writable: true }\n    access:\n      get: cid == params.cid\n";

    #[test]
    fn identical_configs_differ_in_nothing() {
        let d = diff(
            &config(&format!("{USER}{PREFS}")),
            &config(&format!("{USER}{PREFS}")),
        );
        assert_eq!(d, ConfigDiff::default());
        assert!(d.needs_no_reset());
    }

    #[test]
    fn access_change_is_listed_under_access_only() {
        let changed = PREFS.replace(
            "get: cid == params.cid",
            "get: cid == params.cid && token != null",
        );
        let d = diff(
            &config(&format!("{USER}{PREFS}")),
            &config(&format!("{USER}{changed}")),
        );
        assert_eq!(d.reset_access, vec!["session.prefs.*"]);
        assert!(d.reset_resources.is_empty());
        assert!(d.added.is_empty() && d.removed.is_empty());
    }

    #[test]
    fn default_change_is_listed_under_resources_only() {
        let changed = PREFS.replace("default: light", "default: dark");
        let d = diff(
            &config(&format!("{USER}{PREFS}")),
            &config(&format!("{USER}{changed}")),
        );
        assert_eq!(d.reset_resources, vec!["session.prefs.*"]);
        assert!(d.reset_access.is_empty());
    }

    #[test]
    fn field_added_renamed_or_retyped_is_a_model_change() {
        let base = config(PREFS);
        for changed in [
            PREFS.replace(
                "      theme:",
                "      font: { type: integer }\n      theme:",
            ),
            PREFS.replace("theme:", "colour:"),
            PREFS.replace("type: string, default: light", "type: data"),
            PREFS.replace(", writable: true", ", writable: true, max_length: 10"),
        ] {
            let d = diff(&base, &config(&changed));
            assert_eq!(d.reset_resources, vec!["session.prefs.*"], "{changed}");
        }
    }

    #[test]
    fn model_change_resets_access_when_rules_read_the_model() {
        let reads = PREFS.replace("get: cid == params.cid", "get: model.theme == 'light'");
        let changed = reads.replace("default: light", "default: dark");
        let d = diff(&config(&reads), &config(&changed));
        assert_eq!(d.reset_resources, vec!["session.prefs.*"]);
        assert_eq!(d.reset_access, vec!["session.prefs.*"]);
    }

    #[test]
    fn description_only_changes_nothing() {
        let changed = PREFS.replace(
            "theme: { type: string,",
            "theme: { type: string, description: Colour scheme,",
        );
        assert!(diff(&config(PREFS), &config(&changed)).needs_no_reset());
    }

    const ROOM: &str = "  chat.room.{room}.members:\n    presence:\n      member: \"{{token.name}}\"\n      join: token != null\n      ttl: 60s\n      max_members: 1000\n    access:\n      get: \"true\"\n";

    #[test]
    fn a_presence_list_whose_members_change_is_a_model_change_join_and_ttl_are_not() {
        let base = config(ROOM);
        for changed in [
            ROOM.replace("{{token.name}}", "{{token.userId}}"),
            ROOM.replace("\"{{token.name}}\"", "{ ref: \"users.{{token.name}}\" }"),
            ROOM.replace("max_members: 1000", "max_members: 10"),
            // The same items, but a backend's collection, not members who joined.
            "  chat.room.{room}.members:\n    collection:\n      item: { type: string }\n      max_items: 1000\n    access:\n      get: \"true\"\n".to_string(),
        ] {
            let d = diff(&base, &config(&changed));
            assert_eq!(d.reset_resources, vec!["chat.room.*.members"], "{changed}");
            assert!(d.reset_access.is_empty(), "{changed}");
        }
        let kept = ROOM
            .replace("join: token != null", "join: \"true\"")
            .replace("ttl: 60s", "ttl: 10s");
        assert!(diff(&base, &config(&kept)).needs_no_reset());
    }

    #[test]
    fn added_and_removed_patterns() {
        let d = diff(&config(USER), &config(PREFS));
        assert_eq!(d.added, vec!["session.prefs.{cid}"]);
        assert_eq!(d.removed, vec!["session.user.{cid}"]);
        assert_eq!(d.reset_resources, vec!["session.user.*"]);
        assert_eq!(d.reset_access, vec!["session.user.*"]);
    }
}
