use super::*;

const SEED: &str = include_str!("../../tests/config/valid/seed.yaml");

#[test]
fn the_design_example_compiles() {
    let c = Config::parse("r.yaml", SEED).unwrap();
    assert_eq!(c.resources.len(), 2);
    let user = &c.resources[0];
    assert_eq!(user.pattern.as_str(), "session.user.{cid}");
    assert_eq!(user.fields.len(), 4);
    assert!(user.reset_on_logout);
    assert!(user.fields_read_token());
    assert!(!user.access_reads_token());
    let prefs = &c.resources[1];
    assert!(!prefs.reset_on_logout);
    assert_eq!(
        prefs.field("fontSize").unwrap().default,
        serde_json::json!(14)
    );
    assert!(prefs.access_reads_token());
    assert!(matches!(&prefs.access.call, CallAccess::Methods(m) if m.len() == 2));
    assert_eq!(c.nats.queue_group, "connres");
    assert_eq!(c.api.prefix, "connres");
}

#[test]
fn state_settings_have_production_defaults_and_can_be_set() {
    let seed = Config::parse("r.yaml", SEED).unwrap();
    assert_eq!(seed.state, StateSettings::default());
    assert_eq!(seed.state.idle_ttl, DEFAULT_IDLE_TTL);
    assert_eq!(seed.state.max_entries, DEFAULT_MAX_ENTRIES);
    let chat = Config::parse(
        "chat.yaml",
        include_str!("../../tests/config/valid/chat.yaml"),
    )
    .unwrap();
    assert_eq!(
        chat.state,
        StateSettings {
            idle_ttl: std::time::Duration::from_secs(30 * 60),
            max_entries: 50_000,
            max_token_bytes: crate::config::state::DEFAULT_MAX_TOKEN_BYTES,
            max_value_bytes: crate::config::state::DEFAULT_MAX_VALUE_BYTES,
            max_bytes: crate::config::state::DEFAULT_MAX_BYTES,
            store: StoreSettings::Memory,
        }
    );
}

#[test]
fn byte_limits_default_to_64_kib_per_value_and_1_gib_in_all_and_can_be_set() {
    let seed = Config::parse("r.yaml", SEED).unwrap();
    assert_eq!(seed.state.max_value_bytes, 64 * 1024);
    assert_eq!(seed.state.max_bytes, 1024 * 1024 * 1024);
    let set = Config::parse(
        "r.yaml",
        &format!("state:\n  max_value_bytes: 1048576\n  max_bytes: 33554432\n{SEED}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.state.max_value_bytes, 1024 * 1024);
    assert_eq!(set.state.max_bytes, 32 * 1024 * 1024);
    // The smallest of each, and a budget far over any machine's memory.
    let edge = Config::parse(
        "r.yaml",
        &format!("state: {{ max_value_bytes: 1, max_bytes: 1 }}\n{SEED}"),
    )
    .unwrap();
    assert_eq!((edge.state.max_value_bytes, edge.state.max_bytes), (1, 1));
    let huge = Config::parse(
        "r.yaml",
        &format!("state: {{ max_bytes: 1099511627776 }}\n{SEED}"),
    )
    .unwrap();
    assert_eq!(huge.state.max_bytes, 1 << 40);
}

#[test]
fn resolve_finds_the_one_matching_pattern() {
    let c = Config::parse("r.yaml", SEED).unwrap();
    let (r, params) = c.resolve("session.prefs.c1").unwrap();
    assert_eq!(r.pattern.as_str(), "session.prefs.{cid}");
    assert_eq!(params.as_slice(), [("cid", "c1")]);
    assert!(c.resolve("session.other.c1").is_none());
    assert!(c.resolve("session.prefs").is_none());
    assert!(Arc::ptr_eq(c.resource_of("session.prefs.c1").unwrap(), r));
    assert!(c.resource_of("session.other.c1").is_none());
}

/// Every `tests/config/invalid/NAME.yaml` fixture must fail with exactly the lines in
/// `NAME.errors` (`line:col: message`, file order).
#[test]
fn invalid_fixtures_report_every_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/invalid");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let source = std::fs::read_to_string(&path).unwrap();
        let expected = std::fs::read_to_string(path.with_extension("errors")).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let errors = Config::parse(&name, &source).expect_err(&name);
        let got: Vec<String> = errors.lines();
        let want: Vec<String> = expected
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{name}:{l}"))
            .collect();
        assert_eq!(got, want, "fixture {name}");
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} fixtures found in {}",
        dir.display()
    );
}

#[test]
fn valid_fixtures_compile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/valid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // Rule tests live beside the configs they test.
        if path.to_string_lossy().ends_with(".test.yaml") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::parse(&path.display().to_string(), &source) {
            panic!("{e}");
        }
        checked += 1;
    }
    assert!(checked >= 1);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources.yaml");
    Config::load(&shipped).unwrap();
}

/// A config directory in a temporary place, from (file name, text) pairs.
fn dir_of(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const USERS: &str = "resources:\n  session.user.{cid}:\n    fields:\n      name: { type: string, from: \"{{token.name}}\" }\n    access:\n      get: cid == params.cid\n";

#[test]
fn a_directory_is_one_config_of_its_yaml_files() {
    let dir = dir_of(&[
        ("00-base.yaml", "version: 1\nstate: { idle_ttl: 1h }\n"),
        ("users.yaml", USERS),
        (
            "rooms.yaml",
            "resources:\n  chat.room.{room}:\n    fields:\n      topic: { type: string, default: general }\n    access:\n      get: \"true\"\n",
        ),
        ("users.test.yaml", "not: [config"),
        ("notes.txt", "not config"),
    ]);
    let c = Config::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let patterns: Vec<&str> = c.resources.iter().map(|r| r.pattern.as_str()).collect();
    assert_eq!(
        patterns,
        ["chat.room.{room}", "session.user.{cid}"],
        "files in name order"
    );
    assert_eq!(c.state.idle_ttl, std::time::Duration::from_secs(3600));
    // The hash covers names and texts: renaming a file changes it.
    let before = c.content_hash().to_string();
    std::fs::rename(
        dir.path().join("rooms.yaml"),
        dir.path().join("zz-rooms.yaml"),
    )
    .unwrap();
    assert_ne!(Config::load(dir.path()).unwrap().content_hash(), before);
}

#[test]
fn across_files_errors_name_both_files_and_come_in_file_order() {
    let dir = dir_of(&[
        ("a.yaml", &format!("version: 1\nnats: {{ queue_group: a }}\n{USERS}")),
        (
            "b.yaml",
            "version: 1\nnats: { queue_group: b }\nresources:\n  session.{kind}.{cid}:\n    fields:\n      x: { type: sting }\n",
        ),
    ]);
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("b.yaml").display().to_string();
    let e = Config::load(dir.path()).unwrap_err();
    assert_eq!(
        e.lines(),
        [
            format!("{b}:1:1: `version` is already set at {a}:1:1; top-level settings go in one file"),
            format!("{b}:2:1: `nats` is already set at {a}:2:1; top-level settings go in one file"),
            format!("{b}:4:3: resource pattern `session.{{kind}}.{{cid}}` overlaps `session.user.{{cid}}` ({a}:4:3): both match names like `session.user.<cid>`"),
        ]
    );
}

#[test]
fn a_directory_without_config_or_resources_is_an_error() {
    let empty = dir_of(&[("notes.txt", "")]);
    let e = Config::load(empty.path()).unwrap_err();
    assert!(
        e.lines()[0].ends_with("the directory holds no config (*.yaml) file"),
        "{e}"
    );
    let settings_only = dir_of(&[("base.yaml", "version: 1\n")]);
    let e = Config::load(settings_only.path()).unwrap_err();
    assert!(
        e.lines()[0]
            .ends_with("base.yaml:1:1: missing `resources:` (a mapping of resource patterns)"),
        "{e}"
    );
}

#[test]
fn what_a_call_writes_is_read_as_the_model_would_hold_it() {
    let c = Config::parse(
        "r.yaml",
        "version: 1\nresources:\n  a.{cid}:\n    fields:\n      n:    { type: integer, default: 1, writable: values.n > 0 }\n      home: { type: ref, writable: true }\n      blob: { type: data, default: [x], writable: true }\n      name: { type: string, from: \"{{token.name}}\" }\n    access:\n      call: cid == params.cid\n",
    )
    .unwrap();
    let res = &c.resources[0];
    assert!(res.has_writable_rules() && res.rules_read_call_values());
    let sent = serde_json::json!({"n": 7.0, "home": {"rid": "users.user.1"}, "blob": {"data": {"a": 1}}, "nope": 2});
    assert_eq!(
        serde_json::Value::Object(res.call_values("set", Some(&sent))),
        serde_json::json!({"n": 7, "home": "users.user.1", "blob": {"a": 1}, "nope": 2})
    );
    // A value the field refuses is seen as sent.
    let bad = serde_json::json!({"n": "seven"});
    assert_eq!(
        serde_json::Value::Object(res.call_values("set", Some(&bad))),
        serde_json::json!({"n": "seven"})
    );
    // A reset writes every field without `from`, with its default.
    assert_eq!(
        serde_json::Value::Object(res.call_values("reset", None)),
        serde_json::json!({"n": 1, "home": null, "blob": ["x"]})
    );
    assert!(res
        .call_values("set", Some(&serde_json::json!(5)))
        .is_empty());
}

/// What a config file quotes of itself in errors is a short excerpt: a file that is not
/// YAML (a password file, say, whose lines read as keys) is never echoed at length.
#[test]
fn errors_quote_keys_and_values_only_in_short_excerpts() {
    // A YAML key is at most 1,024 characters, unless written as an explicit `? key`.
    let long = "x".repeat(1000);
    let shadow =
        format!("postgres:{long}:20593:\nroot:{long}:1:\nroot:{long}:1:\n? {long}{long}\n: 1\n");
    let bad_pattern = format!(
        "version: 1\nresources:\n  {long}.{{c-d}}:\n    fields: {{}}\n  a.{{cid}}:\n    fields: {{}}\n    {long}: 1\n"
    );
    let bad_version = format!("version: {long}\nresources:\n  a.{{cid}}:\n    fields: {{}}\n");
    for text in [shadow, bad_pattern, bad_version] {
        let e = Config::parse("f.yaml", &text).unwrap_err();
        assert!(!e.errors.is_empty());
        for line in e.lines() {
            assert!(line.len() < 250, "{} chars: {line}", line.len());
            assert!(!line.contains(&"x".repeat(61)), "{line}");
        }
        assert!(e.lines().iter().any(|l| l.contains("x...")), "{e}");
    }
    // A short key is quoted whole, as before.
    let e = Config::parse("f.yaml", "version: 1\nresourses: {}\n").unwrap_err();
    assert!(
        e.lines()
            .iter()
            .any(|l| l
                .contains("unknown key `resourses` in the top level; did you mean `resources`?")),
        "{e}"
    );
}

/// Many resources that do not overlap, and one pair that does: exactly that pair is
/// reported, as it always was.
#[test]
fn among_many_resources_the_one_overlapping_pair_is_reported() {
    let mut yaml = String::from("version: 1\nresources:\n");
    for i in 0..3000 {
        yaml.push_str(&format!(
            "  app{i}.model.{{cid}}:\n    fields: {{}}\n  \"{{kind}}.list{i}.{{cid}}\":\n    fields: {{}}\n  app{i}:\n    fields: {{}}\n"
        ));
    }
    let line = yaml.lines().count() + 1;
    yaml.push_str("  app1234.model.{id}:\n    fields: {}\n");
    let first = yaml
        .lines()
        .position(|l| l == "  app1234.model.{cid}:")
        .unwrap()
        + 1;
    let e = Config::parse("r.yaml", &yaml).unwrap_err();
    assert_eq!(
        e.lines(),
        [format!("r.yaml:{line}:3: resource pattern `app1234.model.{{id}}` overlaps `app1234.model.{{cid}}` (line {first}): both match names like `app1234.model.<id>`")]
    );
    // A pattern that overlaps several is reported against the first declared.
    let mut yaml = String::from("version: 1\nresources:\n");
    for i in 0..100 {
        yaml.push_str(&format!("  app{i}.model.{{cid}}:\n    fields: {{}}\n"));
    }
    yaml.push_str("  \"{a}.{b}.c1\":\n    fields: {}\n  app7.{b}.{c}:\n    fields: {}\n");
    let e = Config::parse("r.yaml", &yaml).unwrap_err();
    assert_eq!(
        e.lines(),
        [
            "r.yaml:203:3: resource pattern `{a}.{b}.c1` overlaps `app0.model.{cid}` (line 3): both match names like `app0.model.c1`",
            "r.yaml:205:3: resource pattern `app7.{b}.{c}` overlaps `app7.model.{cid}` (line 17): both match names like `app7.model.<c>`",
        ]
    );
}
