//! connres: a generic RES service serving per-connection resources declared in YAML.

pub mod admin;
pub mod auth;
pub mod clock;
pub mod collection;
pub mod config;
pub mod engine;
pub mod explain;
pub mod field;
pub mod logs;
pub mod mapping;
pub mod metrics;
pub use ownership;
pub mod pattern;
pub mod plan;
pub mod presence;
pub mod protocol;
pub mod reload;
pub mod rule;
pub mod ruletest;
pub mod service;
pub mod store;
pub mod template;

use std::fmt::Write as _;

/// A human summary of a config: each resource with its fields and subjects (what
/// `connres check` prints).
pub fn summary(config: &config::Config) -> String {
    let mut out = String::new();
    for res in &config.resources {
        let w = res.pattern.wildcard();
        let fields: Vec<String> = res
            .fields
            .iter()
            .map(|f| {
                let mut s = format!("{}:{}", f.name, f.ty);
                if let Some(shape) = &f.constraints.shape {
                    let _ = write!(s, " {shape}");
                }
                if f.source.is_some() {
                    s.push_str(" (from)");
                }
                match &f.writable {
                    field::Writable::Never => {}
                    field::Writable::Always => s.push_str(" (writable)"),
                    field::Writable::When(rule) => {
                        let _ = write!(s, " (writable if {})", rule.source());
                    }
                }
                s
            })
            .collect();
        let _ = writeln!(out, "{}", res.pattern);
        if let Some(d) = &res.description {
            let _ = writeln!(out, "  {}", d.trim());
        }
        match (&res.presence, &res.collection) {
            (Some(p), _) => {
                let _ = writeln!(
                    out,
                    "  members:  {} from {} (max_members {}, ttl {})",
                    if p.is_ref { "ref" } else { "string" },
                    p.member.source(),
                    p.max_members,
                    humantime::format_duration(p.ttl)
                );
            }
            (None, Some(c)) => {
                let _ = write!(out, "  items:    {}", c.item.ty);
                if let Some(shape) = &c.item.constraints.shape {
                    let _ = write!(out, " {shape}");
                }
                let _ = write!(out, " (max_items {})", c.max_items);
                let _ = match &c.writable {
                    field::Writable::Never => writeln!(out),
                    field::Writable::Always => writeln!(out, " (writable)"),
                    field::Writable::When(rule) => {
                        writeln!(out, " (writable if {})", rule.source())
                    }
                };
            }
            (None, None) => {
                let _ = writeln!(out, "  fields:   {}", fields.join(", "));
            }
        }
        let _ = writeln!(out, "  subjects: get.{w} access.{w} call.{w}.*");
    }
    for entry in &config.auth.names {
        let _ = writeln!(out, "{}", entry.describe());
        let _ = writeln!(out, "  subjects: auth.{}.*", entry.name);
    }
    let p = &config.api.prefix;
    let _ = writeln!(
        out,
        "{} resource(s); also conn.*.token, {p}.set.>, {p}.reset.>, {p}.add.>, {p}.remove.> (queue group {})",
        config.resources.len(),
        config.nats.queue_group
    );
    let _ = writeln!(out, "nats: {}", config.nats.describe());
    let _ = writeln!(
        out,
        "state: idle_ttl {}, max_entries {}, max_bytes {}, store {}",
        humantime::format_duration(config.state.idle_ttl),
        config.state.max_entries,
        config.state.max_bytes,
        config.state.store.describe()
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_summary_shows_how_each_field_is_written() {
        let shop = include_str!("../tests/config/valid/shop.yaml");
        let config = crate::config::Config::parse("shop.yaml", shop).unwrap();
        let summary = super::summary(&config);
        assert!(
            summary.contains(
                "fields:   items:integer (writable if token != null), coupon:string (writable), "
            ),
            "{summary}"
        );
        assert!(summary.contains(", locked:boolean\n"), "{summary}");
    }

    #[test]
    fn the_summary_shows_the_shape_of_data() {
        let shapes = include_str!("../tests/config/valid/data-shapes.yaml");
        let config = crate::config::Config::parse("data-shapes.yaml", shapes).unwrap();
        let summary = super::summary(&config);
        assert!(
            summary.contains(
                "  items:    data {sku: string (max_length 20), qty: integer (min 1, max 99), note: string (optional)} (max_items 50) (writable)\n"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("fields:   window:data {width: integer (min 100, max 10000), "),
            "{summary}"
        );
        assert!(summary.contains(", extra:data (writable)\n"), "{summary}");
    }
}
