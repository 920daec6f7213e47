use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;
use crate::config::auth::{AUTH_KEYS, JWT_KEYS, KEY_SOURCE_KEYS, METHOD_KEYS, RESUME_KEYS};
use crate::config::compile::{
    ACCESS_KEYS, API_KEYS, COLLECTION_KEYS, FIELD_KEYS, PRESENCE_KEYS, RESET_KEYS, RESOURCE_KEYS,
    SHAPE_KEYS, TOP_KEYS,
};
use crate::config::nats::{NATS_KEYS, RECONNECT_KEYS, TLS_KEYS};
use crate::config::{yaml, Config, METHODS, STATE_KEYS};
use crate::field::FieldType;
use crate::pattern::Pattern;

/// Where the schema is committed, from the project's root.
const COMMITTED: &str = "connres.schema.json";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A config's text as the JSON an editor validates: the YAML tree, scalars typed as the
/// compiler reads them.
fn as_json(source: &str) -> Value {
    match yaml::parse(source) {
        Ok((doc, _)) => doc.to_json(),
        Err(e) => panic!("not YAML: {}", e.message),
    }
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema compiles")
}

/// Each error as `instance path: message`.
fn errors(source: &str) -> Vec<String> {
    let instance = as_json(source);
    validator()
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path().as_str()))
        .collect()
}

/// The configs the project ships: `resources.yaml` and the valid fixtures (not their
/// rule tests).
fn shipped_configs() -> Vec<PathBuf> {
    let mut out = vec![root().join("resources.yaml")];
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(root().join("tests/config/valid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".test.yaml")
        })
        .collect();
    fixtures.sort();
    out.extend(fixtures);
    out
}

/// The property names of an object schema, by its definition name (`None`: the root).
fn keys(schema: &Value, definition: Option<&str>) -> BTreeSet<String> {
    let object = match definition {
        None => schema,
        Some(name) => &schema["definitions"][name],
    };
    assert_eq!(
        object["additionalProperties"],
        Value::Bool(false),
        "{definition:?} must refuse unknown keys"
    );
    object["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{definition:?} has no properties"))
        .keys()
        .cloned()
        .collect()
}

/// A collection's item takes a field's keys but those only a field has.
const ITEM_KEYS: [&str; 9] = [
    "type",
    "description",
    "from",
    "enum",
    "min",
    "max",
    "max_length",
    "pattern",
    "fields",
];

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_schema_has_the_keys_the_compiler_reads() {
    let schema = schema();
    for (definition, compiler) in [
        (None, TOP_KEYS),
        (Some("Nats"), NATS_KEYS),
        (Some("Tls"), TLS_KEYS),
        (Some("Reconnect"), RECONNECT_KEYS),
        (Some("Api"), API_KEYS),
        (Some("State"), STATE_KEYS),
        (Some("Resource"), RESOURCE_KEYS),
        (Some("Reset"), RESET_KEYS),
        (Some("Access"), ACCESS_KEYS),
        (Some("Field"), FIELD_KEYS),
        (
            Some("CallRules"),
            &[
                METHODS,
                crate::collection::METHODS,
                crate::presence::METHODS,
            ]
            .concat(),
        ),
        (Some("Collection"), COLLECTION_KEYS),
        (Some("Presence"), PRESENCE_KEYS),
        (Some("Item"), &ITEM_KEYS),
        (Some("ShapeKey"), SHAPE_KEYS),
        (Some("AuthName"), AUTH_KEYS),
        (Some("Jwt"), JWT_KEYS),
        (Some("KeySource"), KEY_SOURCE_KEYS),
        (Some("Method"), METHOD_KEYS),
        (Some("ResumeSettings"), RESUME_KEYS),
    ] {
        assert_eq!(
            keys(&schema, definition),
            set(compiler),
            "the keys of {} differ between the schema types (src/config/schema/) and the compiler",
            definition.unwrap_or("the top level")
        );
    }
    let types: BTreeSet<String> = schema["definitions"]["FieldType"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["const"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, set(FieldType::NAMES));
    assert_eq!(schema["properties"]["version"]["const"], VERSION);
    let prefix = schema["definitions"]["Api"]["properties"]["prefix"]["description"]
        .as_str()
        .unwrap();
    for root in RESERVED_SUBJECT_ROOTS {
        assert!(prefix.contains(root), "`api.prefix` does not name {root}");
    }
}

#[test]
fn the_schema_is_draft_07_with_a_title_and_every_key_described() {
    let schema = schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["title"], TITLE);
    jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("not a valid schema: {e}"));
    let mut objects = vec![("the top level".to_string(), &schema)];
    for (name, def) in schema["definitions"].as_object().unwrap() {
        objects.push((name.clone(), def));
    }
    for (name, object) in objects {
        let described = |v: &Value| v["description"].as_str().is_some_and(|d| !d.is_empty());
        assert!(described(object), "{name} has no description");
        for (key, property) in object["properties"].as_object().into_iter().flatten() {
            assert!(described(property), "{name}: `{key}` has no description");
            let text = property["description"].as_str().unwrap();
            assert!(!text.contains('\n'), "{name}: `{key}`: {text:?}");
        }
    }
}

#[test]
fn the_committed_schema_is_current() {
    let path = root().join(COMMITTED);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text(),
        "{COMMITTED} is not what `connres schema` prints; regenerate it with\n    cargo run -q -- schema > {COMMITTED}"
    );
}

#[test]
fn shipped_configs_name_the_schema_in_their_first_line() {
    for path in shipped_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let target = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}: first line is {first:?}", path.display()));
        let named = path.parent().unwrap().join(target);
        assert_eq!(
            named.canonicalize().ok(),
            root().join(COMMITTED).canonicalize().ok(),
            "{}: $schema={target} is not {COMMITTED}",
            path.display()
        );
    }
}

#[test]
fn shipped_and_valid_configs_validate() {
    let configs = shipped_configs();
    assert!(configs.len() >= 4, "{configs:?}");
    for path in configs {
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(errors(&text), Vec::<String>::new(), "{}", path.display());
    }
}

/// The schema never refuses what the compiler accepts: every config in the repository
/// that compiles (fuzz seeds too) validates. On a big stack, as the fuzz seeds include
/// deeply nested rules.
#[test]
fn every_config_that_compiles_validates() {
    let thread = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(configs_that_compile_validate)
        .unwrap();
    if let Err(e) = thread.join() {
        std::panic::resume_unwind(e);
    }
}

fn configs_that_compile_validate() {
    let mut checked = 0;
    for dir in [
        "tests/config/valid",
        "tests/config/invalid",
        "fuzz/corpus/config",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if Config::parse("c.yaml", &text).is_err() {
                continue;
            }
            assert_eq!(errors(&text), Vec::<String>::new(), "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} configs compile");
}

/// Invalid fixtures whose mistakes a schema can see, each with a place it must point at
/// (an instance path) and part of the message.
#[test]
fn invalid_fixtures_that_a_schema_can_tell_are_refused() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "misspelt-keys",
            &[
                ("/resources/session.prefs.{cid}", "acess"),
                ("/resources/session.prefs.{cid}/fields/theme", "tpye"),
                (
                    "/resources/session.prefs.{cid}/fields/fontSize",
                    "writeable",
                ),
            ],
        ),
        ("top-level-typos", &[("", "resource"), ("/api/prefix", "")]),
        (
            "unknown-field-type",
            &[
                ("/resources/session.user.{cid}/fields/id/type", "int"),
                ("/resources/session.user.{cid}/fields/flags/type", "bitmask"),
                ("/resources/session.user.{cid}/fields/name", "type"),
            ],
        ),
        (
            "wrong-types",
            &[
                ("/nats/queue_group", "not of type \"string\""),
                ("/resources/session.prefs.{cid}/description", "42"),
                ("/resources/session.prefs.{cid}/fields/theme/writable", "1"),
                ("/resources/session.prefs.{cid}/fields/size/min", "small"),
                ("/resources/session.prefs.{cid}/fields/plain", "string"),
                (
                    "/resources/session.prefs.{cid}/reset/on_logout",
                    "sometimes",
                ),
                ("/resources/session.prefs.{cid}/access/get", "1"),
            ],
        ),
        (
            "constraints-on-wrong-types",
            &[
                ("/resources/session.prefs.{cid}/fields/name/min", ""),
                ("/resources/session.prefs.{cid}/fields/size/max_length", ""),
                ("/resources/session.prefs.{cid}/fields/link/enum", ""),
                ("/resources/session.prefs.{cid}/fields/tags/enum", ""),
            ],
        ),
        (
            "state-durations",
            &[("/state/idle_ttl", "soon"), ("/state/max_entries", "1.5")],
        ),
        (
            "state-errors",
            &[
                ("/state/idle_ttl", "3600"),
                ("/state/max_entries", "0"),
                ("/state", "max_entrys"),
            ],
        ),
        (
            "state-bytes",
            &[
                ("/state/max_value_bytes", "1048577"),
                ("/state/max_bytes", "1GiB"),
            ],
        ),
        (
            "state-bytes-zero",
            &[("/state/max_value_bytes", "0"), ("/state/max_bytes", "-1")],
        ),
        (
            "nats-errors",
            &[
                ("/nats/tls", "frist"),
                ("/nats/tls", "key"),
                ("/nats/reconnect/max_attempts", "-1"),
                ("/nats/reconnect/max_delay", "5"),
                ("/nats/connect_timeout", "soon"),
                ("/nats/name", "42"),
                ("/nats/user", ""),
            ],
        ),
        ("version-unsupported", &[("/version", "1")]),
        ("api-prefix-reserved", &[("/api/prefix", "call")]),
        (
            "bad-patterns",
            &[
                ("/resources", "session..user"),
                ("/resources", "session.x{cid}"),
                ("/resources", "session.{c-d}"),
                ("/resources", "chat.*"),
            ],
        ),
        (
            "from-and-writable",
            &[("/resources/session.user.{cid}/fields/name/from", "")],
        ),
        (
            "writable-rules",
            &[("/resources/shop.cart.{cid}/fields/owner/from", "")],
        ),
        (
            "data-shape-errors",
            &[
                (
                    "/resources/session.cart.{cid}/fields/cart/fields/sku/type",
                    "strng",
                ),
                (
                    "/resources/session.cart.{cid}/fields/cart/fields/qty/max_length",
                    "",
                ),
                (
                    "/resources/session.cart.{cid}/fields/cart/fields/qty",
                    "optinal",
                ),
                (
                    "/resources/session.cart.{cid}/fields/cart/fields/note/optional",
                    "yes",
                ),
                (
                    "/resources/session.cart.{cid}/fields/cart/fields/price",
                    "default",
                ),
                (
                    "/resources/session.cart.{cid}/fields/cart/fields/link/type",
                    "ref",
                ),
                ("/resources/session.cart.{cid}/fields/title/fields", ""),
                ("/resources/session.cart.{cid}/fields/loose/fields", "sku"),
                ("/resources/session.lines.{cid}/collection", "sku"),
            ],
        ),
    ];
    for (name, expected) in cases {
        let path = root().join(format!("tests/config/invalid/{name}.yaml"));
        let got = errors(&std::fs::read_to_string(&path).unwrap());
        for (at, needle) in *expected {
            assert!(
                got.iter().any(|e| e
                    .strip_prefix(at)
                    .and_then(|rest| rest.strip_prefix(": "))
                    .is_some_and(|message| message.contains(needle))),
                "{name}: no error at {at:?} mentioning {needle:?}; got:\n{}",
                got.join("\n")
            );
        }
    }
}

#[test]
fn broken_snippets_are_refused_where_they_break() {
    let top = "version: 1\n";
    let field = |f: &str| {
        format!("{top}resources:\n  a.{{cid}}:\n    fields:\n      x: {f}\n    access:\n      get: true\n")
    };
    for (source, at) in [
        (format!("{top}resourcez: {{}}\n"), ""),
        (format!("{top}nats: {{ url: [] }}\n"), "/nats/url"),
        (format!("{top}nats: {{ url: 4222 }}\n"), "/nats/url"),
        (
            format!("{top}nats: {{ token: t, creds: c }}\n"),
            "/nats/creds",
        ),
        (format!("{top}nats: {{ password: p }}\n"), "/nats"),
        (
            format!("{top}nats: {{ queue_group: a b }}\n"),
            "/nats/queue_group",
        ),
        (format!("{top}api: {{ prefix: a..b }}\n"), "/api/prefix"),
        (format!("{top}state: 5\n"), "/state"),
        (format!("{top}resources: []\n"), "/resources"),
        (field("{ type: 5 }"), "/resources/a.{cid}/fields/x/type"),
        (field("{ type: strng }"), "/resources/a.{cid}/fields/x/type"),
        (
            field("{ type: integer, min: \"1\" }"),
            "/resources/a.{cid}/fields/x/min",
        ),
        (
            field("{ type: string, max_length: -1 }"),
            "/resources/a.{cid}/fields/x/max_length",
        ),
        (
            field("{ type: string, enum: [] }"),
            "/resources/a.{cid}/fields/x/enum",
        ),
        (
            field("{ type: string, writable: true, from: \"{{cid}}\" }"),
            "/resources/a.{cid}/fields/x/from",
        ),
        (
            field("{ type: string, writable: \"token != null\", from: \"{{cid}}\" }"),
            "/resources/a.{cid}/fields/x/from",
        ),
        (
            field("{ type: string, writable: 1 }"),
            "/resources/a.{cid}/fields/x/writable",
        ),
        (
            field("{ type: string, description: null }"),
            "/resources/a.{cid}/fields/x/description",
        ),
        (
            format!("{top}resources:\n  a.{{cid}}:\n    access: {{ get: [cid] }}\n"),
            "/resources/a.{cid}/access/get",
        ),
        (
            format!("{top}resources:\n  a.{{cid}}:\n    access: {{ call: {{ delete: true }} }}\n"),
            "/resources/a.{cid}/access/call",
        ),
    ] {
        let compiled = Config::parse("c.yaml", &source);
        assert!(compiled.is_err(), "the compiler accepts:\n{source}");
        let got = errors(&source);
        assert!(
            got.iter().any(|e| e.starts_with(&format!("{at}: "))),
            "no error at {at:?} for:\n{source}got:\n{}",
            got.join("\n")
        );
    }
}

/// The patterns in the schema agree with the code that reads the same values.
#[test]
fn the_schema_patterns_agree_with_the_compiler() {
    let resource = regex::Regex::new(RESOURCE_PATTERN).unwrap();
    for p in [
        "session.user.{cid}",
        "chat.{room}.typing.{cid}",
        "a",
        "a-b_c.{_x1}",
        "über.straße",
        "",
        "a..b",
        ".a",
        "a.",
        "a.x{cid}",
        "a.{c-d}",
        "a.{1x}",
        "a.{}",
        "a.*",
        "a.>",
        "a.b?",
        "a b",
        "a.{room}.{room}",
    ] {
        // Only a repeated capture is beyond a pattern.
        let expected = Pattern::parse(p).is_ok() || p == "a.{room}.{room}";
        assert_eq!(resource.is_match(p), expected, "resource pattern {p:?}");
    }
    let duration = regex::Regex::new(DURATION_PATTERN).unwrap();
    for d in [
        "500ms", "30s", "30m", "24h", "1day", "2 days", "1h 30m", "1h30m", "5sec", "3 weeks",
        "1.5h", "0.25s", "30", "", "soon", "-1s", "s", "1,5h",
    ] {
        assert_eq!(
            duration.is_match(d),
            humantime::parse_duration(d).is_ok(),
            "duration {d:?}"
        );
    }
    let token = regex::Regex::new(SUBJECT_TOKEN_PATTERN).unwrap();
    for t in [
        "connres",
        "chat-connres",
        "_x",
        "",
        "a.b",
        "a b",
        "a*",
        "a>",
    ] {
        assert_eq!(
            token.is_match(t),
            crate::config::compile::is_subject_token(t),
            "subject token {t:?}"
        );
    }
}

#[test]
fn default_durations_are_written_in_their_largest_unit() {
    use std::time::Duration as D;
    assert_eq!(duration_text(D::from_secs(24 * 3600)), "24h");
    assert_eq!(duration_text(D::from_secs(90)), "90s");
    assert_eq!(duration_text(D::from_secs(120)), "2m");
    assert_eq!(duration_text(D::from_millis(1500)), "1500ms");
    assert_eq!(duration_text(D::ZERO), "0ms");
}
