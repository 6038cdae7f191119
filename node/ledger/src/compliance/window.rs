//! Rolling windows kept in state: fixed-size time buckets in a queue with running totals, so
//! adding a transfer and reading a window's total cost O(1) amortised (each bucket is pushed
//! once and dropped once), whatever the history.

use crate::primitives::TimestampMs;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The shape of a window: `buckets` buckets of `bucket_ms` each. A transfer made in bucket `b`
/// counts while the current bucket is before `b + buckets`: the window is the current bucket
/// and the `buckets - 1` before it.
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
            if front.index + span.buckets > current {
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
    fn a_transfer_counts_until_its_bucket_leaves_the_window() {
        let mut w = Window::default();
        let t0 = 10 * DAY.bucket_ms + 30 * 60_000; // 10:30 on some day
        w.add(DAY, t0, 100);
        w.add(DAY, t0 + 5 * DAY.bucket_ms, 50);
        // Just before the start of the 24th hour after 10:00: both count.
        w.advance(DAY, 10 * DAY.bucket_ms + 24 * DAY.bucket_ms - 1);
        assert_eq!((w.amount(), w.count()), (150, 2));
        // At 10:00 the next day the 10:30 transfer leaves the window.
        w.advance(DAY, 10 * DAY.bucket_ms + 24 * DAY.bucket_ms);
        assert_eq!((w.amount(), w.count()), (50, 1));
        w.advance(DAY, u64::MAX);
        assert_eq!((w.amount(), w.count()), (0, 0));
    }

    #[test]
    fn totals_saturate_instead_of_wrapping() {
        let mut w = Window::default();
        w.add(HOUR, 0, u64::MAX);
        w.add(HOUR, 1, 5);
        assert_eq!(w.amount(), u64::MAX);
        w.advance(HOUR, HOUR.bucket_ms * HOUR.buckets);
        assert_eq!((w.amount(), w.count()), (0, 0));
    }
}
