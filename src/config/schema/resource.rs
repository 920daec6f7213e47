//! The schema of a resource: its fields, their types and constraints, `reset` and
//! `access`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};

use super::*;

/// A per-connection resource: a RES model whose fields are derived from the
/// connection's token, written by the client or by backend services; or a collection
/// of items that clients and backend services add and remove.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("not" = { "anyOf": [
    { "required": ["fields", "collection"] },
    { "required": ["fields", "presence"] },
    { "required": ["collection", "presence"] }
] }))]
pub(super) struct Resource {
    /// What the resource is, for people reading the file and `connres check`.
    description: Text,
    /// The model's fields, by name.
    #[schemars(extend("propertyNames" = { "minLength": 1 }))]
    fields: BTreeMap<String, Field>,
    /// Makes the resource a collection (in place of `fields`): an ordered list of items
    /// of one type.
    collection: Option<Collection>,
    /// Makes the resource a presence list (in place of `fields`): who is here, one
    /// entry per member, kept by connres from the connections that join it.
    presence: Option<Presence>,
    /// When the resource's values are reset.
    reset: Reset,
    /// Who may get the resource and call its methods. A rule left out denies.
    access: Access,
}

/// When a resource's values are reset.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Reset {
    /// Reset the written values to their defaults when the connection logs out (its
    /// token becomes null). false keeps them, e.g. for display preferences.
    #[schemars(extend("default" = true))]
    on_logout: Flag,
}

/// Who may get a resource and call its methods: CEL rules over `cid` (the connection
/// ID), `token` (the connection's token, null when logged out), `params` (the pattern's
/// captures), `query` and `model` (the model's values); call rules also over `values`
/// (what the call writes, by field) and `fields` (their names). A rule left out denies.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Access {
    /// Who may get the resource (and receive its events).
    get: Rule,
    /// Who may call its methods: one rule for all of them, or a rule per method
    /// (a method left out is denied).
    call: Call,
}

/// The call rules: one rule for every method, or a rule per method.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Call {
    /// One rule for `set` and `reset`.
    All(Rule),
    /// A rule per method.
    Methods(CallRules),
}

impl Default for Call {
    fn default() -> Self {
        Call::All(Rule)
    }
}

/// A rule per call method; a method left out is denied.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct CallRules {
    /// Who may set the resource's writable fields (`call.<resource>.set`).
    set: Rule,
    /// Who may reset the resource's values to their defaults (`call.<resource>.reset`).
    reset: Rule,
    /// Who may add an item to a collection (`call.<resource>.add`).
    add: Rule,
    /// Who may remove an item from a collection (`call.<resource>.remove`).
    remove: Rule,
    /// Who may join a presence list (`call.<resource>.join`; its `presence.join` rule
    /// must allow it too).
    join: Rule,
    /// Who may leave a presence list (`call.<resource>.leave`).
    leave: Rule,
    /// Who may say a joined connection is still here (`call.<resource>.ping`).
    ping: Rule,
}

// ---------------------------------------------------------------------- presence

/// A presence list: who is here. A connection joins with a `join` call and is listed
/// as its member (one entry per member, however many connections it has, in the
/// order members joined); it leaves with `leave`, by logging out, by a token that
/// gives another member, or when it calls neither `join` nor `ping` for `ttl`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Presence {
    /// What a connection is a member as: a template over `token`, `cid` and `params`
    /// giving a string (e.g. `"{{token.name}}"`), or `{ ref: <template> }` giving a
    /// resource name (e.g. `{ ref: "users.user.{{token.userId}}" }`).
    member: Member,
    /// Who may join, beside the resource's `access.call`: a rule over `cid`, `token`,
    /// `params` and `query`.
    #[serde(default)]
    join: Rule,
    /// How long a joined connection stays without a `join` or `ping` call, e.g. `60s`.
    #[serde(default)]
    #[schemars(extend("default" = "60s"))]
    ttl: Text,
    /// The most members: a join of a new member past it is refused.
    #[serde(default)]
    max_members: MaxMembers,
}

/// A member template: a string, or `{ ref: <template> }` for a reference.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Member {
    /// A string member.
    Text(Text),
    /// A reference to the member's resource.
    Ref(MemberRef),
}

/// A reference member.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct MemberRef {
    /// The template giving the resource name.
    r#ref: Text,
}

// ------------------------------------------------------------------- collections

/// A collection: an ordered list of items of one type. Get answers
/// `{"collection": [...]}`; `add` and `remove` calls (and the backend API's
/// `<prefix>.add.<rid>` and `<prefix>.remove.<rid>`) change it, each with one `add`
/// or `remove` event.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Collection {
    /// The items' type and constraints, as a field declares them.
    item: Item,
    /// The most items the collection holds: an add past it is refused.
    #[serde(default)]
    max_items: MaxItems,
    /// Whether clients may add and remove items (`call.<resource>.add` and `.remove`,
    /// when the resource's `access.call` allows the call): true, false, or a rule over
    /// the call's `values` (`value` and `idx`). Services add and remove through the
    /// backend API whatever this says.
    #[serde(default)]
    #[schemars(extend("default" = false))]
    writable: Writable,
}

/// The type and constraints of a collection's items.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = constraints_by_type)]
struct Item {
    /// The items' type.
    r#type: FieldType,
    /// What the items are, for people reading the file.
    #[serde(default)]
    description: Text,
    /// `ref` items only: the template that makes each item's name from the value an
    /// add or remove sends (a string or a number), e.g. `"shop.product.{{value}}"`.
    #[serde(default)]
    from: Text,
    /// The only values an item takes (string, integer, number and boolean items).
    #[serde(default)]
    #[schemars(length(min = 1))]
    r#enum: Vec<AnyValue>,
    /// The smallest value (integer and number items).
    #[serde(default)]
    min: Number,
    /// The largest value (integer and number items).
    #[serde(default)]
    max: Number,
    /// The most characters (string items).
    #[serde(default)]
    max_length: Whole,
    /// A regular expression an item must match (string items).
    #[serde(default)]
    pattern: Text,
    /// The keys a data item must have, by name (data items only): an item is then an
    /// object of these keys only. Left out, a data item takes any JSON.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "minLength": 1 }))]
    fields: BTreeMap<String, ShapeKey>,
}

// ------------------------------------------------------------------------ fields

/// A field of the model: its type, where its value comes from and what values it takes.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = constraints_by_type)]
struct Field {
    /// The field's type.
    r#type: FieldType,
    /// What the field holds, for people reading the file.
    #[serde(default)]
    description: Text,
    /// The value while nothing is written (and after a reset); null when left out. A
    /// valid value of the field; a data field takes any JSON.
    #[serde(default)]
    default: AnyValue,
    /// Derive the value from a template (handlebars) over `token`, `params` and `cid`,
    /// e.g. `"{{token.userId}}"` or `"users.user.{{token.userId}}"`. A derived field is
    /// not writable.
    #[serde(default)]
    from: Text,
    /// The only values the field takes (string, integer, number and boolean fields).
    #[serde(default)]
    #[schemars(length(min = 1))]
    r#enum: Vec<AnyValue>,
    /// The smallest value (integer and number fields).
    #[serde(default)]
    min: Number,
    /// The largest value (integer and number fields).
    #[serde(default)]
    max: Number,
    /// The most characters (string fields).
    #[serde(default)]
    max_length: Whole,
    /// A regular expression the value must match (string fields), e.g. `"^[a-z]+$"`.
    #[serde(default)]
    pattern: Text,
    /// Whether clients may set the field (`call.<resource>.set`, when the resource's
    /// `access.call` allows the set): true, false, or a rule deciding each set (e.g.
    /// `token != null`). Services write any field without `from` through the write API,
    /// writable or not.
    #[serde(default)]
    #[schemars(extend("default" = false))]
    writable: Writable,
    /// The keys a data value must have, by name (data fields only): the value is then
    /// an object of these keys only. Left out, a data field takes any JSON.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "minLength": 1 }))]
    fields: BTreeMap<String, ShapeKey>,
}

/// A key of a data value's shape: its type and constraints, as a field declares
/// them, checked whenever the value is written.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = constraints_by_type)]
struct ShapeKey {
    /// The key's type.
    r#type: KeyType,
    /// What the key holds, for people reading the file.
    #[serde(default)]
    description: Text,
    /// The only values the key takes (string, integer, number and boolean keys).
    #[serde(default)]
    #[schemars(length(min = 1))]
    r#enum: Vec<AnyValue>,
    /// The smallest value (integer and number keys).
    #[serde(default)]
    min: Number,
    /// The largest value (integer and number keys).
    #[serde(default)]
    max: Number,
    /// The most characters (string keys).
    #[serde(default)]
    max_length: Whole,
    /// A regular expression the value must match (string keys).
    #[serde(default)]
    pattern: Text,
    /// The keys of a data key's own object value, by name (data keys only).
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "minLength": 1 }))]
    fields: BTreeMap<String, ShapeKey>,
    /// Whether the key may be left out (or null); false: every value has it.
    #[serde(default)]
    #[schemars(extend("default" = false))]
    optional: Flag,
}

/// A data key's type: a field's, but `ref` (Resgate follows no reference inside data).
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum KeyType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
    /// Any JSON value, or an object of the keys `fields` declares.
    Data,
}

/// A field's type.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum FieldType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
    /// A reference to another resource, written as its resource name (on the wire,
    /// `{"rid": ...}`).
    Ref,
    /// Any JSON value, sent as RES data (`{"data": ...}`).
    Data,
}

/// Which constraints a field's type allows, and that a derived field is not writable.
fn constraints_by_type(schema: &mut Schema) {
    let forbid = |keys: &[&str]| {
        let properties: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), Value::Bool(false)))
            .collect();
        json!({ "properties": properties })
    };
    let type_is = |names: &[&str]| json!({ "properties": { "type": { "enum": names } }, "required": ["type"] });
    schema.insert(
        "allOf".into(),
        json!([
            { "if": type_is(&["integer", "number"]), "else": forbid(&["min", "max"]) },
            { "if": type_is(&["string"]), "else": forbid(&["max_length", "pattern"]) },
            { "if": type_is(&["ref", "data"]), "then": forbid(&["enum"]) },
            { "if": type_is(&["data"]), "else": forbid(&["fields"]) },
            {
                "if": {
                    "properties": { "writable": { "anyOf": [{ "const": true }, { "type": "string" }] } },
                    "required": ["writable"]
                },
                "then": forbid(&["from"])
            }
        ]),
    );
}

/// An access rule: a CEL expression that grants when true, or a YAML boolean.
#[derive(Default)]
struct Rule;

const RULE: &str = "An access rule: a CEL expression over `cid`, `token`, `params`, `query` \
    and `model` (and in call rules, over the call's `values` and `fields`) that grants when \
    true, e.g. `cid == params.cid && token != null`. A YAML boolean is the constant rule: \
    true grants always, false never.";

impl JsonSchema for Rule {
    fn schema_name() -> Cow<'static, str> {
        "Rule".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": RULE,
            "type": ["string", "boolean"]
        })
    }
}

/// Whether clients may set a field: true, false, or a rule.
#[derive(Default)]
struct Writable;

const WRITABLE: &str = "Whether clients may set the field: true, false (the default), or a rule: \
    a CEL expression over what the resource's call rules read (`cid`, `token`, `params`, \
    `query`, `model`, and the set's `values` and `fields`), evaluated for each set that \
    writes the field; it allows the field when true, e.g. `token != null`.";

impl JsonSchema for Writable {
    fn schema_name() -> Cow<'static, str> {
        "Writable".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": WRITABLE,
            "type": ["boolean", "string"]
        })
    }
}
