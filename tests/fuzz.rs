//! The bounded fuzz pass: the fuzz target bodies (`fuzz/bodies.rs`, also run by
//! `scripts/fuzz.sh` under libFuzzer) over the committed seed corpus and a few thousand
//! inputs generated from a fixed seed: mutated config files and random request scripts.
//! Needs no NATS. `FUZZ_SEED` and `FUZZ_CASES` change the seed and the number of
//! generated inputs per test.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use std::path::{Path, PathBuf};

use connres::config::Config;
use connres::pattern::Part;
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of a directory, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn cases(default: usize) -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0063_6f6e_6e72_6573)
}

/// Runs a body on one input, naming the input when it panics.
fn run_one(body: fn(&[u8]), what: &str, input: &[u8]) {
    let result = std::panic::catch_unwind(|| body(input));
    if let Err(e) = result {
        let cause = e
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| e.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        panic!(
            "{what} failed: {cause}\ninput ({} bytes):\n{}",
            input.len(),
            String::from_utf8_lossy(input)
        );
    }
}

/// Runs a test on a thread with the stack of a process's main thread, where connres
/// loads configs and serves requests, rather than the test harness's 2 MiB: nesting
/// that an optimised build handles in 8 MiB takes several times the stack unoptimised.
fn on_big_stack(test: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(test)
        .unwrap();
    if let Err(e) = thread.join() {
        std::panic::resume_unwind(e);
    }
}

/// SplitMix64: a tiny deterministic generator, enough to pick and mutate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------- config

/// Tokens spliced into config files: keys, types, values, templates, rules, patterns and
/// YAML syntax.
const CONFIG_TOKENS: &[&str] = &[
    "version",
    "nats",
    "api",
    "resources",
    "url",
    "queue_group",
    "prefix",
    "description",
    "fields",
    "reset",
    "on_logout",
    "access",
    "get",
    "call",
    "set",
    "type",
    "default",
    "from",
    "enum",
    "min",
    "max",
    "max_length",
    "pattern",
    "writable",
    "state",
    "idle_ttl",
    "string",
    "integer",
    "number",
    "boolean",
    "ref",
    "data",
    "true",
    "false",
    "null",
    "~",
    "0",
    "-1",
    "1.5",
    "1e309",
    "-.inf",
    ".nan",
    "99999999999999999999",
    "\"\"",
    "''",
    "[]",
    "{}",
    "[1, 2]",
    "{a: 1}",
    "\"{{token.userId}}\"",
    "\"{{params.cid}}\"",
    "\"{{params.nope}}\"",
    "\"{{#if token.x}}a{{else}}b{{/if}}\"",
    "\"{{> p}}\"",
    "\"{{*d}}\"",
    "\"{{\"",
    "\"}}\"",
    "\"{{#each token}}{{this}}{{/each}}\"",
    "\"{{lookup token 'a'}}\"",
    "\"{{{token.name}}}\"",
    "\"{{!c}}\"",
    "\"users.user.{{token.userId}}\"",
    "\"{{token.a.b.c}}-{{cid}}\"",
    "cid == params.cid",
    "token != null",
    "model.level < 3",
    "params.room == 'a'",
    "\"((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))\"",
    "size(token) > 0",
    "token.role in ['a', 'b']",
    "query.startsWith('a')",
    "1/0 == 1",
    "'a' + 1",
    "has(token.a)",
    "9223372036854775807 + 1",
    "cid ==",
    "&&",
    "||",
    "!",
    "session.user.{cid}",
    "a.{cid}.{cid}",
    "{cid}",
    "a..b",
    "a.*.b",
    "a.>",
    "{x}.{cid}",
    "é.{cid}",
    "a.{c-d}",
    "\"^[a-z]+$\"",
    "\"(\"",
    "\"a{99999}\"",
    "\"\\\\p{Foo}\"",
    "&a",
    "*a",
    "!!str",
    "!tag",
    "|",
    ">",
    "- ",
    ": ",
    "? ",
    "#",
    "---",
    "...",
    "%YAML 1.2",
    "\t",
    "'",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\u{feff}",
    "\r",
    "\u{0}",
    "é",
    "\u{1F600}",
    "\\",
    "<<: *a",
    "0x1F",
    "0o17",
    "+1",
    "1_000",
    "yes",
    "no",
    "on",
    "off",
];

/// Whole lines inserted into config files.
const CONFIG_LINES: &[&str] = &[
    "  x.{cid}:",
    "  chat.{room}.{cid}:",
    "    fields: {}",
    "    fields:",
    "      f: { type: string, from: \"{{token.name}}\" }",
    "      f: { type: string, writable: true, max_length: 3 }",
    "    access: { get: 'true', call: 'true' }",
    "    access:",
    "      get: cid == params.cid",
    "      call: { set: \"token != null\", reset: \"model.f == null\" }",
    "    reset: { on_logout: false }",
    "      g: { type: integer, min: 5, max: 1, default: 3 }",
    "      h: { type: string, pattern: \"(\" }",
    "      i: { type: data, default: [1, {a: b}] }",
    "      j: { type: ref, default: \"a b\" }",
    "      k: { type: number, enum: [1, 1.0, x] }",
    "      l: { type: boolean, from: \"{{#if token.admin}}true{{/if}}\" }",
    "version: 2",
    "version: 1",
    "api: { prefix: event }",
    "nats: { url: 5, queue_group: [] }",
    "resources:",
    "resources: {}",
    "- item",
    "? complex",
    "state: { idle_ttl: 1m, max_entries: 10 }",
    "",
    "# comment",
];

fn config_sources() -> Vec<String> {
    let mut out = vec![std::fs::read_to_string(root().join("resources.yaml")).unwrap()];
    for dir in [
        "tests/config/valid",
        "tests/config/invalid",
        "fuzz/corpus/config",
    ] {
        for path in files(&root().join(dir)) {
            if path.extension().is_some_and(|e| e == "errors") {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push(text);
            }
        }
    }
    out
}

/// A char boundary at or below `i`.
fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One to four random edits of a config text: lines deleted, duplicated, swapped,
/// re-indented, inserted or spliced from another file; tokens inserted or replacing a
/// word; truncation; a range deleted.
fn mutate_config(rng: &mut Rng, text: &str, sources: &[String]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let edits = if rng.chance(50) { 1 } else { 2 + rng.below(3) };
    for _ in 0..edits {
        let n = lines.len();
        match rng.below(10) {
            0 if n > 0 => {
                lines.remove(rng.below(n));
            }
            1 if n > 0 => {
                let i = rng.below(n);
                lines.insert(i, lines[i].clone());
            }
            2 if n > 1 => {
                let (a, b) = (rng.below(n), rng.below(n));
                lines.swap(a, b);
            }
            3 if n > 0 => {
                let i = rng.below(n);
                let line = &mut lines[i];
                match rng.below(3) {
                    0 => *line = format!("{}{line}", " ".repeat(1 + rng.below(4))),
                    1 => *line = line.trim_start().to_string(),
                    _ => *line = format!("\t{line}"),
                }
            }
            4 => {
                let line = rng.pick(CONFIG_LINES).to_string();
                lines.insert(rng.below(n + 1), line);
            }
            5 => {
                let other: Vec<&str> = rng.pick(sources).lines().collect();
                if !other.is_empty() {
                    let line = rng.pick(&other).to_string();
                    lines.insert(rng.below(n + 1), line);
                }
            }
            6 | 7 if n > 0 => {
                let i = rng.below(n);
                let line = &lines[i];
                let token = rng.pick(CONFIG_TOKENS);
                let words: Vec<(usize, &str)> =
                    line.match_indices(|c: char| !c.is_whitespace()).collect();
                let at = boundary(line, rng.below(line.len() + 1));
                lines[i] = if rng.chance(50) && !words.is_empty() {
                    // Replace the run of non-space characters around a random point.
                    let start = line[..at].rfind(char::is_whitespace).map_or(0, |p| p + 1);
                    let end = line[at..]
                        .find(char::is_whitespace)
                        .map_or(line.len(), |p| at + p);
                    format!("{}{token}{}", &line[..start], &line[end..])
                } else {
                    format!("{}{token}{}", &line[..at], &line[at..])
                };
            }
            8 => {
                let joined = lines.join("\n");
                let at = boundary(&joined, rng.below(joined.len() + 1));
                lines = joined[..at].lines().map(str::to_string).collect();
            }
            _ if n > 0 => {
                let i = rng.below(n);
                let line = &lines[i];
                let a = boundary(line, rng.below(line.len() + 1));
                let b = boundary(line, a + rng.below(10));
                lines[i] = format!("{}{}", &line[..a], &line[b.max(a)..]);
            }
            _ => {}
        }
    }
    let mut out = lines.join("\n");
    if rng.chance(80) {
        out.push('\n');
    }
    out
}

#[test]
fn config_seed_corpus() {
    on_big_stack(|| {
        let mut n = 0;
        for dir in [
            "fuzz/corpus/config",
            "tests/config/valid",
            "tests/config/invalid",
        ] {
            for path in files(&root().join(dir)) {
                let input = std::fs::read(&path).unwrap();
                run_one(bodies::config, &path.display().to_string(), &input);
                n += 1;
            }
        }
        run_one(
            bodies::config,
            "resources.yaml",
            &std::fs::read(root().join("resources.yaml")).unwrap(),
        );
        assert!(n >= 20, "only {n} config seeds");
    });
}

#[test]
fn config_generated() {
    on_big_stack(|| {
        let sources = config_sources();
        let valid_sources: Vec<String> = sources
            .iter()
            .filter(|s| Config::parse("x", s).is_ok())
            .cloned()
            .collect();
        let mut rng = Rng(seed());
        let mut valid = 0;
        for i in 0..cases(3000) {
            // Mostly edits of valid files, which reach past the first error.
            let base = if rng.chance(70) {
                rng.pick(&valid_sources).clone()
            } else {
                rng.pick(&sources).clone()
            };
            let text = mutate_config(&mut rng, &base, &sources);
            if Config::parse("x", &text).is_ok() {
                valid += 1;
            }
            run_one(
                bodies::config,
                &format!("generated config #{i}"),
                text.as_bytes(),
            );
        }
        for i in 0..cases(3000) / 5 {
            let input = rng.bytes(64);
            run_one(bodies::config, &format!("random config #{i}"), &input);
        }
        // Enough edits must keep the file valid, or the valid path goes unexercised.
        assert!(valid >= 100, "only {valid} generated configs were valid");
    });
}

// ---------------------------------------------------------------- request

/// Connection IDs, including odd ones (`%2E` is a dot, `%20` a space).
const CIDS: &[&str] = &["c1", "c2", "c1%20", "*", "Ω", "x%2Ey", "", "%00"];

const JUNK_NAMES: &[&str] = &[
    "",
    "session",
    "session.prefs",
    "session.prefs.",
    "session.user.c1.x",
    "session..c1",
    ">",
    "session.other.c1",
    "%00",
    "chat.room.settings.x",
    "site.banner",
    "site.banner.x",
];

fn json_values(rng: &mut Rng) -> Value {
    let pool = [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(7),
        json!(7.0),
        json!(8),
        json!(14),
        json!(32),
        json!(33),
        json!(2.5),
        json!(0.5),
        json!(1e300),
        json!(-0.0),
        json!(u64::MAX),
        json!(i64::MAX),
        json!(i64::MIN),
        json!("light"),
        json!("dark"),
        json!("blue"),
        json!(""),
        json!("x".repeat(201)),
        json!("é".repeat(200)),
        json!("users.user.1"),
        json!("a b"),
        json!("abc_1"),
        json!({"rid": "a.b"}),
        json!({"rid": "a.b", "soft": true}),
        json!({"rid": "a.b", "soft": false}),
        json!({"rid": 5}),
        json!({"data": {"x": 1}}),
        json!({"action": "delete"}),
        json!([1, 2]),
        json!({"x": []}),
    ];
    rng.pick(&pool).clone()
}

fn token(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::Null,
        1 => json!({}),
        2 => json!(rng.pick(&[json!(5), json!("tok"), json!([1]), json!(true)])),
        _ => {
            let mut t = serde_json::Map::new();
            for key in ["userId", "name", "role", "admin"] {
                if rng.chance(70) {
                    let v = match (key, rng.chance(60)) {
                        ("userId", true) => json!(rng.below(4)),
                        ("role", true) => json!(rng.pick(&["admin", "user", "guest", "boss"])),
                        ("admin", true) => json!(rng.chance(50)),
                        _ => json_values(rng),
                    };
                    t.insert(key.to_string(), v);
                }
            }
            Value::Object(t)
        }
    }
}

const GARBAGE: &[&str] = &[
    "",
    " ",
    "{",
    "[]",
    "null",
    "{}",
    "{\"cid\":5}",
    "{\"cid\":\"c1\",\"token\":",
    "{\"cid\":\"c1\",\"query\":5}",
    "{\"cid\":\"c1\",\"params\":[1]}",
    "{\"values\":{},\"x\":1}",
    "{\"values\":[]}",
    "{\"token\":1}{}",
    "[\"c1\",{}]",
    "\u{0}",
    "{\"a\":1e999}",
];

/// Fields a random call may name: those of the config, and some that are not.
fn field_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .resources
        .iter()
        .flat_map(|r| r.fields.iter().map(|f| f.name.clone()))
        .collect();
    names.extend(["nope".to_string(), "".to_string()]);
    names
}

fn encode(s: &str) -> String {
    // CIDS are already percent-encoded; escape only what would split the line.
    s.replace(' ', "%20").replace('\n', "%0A")
}

fn random_name(rng: &mut Rng, config: &Config) -> String {
    if rng.chance(12) {
        return rng.pick(JUNK_NAMES).to_string();
    }
    let res = rng.pick(&config.resources);
    let parts: Vec<String> = res
        .pattern
        .parts()
        .iter()
        .map(|p| match p {
            Part::Literal(l) => l.clone(),
            Part::Capture(_) => rng.pick(CIDS).to_string(),
        })
        .collect();
    parts.join(".")
}

fn random_payload(rng: &mut Rng, kind: &str, fields: &[String]) -> String {
    if rng.chance(8) {
        return rng.pick(GARBAGE).to_string();
    }
    let params = |rng: &mut Rng| {
        let mut p = serde_json::Map::new();
        for _ in 0..rng.below(3) {
            p.insert(rng.pick(fields).clone(), json_values(rng));
        }
        Value::Object(p)
    };
    let cid = |rng: &mut Rng| {
        let c = rng.pick(CIDS);
        json!(c
            .replace("%20", " ")
            .replace("%2E", ".")
            .replace("%00", "\u{0}"))
    };
    let value = match kind {
        "token" => json!({ "token": token(rng) }),
        "access" | "call" => {
            let mut o = serde_json::Map::new();
            o.insert("cid".into(), cid(rng));
            if rng.chance(80) {
                o.insert("token".into(), token(rng));
            }
            if rng.chance(15) {
                o.insert("query".into(), json!("q=1"));
            }
            if kind == "call" && rng.chance(85) {
                o.insert("params".into(), params(rng));
            }
            Value::Object(o)
        }
        "set" => json!({ "values": params(rng) }),
        _ => {
            return rng
                .pick(&["", " ", "{}", "{\"a\":1}", "[]", "x"])
                .to_string()
        }
    };
    value.to_string()
}

fn random_script(rng: &mut Rng, configs: &[Config]) -> Vec<u8> {
    let which = if rng.chance(40) { 1 + rng.below(2) } else { 0 };
    let config = &configs[which];
    let fields = field_names(config);
    let mut out = String::new();
    if which > 0 || rng.chance(5) {
        out.push_str(&format!("config {}\n", bodies::CONFIGS[which].0));
    }
    for _ in 0..=rng.below(15) {
        let kind = *rng.pick(&["get", "access", "call", "token", "set", "reset"]);
        let name = if kind == "token" {
            rng.pick(CIDS).to_string()
        } else {
            random_name(rng, config)
        };
        out.push_str(kind);
        out.push(' ');
        out.push_str(&encode(&name));
        if kind == "call" {
            let method = *rng.pick(&["set", "set", "reset", "get", "", "SET", "set%00"]);
            out.push(' ');
            out.push_str(method);
        }
        if kind != "get" {
            out.push(' ');
            out.push_str(&random_payload(rng, kind, &fields));
        }
        out.push('\n');
    }
    out.into_bytes()
}

#[test]
fn request_seed_corpus() {
    on_big_stack(|| {
        let dir = root().join("fuzz/corpus/request");
        let mut n = 0;
        for path in files(&dir) {
            let input = std::fs::read(&path).unwrap();
            run_one(bodies::request, &path.display().to_string(), &input);
            n += 1;
        }
        assert!(n >= 10, "only {n} request seeds in {}", dir.display());
    });
}

#[test]
fn request_generated() {
    on_big_stack(|| {
        let configs: Vec<Config> = bodies::CONFIGS
            .iter()
            .map(|(name, text)| Config::parse(name, text).unwrap())
            .collect();
        let mut rng = Rng(seed() ^ 1);
        for i in 0..cases(3000) {
            let input = random_script(&mut rng, &configs);
            run_one(bodies::request, &format!("generated script #{i}"), &input);
        }
        for i in 0..cases(3000) / 5 {
            let input = rng.bytes(96);
            run_one(bodies::request, &format!("random script #{i}"), &input);
        }
    });
}
