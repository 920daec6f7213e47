//! Per-connection state behind the [`Store`] trait: each connection's token record and
//! the models the engine knows for it, and each model's written field values.
//!
//! The engine applies every change to one connection in order and needs to read its own
//! writes at once, so the trait is synchronous and hands out references. A shared backend
//! (NATS JetStream key-value, a later step) fits as a local replica kept current by a KV
//! watch, with writes published through the bucket; the engine code stays the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

/// What the engine knows of one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connection {
    /// The connection's token; `None` when logged out or unknown.
    pub token: Option<Arc<Value>>,
    /// True once the token came from a token event or filled in from a request. A
    /// confirmed record changes only by token events.
    pub confirmed: bool,
    /// Resource IDs the gateway may cache for this connection: models of its own that
    /// were read or written, and resources it asked access for.
    pub rids: BTreeSet<String>,
}

/// The written values of one model; a field that is absent follows its default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelState {
    pub written: BTreeMap<String, Value>,
}

/// Where per-connection state lives.
pub trait Store: Send {
    fn connection(&self, cid: &str) -> Option<&Connection>;
    /// The connection's record, created (unconfirmed, no token) when missing.
    fn connection_mut(&mut self, cid: &str) -> &mut Connection;
    fn model(&self, rid: &str) -> Option<&ModelState>;
    /// The model's state, created (nothing written) when missing.
    fn model_mut(&mut self, rid: &str) -> &mut ModelState;
    /// After a (re)connect to NATS token events may have been missed: every record
    /// becomes unconfirmed, so the next request's token fills it in again.
    fn unconfirm_all(&mut self);
    /// Every model with state, for a reload to re-check it.
    fn models_mut(&mut self) -> Box<dyn Iterator<Item = (&String, &mut ModelState)> + '_>;
    /// Every connection record, for a reload to forget resources no longer declared.
    fn connections_mut(&mut self) -> Box<dyn Iterator<Item = (&String, &mut Connection)> + '_>;
    /// Drops a model's state (its resource is no longer declared).
    fn remove_model(&mut self, rid: &str);
}

/// The embedded in-memory store: one engine instance per NATS cluster.
#[derive(Debug, Default)]
pub struct MemoryStore {
    connections: HashMap<String, Connection>,
    models: HashMap<String, ModelState>,
}

impl Store for MemoryStore {
    fn connection(&self, cid: &str) -> Option<&Connection> {
        self.connections.get(cid)
    }

    fn connection_mut(&mut self, cid: &str) -> &mut Connection {
        if !self.connections.contains_key(cid) {
            self.connections
                .insert(cid.to_string(), Connection::default());
        }
        self.connections.get_mut(cid).expect("inserted above")
    }

    fn model(&self, rid: &str) -> Option<&ModelState> {
        self.models.get(rid)
    }

    fn model_mut(&mut self, rid: &str) -> &mut ModelState {
        if !self.models.contains_key(rid) {
            self.models.insert(rid.to_string(), ModelState::default());
        }
        self.models.get_mut(rid).expect("inserted above")
    }

    fn unconfirm_all(&mut self) {
        for c in self.connections.values_mut() {
            c.confirmed = false;
        }
    }

    fn models_mut(&mut self) -> Box<dyn Iterator<Item = (&String, &mut ModelState)> + '_> {
        Box::new(self.models.iter_mut())
    }

    fn connections_mut(&mut self) -> Box<dyn Iterator<Item = (&String, &mut Connection)> + '_> {
        Box::new(self.connections.iter_mut())
    }

    fn remove_model(&mut self, rid: &str) {
        self.models.remove(rid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_created_unconfirmed_and_unconfirmed_after_reconnect() {
        let mut s = MemoryStore::default();
        assert!(s.connection("c1").is_none());
        let c = s.connection_mut("c1");
        assert!(!c.confirmed && c.token.is_none());
        c.confirmed = true;
        s.unconfirm_all();
        assert!(!s.connection("c1").unwrap().confirmed);
        s.model_mut("a.b")
            .written
            .insert("x".into(), Value::Bool(true));
        assert_eq!(s.model("a.b").unwrap().written.len(), 1);
        assert_eq!(s.models_mut().count(), 1);
    }
}
