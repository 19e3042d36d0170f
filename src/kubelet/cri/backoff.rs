//! The kubelet's back-off for restarting crashed containers and re-pulling images:
//! 10 s doubling to 5 minutes; a run longer than 10 minutes starts it over.

use std::time::{Duration, Instant};

const INITIAL: Duration = Duration::from_secs(10);
const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long is healthy again: its next crash waits 10 s.
const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Clone)]
pub struct Backoff {
    /// The delay in force; None before the first failure.
    delay: Option<Duration>,
    since: Option<Instant>,
}

impl Backoff {
    /// Still inside the delay that began at the last failure.
    pub fn waiting(&self, now: Instant) -> bool {
        matches!((self.delay, self.since), (Some(d), Some(s)) if now < s + d)
    }

    pub fn delay(&self) -> Duration {
        self.delay.unwrap_or(INITIAL)
    }

    /// A failure at `at` after running for `ran`: the next delay doubles, or starts over.
    pub fn failed(&mut self, at: Instant, ran: Duration) {
        self.delay = match self.delay {
            Some(d) if ran < RESET_AFTER => Some((d * 2).min(MAX)),
            _ => Some(INITIAL),
        };
        self.since = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_five_minutes_and_resets_after_a_long_run() {
        let t = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.waiting(t));
        b.failed(t, Duration::ZERO);
        assert!(b.waiting(t + Duration::from_secs(9)) && !b.waiting(t + Duration::from_secs(10)));
        let delays: Vec<u64> = (0..7)
            .map(|_| {
                b.failed(t, Duration::from_secs(1));
                b.delay().as_secs()
            })
            .collect();
        assert_eq!(delays, [20, 40, 80, 160, 300, 300, 300]);
        b.failed(t, Duration::from_secs(601));
        assert_eq!(b.delay(), INITIAL);
    }
}
