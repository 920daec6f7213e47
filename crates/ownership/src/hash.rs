//! What every instance and every version must compute alike: the hash that decides a
//! unit's partition, and the digest of a token event that the token log keeps.

/// The most token events a connection's token log remembers.
pub const TOKEN_LOG: usize = 16;

/// The partition of a connection (its token record and every model whose name carries
/// its cid): 32-bit FNV-1a of the cid modulo the partition count, which is what
/// nats-server's subject mapping `{{partition(n, i)}}` computes for the token holding
/// the cid, so the server can route each partition's reads to its owner. The same on
/// every instance and every version: it decides where data lives.
pub fn partition_of_cid(cid: &str, partitions: u32) -> u32 {
    fnv1a32(cid.as_bytes()) % partitions.max(1)
}

/// The partition of a model whose name has no cid: [`stable_hash`] of the whole name
/// modulo the partition count (nats-server cannot compute it for a pattern with
/// captures; connres computes it for a fixed name).
pub fn partition_of_name(name: &str, partitions: u32) -> u32 {
    (stable_hash(name) % u64::from(partitions.max(1))) as u32
}

/// 32-bit FNV-1a, as Go's `hash/fnv` (`New32a`) computes it.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// FNV-1a, then MurmurHash3's finalizer so that every input bit moves every output bit
/// (FNV alone leaves names that differ in one character close together). Defined
/// here, not taken from a crate, because it must never change.
pub fn stable_hash(text: &str) -> u64 {
    stable_hash_of(&[text.as_bytes()])
}

/// [`stable_hash`] of the parts written one after the other, without joining them.
pub fn stable_hash_of(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The digest of a token event's payload, as the token log and the window keep it
/// (31 bits: the top bit marks a superseded event in the log).
pub fn token_digest(payload: &[u8]) -> u32 {
    fnv1a32(payload) & !SUPERSEDED
}

/// The mark of a token event a cut recorded in the log without applying it (it could
/// not tell whether the previous owner had): the event counts as seen, but the token
/// record does not necessarily reflect it.
const SUPERSEDED: u32 = 1 << 31;

/// A digest as the log records a superseded event.
pub fn superseded(digest: u32) -> u32 {
    digest | SUPERSEDED
}

/// Whether a logged digest is of a superseded event.
pub fn is_superseded(logged: u32) -> bool {
    logged & SUPERSEDED != 0
}

/// The event's digest, whether it was applied or superseded.
pub fn event_of(logged: u32) -> u32 {
    logged & !SUPERSEDED
}

/// Adds a digest to a token log (oldest first, at most [`TOKEN_LOG`], a repeat of the
/// last one not added again); the new log, if it changed.
pub fn logged(log: &[u32], digest: u32) -> Option<Vec<u32>> {
    if log.last() == Some(&digest) {
        return None;
    }
    let skip = (log.len() + 1).saturating_sub(TOKEN_LOG);
    Some(log[skip..].iter().copied().chain([digest]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Where data lives must not change between versions. The cid partitions are
        // those nats-server 2.15's `{{partition(64,1)}}` gave for these tokens.
        assert_eq!(partition_of_cid("c1", 64), 25);
        assert_eq!(partition_of_cid("cid17", 64), 39);
        assert_eq!(partition_of_cid("bm4n3k8q2s9x", 64), 5);
        assert_eq!(partition_of_cid("", 1), 0);
        assert_eq!(partition_of_name("c1", 64), 3);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_of_cid(&format!("cid{i}"), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_token_log_keeps_the_last_distinct_digests() {
        let mut log = Vec::new();
        for d in [1, 1, 2, 1] {
            if let Some(next) = logged(&log, d) {
                log = next;
            }
        }
        assert_eq!(log, vec![1, 2, 1]);
        for d in 10..40 {
            log = logged(&log, d).unwrap();
        }
        assert_eq!(log.len(), TOKEN_LOG);
        assert_eq!(*log.last().unwrap(), 39);
        assert_eq!(token_digest(b"{\"token\":null}"), 2_009_431_883);
    }
}
