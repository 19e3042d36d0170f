//! The scheduler's Prometheus metrics, rendered by hand in the text exposition format:
//! attempts by result, the duration of each attempt (from leaving the queue to the end
//! of binding) as a histogram with upstream's buckets, and pending pods by queue.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Scheduled,
    Unschedulable,
    Error,
}

const OUTCOMES: [&str; 3] = ["scheduled", "unschedulable", "error"];

/// Upstream's buckets: 1 ms doubling fifteen times.
fn bucket_bounds() -> impl Iterator<Item = f64> {
    (0..15).map(|i| 0.001 * f64::from(1u32 << i))
}

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; 15],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// Per profile (scheduler name).
    by_outcome: Mutex<BTreeMap<String, [Histogram; 3]>>,
    /// Runs of the PostFilter (upstream's preemption_attempts_total).
    preemption_attempts: AtomicU64,
}

impl Metrics {
    /// Metrics with every profile present from the start (at zero).
    pub fn new(profiles: &[String]) -> Metrics {
        let by_outcome = profiles.iter().map(|p| (p.clone(), Default::default())).collect();
        Metrics { by_outcome: Mutex::new(by_outcome), ..Default::default() }
    }

    pub fn preemption_attempt(&self) {
        self.preemption_attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe(&self, profile: &str, outcome: Outcome, took: Duration) {
        let secs = took.as_secs_f64();
        let mut all = self.by_outcome.lock().unwrap_or_else(|e| e.into_inner());
        let h = &mut all.entry(profile.to_string()).or_default()[outcome as usize];
        h.count += 1;
        h.sum += secs;
        for (i, bound) in bucket_bounds().enumerate() {
            if secs <= bound {
                h.counts[i] += 1;
            }
        }
    }

    /// The exposition text; `pending` is (active, backoff, unschedulable).
    pub fn render(&self, pending: (usize, usize, usize)) -> String {
        let all = self.by_outcome.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = String::new();
        out.push_str("# HELP scheduler_schedule_attempts_total Number of attempts to schedule pods, by the result.\n");
        out.push_str("# TYPE scheduler_schedule_attempts_total counter\n");
        for (profile, histograms) in &all {
            for (name, h) in OUTCOMES.iter().zip(histograms) {
                let _ = writeln!(
                    out,
                    "scheduler_schedule_attempts_total{{profile=\"{profile}\",result=\"{name}\"}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP scheduler_pending_pods Number of pending pods, by the queue type.\n");
        out.push_str("# TYPE scheduler_pending_pods gauge\n");
        for (queue, n) in [("active", pending.0), ("backoff", pending.1), ("unschedulable", pending.2)] {
            let _ = writeln!(out, "scheduler_pending_pods{{queue=\"{queue}\"}} {n}");
        }
        out.push_str("# HELP scheduler_scheduling_attempt_duration_seconds Scheduling attempt latency in seconds (scheduling algorithm + binding).\n");
        out.push_str("# TYPE scheduler_scheduling_attempt_duration_seconds histogram\n");
        for (profile, name, h) in all.iter().flat_map(|(p, hs)| OUTCOMES.iter().zip(hs).map(move |(n, h)| (p, n, h))) {
            let labels = format!("profile=\"{profile}\",result=\"{name}\"");
            for (bound, n) in bucket_bounds().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "scheduler_scheduling_attempt_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "scheduler_scheduling_attempt_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "scheduler_scheduling_attempt_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "scheduler_scheduling_attempt_duration_seconds_count{{{labels}}} {}", h.count);
        }
        out.push_str("# HELP scheduler_preemption_attempts_total Total preemption attempts in the cluster till now\n");
        out.push_str("# TYPE scheduler_preemption_attempts_total counter\n");
        let attempts = self.preemption_attempts.load(Ordering::Relaxed);
        let _ = writeln!(out, "scheduler_preemption_attempts_total {attempts}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let m = Metrics::new(&["default-scheduler".to_string()]);
        m.observe("default-scheduler", Outcome::Scheduled, Duration::from_millis(3));
        m.observe("default-scheduler", Outcome::Scheduled, Duration::from_secs(100));
        m.observe("default-scheduler", Outcome::Unschedulable, Duration::from_millis(1));
        let text = m.render((1, 2, 3));
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        has("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 2");
        has("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"error\"} 0");
        has("scheduler_pending_pods{queue=\"unschedulable\"} 3");
        has(
            "scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"0.002\"} 0",
        );
        has(
            "scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"0.004\"} 1",
        );
        has(
            "scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"+Inf\"} 2",
        );
        has(
            "scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"unschedulable\",le=\"0.001\"} 1",
        );
    }
}
