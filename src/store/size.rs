//! What state holds in memory, as `state.max_bytes` counts it. A parsed JSON value (a
//! written value, an item; a token is text, [`super::Token::bytes`]) counts its compact JSON text and what its parsed
//! form takes beyond the text: a slot per element, an allocation per string or key
//! (whole pages for one of 128 KiB or more), a vector of at least four slots per array,
//! a B-tree node per object (and per six entries past eleven). Each unit adds [`UNIT_OVERHEAD`]. The constants are measured
//! (`tests/unit_memory.rs`, docs/performance.md): JSON text alone would count a value
//! of many small objects at a fraction of what it takes.

use serde_json::Value;

use crate::protocol::json_len;

/// What a unit costs in memory beside the bytes of its values, counted against
/// `state.max_bytes` for every connection and every model without a cid: the records,
/// the maps' slots and the models' names. Measured: RSS growth per unit at 100,000
/// units of the seed's shape (a logged-in connection with its user model fetched and
/// a preference written), less what its values are counted, rounded up.
pub const UNIT_OVERHEAD: usize = 400;

/// A `Value` where a vector or a record holds it (`size_of::<Value>()`).
pub const SLOT: usize = 32;
/// A block of its own (a string's text, a key, a name): the allocator's header and
/// rounding, at least.
pub const ALLOCATION: usize = 32;
/// From this size on a block has pages of its own (`connres serve` sets glibc's
/// threshold there), so it takes whole pages.
const LARGE_BLOCK: usize = 128 * 1024;
/// A page.
const PAGE: usize = 4096;
/// A node of the B-tree a JSON object is kept in (eleven keys and values).
const MAP_NODE: usize = 640;
/// Entries per node in a map of more than eleven, built from JSON (nodes split in two
/// as they fill).
const MAP_NODE_ENTRIES: usize = 6;

/// What a parsed JSON value holds: its compact JSON and its structure beyond it (not
/// counting the slot it sits in).
pub fn value_bytes(value: &Value) -> usize {
    json_len(value) + structure(value)
}

/// What a block of `len` bytes takes beyond them.
pub(super) fn block(len: usize) -> usize {
    match len {
        0 => 0,
        n if n >= LARGE_BLOCK => (n + 16).next_multiple_of(PAGE) - n,
        _ => ALLOCATION,
    }
}

/// What a parsed value takes beyond its JSON text.
fn structure(value: &Value) -> usize {
    match value {
        Value::String(s) => block(s.len()),
        Value::Array(a) if !a.is_empty() => {
            SLOT * a.len().max(4) + a.iter().map(structure).sum::<usize>()
        }
        Value::Object(m) if !m.is_empty() => {
            let nodes = match m.len() {
                n if n <= 11 => 1,
                n => n.div_ceil(MAP_NODE_ENTRIES),
            };
            let entries: usize = m
                .iter()
                .map(|(k, v)| usize::from(!k.is_empty()) * ALLOCATION + structure(v))
                .sum();
            MAP_NODE * nodes + entries
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_and_strings_count_their_json_and_strings_their_allocation() {
        assert_eq!(value_bytes(&json!(null)), 4);
        assert_eq!(value_bytes(&json!(12345)), 5);
        assert_eq!(value_bytes(&json!("")), 2);
        assert_eq!(value_bytes(&json!("abc")), 5 + ALLOCATION);
        // A megabyte of text takes whole pages: 245 of them.
        let big = json!("x".repeat(1_000_000));
        assert_eq!(value_bytes(&big), 2 + 245 * PAGE);
    }

    #[test]
    fn containers_count_their_slots_nodes_and_keys() {
        assert_eq!(value_bytes(&json!([])), 2);
        assert_eq!(value_bytes(&json!({})), 2);
        // A vector of at least four slots.
        assert_eq!(value_bytes(&json!([1])), 3 + 4 * SLOT);
        assert_eq!(value_bytes(&json!([1, 2, 3, 4, 5])), 11 + 5 * SLOT);
        // A node and the key's allocation: what one `{"a":1}` of a list costs.
        assert_eq!(value_bytes(&json!({"a": 1})), 7 + MAP_NODE + ALLOCATION);
        let eleven: serde_json::Map<String, Value> =
            (0..11).map(|i| (format!("k{i:02}"), json!(i))).collect();
        let twelve: serde_json::Map<String, Value> =
            (0..12).map(|i| (format!("k{i:02}"), json!(i))).collect();
        let keys = |n: usize| n * ALLOCATION;
        assert_eq!(
            value_bytes(&Value::Object(eleven.clone())) - json_len(&Value::Object(eleven)),
            MAP_NODE + keys(11)
        );
        assert_eq!(
            value_bytes(&Value::Object(twelve.clone())) - json_len(&Value::Object(twelve)),
            2 * MAP_NODE + keys(12)
        );
        // Nested: every level counts.
        let nested = json!({"list": [{"a": "x"}]});
        assert_eq!(
            value_bytes(&nested),
            json_len(&nested) + MAP_NODE + ALLOCATION + 4 * SLOT + MAP_NODE + 2 * ALLOCATION
        );
    }
}
