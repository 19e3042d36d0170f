//! A rate-limited work queue of object keys, as client-go's workqueue:
//!
//! - a key is queued at most once, however often it is added (dirty set);
//! - a key being processed is handed to no other worker; added meanwhile, it is queued
//!   again when the worker is `done` with it, so one object is never synced twice at once;
//! - `add_after` delays a key (a timer heap, checked by `get`);
//! - `add_rate_limited` retries a failed key after a per-key exponential backoff (5 ms
//!   doubling to 1000 s, upstream's default controller rate limiter), until `forget`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting to be processed (queued, or re-added while processing).
    dirty: HashSet<String>,
    processing: HashSet<String>,
    delayed: BinaryHeap<Reverse<(Instant, String)>>,
    failures: HashMap<String, u32>,
    /// When each queued key was added, for the queue-latency metric.
    added_at: HashMap<String, Instant>,
}

pub struct WorkQueue {
    pub name: &'static str,
    state: Mutex<State>,
    wake: Notify,
    pub adds: AtomicU64,
    pub retries: AtomicU64,
}

/// Exponential per-item backoff: 5 ms · 2^failures, at most 1000 s.
pub fn backoff(failures: u32) -> Duration {
    BASE_DELAY.saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX)).min(MAX_DELAY)
}

impl WorkQueue {
    pub fn new(name: &'static str) -> WorkQueue {
        WorkQueue {
            name,
            state: Mutex::default(),
            wake: Notify::new(),
            adds: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut st = self.state();
        if !st.dirty.insert(key.clone()) {
            return;
        }
        self.adds.fetch_add(1, Ordering::Relaxed);
        st.added_at.insert(key.clone(), Instant::now());
        if !st.processing.contains(&key) {
            st.queue.push_back(key);
            drop(st);
            self.wake.notify_one();
        }
    }

    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        self.state().delayed.push(Reverse((Instant::now() + delay, key.into())));
        // a worker waiting for an earlier deadline than this one needs no wake-up, but one
        // sleeping on an empty queue must learn of the new deadline
        self.wake.notify_one();
    }

    /// Retry `key` after its backoff; each call without a `forget` doubles the backoff.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let delay = {
            let mut st = self.state();
            let n = st.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            backoff(*n - 1)
        };
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.add_after(key, delay);
    }

    /// The key synced successfully: its backoff starts over.
    pub fn forget(&self, key: &str) {
        self.state().failures.remove(key);
    }

    /// Keys waiting (not counting delayed ones), for the depth metric.
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    /// The next key to process, waiting for one; `done` must follow.
    /// Returns the key and how long it waited in the queue.
    pub async fn get(&self) -> (String, Duration) {
        loop {
            let notified = self.wake.notified();
            let next_deadline = {
                let mut st = self.state();
                let now = Instant::now();
                while st.delayed.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                    let Some(Reverse((_, key))) = st.delayed.pop() else { break };
                    if st.dirty.insert(key.clone()) {
                        self.adds.fetch_add(1, Ordering::Relaxed);
                        st.added_at.insert(key.clone(), now);
                        if !st.processing.contains(&key) {
                            st.queue.push_back(key);
                        }
                    }
                }
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let waited = st.added_at.remove(&key).map_or(Duration::ZERO, |t| now.duration_since(t));
                    // more work left: let another worker at it
                    if !st.queue.is_empty() {
                        self.wake.notify_one();
                    }
                    return (key, waited);
                }
                st.delayed.peek().map(|Reverse((at, _))| *at)
            };
            match next_deadline {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), notified).await;
                }
                None => notified.await,
            }
        }
    }

    pub fn done(&self, key: &str) {
        let mut st = self.state();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.to_string());
            drop(st);
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_processed_twice_at_once() {
        let q = WorkQueue::new("test");
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let (a, _) = q.get().await;
        assert_eq!(a, "a");
        q.add("a"); // re-added while processing: waits for done
        let (b, _) = q.get().await;
        assert_eq!(b, "b");
        assert_eq!(q.len(), 0);
        q.done("a");
        assert_eq!(q.get().await.0, "a");
    }

    #[tokio::test]
    async fn delayed_keys_come_due() {
        let q = WorkQueue::new("test");
        q.add_after("late", Duration::from_millis(30));
        q.add("now");
        assert_eq!(q.get().await.0, "now");
        let started = Instant::now();
        assert_eq!(q.get().await.0, "late");
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
    }
}
