//! The scheduling queue, as upstream's: pending pods wait in one of three places.
//!
//! - active: ready to be tried, highest spec.priority first, then the earliest to enter;
//! - backoff: tried and failed, waiting 1 s, 2 s, 4 s … up to 10 s (doubling per attempt);
//! - unschedulable: no node fitted; they stay until the cluster changes (a node added or
//!   updated, a pod removed), then go to backoff (if still within it) or active. After
//!   five minutes they are retried anyway.
//!
//! A pod being tried is "in flight". If the cluster changes while it is, a failure sends
//! it to backoff rather than unschedulable, so the change that might have made room is
//! not missed. Bound: one entry per pending pod of this scheduler.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::framework::pod_key;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod may stay unschedulable before it is retried without any event.
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

/// Ordering of the active queue: priority descending, then arrival.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    neg_priority: i64,
    seq: u64,
    key: String,
}

struct Entry {
    pod: Arc<Pod>,
    place: Place,
    attempts: u32,
    order: Order,
    /// When the last attempt failed (the start of backoff or of unschedulability).
    failed_at: Option<Instant>,
    /// The cluster-event count when the pod was popped.
    popped_at_event: u64,
}

/// What `pop` hands out.
pub struct Popped {
    pub pod: Arc<Pod>,
    pub attempts: u32,
}

#[derive(Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BTreeSet<Order>,
    seq: u64,
    /// Cluster events seen so far.
    events: u64,
}

/// Upstream's backoff: 1 s doubled per further attempt, at most 10 s.
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d > MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

fn priority(pod: &Pod) -> i64 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) as i64
}

/// Whether an update could change where the pod fits (spec or labels), as opposed to a
/// status write such as the scheduler's own condition.
fn relevant_update(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec || old.metadata.labels != new.metadata.labels
}

impl Queue {
    fn activate(&mut self, key: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.entries.get_mut(key) {
            e.order = Order { neg_priority: -priority(&e.pod), seq, key: key.to_string() };
            e.place = Place::Active;
            self.active.insert(e.order.clone());
        }
    }

    /// A pending pod of this scheduler was added or changed.
    pub fn add_or_update(&mut self, pod: Arc<Pod>, now: Instant) {
        let key = pod_key(&pod);
        match self.entries.get_mut(&key) {
            None => {
                let order = Order { neg_priority: 0, seq: 0, key: key.clone() };
                let entry =
                    Entry { pod, place: Place::Active, attempts: 0, order, failed_at: None, popped_at_event: 0 };
                self.entries.insert(key.clone(), entry);
                self.activate(&key);
            }
            Some(e) => {
                let relevant = relevant_update(&e.pod, &pod);
                e.pod = pod;
                if e.place == Place::Active && e.order.neg_priority != -priority(&e.pod) {
                    self.active.remove(&e.order);
                    self.activate(&key);
                } else if e.place == Place::Unschedulable && relevant {
                    self.wake(&key, now);
                }
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key)
            && e.place == Place::Active
        {
            self.active.remove(&e.order);
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The next active pod, now in flight.
    pub fn pop(&mut self) -> Option<Popped> {
        let order = self.active.pop_first()?;
        let e = self.entries.get_mut(&order.key)?;
        e.place = Place::InFlight;
        e.attempts += 1;
        e.popped_at_event = self.events;
        Some(Popped { pod: e.pod.clone(), attempts: e.attempts })
    }

    /// The in-flight pod was placed (or is gone): forget it.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// The in-flight pod fitted nowhere.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let events = self.events;
        if let Some(e) = self.entries.get_mut(key)
            && e.place == Place::InFlight
        {
            e.failed_at = Some(now);
            e.place = if events > e.popped_at_event { Place::Backoff } else { Place::Unschedulable };
        }
    }

    /// The in-flight pod failed for another reason (a binding error): back off. A pod the
    /// queue no longer holds (its entry went when it was assumed) comes back.
    pub fn error(&mut self, pod: Arc<Pod>, attempts: u32, now: Instant) {
        let key = pod_key(&pod);
        let order = Order { neg_priority: -priority(&pod), seq: 0, key: key.clone() };
        let entry = self.entries.entry(key).or_insert(Entry {
            pod,
            place: Place::InFlight,
            attempts,
            order,
            failed_at: None,
            popped_at_event: 0,
        });
        if entry.place == Place::InFlight {
            entry.failed_at = Some(now);
            entry.place = Place::Backoff;
        }
    }

    fn backoff_until(e: &Entry) -> Option<Instant> {
        e.failed_at.map(|t| t + backoff_duration(e.attempts))
    }

    /// An unschedulable pod goes to backoff while that lasts, else to active.
    fn wake(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else { return };
        if Self::backoff_until(e).is_some_and(|t| t > now) {
            e.place = Place::Backoff;
        } else {
            self.activate(key);
        }
    }

    /// Something changed in the cluster that may make unschedulable pods fit.
    pub fn cluster_event(&mut self, now: Instant) {
        self.events += 1;
        let keys: Vec<String> =
            self.entries.iter().filter(|(_, e)| e.place == Place::Unschedulable).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.wake(&key, now);
        }
    }

    /// Move pods whose backoff is over to active, and long-unschedulable ones out;
    /// returns when the next backoff ends.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut ready = Vec::new();
        let mut stale = Vec::new();
        for (key, e) in &self.entries {
            match e.place {
                Place::Backoff => match Self::backoff_until(e) {
                    Some(t) if t > now => next = Some(next.map_or(t, |n| n.min(t))),
                    _ => ready.push(key.clone()),
                },
                Place::Unschedulable if e.failed_at.is_none_or(|t| now.duration_since(t) >= MAX_IN_UNSCHEDULABLE) => {
                    stale.push(key.clone())
                }
                _ => {}
            }
        }
        for key in ready {
            self.activate(&key);
        }
        for key in stale {
            self.wake(&key, now);
        }
        next
    }

    /// (active, backoff, unschedulable) counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in self.entries.values() {
            match e.place {
                Place::Active => c.0 += 1,
                Place::Backoff => c.1 += 1,
                Place::Unschedulable => c.2 += 1,
                Place::InFlight => {}
            }
        }
        c
    }

    #[cfg(test)]
    fn place(&self, key: &str) -> Option<Place> {
        self.entries.get(key).map(|e| e.place)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"containers": [], "priority": priority}}))
            .unwrap(),
        )
    }

    /// A queue whose one pod, d/p, has just been found unschedulable.
    fn one_unschedulable() -> (Queue, Instant) {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        q.pop();
        q.unschedulable("d/p", t0);
        (q, t0)
    }

    fn pop_name(q: &mut Queue) -> Option<String> {
        q.pop().map(|p| p.pod.metadata.name.clone().unwrap())
    }

    #[test]
    fn priority_then_arrival() {
        let mut q = Queue::default();
        let now = Instant::now();
        for (name, prio) in [("low", 0), ("high", 100), ("low2", 0), ("mid", 50)] {
            q.add_or_update(pod(name, prio), now);
        }
        let order: Vec<String> = std::iter::from_fn(|| pop_name(&mut q)).collect();
        assert_eq!(order, ["high", "mid", "low", "low2"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let secs: Vec<u64> = (1..=6).map(|a| backoff_duration(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_cluster_event() {
        let (mut q, t0) = one_unschedulable();
        assert_eq!(q.place("d/p"), Some(Place::Unschedulable));
        assert!(q.flush(t0 + Duration::from_secs(60)).is_none());
        assert!(q.pop().is_none());
        // an event within the backoff: to backoff; after it: active
        q.cluster_event(t0 + Duration::from_millis(500));
        assert_eq!(q.place("d/p"), Some(Place::Backoff));
        assert_eq!(q.flush(t0 + Duration::from_millis(600)), Some(t0 + Duration::from_secs(1)));
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(pop_name(&mut q).as_deref(), Some("p"));
        assert_eq!(q.counts(), (0, 0, 0));
    }

    #[test]
    fn an_event_during_the_attempt_means_backoff_not_unschedulable() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        q.pop();
        q.cluster_event(t0);
        q.unschedulable("d/p", t0);
        assert_eq!(q.place("d/p"), Some(Place::Backoff));
    }

    #[test]
    fn status_updates_do_not_wake_but_spec_updates_do() {
        let (mut q, t0) = one_unschedulable();
        let mut with_status = (*pod("p", 0)).clone();
        with_status.status = Some(Default::default());
        q.add_or_update(Arc::new(with_status), t0 + Duration::from_secs(5));
        assert_eq!(q.place("d/p"), Some(Place::Unschedulable));
        q.add_or_update(pod("p", 7), t0 + Duration::from_secs(5));
        assert_eq!(q.place("d/p"), Some(Place::Active));
    }

    #[test]
    fn unschedulable_pods_are_retried_after_five_minutes() {
        let (mut q, t0) = one_unschedulable();
        q.flush(t0 + MAX_IN_UNSCHEDULABLE);
        assert_eq!(q.place("d/p"), Some(Place::Active));
    }
}
