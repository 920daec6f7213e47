//! What the ownership protocol keeps in the bucket, as JSON: each instance's heartbeat
//! (`node.<id>`) and each partition's lease (`lease.<p>`).

use serde::{Deserialize, Serialize};

use super::Instance;

/// The version of the ownership protocol: instances that speak another one never own
/// partitions together. 3: connections are placed by 32-bit FNV-1a of their cid (as
/// nats-server's `{{partition}}` mapping), no longer by the 64-bit stable hash.
pub const PROTOCOL: u32 = 3;

/// An instance's heartbeat: a counter that changes with every beat, and the settings
/// that every owner of the bucket's partitions must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub beat: u64,
    pub proto: u32,
    pub partitions: u32,
    pub lease_ms: u64,
    /// The content hash of the instance's config (resources may differ for a while
    /// during a rolling change; this tells which).
    pub config: String,
    /// Whether it has received messages long enough to take partitions over (its
    /// window reaches back far enough for a cut).
    #[serde(default = "yes")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}

impl NodeInfo {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A heartbeat; one that cannot be read (an older version's plain counter) is an
    /// instance of protocol 0 with no settings, never a peer.
    pub fn decode(bytes: &[u8]) -> NodeInfo {
        serde_json::from_slice(bytes).unwrap_or(NodeInfo {
            beat: 0,
            proto: 0,
            partitions: 0,
            lease_ms: 0,
            config: String::new(),
            ready: false,
        })
    }
}

/// A partition's lease: who holds it (none: released), and, right after a handover,
/// who held it before and which requests that owner applied recently (so the new
/// owner applies each request exactly once).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub owner: Option<Instance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Instance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<u64>,
    /// How long before this write the previous owner stopped applying the partition's
    /// messages (milliseconds on its clock): the new owner needs its window to reach
    /// back that far. In a renewal: how long the owner has been suspended (its
    /// deadline passed, or its connection dropped), for an instance that takes the
    /// partition over.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stopped_ms: u64,
    /// Every request received more than this long before the write was handled by the
    /// previous owner (it took the partition over, and counts what was in flight then
    /// as handled); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handled_ms: u64,
    /// The owner that wrote it (handing over, or renewing) may have missed messages
    /// received more than this long before the write, and applied later ones (its NATS
    /// connection dropped): no later owner applies any of them, token events included;
    /// 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LeaseValue {
    /// Held by `owner`, nothing handed over.
    pub fn held(owner: &Instance) -> LeaseValue {
        LeaseValue {
            owner: Some(owner.clone()),
            ..LeaseValue::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A lease; one that cannot be read (an older version's plain owner name) is held
    /// by that name, with nothing handed over.
    pub fn decode(bytes: &[u8]) -> LeaseValue {
        serde_json::from_slice(bytes).unwrap_or_else(|_| LeaseValue {
            owner: Some(String::from_utf8_lossy(bytes).into()),
            ..LeaseValue::default()
        })
    }

    /// Whether the lease was handed over (or released) rather than just held.
    pub fn handed_over(&self) -> bool {
        self.from.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_and_heartbeats_round_trip() {
        let v = LeaseValue {
            owner: Some("b".into()),
            from: Some("a".into()),
            applied: vec![1, 2],
            stopped_ms: 12,
            handled_ms: 3000,
            missed_ms: 2000,
        };
        assert_eq!(LeaseValue::decode(&v.encode()), v);
        let held = LeaseValue::held(&"a".into());
        assert_eq!(held.encode(), br#"{"owner":"a"}"#);
        assert!(!held.handed_over());
        assert_eq!(
            LeaseValue::decode(b"old-instance").owner.as_deref(),
            Some("old-instance")
        );
        let n = NodeInfo {
            beat: 3,
            proto: PROTOCOL,
            partitions: 64,
            lease_ms: 5000,
            config: "abc".into(),
            ready: true,
        };
        assert_eq!(NodeInfo::decode(&n.encode()), n);
        assert_eq!(NodeInfo::decode(b"17").proto, 0);
    }
}
