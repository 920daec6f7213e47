//! A declared resource as compiled: its pattern, fields, access rules, where they are
//! written, and what its fields and rules read (worked out once, for the request path).

use serde_json::{Map, Value};

use crate::collection::CollectionDef;
use crate::field::FieldDef;
use crate::pattern::Pattern;
use crate::rule::Rule;
use crate::template::Template;

use super::Pos;

/// A declared connection resource.
#[derive(Debug, PartialEq)]
pub struct Resource {
    pub pattern: Pattern,
    pub description: Option<String>,
    pub fields: Vec<FieldDef>,
    /// A collection's declaration; its resource has no fields. A presence list has one
    /// too: what it serves (its members).
    pub collection: Option<CollectionDef>,
    /// A presence list's declaration.
    pub presence: Option<crate::presence::PresenceDef>,
    pub reset_on_logout: bool,
    pub access: Access,
    /// Where the pattern and each rule are written, for tools that point at them.
    pub sites: Sites,
    /// What the fields and rules read, worked out once at load for the request path.
    reads: Reads,
}

/// A place in the config: the file (when the config is a directory) and the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub file: Option<String>,
    pub pos: Pos,
}

impl Site {
    /// `file:line:col`, with the config's path for a single-file config.
    pub fn show(&self, config_path: &str) -> String {
        format!(
            "{}:{}",
            self.file.as_deref().unwrap_or(config_path),
            self.pos
        )
    }
}

/// The sites of a resource by name: `pattern`, `get`, `call`, `call.<method>`,
/// `fields.<field>.writable`. Where a thing is written is not what it is: sites never
/// make two resources differ.
#[derive(Debug, Clone, Default)]
pub struct Sites(pub Vec<(String, Site)>);

impl Sites {
    pub fn get(&self, name: &str) -> Option<&Site> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

impl PartialEq for Sites {
    fn eq(&self, _: &Sites) -> bool {
        true
    }
}

/// What a resource's fields and rules read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Reads {
    fields_token: bool,
    access_token: bool,
    /// A rule evaluated with CEL reads the token (native rules only ask if there is one).
    access_token_value: bool,
    access_model: bool,
    /// A field (or the collection) has a `writable` rule.
    writable_rules: bool,
    /// A `writable` rule reads the model.
    writable_model: bool,
    /// A call rule or a `writable` rule reads `values` or `fields`.
    call_values: bool,
}

/// The access rules of a resource. A missing rule denies.
#[derive(Debug, Default, PartialEq)]
pub struct Access {
    pub get: Option<Rule>,
    pub call: CallAccess,
}

#[derive(Debug, Default, PartialEq)]
pub enum CallAccess {
    #[default]
    Deny,
    /// One rule for every method.
    All(Rule),
    /// A rule per method; methods not listed are denied.
    Methods(Vec<(String, Rule)>),
}

impl Access {
    /// Every rule: `get` and the call rules.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        let call: Vec<&Rule> = match &self.call {
            CallAccess::Deny => Vec::new(),
            CallAccess::All(r) => vec![r],
            CallAccess::Methods(rules) => rules.iter().map(|(_, r)| r).collect(),
        };
        self.get.iter().chain(call)
    }
}

impl CallAccess {
    /// The rule that decides a method, if any.
    pub fn rule(&self, method: &str) -> Option<&Rule> {
        match self {
            CallAccess::Deny => None,
            CallAccess::All(rule) => Some(rule),
            CallAccess::Methods(rules) => rules.iter().find(|(m, _)| m == method).map(|(_, r)| r),
        }
    }
}

impl Resource {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// A resource from its parts, with what its fields and rules read worked out.
    pub fn new(
        pattern: Pattern,
        description: Option<String>,
        fields: Vec<FieldDef>,
        collection: Option<CollectionDef>,
        reset_on_logout: bool,
        access: Access,
    ) -> Resource {
        let writable = || {
            fields
                .iter()
                .map(|f| &f.writable)
                .chain(collection.as_ref().map(|c| &c.writable))
                .filter_map(|w| w.rule())
        };
        let reads = Reads {
            fields_token: fields
                .iter()
                .any(|f| f.source.as_ref().is_some_and(Template::reads_token)),
            access_token: access.rules().any(Rule::reads_token),
            access_token_value: access.rules().any(|r| r.reads_token() && !r.is_native()),
            access_model: access.rules().any(Rule::reads_model),
            writable_rules: writable().next().is_some(),
            writable_model: writable().any(Rule::reads_model),
            call_values: access.rules().chain(writable()).any(Rule::reads_call),
        };
        Resource {
            pattern,
            description,
            fields,
            collection,
            presence: None,
            reset_on_logout,
            access,
            sites: Sites::default(),
            reads,
        }
    }

    /// True when an access rule reads `token` (so access may change at login).
    pub fn access_reads_token(&self) -> bool {
        self.reads.access_token
    }

    /// True when an access rule reads the token's value, not only whether there is one.
    pub fn access_reads_token_value(&self) -> bool {
        self.reads.access_token_value
    }

    /// True when an access rule reads `model` (so the model is built for it).
    pub fn access_reads_model(&self) -> bool {
        self.reads.access_model
    }

    /// True when a rule deciding a call of `method` reads `model`: an access rule, or
    /// for a set (or a collection's add and remove), a `writable` rule.
    pub fn call_reads_model(&self, method: &str) -> bool {
        self.reads.access_model || (self.writes(method) && self.reads.writable_model)
    }

    /// The methods clients call and the backend API serves: `set` and `reset` on a
    /// model, `add` and `remove` on a collection.
    pub fn methods(&self) -> &'static [&'static str] {
        match (&self.collection, &self.presence) {
            (_, Some(_)) => crate::presence::METHODS,
            (Some(_), None) => crate::collection::METHODS,
            (None, None) => super::METHODS,
        }
    }

    /// True when a call of `method` writes values its `writable` rules decide: a set,
    /// or a collection's add and remove.
    pub fn writes(&self, method: &str) -> bool {
        match (&self.collection, &self.presence) {
            (_, Some(_)) => false,
            (Some(_), None) => crate::collection::METHODS.contains(&method),
            (None, None) => method == "set",
        }
    }

    /// True when a field has a `writable` rule (a set is then checked against it).
    pub fn has_writable_rules(&self) -> bool {
        self.reads.writable_rules
    }

    /// True when a call rule or a `writable` rule reads what a call writes (`values`,
    /// `fields`), so the engine works it out for them.
    pub fn rules_read_call_values(&self) -> bool {
        self.reads.call_values
    }

    /// What a call of `method` writes, as its rules read it in `values` (and its keys in
    /// `fields`): for a set, its params, each value as the model would hold it (a
    /// `ref` as the name, `data` as its JSON; a value the field would refuse as sent);
    /// for a reset, every field it returns to its default (those without `from`), with
    /// that default.
    pub fn call_values(&self, method: &str, params: Option<&Value>) -> Map<String, Value> {
        if let Some(c) = &self.collection {
            return collection_call_values(c, params);
        }
        if method == "reset" {
            return self
                .fields
                .iter()
                .filter(|f| f.source.is_none())
                .map(|f| (f.name.clone(), f.default.clone()))
                .collect();
        }
        let Some(Value::Object(sent)) = params else {
            return Map::new();
        };
        sent.iter()
            .map(|(name, wire)| {
                let value = self
                    .field(name)
                    .and_then(|f| f.from_wire(wire).ok())
                    .unwrap_or_else(|| wire.clone());
                (name.clone(), value)
            })
            .collect()
    }

    /// True when the engine must remember that a gateway may cache this model for its
    /// connection: a token change changes its values, or a login must re-ask its access.
    pub fn follows_token(&self) -> bool {
        self.fields_read_token() || self.access_reads_token()
    }

    /// True when a field follows the token.
    pub fn fields_read_token(&self) -> bool {
        self.reads.fields_token
    }
}

/// What an `add` or `remove` of a collection writes, as its rules read it in `values`:
/// the params as sent, `value` as the collection would hold it (a value the item would
/// refuse as sent).
fn collection_call_values(c: &CollectionDef, params: Option<&Value>) -> Map<String, Value> {
    let Some(Value::Object(sent)) = params else {
        return Map::new();
    };
    sent.iter()
        .map(|(name, wire)| {
            let value = match name.as_str() {
                "value" => c.item_from_wire(wire).unwrap_or_else(|_| wire.clone()),
                _ => wire.clone(),
            };
            (name.clone(), value)
        })
        .collect()
}
