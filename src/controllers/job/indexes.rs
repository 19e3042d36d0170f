//! Completion indexes of Indexed Jobs: the `batch.kubernetes.io/job-completion-index`
//! annotation of a pod, and `status.completedIndexes`, a sorted list of ranges such as
//! `0-2,5` (upstream's format).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// With backoffLimitPerIndex: how many pods of the pod's index failed before it.
pub const FAILURE_COUNT_KEY: &str = "batch.kubernetes.io/job-index-failure-count";

/// The failures of the pod's index before it (its annotation; 0 without one).
pub fn failures_before(pod: &Pod) -> i32 {
    let annotations = pod.metadata.annotations.as_ref();
    annotations.and_then(|a| a.get(FAILURE_COUNT_KEY)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The pod's completion index, if it carries a valid one.
pub fn of(pod: &Pod) -> Option<i32> {
    let annotations = pod.metadata.annotations.as_ref()?;
    annotations.get(INDEX_KEY)?.parse().ok().filter(|i| *i >= 0)
}

/// `0-2,5` → {0, 1, 2, 5}; malformed parts are skipped.
pub fn parse(text: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.parse::<i32>(), hi.parse::<i32>()) {
            out.extend(lo..=hi);
        }
    }
    out
}

/// {0, 1, 2, 5} → `0-2,5`.
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut ranges: Vec<(i32, i32)> = Vec::new();
    for &i in set {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == i => *hi = i,
            _ => ranges.push((i, i)),
        }
    }
    let parts: Vec<String> =
        ranges.into_iter().map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }).collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        let set = parse("0-2,5,7-8");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 7, 8]);
        assert_eq!(format(&set), "0-2,5,7-8");
        assert_eq!(format(&BTreeSet::new()), "");
    }
}
