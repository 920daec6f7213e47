//! Routing requests to their partitions in nats-server. With `state.store: nats`, a get
//! or access request reaches one instance of the queue group, which forwards it to the
//! owner of its partition unless it is the owner: with N instances, N-1 of N reads pay
//! one more receive, publish and receive. And a call reaches every instance, since the
//! instance that takes its partition next must have it. nats-server can instead
//! rewrite each request's subject to carry its partition (`mappings` with
//! `{{partition(n, i)}}`, which hashes the token holding the cid as
//! [`partition_of_cid`] does): the owner of partition `p` subscribes to its reads,
//! `_CONNRES.<bucket>.p.<p>.>`, in the queue group, and the owner and the instance
//! ranked next for `p` to its calls, `_CONNRES.<bucket>.w.<p>.>`, each receiving all.
//!
//! This module is the pure part: the mapping block for a config (`connres mapping`
//! prints it), the subjects, and what a check's answer means. Nothing depends on the
//! block being installed: an instance that receives a mapped read it does not own
//! forwards it as any other, a mapped call it does not own is kept as any other, and
//! without the block requests arrive on their own subjects as before. Token events
//! (`conn.<cid>.token`: the gateway subscribes to them) and the backend API (no cid in
//! its subjects) are never mapped: every instance receives them.

use std::fmt::Write as _;

use crate::config::{Config, SharedStore};
use crate::pattern::Part;
use crate::store::record::{partition_of_cid, partition_of_name, stable_hash};

/// The request kinds whose subjects are mapped to the partition's owner: the reads.
const READS: [&str; 2] = ["get", "access"];

/// The mappings a config needs: source subject and destination, in config order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    bucket: String,
    partitions: u32,
    lines: Vec<(String, String)>,
    /// Patterns whose reads cannot be mapped (a name with captures but no cid is
    /// placed by a hash of the whole name, which nats-server cannot compute).
    unmapped: Vec<String>,
    digest: String,
}

impl Mapping {
    /// The mappings for `config`'s resources with the shared store `store`.
    pub fn of(config: &Config, store: &SharedStore) -> Mapping {
        let bucket = store.bucket.clone();
        let n = store.partitions;
        let prefix = partition_prefix(&bucket);
        let writes = write_prefix(&bucket);
        let mut lines = Vec::new();
        let mut unmapped = Vec::new();
        for res in &config.resources {
            let parts = res.pattern.parts();
            let mut source = Vec::new();
            let mut dest = Vec::new();
            let mut wildcards = 0;
            let mut cid_wildcard = None;
            for part in parts {
                match part {
                    Part::Literal(text) => {
                        source.push(text.clone());
                        dest.push(text.clone());
                    }
                    Part::Capture(name) => {
                        wildcards += 1;
                        if name == crate::pattern::CID {
                            cid_wildcard = Some(wildcards);
                        }
                        source.push("*".to_string());
                        dest.push(format!("{{{{wildcard({wildcards})}}}}"));
                    }
                }
            }
            let partition = match (cid_wildcard, wildcards) {
                (Some(i), _) => format!("{{{{partition({n},{i})}}}}"),
                (None, 0) => partition_of_name(res.pattern.as_str(), n).to_string(),
                (None, _) => {
                    unmapped.push(res.pattern.as_str().to_string());
                    continue;
                }
            };
            for kind in READS {
                lines.push((
                    format!("{kind}.{}", source.join(".")),
                    format!("{prefix}{partition}.{kind}.{}", dest.join(".")),
                ));
            }
            // Calls: the resource's name, then the method.
            lines.push((
                format!("call.{}.*", source.join(".")),
                format!(
                    "{writes}{partition}.call.{}.{{{{wildcard({})}}}}",
                    dest.join("."),
                    wildcards + 1
                ),
            ));
        }
        let mut text = format!("{bucket} {n}");
        for (from, to) in &lines {
            let _ = write!(text, "\n{from} {to}");
        }
        let digest = format!("{:012x}", stable_hash(&text) >> 16);
        Mapping {
            bucket,
            partitions: n,
            lines,
            unmapped,
            digest,
        }
    }

    /// Identifies the mappings: the check's subject carries it, so a server holding the
    /// block of another config (a pattern added since) is told apart.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether any read is mapped.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The check's mapping: `_CONNRES.<bucket>.check.<digest>.<id>` to
    /// `_CONNRES.<bucket>.checked.<digest>.<partition of id>.<id>`.
    fn check_line(&self) -> (String, String) {
        let (b, d, n) = (&self.bucket, &self.digest, self.partitions);
        (
            format!("_CONNRES.{b}.check.{d}.*"),
            format!("_CONNRES.{b}.checked.{d}.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}"),
        )
    }

    /// The `mappings` block for nats-server's config, with what it does.
    pub fn block(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# connres: route each get, access and call to its partition (bucket `{}`, \
             {} partitions).\n# Put this block in nats-server's config (in the account's block \
             when the server has accounts)\n# and reload the server (`nats-server --signal \
             reload`). Print it again after a change of\n# resources or of `state`: connres \
             logs at start and at each reload whether the server\n# maps its reads. To remove \
             it, reload with `mappings = {{}}` (a file without\n# the block keeps the \
             mappings loaded before).",
            self.bucket, self.partitions
        );
        for pattern in &self.unmapped {
            let _ = writeln!(
                out,
                "# not mapped: `{pattern}` (no {{cid}}: placed by a hash of the whole name); its reads are forwarded and its calls reach every instance"
            );
        }
        out.push_str("mappings = {\n");
        let check = self.check_line();
        for (from, to) in std::iter::once(&check).chain(&self.lines) {
            let _ = writeln!(out, "  \"{from}\": \"{to}\"");
        }
        out.push_str("}\n");
        out
    }

    /// The subject an instance publishes its check to.
    pub fn check_subject(&self, id: &str) -> String {
        format!("_CONNRES.{}.check.{}.{id}", self.bucket, self.digest)
    }

    /// Where the check arrives when the server maps it (any partition).
    pub fn checked_filter(&self, id: &str) -> String {
        format!("_CONNRES.{}.checked.{}.*.{id}", self.bucket, self.digest)
    }

    /// What the check's arrival on `subject` says, for instance `id`.
    pub fn verdict(&self, id: &str, subject: &str) -> Verdict {
        if subject == self.check_subject(id) {
            return Verdict::NotMapped;
        }
        let prefix = format!("_CONNRES.{}.checked.{}.", self.bucket, self.digest);
        let partition = subject
            .strip_prefix(prefix.as_str())
            .and_then(|rest| rest.strip_suffix(id))
            .and_then(|rest| rest.strip_suffix('.'))
            .and_then(|p| p.parse::<u32>().ok());
        match partition {
            Some(p) if p == partition_of_cid(id, self.partitions) => Verdict::Mapped,
            Some(p) => Verdict::Disagrees {
                theirs: p,
                ours: partition_of_cid(id, self.partitions),
            },
            None => Verdict::NotMapped,
        }
    }
}

/// What nats-server does with the reads, as the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The block for this config is in force: reads reach their owners.
    Mapped,
    /// The server does not map (no block, or one for another config): reads are
    /// forwarded.
    NotMapped,
    /// The server maps, to other partitions (another partition count): reads are
    /// forwarded from wherever they land.
    Disagrees { theirs: u32, ours: u32 },
}

/// What every mapped read's subject starts with: `_CONNRES.<bucket>.p.`.
pub fn partition_prefix(bucket: &str) -> String {
    format!("_CONNRES.{bucket}.p.")
}

/// The subscription of partition `p`'s mapped reads.
pub fn partition_subject(bucket: &str, p: u32) -> String {
    format!("{}{p}.>", partition_prefix(bucket))
}

/// What every mapped call's subject starts with: `_CONNRES.<bucket>.w.`.
pub fn write_prefix(bucket: &str) -> String {
    format!("_CONNRES.{bucket}.w.")
}

/// The subscription of partition `p`'s mapped calls.
pub fn write_subject(bucket: &str, p: u32) -> String {
    format!("{}{p}.>", write_prefix(bucket))
}

/// The request's own subject, from its mapped subject (`prefix` from
/// [`partition_prefix`] or [`write_prefix`]).
pub fn unmap<'a>(prefix: &str, subject: &'a str) -> Option<&'a str> {
    let rest = subject.strip_prefix(prefix)?;
    let (p, original) = rest.split_once('.')?;
    p.bytes().all(|b| b.is_ascii_digit()).then_some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse("r.yaml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn store(partitions: u32) -> SharedStore {
        SharedStore {
            bucket: "b".into(),
            partitions,
            ..SharedStore::default()
        }
    }

    const CONFIG: &str = r#"
version: 1
resources:
  session.user.{cid}:
    fields: { id: { type: string } }
    access: { get: "true" }
  chat.{room}.typing.{cid}:
    fields: { on: { type: boolean } }
    access: { get: "true" }
  site.banner:
    fields: { text: { type: string } }
    access: { get: "true" }
  room.{room}.topic:
    fields: { text: { type: string } }
    access: { get: "true" }
"#;

    #[test]
    fn each_read_maps_by_the_token_holding_its_cid() {
        let m = Mapping::of(&config(CONFIG), &store(64));
        let block = m.block();
        for line in [
            r#""get.session.user.*": "_CONNRES.b.p.{{partition(64,1)}}.get.session.user.{{wildcard(1)}}""#,
            r#""access.session.user.*": "_CONNRES.b.p.{{partition(64,1)}}.access.session.user.{{wildcard(1)}}""#,
            r#""get.chat.*.typing.*": "_CONNRES.b.p.{{partition(64,2)}}.get.chat.{{wildcard(1)}}.typing.{{wildcard(2)}}""#,
            r#""call.session.user.*.*": "_CONNRES.b.w.{{partition(64,1)}}.call.session.user.{{wildcard(1)}}.{{wildcard(2)}}""#,
            r#""call.chat.*.typing.*.*": "_CONNRES.b.w.{{partition(64,2)}}.call.chat.{{wildcard(1)}}.typing.{{wildcard(2)}}.{{wildcard(3)}}""#,
        ] {
            assert!(block.contains(line), "{line} not in\n{block}");
        }
        // A fixed name: its partition, computed here.
        let p = partition_of_name("site.banner", 64);
        assert!(
            block.contains(&format!(
                r#""get.site.banner": "_CONNRES.b.p.{p}.get.site.banner""#
            )),
            "{block}"
        );
        assert!(
            block.contains(&format!(
                r#""call.site.banner.*": "_CONNRES.b.w.{p}.call.site.banner.{{{{wildcard(1)}}}}""#
            )),
            "{block}"
        );
        // Captures without a cid: not mapped, and said so.
        assert!(!block.contains("\"get.room.*.topic\""), "{block}");
        assert!(!block.contains("\"call.room.*.topic.*\""), "{block}");
        assert!(
            block.contains("# not mapped: `room.{room}.topic`"),
            "{block}"
        );
        // The check comes first.
        let check = format!(
            r#""_CONNRES.b.check.{d}.*": "_CONNRES.b.checked.{d}.{{{{partition(64,1)}}}}.{{{{wildcard(1)}}}}""#,
            d = m.digest()
        );
        assert!(block.contains(&check), "{block}");
    }

    #[test]
    fn the_digest_changes_with_the_mapped_patterns_and_the_partitions() {
        let base = Mapping::of(&config(CONFIG), &store(64));
        assert_eq!(
            base.digest(),
            Mapping::of(&config(CONFIG), &store(64)).digest()
        );
        assert_ne!(
            base.digest(),
            Mapping::of(&config(CONFIG), &store(32)).digest()
        );
        let more = format!(
            "{CONFIG}  session.cart.{{cid}}:\n    fields: {{ n: {{ type: number }} }}\n    access: {{ get: \"true\" }}\n"
        );
        assert_ne!(
            base.digest(),
            Mapping::of(&config(&more), &store(64)).digest()
        );
    }

    #[test]
    fn a_check_says_where_it_arrived() {
        let m = Mapping::of(&config(CONFIG), &store(64));
        let ours = partition_of_cid("i1", 64);
        let at = |p: u32| format!("_CONNRES.b.checked.{}.{p}.i1", m.digest());
        assert_eq!(m.verdict("i1", &at(ours)), Verdict::Mapped);
        let other = (ours + 1) % 64;
        assert_eq!(
            m.verdict("i1", &at(other)),
            Verdict::Disagrees {
                theirs: other,
                ours
            }
        );
        assert_eq!(m.verdict("i1", &m.check_subject("i1")), Verdict::NotMapped);
        assert_eq!(
            m.checked_filter("i1"),
            format!("_CONNRES.b.checked.{}.*.i1", m.digest())
        );
    }

    #[test]
    fn a_mapped_subject_unmaps_to_the_request() {
        let prefix = partition_prefix("b");
        assert_eq!(
            unmap(&prefix, "_CONNRES.b.p.17.get.session.user.c1"),
            Some("get.session.user.c1")
        );
        assert_eq!(unmap(&prefix, "_CONNRES.b.p.x.get.a"), None);
        assert_eq!(unmap(&prefix, "_CONNRES.b.probe.i1.t.5"), None);
        assert_eq!(partition_subject("b", 3), "_CONNRES.b.p.3.>");
        let writes = write_prefix("b");
        assert_eq!(
            unmap(&writes, "_CONNRES.b.w.17.call.session.prefs.c1.set"),
            Some("call.session.prefs.c1.set")
        );
        assert_eq!(unmap(&writes, "_CONNRES.b.p.17.get.a"), None);
        assert_eq!(write_subject("b", 3), "_CONNRES.b.w.3.>");
    }
}
