//! The shared store's partition leases as the bucket holds them, for tests that need
//! to know which instance serves which partition.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use serde_json::Value;

use super::{NatsServer, PARTITIONS, WAIT};

/// The key-value bucket `name` on `server`.
pub async fn bucket(server: &NatsServer, name: &str) -> kv::Store {
    let client = async_nats::connect(&server.url).await.unwrap();
    async_nats::jetstream::new(client)
        .get_key_value(name)
        .await
        .unwrap()
}

/// Each partition's lease owner (of [`PARTITIONS`]), as the bucket holds it.
pub async fn owners(kv: &kv::Store) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let lease = kv.get(format!("lease.{p}")).await.unwrap();
        // `{"owner": "<instance>", ...}`; a released lease names no owner.
        let owner = lease.and_then(|v| {
            serde_json::from_slice::<Value>(&v).ok()?["owner"]
                .as_str()
                .map(str::to_string)
        });
        out.push(owner);
    }
    out
}

/// Waits until every partition is held, every instance in `ids` holds some, and no
/// partition has moved for a second (handovers come one after another, within
/// milliseconds). Nothing announces that, so it reads the leases every 100 ms, for up
/// to twice [`WAIT`]; returns each partition's owner.
pub async fn settled(kv: &kv::Store, ids: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + WAIT * 2;
    let mut last = Vec::new();
    let mut same = 0;
    loop {
        let owners = owners(kv).await;
        let all_held = owners.iter().all(Option::is_some);
        let spread = ids
            .iter()
            .all(|id| owners.iter().any(|o| o.as_deref() == Some(*id)));
        same = if owners == last { same + 1 } else { 0 };
        if all_held && spread && same >= 10 {
            return owners.into_iter().map(Option::unwrap).collect();
        }
        last = owners;
        assert!(Instant::now() < deadline, "never settled: {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
