//! Rolling windows kept in state: fixed-size time buckets in a queue with running totals, so
//! adding a transfer and reading a window's total cost O(1) amortised (each bucket is pushed
//! once and dropped once), whatever the history.

use crate::primitives::TimestampMs;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The shape of a window of length `W = buckets × bucket_ms`. A transfer made in bucket `b`
/// counts while the current bucket is at most `b + buckets`: at least `W` after it was made
/// (whatever its place in its bucket) and less than `W` plus one bucket. So a cap checked
/// against the window is never exceeded within any span of length `W`; the price is that a
/// transfer may count up to one bucket longer than `W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Length of one bucket.
    pub bucket_ms: u64,
    /// Number of buckets.
    pub buckets: u64,
}

/// One hour in one-minute buckets.
pub const HOUR: Span = Span {
    bucket_ms: 60_000,
    buckets: 60,
};
/// 24 hours in one-hour buckets.
pub const DAY: Span = Span {
    bucket_ms: 3_600_000,
    buckets: 24,
};
/// 30 days in one-day buckets.
pub const THIRTY_DAYS: Span = Span {
    bucket_ms: 86_400_000,
    buckets: 30,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    index: u64,
    amount: u64,
    count: u32,
}

/// Amount and count of transfers over a rolling window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    buckets: VecDeque<Bucket>,
    amount: u64,
    count: u32,
}

impl Window {
    /// Drops the buckets that fell out of the window at `now`.
    pub fn advance(&mut self, span: Span, now: TimestampMs) {
        let current = now / span.bucket_ms;
        while let Some(front) = self.buckets.front() {
            if front.index.saturating_add(span.buckets) >= current {
                break;
            }
            self.amount = self.amount.saturating_sub(front.amount);
            self.count = self.count.saturating_sub(front.count);
            self.buckets.pop_front();
        }
    }

    /// Total amount in the window (call [`Window::advance`] first).
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Number of transfers in the window (call [`Window::advance`] first).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Records a transfer of `amount` at `now`. Totals saturate: a saturated total only ever
    /// makes a limit check stricter.
    pub fn add(&mut self, span: Span, now: TimestampMs, amount: u64) {
        let current = now / span.bucket_ms;
        match self.buckets.back_mut() {
            Some(last) if last.index >= current => {
                last.amount = last.amount.saturating_add(amount);
                last.count = last.count.saturating_add(1);
            }
            _ => self.buckets.push_back(Bucket {
                index: current,
                amount,
                count: 1,
            }),
        }
        self.amount = self.amount.saturating_add(amount);
        self.count = self.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_counts_for_at_least_the_window_and_less_than_a_bucket_more() {
        let hour = DAY.bucket_ms;
        let mut w = Window::default();
        let t0 = 10 * hour + 59 * 60_000; // 10:59 on some day
        w.add(DAY, t0, 100);
        w.add(DAY, t0 + 5 * hour, 50);
        // 23 h 01 min later (10:00 the next day) it still counts: a second full daily cap
        // there would be two caps within 24 hours.
        w.advance(DAY, 34 * hour);
        assert_eq!((w.amount(), w.count()), (150, 2));
        // 24 hours after it was made, and up to the end of its bucket's hour, it counts.
        w.advance(DAY, t0 + 24 * hour);
        assert_eq!((w.amount(), w.count()), (150, 2));
        w.advance(DAY, 35 * hour - 1);
        assert_eq!((w.amount(), w.count()), (150, 2));
        // At 11:00 the next day (24 h 01 min after it) it leaves the window.
        w.advance(DAY, 35 * hour);
        assert_eq!((w.amount(), w.count()), (50, 1));
        w.advance(DAY, u64::MAX);
        assert_eq!((w.amount(), w.count()), (0, 0));
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the stream of payments and the cap, admitting a payment only when the
        /// window's total plus it stays within the cap never lets more than the cap through
        /// within any span of the window's length.
        #[test]
        fn no_span_of_the_window_length_holds_more_than_the_cap(
            cap in 1u64..10_000,
            stream in proptest::collection::vec((0u64..2 * 3_600_000, 1u64..5_000), 1..200),
            which in 0usize..3,
        ) {
            let span = [HOUR, DAY, THIRTY_DAYS][which];
            let length = span.bucket_ms * span.buckets;
            // Gaps scaled to the window, so streams cross its edges many times.
            let scale = length / (24 * 3_600_000) + 1;
            let mut w = Window::default();
            let mut now = 0u64;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap, amount) in stream {
                now += gap * scale / 8;
                w.advance(span, now);
                if w.amount() + amount <= cap {
                    w.add(span, now, amount);
                    admitted.push((now, amount));
                }
            }
            for (i, (start, _)) in admitted.iter().enumerate() {
                let within: u64 = admitted[i..]
                    .iter()
                    .take_while(|(t, _)| *t < start + length)
                    .map(|(_, a)| a)
                    .sum();
                prop_assert!(within <= cap, "{within} > {cap} within {length} ms from {start}");
            }
        }
    }

    #[test]
    fn totals_saturate_instead_of_wrapping() {
        let mut w = Window::default();
        w.add(HOUR, 0, u64::MAX);
        w.add(HOUR, 1, 5);
        assert_eq!(w.amount(), u64::MAX);
        w.advance(HOUR, HOUR.bucket_ms * (HOUR.buckets + 1));
        assert_eq!((w.amount(), w.count()), (0, 0));
    }
}
