//! Per-connection state behind the [`Store`] trait: each connection's token record and
//! the models the engine remembers for it, and models without a `{cid}`.
//!
//! The unit of storage and of expiry is the connection: its token record and every model
//! whose name carries its cid live in one [`Connection`], touched and dropped together.
//! A model without a cid is a unit of its own. The store keeps units in the order they
//! were last touched, so idle expiry and the size bound both take from the cold end.
//!
//! The engine applies every change to one connection in order and needs to read its own
//! writes at once, so the trait is synchronous and hands out references.
//!
//! Besides counting entries (`state.max_entries`), the store accounts the bytes each
//! unit holds (`state.max_bytes`): [`UNIT_OVERHEAD`], its token's text ([`Token`]: a
//! token is kept as canonical JSON text, parsed where it is read), its written values as
//! [`size`] measures parsed JSON, and its cached get replies ([`Connection::bytes`],
//! [`Written::bytes`]). The size of a model's values is kept beside them and measured
//! again only after they change, so a step costs a pass over the models of the unit it
//! changed, never over the store.

pub mod cold;
mod memory;
mod name;
pub mod record;
pub mod size;
mod token;

use bytes::Bytes;
use serde_json::Value;

pub use memory::MemoryStore;
pub use name::{ModelName, ShortText};
pub use size::UNIT_OVERHEAD;
pub use token::{Token, TokenError};

use crate::clock::Tick;

/// A size kept beside what it measures, unknown until measured and again after a
/// change (saturating: 4 GiB at most). Not state: never compared.
#[derive(Debug, Clone, Copy)]
struct Len(u32);

impl Len {
    const UNKNOWN: Len = Len(u32::MAX);

    fn of(len: usize) -> Len {
        Len(u32::try_from(len).unwrap_or(u32::MAX - 1).min(u32::MAX - 1))
    }

    /// The size, measured by `measure` when unknown.
    fn get_or(&mut self, measure: impl FnOnce() -> usize) -> usize {
        if self.0 == Len::UNKNOWN.0 {
            *self = Len::of(measure());
        }
        self.0 as usize
    }
}

impl Default for Len {
    fn default() -> Len {
        Len::UNKNOWN
    }
}

impl PartialEq for Len {
    fn eq(&self, _: &Len) -> bool {
        true
    }
}

/// What the engine knows of one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connection {
    /// The connection's token, as canonical JSON text ([`Token`]: parsed only where
    /// something reads it); `None` when logged out or unknown. Changed only through
    /// [`Connection::replace_token`].
    pub token: Option<Token>,
    /// True once the token came from a token event or filled in from a request. A
    /// confirmed record changes only by token events.
    pub confirmed: bool,
    /// Models of this connection (names carrying its cid) the engine must remember:
    /// ones a gateway may cache whose values or access follow the token, and ones with
    /// written values.
    pub models: Vec<Model>,
    /// Counts changes to the token, the models list and the grants (see [`Changes`]).
    pub changes: Changes,
    /// When the token ends, in seconds since 1970 (the `expires` of the token event
    /// that set it); 0: never.
    pub expires: u32,
    /// What the token event that set the token said of its session (its `tid`, the
    /// resume key). Boxed, one pointer: most connections have none.
    pub session: Option<Box<Session>>,
    /// Grants and token logs ([`Logs`]): boxed, one pointer, and none while all are
    /// empty (with the memory store, most connections).
    logs: Option<Box<Logs>>,
}

/// What a connection keeps beside its token and models that most connections have
/// none of. Never kept empty (so that two records that say the same compare equal).
#[derive(Debug, Clone, Default, PartialEq)]
struct Logs {
    /// Other resources this connection was granted access to whose rules read the
    /// token: a login must ask the gateway to re-check them.
    granted: Vec<Box<str>>,
    /// The digests of the last token events applied (the shared store only).
    tokens: TokenLog,
    /// The digests of the tokens those events set, as canonical JSON (the shared
    /// store only): a request whose token is in it, but not last, carries a token a
    /// later event replaced, and fills nothing in (see [`Connection::replaced`]).
    token_values: TokenLog,
}

impl Logs {
    fn is_empty(&self) -> bool {
        self.granted.is_empty() && self.tokens.0.is_none() && self.token_values.0.is_none()
    }
}

/// An empty token log, for a connection that keeps none.
static NO_LOG: TokenLog = TokenLog(None);

/// What a token event said of its session, beside the token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// The token ID.
    pub tid: Option<Box<str>>,
    /// The resume key, as kept: its secret's hash and when it stops being valid.
    pub resume: Option<ResumeKept>,
    /// The JWT the connection logged in with (kept for a `recheck` method only).
    pub jwt: Option<Box<str>>,
}

/// A resume key as a connection's record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeKept {
    pub hash: [u8; 32],
    pub until: u32,
}

pub use ownership::hash::TOKEN_LOG;

/// The digests of the last token events applied to a connection, oldest first, a
/// repeat of the last one not added again. Kept only with the shared store: a new
/// owner of the connection's partition compares it with the token events it kept to
/// find those the old owner did not apply (`ownership::window`). Empty, it takes no
/// memory beyond the pointer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenLog(Option<Box<[u32]>>);

impl TokenLog {
    /// Adds a digest; says whether the log changed.
    pub fn push(&mut self, digest: u32) -> bool {
        match ownership::hash::logged(self.digests(), digest) {
            Some(next) => {
                self.0 = Some(next.into_boxed_slice());
                true
            }
            None => false,
        }
    }

    /// The digests, oldest first.
    pub fn digests(&self) -> &[u32] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// A log of these digests (the last [`TOKEN_LOG`]).
    pub fn from_digests(digests: impl IntoIterator<Item = u32>) -> TokenLog {
        let mut log = TokenLog::default();
        for d in digests {
            log.push(d);
        }
        log
    }
}

pub use ownership::hash::token_digest;

/// Counts the changes to what a shared store keeps of a connection or model, so that a
/// step that only read it (a get filling its cached reply) is not written out. Not
/// state: never compared.
#[derive(Debug, Clone, Copy, Default)]
pub struct Changes(u32);

impl Changes {
    fn bump(&mut self) {
        self.0 = self.0.wrapping_add(1);
    }
}

impl PartialEq for Changes {
    fn eq(&self, _: &Changes) -> bool {
        true
    }
}

/// A remembered model of a connection: 72 bytes (a connection's models sit in one
/// vector, and most connections hold one or two). Two are equal when their names and
/// written values are.
#[derive(Debug, Clone)]
pub struct Model {
    /// Its name, without the connection's cid ([`ModelName`]): [`Model::is`] and
    /// [`Model::rid`] take the cid the connection is keyed by.
    name: ModelName,
    /// Only through [`Model::written_mut`], which drops the cached reply.
    written: Written,
    /// The encoded get reply, while it is known to be current (see [`ReplyCache`]).
    reply: ReplyCache,
    /// The written values' size ([`Written::bytes`]).
    len: Len,
    /// Counts the changes to the written values (wrapping: a step compares the count
    /// before and after it, and makes a handful of changes at most). Not state.
    changes: u16,
    /// The low bits of the stamp of the last get since the last change
    /// ([`Model::keep_reply`]; [`NOT_SEEN`]: none). Not state.
    seen: u16,
}

/// No get since the last change.
const NOT_SEEN: u16 = u16::MAX;

impl PartialEq for Model {
    fn eq(&self, other: &Model) -> bool {
        self.name == other.name && self.written == other.written
    }
}

impl Model {
    /// Model `rid` of connection `cid`.
    pub fn new(rid: &str, cid: &str) -> Model {
        Model {
            name: ModelName::new(rid, cid),
            written: Written::default(),
            reply: ReplyCache::default(),
            len: Len::UNKNOWN,
            changes: 0,
            seen: NOT_SEEN,
        }
    }

    /// Whether this is model `rid`, as a model of connection `cid`.
    pub fn is(&self, rid: &str, cid: &str) -> bool {
        self.name.is(rid, cid)
    }

    /// Its name, as a model of connection `cid`.
    pub fn rid(&self, cid: &str) -> std::borrow::Cow<'_, str> {
        self.name.with_cid(cid)
    }

    /// The bytes of its written values ([`Written::bytes`]) and of its cached reply
    /// (the values are measured again only after they changed).
    pub fn bytes(&mut self) -> usize {
        let written = &self.written;
        self.len.get_or(|| written.bytes()) + self.reply.bytes()
    }

    pub fn written(&self) -> &Written {
        &self.written
    }

    /// The written values, to change: the cached reply goes, since it showed them, and
    /// their length is measured again.
    pub fn written_mut(&mut self) -> &mut Written {
        self.clear_reply();
        self.changes = self.changes.wrapping_add(1);
        self.len = Len::UNKNOWN;
        &mut self.written
    }

    /// The cached get reply, if it was made under this stamp.
    pub fn reply(&self, stamp: u64) -> Option<&Bytes> {
        self.reply.get(stamp)
    }

    /// Whether a get reply is kept.
    pub fn has_reply(&self) -> bool {
        self.reply.0.is_some()
    }

    /// A get under `stamp` found no reply: whether to keep the one it makes. It is kept
    /// from the second get under one stamp since the last change on: a gateway gets a
    /// connection's model once and then follows its events, so a reply kept at the
    /// first get would mostly never be served again, and would take about as much
    /// memory as the rest of the connection. The first get is noted (by the stamp's low
    /// bits: a match after 65,536 stamps only keeps a reply one get early, made under
    /// the stamp in force and served only under it).
    pub fn keep_reply(&mut self, stamp: u64) -> bool {
        let low = stamp as u16;
        if self.seen == low {
            return true;
        }
        self.seen = low;
        self.reply.0 = None;
        false
    }

    /// Keeps the get reply made under `stamp`.
    pub fn set_reply(&mut self, stamp: u64, reply: Bytes) {
        self.seen = stamp as u16;
        self.reply.0 = Some(Box::new((stamp, reply)));
    }

    /// Drops the cached reply, and that a get was seen.
    pub fn clear_reply(&mut self) {
        self.reply.0 = None;
        self.seen = NOT_SEEN;
    }
}

/// A model's encoded get reply, kept between gets ([`Model::keep_reply`]). It shows the
/// model's written values, its connection's token and the config in force: changing
/// the written values or the token clears it ([`Model::written_mut`],
/// [`Connection::replace_token`]), and it is served only under the stamp it was made
/// with, which the engine changes with the config and after a reconnect. Boxed, with
/// its stamp, since most models keep none (a pointer). Not state: never compared,
/// never counted.
#[derive(Debug, Clone, Default)]
pub struct ReplyCache(Option<Box<(u64, Bytes)>>);

impl ReplyCache {
    /// The reply, if it was made under this stamp.
    fn get(&self, stamp: u64) -> Option<&Bytes> {
        self.0
            .as_deref()
            .filter(|(s, _)| *s == stamp)
            .map(|(_, b)| b)
    }

    /// The bytes of the reply it keeps.
    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |k| k.1.len())
    }
}

impl Connection {
    /// Replaces the token; every cached reply of the connection goes, since the token
    /// may show in any of its models.
    pub fn replace_token(&mut self, token: Option<Token>) {
        self.token = token;
        self.expires = 0;
        self.session = None;
        self.changes.bump();
        for m in &mut self.models {
            m.clear_reply();
        }
    }

    /// Sets what the token event that set the token said of it: its ID, resume key and
    /// JWT.
    pub fn set_session(
        &mut self,
        tid: Option<&str>,
        resume: Option<([u8; 32], u32)>,
        jwt: Option<&str>,
    ) {
        let session = Session {
            tid: tid.map(Box::from),
            resume: resume.map(|(hash, until)| ResumeKept { hash, until }),
            jwt: jwt.map(Box::from),
        };
        let session = (session != Session::default()).then(|| Box::new(session));
        if self.session != session {
            self.session = session;
            self.changes.bump();
        }
    }

    /// The token ID of the token event that set the token.
    pub fn tid(&self) -> Option<&str> {
        self.session.as_ref()?.tid.as_deref()
    }

    /// The connection's resume key, as kept.
    pub fn resume(&self) -> Option<&ResumeKept> {
        self.session.as_ref()?.resume.as_ref()
    }

    /// The JWT the connection logged in with, when kept.
    pub fn jwt(&self) -> Option<&str> {
        self.session.as_ref()?.jwt.as_deref()
    }

    /// Sets when the token ends (0: never).
    pub fn set_expires(&mut self, expires: u32) {
        if self.expires != expires {
            self.expires = expires;
            self.changes.bump();
        }
    }

    /// The model (added, nothing written, when missing) with the connection's token.
    /// `cid`: the connection's, as for every model lookup.
    pub fn model_with_token(&mut self, cid: &str, rid: &str) -> (&mut Model, Option<&Token>) {
        let i = self.model_index(cid, rid);
        let Connection { token, models, .. } = self;
        (&mut models[i], token.as_ref())
    }

    /// Model `rid` of this connection, `cid`.
    pub fn model(&self, cid: &str, rid: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.is(rid, cid))
    }

    /// The model, added (nothing written) when missing.
    pub fn model_mut(&mut self, cid: &str, rid: &str) -> &mut Model {
        let i = self.model_index(cid, rid);
        &mut self.models[i]
    }

    fn model_index(&mut self, cid: &str, rid: &str) -> usize {
        match self.models.iter().position(|m| m.is(rid, cid)) {
            Some(i) => i,
            None => {
                // Exact growth: most connections hold one or two models.
                self.changes.bump();
                self.models.reserve_exact(1);
                self.models.push(Model::new(rid, cid));
                self.models.len() - 1
            }
        }
    }

    pub fn remove_model(&mut self, cid: &str, rid: &str) {
        self.changes.bump();
        self.models.retain(|m| !m.is(rid, cid));
    }

    /// Remembers a resource of another connection, or without a cid, that this
    /// connection was granted access to.
    pub fn grant(&mut self, rid: &str) {
        if !self.granted().iter().any(|g| &**g == rid) {
            self.changes.bump();
            let granted = &mut self.logs_mut().granted;
            granted.reserve_exact(1);
            granted.push(rid.into());
        }
    }

    /// The resources of other connections, or without a cid, this connection was
    /// granted access to whose rules read the token (a login must ask the gateway to
    /// re-check them).
    pub fn granted(&self) -> &[Box<str>] {
        self.logs.as_ref().map_or(&[], |l| &l.granted)
    }

    /// Keeps the grants `keep` says yes to; says whether any went.
    pub fn retain_granted(&mut self, keep: impl FnMut(&Box<str>) -> bool) -> bool {
        let Some(logs) = self.logs.as_mut() else {
            return false;
        };
        let before = logs.granted.len();
        logs.granted.retain(keep);
        let changed = logs.granted.len() != before;
        if changed {
            self.changes.bump();
            self.tidy_logs();
        }
        changed
    }

    /// The digests of the last token events applied (the shared store only).
    pub fn tokens(&self) -> &TokenLog {
        self.logs.as_ref().map_or(&NO_LOG, |l| &l.tokens)
    }

    /// The digests of the tokens those events set (the shared store only).
    pub fn token_values(&self) -> &TokenLog {
        self.logs.as_ref().map_or(&NO_LOG, |l| &l.token_values)
    }

    /// Sets the grants and token logs (a record read from the bucket).
    pub fn set_logs(&mut self, granted: Vec<Box<str>>, tokens: TokenLog, token_values: TokenLog) {
        self.logs = Some(Box::new(Logs {
            granted,
            tokens,
            token_values,
        }));
        self.tidy_logs();
    }

    fn logs_mut(&mut self) -> &mut Logs {
        self.logs.get_or_insert_with(Box::default)
    }

    /// Drops the box of grants and logs once all are empty.
    fn tidy_logs(&mut self) {
        if self.logs.as_ref().is_some_and(|l| l.is_empty()) {
            self.logs = None;
        }
    }

    /// A fingerprint of what a shared store keeps of the connection: it differs after
    /// any change to the token, whether it is confirmed, a model's written values, the
    /// models list or the grants (a model removed in place shows in the count).
    pub fn fingerprint(&self) -> (u32, u32, usize, bool) {
        let models = self
            .models
            .iter()
            .fold(0u32, |sum, m| sum.wrapping_add(u32::from(m.changes)));
        (self.changes.0, models, self.models.len(), self.confirmed)
    }

    /// Records a token event applied to the connection (the shared store's token log).
    pub fn log_token(&mut self, digest: u32) {
        if self.logs_mut().tokens.push(digest) {
            self.changes.bump();
        }
        self.tidy_logs();
    }

    /// Records the token an applied token event set (the digest of its canonical
    /// JSON, `null` for a logout).
    pub fn log_token_value(&mut self, digest: u32) {
        if self.logs_mut().token_values.push(digest) {
            self.changes.bump();
        }
        self.tidy_logs();
    }

    /// Whether a token (the digest of its canonical JSON) was set by an applied token
    /// event that a later one replaced: a request carrying it is older than the record.
    pub fn replaced(&self, digest: u32) -> bool {
        let values = self.token_values().digests();
        values.last() != Some(&digest) && values.contains(&digest)
    }

    /// How many entries this connection counts towards `state.max_entries`: one per
    /// remembered model or granted resource, and one for a record that holds neither.
    pub fn entries(&self) -> usize {
        (self.models.len() + self.granted().len()).max(1)
    }

    /// The bytes this connection counts towards `state.max_bytes`: [`UNIT_OVERHEAD`],
    /// its token's text ([`Token::bytes`]; and the token ID and JWT kept with it), and
    /// each model's written values ([`Written::bytes`]) and cached reply. Each model's
    /// size is kept and measured again only after a change, so this is a pass over the
    /// models.
    pub fn bytes(&mut self) -> usize {
        let token = self.token.as_ref().map_or(0, Token::bytes);
        let session = self.session.as_ref().map_or(0, |s| {
            s.tid.as_ref().map_or(0, |t| t.len()) + s.jwt.as_ref().map_or(0, |j| j.len())
        });
        let models: usize = self.models.iter_mut().map(Model::bytes).sum();
        UNIT_OVERHEAD + token + session + models
    }
}

/// What was written to one model: its fields' values by name (a field that is absent
/// follows its default), or, for a collection, its items in order. A short vector, not
/// a map: models have a handful of fields and a map's node costs hundreds of bytes per
/// model.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// Field names in line up to 16 bytes ([`ShortText`]): no block per name.
    Fields(Vec<(ShortText, Value)>),
    Items(Vec<Value>),
    /// A presence list's members and their connections.
    Presence(Box<crate::presence::Members>),
}

impl Default for Written {
    fn default() -> Self {
        Written::Fields(Vec::new())
    }
}

impl Written {
    pub fn get(&self, field: &str) -> Option<&Value> {
        match self {
            Written::Fields(v) => v.iter().find(|(f, _)| f.is(field)).map(|(_, v)| v),
            Written::Items(_) | Written::Presence(_) => None,
        }
    }

    /// Writes a field's value (items written before, under another config, go).
    pub fn insert(&mut self, field: &str, value: Value) {
        if !matches!(self, Written::Fields(_)) {
            *self = Written::default();
        }
        let Written::Fields(values) = self else {
            return;
        };
        match values.iter_mut().find(|(f, _)| f.is(field)) {
            Some((_, v)) => *v = value,
            None => {
                values.reserve_exact(1);
                values.push((ShortText::new(field), value));
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Written::default();
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What it holds in memory: each field's value (and its name, past the 16 bytes its
    /// slot holds: [`ShortText`]), each item, in its slot
    /// ([`size::value_bytes`]); for a presence list, its members and connections
    /// ([`Members::bytes`], kept as it changes). A pass over the values, so the store
    /// keeps it beside them.
    ///
    /// [`Members::bytes`]: crate::presence::Members::bytes
    pub fn bytes(&self) -> usize {
        use size::{value_bytes, ALLOCATION, SLOT};
        match self {
            Written::Fields(v) => v
                .iter()
                .map(|(f, v)| {
                    let name = if f.spilled() {
                        ALLOCATION + f.as_str().len()
                    } else {
                        0
                    };
                    SLOT + name + value_bytes(v)
                })
                .sum(),
            Written::Items(v) => v.iter().map(|v| SLOT + value_bytes(v)).sum(),
            Written::Presence(p) => p.bytes(),
        }
    }

    /// How many field values or items.
    pub fn len(&self) -> usize {
        match self {
            Written::Fields(v) => v.len(),
            Written::Items(v) => v.len(),
            Written::Presence(p) => p.values().len(),
        }
    }

    /// Every field value, by field name (none for a collection's items).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let values: &[(ShortText, Value)] = match self {
            Written::Fields(v) => v,
            Written::Items(_) | Written::Presence(_) => &[],
        };
        values.iter().map(|(f, v)| (f.as_str(), v))
    }

    /// Keeps the field values `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        if let Written::Fields(v) = self {
            v.retain(|(f, v)| keep(f.as_str(), v));
        }
    }

    /// A collection's items, a presence list's members (none for field values).
    pub fn items(&self) -> &[Value] {
        match self {
            Written::Items(v) => v,
            Written::Presence(p) => p.values(),
            Written::Fields(_) => &[],
        }
    }

    /// A collection's items, to change (what was written before, under another config,
    /// goes).
    pub fn items_mut(&mut self) -> &mut Vec<Value> {
        if !matches!(self, Written::Items(_)) {
            *self = Written::Items(Vec::new());
        }
        match self {
            Written::Items(v) => v,
            _ => unreachable!("just made items"),
        }
    }

    /// A presence list's members, to change (what was written before, under another
    /// config, goes).
    pub fn members_mut(&mut self) -> &mut crate::presence::Members {
        if !matches!(self, Written::Presence(_)) {
            *self = Written::Presence(Box::default());
        }
        match self {
            Written::Presence(p) => p,
            _ => unreachable!("just made a presence list"),
        }
    }
}

/// Names a unit of state: a connection (by cid) or a model without a cid (by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitKey {
    Connection(Box<str>),
    Shared(Box<str>),
}

/// A unit of state, as loaded from a shared store.
#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    Connection(Connection),
    Shared(Written),
}

/// A unit taken out of the store by expiry or the size bound.
#[derive(Debug, Clone, PartialEq)]
pub enum Dropped {
    Connection { cid: Box<str>, conn: Connection },
    Model { rid: Box<str>, written: Written },
}

/// Where per-connection state lives. Every method that takes `now` touches the unit it
/// reaches: it becomes the most recently used.
pub trait Store: Send {
    fn connection(&self, cid: &str) -> Option<&Connection>;
    /// Changes a connection's record, created (unconfirmed, no token) when missing.
    fn update_connection<R>(
        &mut self,
        cid: &str,
        now: Tick,
        change: impl FnOnce(&mut Connection) -> R,
    ) -> R;
    /// Touches a connection's record if there is one; says whether there was.
    fn touch_connection(&mut self, cid: &str, now: Tick) -> bool;
    /// Touches and changes a connection's record if there is one (never creates one).
    fn update_existing<R>(
        &mut self,
        cid: &str,
        now: Tick,
        change: impl FnOnce(&mut Connection) -> R,
    ) -> Option<R>;
    fn remove_connection(&mut self, cid: &str) -> Option<Connection>;

    /// The written values of a model without a cid.
    fn shared(&self, rid: &str) -> Option<&Written>;
    /// Touches a model without a cid if it is stored; says whether it was.
    fn touch_shared(&mut self, rid: &str, now: Tick) -> bool;
    /// Changes a model without a cid, created when missing and removed when left empty.
    fn update_shared<R>(
        &mut self,
        rid: &str,
        now: Tick,
        change: impl FnOnce(&mut Written) -> R,
    ) -> R;

    /// Entries counted against `state.max_entries` (see [`Connection::entries`]; a model
    /// without a cid counts one).
    fn entries(&self) -> usize;
    /// Bytes counted against `state.max_bytes` (see [`Connection::bytes`]; a model
    /// without a cid counts [`UNIT_OVERHEAD`] and [`Written::bytes`]).
    fn bytes(&self) -> usize;
    /// When the least recently touched unit was touched.
    fn oldest(&self) -> Option<Tick>;
    /// Takes out the least recently touched unit.
    fn pop_oldest(&mut self) -> Option<Dropped>;

    /// After a (re)connect to NATS token events may have been missed: every record
    /// becomes unconfirmed, so the next request's token fills it in again.
    fn unconfirm_all(&mut self);
    /// Visits every connection (for a reload to re-check what it holds).
    fn for_each_connection(&mut self, visit: impl FnMut(&str, &mut Connection));
    /// Keeps the models without a cid that `keep` says yes to (reload).
    fn retain_shared(&mut self, keep: impl FnMut(&str, &mut Written) -> bool);
    /// Visits every model without a cid, to read it.
    fn for_each_shared(&self, visit: impl FnMut(&str, &Written));
}
