//! The items that wait behind reads of cold units: a queue per partition, in arrival
//! order, and the units they need, counted (pinned: never evicted while needed).

use std::collections::{HashMap, VecDeque};

use crate::store::UnitKey;

/// Something that waits in its partition's queue, with the units it reads or changes.
#[derive(Debug)]
struct Held<T> {
    item: T,
    needs: Vec<UnitKey>,
}

#[derive(Debug)]
pub(super) struct Queues<T> {
    held: HashMap<u32, VecDeque<Held<T>>>,
    count: usize,
    /// The units held items need, with how many need each.
    pinned: HashMap<UnitKey, u32>,
}

impl<T> Queues<T> {
    pub(super) fn new() -> Queues<T> {
        Queues {
            held: HashMap::new(),
            count: 0,
            pinned: HashMap::new(),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn pinned(&self, key: &UnitKey) -> bool {
        self.pinned.contains_key(key)
    }

    pub(super) fn has(&self, p: u32) -> bool {
        self.held.contains_key(&p)
    }

    pub(super) fn partitions(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.held.keys().copied().collect();
        out.sort_unstable();
        out
    }

    pub(super) fn push(&mut self, p: u32, item: T, needs: Vec<UnitKey>) {
        for k in &needs {
            *self.pinned.entry(k.clone()).or_default() += 1;
        }
        self.held
            .entry(p)
            .or_default()
            .push_back(Held { item, needs });
        self.count += 1;
    }

    fn unpin(&mut self, needs: &[UnitKey]) {
        for k in needs {
            if let Some(n) = self.pinned.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    self.pinned.remove(k);
                }
            }
        }
    }

    pub(super) fn head_needs(&self, p: u32) -> Option<&[UnitKey]> {
        self.held.get(&p)?.front().map(|h| h.needs.as_slice())
    }

    /// Takes the first item of partition `p` (there is one).
    pub(super) fn pop(&mut self, p: u32) -> Option<T> {
        let queue = self.held.get_mut(&p)?;
        let head = queue.pop_front()?;
        if queue.is_empty() {
            self.held.remove(&p);
        }
        self.count -= 1;
        self.unpin(&head.needs);
        Some(head.item)
    }

    /// Takes every item of partition `p`, in order.
    pub(super) fn take(&mut self, p: u32) -> Vec<T> {
        let Some(queue) = self.held.remove(&p) else {
            return Vec::new();
        };
        self.count -= queue.len();
        let mut out = Vec::with_capacity(queue.len());
        for h in queue {
            self.unpin(&h.needs);
            out.push(h.item);
        }
        out
    }
}
