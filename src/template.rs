//! Value templates (`from:`): handlebars over `{cid, token, params}`, compiled at load.
//!
//! A template that is exactly one path expression (`{{token.userId}}`) is resolved as a
//! JSON lookup, so 42 stays a number and no handlebars rendering runs per request. Any
//! other template renders to a string with strict mode on (a missing path is an error,
//! which the caller turns into the field's default) and no HTML escaping.

use std::fmt;
use std::sync::{Arc, LazyLock};

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Handlebars, Path, PathSeg, RenderContext, Renderable};
use serde::Serialize;
use serde_json::Value;

use crate::store::Token;

/// The variables a field's `from` template may read.
pub const ROOTS: &[&str] = &["cid", "token", "params"];
/// The variables an auth block's token and `tid` templates may read: the verified
/// JWT's claims.
pub const CLAIMS_ROOTS: &[&str] = &["claims"];
/// The variable a collection item's template reads: the value a call sends
/// (`shop.product.{{value}}`).
pub const ITEM_ROOTS: &[&str] = &["value"];
/// Every variable any template reads (what makes an expression a plain path).
const ALL_ROOTS: &[&str] = &["cid", "token", "params", "claims", "value"];

static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb
});

/// A compiled `from` template.
#[derive(Clone)]
pub struct Template {
    source: String,
    kind: Kind,
    reads_token: bool,
    reads_cid: bool,
    /// The captures the template reads (`params.room` -> `room`).
    params: Vec<String>,
}

#[derive(Clone)]
enum Kind {
    /// `{{a.b.c}}`: the segments of the one path.
    Path(Vec<String>),
    /// Text and plain path expressions only (`users.user.{{token.userId}}`): joined
    /// without handlebars when every path gives a string, number or boolean.
    Plain(Vec<Piece>, Arc<handlebars::Template>),
    /// Anything else, rendered by handlebars to a string.
    Text(Arc<handlebars::Template>),
}

#[derive(Clone)]
enum Piece {
    Text(String),
    Path(Vec<String>),
}

/// Why a template was refused at load. `line` and `col` are 1-based within the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub pos: Option<(usize, usize)>,
}

/// What a template renders from: the connection the resource belongs to, its token and
/// the captures of the resource name.
#[derive(Serialize)]
pub struct TemplateInput<'a> {
    pub cid: Option<&'a str>,
    pub token: TokenIn<'a>,
    #[serde(serialize_with = "serialize_params")]
    pub params: &'a [(&'a str, &'a str)],
    /// A verified JWT's claims (auth templates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<&'a Value>,
    /// The value a call sends (collection item templates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a Value>,
}

/// The token a template reads: none, a parsed value, or a connection's kept text, from
/// which `{{token.<claim>...}}` reads the claim without parsing the rest (handlebars,
/// which takes the whole input, parses all of it).
#[derive(Debug, Clone, Copy, Default)]
pub enum TokenIn<'a> {
    #[default]
    None,
    Value(&'a Value),
    Text(&'a Token),
}

impl<'a> From<Option<&'a Value>> for TokenIn<'a> {
    fn from(token: Option<&'a Value>) -> TokenIn<'a> {
        token.map_or(TokenIn::None, TokenIn::Value)
    }
}

impl<'a> From<Option<&'a Token>> for TokenIn<'a> {
    fn from(token: Option<&'a Token>) -> TokenIn<'a> {
        token.map_or(TokenIn::None, TokenIn::Text)
    }
}

impl Serialize for TokenIn<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TokenIn::None => s.serialize_none(),
            TokenIn::Value(v) => v.serialize(s),
            TokenIn::Text(t) => t.value().serialize(s),
        }
    }
}

fn serialize_params<S: serde::Serializer>(
    params: &&[(&str, &str)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(params.iter().copied())
}

impl Template {
    /// A field's `from` template: it may read [`ROOTS`].
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        Template::compile_reading(source, ROOTS)
    }

    /// A template that may read the variables `roots` (a subset of every root).
    pub fn compile_reading(source: &str, roots: &[&str]) -> Result<Template, TemplateError> {
        let tpl = handlebars::Template::compile(source).map_err(|e| TemplateError {
            message: syntax_message(source, e.reason()),
            pos: e.pos(),
        })?;
        let mut paths = Vec::new();
        collect_paths(&tpl, true, &mut paths)
            .map_err(|message| TemplateError { message, pos: None })?;
        for (path, top_level) in &paths {
            if !*top_level {
                continue;
            }
            if let Some(root) = path.first() {
                if !roots.contains(&root.as_str()) {
                    return Err(TemplateError {
                        message: format!(
                            "template reads unknown variable `{root}` (templates can read {})",
                            roots.join(", ")
                        ),
                        pos: None,
                    });
                }
            }
        }
        let reads = |root: &str| {
            paths
                .iter()
                .any(|(p, _)| p.first().map(String::as_str) == Some(root))
        };
        let (reads_token, reads_cid) = (reads("token"), reads("cid"));
        let mut params: Vec<String> = paths
            .iter()
            .filter(|(p, top)| *top && p.first().map(String::as_str) == Some("params"))
            .filter_map(|(p, _)| p.get(1).cloned())
            .collect();
        params.dedup();
        let kind = match (single_path(&tpl), plain_pieces(&tpl)) {
            (Some(segs), _) => Kind::Path(segs),
            (None, Some(pieces)) => Kind::Plain(pieces, Arc::new(tpl)),
            (None, None) => Kind::Text(Arc::new(tpl)),
        };
        Ok(Template {
            source: source.to_string(),
            kind,
            reads_token,
            reads_cid,
            params,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The captures the template reads as `params.<name>`.
    pub fn params_read(&self) -> &[String] {
        &self.params
    }

    /// True when the template reads the connection's token.
    pub fn reads_token(&self) -> bool {
        self.reads_token
    }

    /// True when the template reads the connection's ID.
    pub fn reads_cid(&self) -> bool {
        self.reads_cid
    }

    /// How many dot-separated parts the template's text gives a name, when each of its
    /// expressions fills one part (`users.user.{{token.userId}}`: 3); `None` when it is
    /// one expression (the value is the whole name) or not plain text and paths.
    pub fn name_parts(&self) -> Option<usize> {
        match &self.kind {
            Kind::Plain(pieces, _) => Some(
                1 + pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.matches('.').count(),
                        Piece::Path(_) => 0,
                    })
                    .sum::<usize>(),
            ),
            _ => None,
        }
    }

    /// Renders the template. `None` means a path it reads is missing or null (the caller
    /// uses the field's default).
    pub fn render(&self, input: &TemplateInput) -> Option<Value> {
        match &self.kind {
            Kind::Path(segs) => lookup(input, segs).filter(|v| !v.is_null()),
            Kind::Plain(pieces, tpl) => match join(pieces, input) {
                Joined::Text(s) => Some(Value::String(s)),
                Joined::Missing => None,
                Joined::NotPlain => render_handlebars(tpl, input),
            },
            Kind::Text(tpl) => render_handlebars(tpl, input),
        }
    }
}

fn render_handlebars(tpl: &handlebars::Template, input: &TemplateInput) -> Option<Value> {
    let ctx = handlebars::Context::wraps(input).ok()?;
    let mut rc = RenderContext::new(None);
    tpl.renders(&REGISTRY, &ctx, &mut rc)
        .ok()
        .map(Value::String)
}

enum Joined {
    Text(String),
    /// A path is missing or null: the field takes its default.
    Missing,
    /// A path gave an object or array: handlebars decides how that renders.
    NotPlain,
}

fn join(pieces: &[Piece], input: &TemplateInput) -> Joined {
    use std::fmt::Write as _;
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Path(segs) => match lookup(input, segs) {
                None | Some(Value::Null) => return Joined::Missing,
                Some(Value::String(v)) => out.push_str(&v),
                // A whole number as the integer it is (42.0 as 42), whatever its JSON.
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        let _ = write!(out, "{}", f as i64);
                    }
                    _ => {
                        let _ = write!(out, "{n}");
                    }
                },
                Some(Value::Bool(b)) => {
                    let _ = write!(out, "{b}");
                }
                Some(_) => return Joined::NotPlain,
            },
        }
    }
    Joined::Text(out)
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

/// A syntax error in words: the parser's own message for a malformed template lists
/// grammar rule names (`expected trailing_tilde_to_omit_whitespace`).
fn syntax_message(source: &str, reason: &handlebars::TemplateErrorReason) -> String {
    let what = match reason {
        handlebars::TemplateErrorReason::InvalidSyntax(_) => {
            if source.matches("{{").count() > source.matches("}}").count() {
                "a `{{` is not closed by `}}`".to_string()
            } else if source.matches("{{#").count() > source.matches("{{/").count() {
                "a block `{{#...}}` is not closed by its `{{/...}}`".to_string()
            } else {
                "invalid handlebars expression".to_string()
            }
        }
        other => other.to_string(),
    };
    format!("template syntax: {what}")
}

fn lookup(input: &TemplateInput, segs: &[String]) -> Option<Value> {
    let walk = |from: Option<&Value>, rest: &[String]| {
        rest.iter()
            .try_fold(from?, |v, seg| match v {
                Value::Object(map) => map.get(seg),
                Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
            .cloned()
    };
    match segs {
        [root, rest @ ..] if root == "token" => match (input.token, rest) {
            (TokenIn::None, _) => None,
            (TokenIn::Value(v), _) => walk(Some(v), rest),
            // An object's claim, read from the text.
            (TokenIn::Text(t), [claim, rest @ ..]) if t.as_str().starts_with('{') => {
                walk(Some(&t.claim(claim)?), rest)
            }
            (TokenIn::Text(t), _) => walk(Some(&t.value()), rest),
        },
        [root, rest @ ..] if root == "claims" => walk(input.claims, rest),
        [root, rest @ ..] if root == "value" => walk(input.value, rest),
        [root] if root == "cid" => input.cid.map(|c| Value::String(c.to_string())),
        [root, name] if root == "params" => input
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| Value::String(v.to_string())),
        _ => None,
    }
}

/// `{{a.b}}` alone, with no helper, params or surrounding text.
fn single_path(tpl: &handlebars::Template) -> Option<Vec<String>> {
    let [TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h)] =
        tpl.elements.as_slice()
    else {
        return None;
    };
    path_expression(h)
}

/// Text and plain path expressions, in order; `None` when anything else is used.
fn plain_pieces(tpl: &handlebars::Template) -> Option<Vec<Piece>> {
    tpl.elements
        .iter()
        .map(|el| match el {
            TemplateElement::RawString(t) => Some(Piece::Text(t.clone())),
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                path_expression(h).map(Piece::Path)
            }
            _ => None,
        })
        .collect()
}

/// The path of an expression that only reads a variable (`{{token.userId}}`).
fn path_expression(h: &HelperTemplate) -> Option<Vec<String>> {
    if !h.params.is_empty() || !h.hash.is_empty() || h.block {
        return None;
    }
    match &h.name {
        Parameter::Name(n) if ALL_ROOTS.contains(&n.as_str()) => Some(vec![n.clone()]),
        Parameter::Path(Path::Relative((segs, _))) => segs
            .iter()
            .map(|s| match s {
                PathSeg::Named(n) => Some(n.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .filter(|s| s.first().is_some_and(|r| ALL_ROOTS.contains(&r.as_str()))),
        _ => None,
    }
}

/// Every variable path in the template, and whether it is outside any block (where the
/// context is the template input itself).
fn collect_paths(
    tpl: &handlebars::Template,
    top: bool,
    out: &mut Vec<(Vec<String>, bool)>,
) -> Result<(), String> {
    for el in &tpl.elements {
        match el {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => collect_helper(h, top, out)?,
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                return Err("templates cannot use partials (`{{> ...}}`)".into())
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                return Err("templates cannot use decorators (`{{* ...}}`)".into())
            }
            _ => {}
        }
    }
    Ok(())
}

fn collect_helper(
    h: &HelperTemplate,
    top: bool,
    out: &mut Vec<(Vec<String>, bool)>,
) -> Result<(), String> {
    // A bare name with parameters is a helper call; without, it reads a variable.
    if h.params.is_empty() && h.hash.is_empty() && !h.block {
        collect_param(&h.name, top, out);
    }
    for p in h.params.iter().chain(h.hash.values()) {
        collect_param(p, top, out);
    }
    for t in h.template.iter().chain(&h.inverse) {
        collect_paths(t, false, out)?;
    }
    Ok(())
}

fn collect_param(p: &Parameter, top: bool, out: &mut Vec<(Vec<String>, bool)>) {
    match p {
        Parameter::Name(n) => out.push((vec![n.clone()], top)),
        Parameter::Path(Path::Relative((segs, _))) => {
            // `@root.`, `../` and `this.` lead to the same variables; skip past them.
            let names: Vec<String> = segs
                .iter()
                .filter_map(|s| match s {
                    PathSeg::Named(n) => Some(n.clone()),
                    _ => None,
                })
                .skip_while(|n| n == "this")
                .collect();
            if !names.is_empty() {
                out.push((names, top));
            }
        }
        Parameter::Subexpression(sub) => {
            for p in sub.params().into_iter().flatten() {
                collect_param(p, top, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input<'a>(token: Option<&'a Value>, params: &'a [(&'a str, &'a str)]) -> TemplateInput<'a> {
        TemplateInput {
            cid: Some("c1"),
            token: token.into(),
            params,
            claims: None,
            value: None,
        }
    }

    #[test]
    fn a_kept_token_renders_as_the_parsed_one() {
        let tokens = [
            json!({"userId": 42, "name": "Ann", "o": {"a": [1, {"b": "x"}]}, "n": null, "f": 2.0}),
            json!([7, {"userId": 1}]),
            json!("text"),
        ];
        let sources = [
            "{{token.userId}}",
            "{{token.o.a.1.b}}",
            "{{token.o}}",
            "{{token}}",
            "{{token.0}}",
            "{{token.1.userId}}",
            "{{token.n}}",
            "{{token.missing}}",
            "users.user.{{token.userId}}.{{token.f}}",
            "u.{{token.o.a.0}}",
            "{{#if token.name}}{{token.name}}!{{/if}}",
        ];
        for token in &tokens {
            let kept = Token::new(token);
            for source in sources {
                let t = Template::compile(source).unwrap();
                let parsed = t.render(&input(Some(token), &[]));
                let mut text = input(None, &[]);
                text.token = TokenIn::Text(&kept);
                assert_eq!(t.render(&text), parsed, "{source} over {token}");
            }
        }
    }

    #[test]
    fn single_expression_keeps_json_type() {
        let t = Template::compile("{{token.userId}}").unwrap();
        let token = json!({"userId": 42, "name": "Ann"});
        assert_eq!(t.render(&input(Some(&token), &[])), Some(json!(42)));
        assert!(t.reads_token());
    }

    #[test]
    fn nested_paths_and_arrays() {
        let t = Template::compile("{{token.profile.tags.1}}").unwrap();
        let token = json!({"profile": {"tags": ["a", "b"]}});
        assert_eq!(t.render(&input(Some(&token), &[])), Some(json!("b")));
    }

    #[test]
    fn missing_path_or_null_token_is_none() {
        let t = Template::compile("{{token.userId}}").unwrap();
        assert_eq!(t.render(&input(None, &[])), None);
        let token = json!({"name": "x"});
        assert_eq!(t.render(&input(Some(&token), &[])), None);
        let token = json!({"userId": null});
        assert_eq!(t.render(&input(Some(&token), &[])), None);
        let mixed = Template::compile("users.user.{{token.userId}}").unwrap();
        assert_eq!(mixed.render(&input(None, &[])), None);
    }

    #[test]
    fn mixed_text_renders_a_string_without_escaping() {
        let t = Template::compile("users.user.{{token.userId}}").unwrap();
        let token = json!({"userId": 42});
        assert_eq!(
            t.render(&input(Some(&token), &[])),
            Some(json!("users.user.42"))
        );
        let t = Template::compile("<{{token.name}}> & co").unwrap();
        let token = json!({"name": "A&B <b>"});
        assert_eq!(
            t.render(&input(Some(&token), &[])),
            Some(json!("<A&B <b>> & co"))
        );
    }

    #[test]
    fn plain_templates_render_like_handlebars() {
        let t = Template::compile("u.{{token.id}}-{{token.ok}}/{{params.room}}/{{cid}}").unwrap();
        assert!(matches!(t.kind, Kind::Plain(..)));
        let Kind::Plain(_, hb) = &t.kind else {
            unreachable!()
        };
        for token in [
            json!({"id": 42, "ok": true}),
            json!({"id": "x y", "ok": false}),
            json!({"id": 1.5, "ok": "yes"}),
        ] {
            let i = input(Some(&token), &[("room", "lobby")]);
            let fast = t.render(&i);
            assert!(fast.is_some());
            assert_eq!(fast, render_handlebars(hb, &i), "{token}");
        }
        // An object is left to handlebars; a missing or null path gives the default.
        let token = json!({"id": {"a": 1}, "ok": true});
        let i = input(Some(&token), &[("room", "lobby")]);
        assert_eq!(t.render(&i), render_handlebars(hb, &i));
        let token = json!({"id": null, "ok": true});
        assert_eq!(t.render(&input(Some(&token), &[("room", "lobby")])), None);
    }

    #[test]
    fn cid_and_params() {
        let t = Template::compile("{{cid}}").unwrap();
        assert_eq!(t.render(&input(None, &[])), Some(json!("c1")));
        assert!(!t.reads_token());
        let t = Template::compile("{{params.room}}").unwrap();
        assert_eq!(
            t.render(&input(None, &[("room", "lobby")])),
            Some(json!("lobby"))
        );
        let t = Template::compile("room-{{params.room}}").unwrap();
        assert_eq!(
            t.render(&input(None, &[("room", "lobby")])),
            Some(json!("room-lobby"))
        );
    }

    #[test]
    fn helpers_work() {
        let t = Template::compile("{{#if token.admin}}admin{{else}}user{{/if}}").unwrap();
        let token = json!({"admin": true});
        assert_eq!(t.render(&input(Some(&token), &[])), Some(json!("admin")));
        assert!(t.reads_token());
    }

    #[test]
    fn rejects_partials_decorators_and_roundabout_paths() {
        let e = Template::compile(r#"{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}"#).unwrap_err();
        assert!(
            e.message.contains("decorators") || e.message.contains("partials"),
            "{}",
            e.message
        );
        let e = Template::compile("{{> p}}").unwrap_err();
        assert!(e.message.contains("partials"), "{}", e.message);
        let e = Template::compile("{{@root.user}}").unwrap_err();
        assert!(
            e.message.contains("unknown variable `user`"),
            "{}",
            e.message
        );
        assert!(Template::compile("{{@root.token.x}}")
            .unwrap()
            .reads_token());
        assert!(Template::compile("a{{../token.x}}").unwrap().reads_token());
        assert!(Template::compile("{{this.token.x}}").unwrap().reads_token());
        let t = Template::compile("{{params.room}}-{{params.cid}}").unwrap();
        assert_eq!(t.params_read(), ["room", "cid"]);
    }

    #[test]
    fn rejects_syntax_errors_and_unknown_variables() {
        let e = Template::compile("{{token.userId").unwrap_err();
        assert_eq!(e.message, "template syntax: a `{{` is not closed by `}}`");
        let e = Template::compile("{{#if token.a}}x").unwrap_err();
        assert!(
            e.message.contains("not closed by its `{{/...}}`"),
            "{}",
            e.message
        );
        let e = Template::compile("a {{token.}} b").unwrap_err();
        assert_eq!(e.message, "template syntax: invalid handlebars expression");
        assert_eq!(e.pos, Some((1, 11)));
        let e = Template::compile("{{user.id}}").unwrap_err();
        assert!(
            e.message.contains("unknown variable `user`"),
            "{}",
            e.message
        );
    }
}
