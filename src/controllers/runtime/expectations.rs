//! Expectations, as client-go's (UID-tracking) ControllerExpectations: after a controller
//! creates or deletes pods it must not act again on the same object until its informer
//! has seen those creations and deletions, or it would create (delete) them twice from a
//! stale cache. A controller records what it expects before it writes, its informer
//! handlers tick the expectations off, and its sync acts only when they are met. An
//! expectation older than five minutes counts as met (a lost watch event must not stall
//! the object forever).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const EXPIRY: Duration = Duration::from_secs(5 * 60);

struct Pending {
    adds: i64,
    /// Keys (`namespace/name`) of the objects whose deletion is awaited.
    deletes: HashSet<String>,
    at: Instant,
}

#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> T) -> T {
        f(&mut self.by_owner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `owner` is about to create `adds` objects and delete those of `deletes`.
    pub fn expect(&self, owner: &str, adds: usize, deletes: impl IntoIterator<Item = String>) {
        let pending = Pending { adds: adds as i64, deletes: deletes.into_iter().collect(), at: Instant::now() };
        self.with(|m| m.insert(owner.to_string(), pending));
    }

    /// One creation was seen (or will never happen: it failed or was skipped).
    pub fn creation_observed(&self, owner: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(owner) {
                p.adds -= 1;
            }
        });
    }

    /// The deletion of `object` was seen (or will never happen).
    pub fn deletion_observed(&self, owner: &str, object: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(owner) {
                p.deletes.remove(object);
            }
        });
    }

    /// Nothing awaited for `owner` (or what is awaited has expired): it may act.
    pub fn satisfied(&self, owner: &str) -> bool {
        self.with(|m| match m.get(owner) {
            None => true,
            Some(p) => (p.adds <= 0 && p.deletes.is_empty()) || p.at.elapsed() > EXPIRY,
        })
    }

    /// The owner is gone.
    pub fn forget(&self, owner: &str) {
        self.with(|m| m.remove(owner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_once_every_creation_and_deletion_is_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a"));
        e.expect("ns/a", 2, ["ns/p1".to_string()]);
        assert!(!e.satisfied("ns/a"));
        e.creation_observed("ns/a");
        e.creation_observed("ns/a");
        assert!(!e.satisfied("ns/a"));
        e.deletion_observed("ns/a", "ns/p1");
        assert!(e.satisfied("ns/a"));
        e.expect("ns/a", 1, []);
        e.forget("ns/a");
        assert!(e.satisfied("ns/a"));
    }
}
