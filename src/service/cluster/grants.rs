//! Access granted here to connections whose records other instances keep: an access or
//! call for a name in a partition served here, from a requester in another partition
//! (a resource without `{cid}`, such as a presence list, or a rule that lets one
//! connection read another's model). The engine notes the grant in the requester's
//! record, which is not this instance's to keep; before it is let go, its grants are
//! kept here, so that the requester's login (its token event, which every instance
//! receives) asks the gateway to check them again (`reaccess`), as the record's owner
//! would. Bounded: past [`MAX_CONNECTIONS`], the connection noted longest ago is
//! forgotten (its next login is not re-asked, as before this existed).

use hashlink::LinkedHashMap;

/// Connections whose grants are kept at most.
pub(super) const MAX_CONNECTIONS: usize = 65_536;

/// Names granted to each connection, oldest noted first.
#[derive(Default)]
pub(super) struct ForeignGrants {
    by_cid: LinkedHashMap<Box<str>, Vec<Box<str>>>,
}

impl ForeignGrants {
    /// Notes names granted to `cid` (a name once).
    pub(super) fn note<'a>(&mut self, cid: &str, rids: impl IntoIterator<Item = &'a str>) {
        if self.by_cid.to_back(cid).is_none() {
            if self.by_cid.len() >= MAX_CONNECTIONS {
                self.by_cid.pop_front();
            }
            self.by_cid.insert(cid.into(), Vec::new());
        }
        let Some(names) = self.by_cid.get_mut(cid) else {
            return;
        };
        for rid in rids {
            if !names.iter().any(|n| &**n == rid) {
                names.push(rid.into());
            }
        }
    }

    /// The names granted to `cid`, kept for its later logins too.
    pub(super) fn of(&self, cid: &str) -> &[Box<str>] {
        self.by_cid.get(cid).map_or(&[], |v| v.as_slice())
    }
}

impl crate::service::Service {
    /// A token event, seen here whoever keeps its connection's record: a login asks the
    /// gateway to check again each access granted here to that connection whose rules
    /// read the token (a logout, or an event that is not a token event, asks nothing).
    pub(in crate::service) async fn reaccess_granted_here(
        &mut self,
        cid: &str,
        payload: &bytes::Bytes,
    ) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let names = cluster.foreign_grants.of(cid);
        if names.is_empty() {
            return;
        }
        let login = serde_json::from_slice::<crate::protocol::TokenEvent>(payload)
            .ok()
            .and_then(|e| e.token)
            .is_some_and(|t| !t.is_null());
        if !login {
            return;
        }
        let events: Vec<_> = names
            .iter()
            .filter(|rid| {
                self.config
                    .resource_of(rid)
                    .is_some_and(|r| r.access_reads_token())
            })
            .map(|rid| crate::protocol::reaccess_event(rid))
            .collect();
        for (subject, payload) in events {
            self.metrics.event(crate::metrics::EventKind::Reaccess);
            if let Err(e) = self.publish(subject, payload).await {
                tracing::warn!(error = %e, "a reaccess after a login was not published");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_kept_per_connection_once_each_and_bounded() {
        let mut g = ForeignGrants::default();
        g.note("c1", ["a.list", "b.list"]);
        g.note("c1", ["a.list"]);
        let names: Vec<&str> = g.of("c1").iter().map(|n| &**n).collect();
        assert_eq!(names, ["a.list", "b.list"]);
        assert!(g.of("c2").is_empty());
        for i in 0..MAX_CONNECTIONS {
            g.note(&format!("x{i}"), ["a.list"]);
        }
        assert_eq!(g.by_cid.len(), MAX_CONNECTIONS);
        assert!(
            g.of("c1").is_empty(),
            "the one noted longest ago went first"
        );
        assert_eq!(g.of(&format!("x{}", MAX_CONNECTIONS - 1)).len(), 1);
    }
}
