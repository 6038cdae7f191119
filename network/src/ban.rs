//! The ban policy: a member whose score falls to the threshold is disconnected and refused
//! (inbound and outbound) for a while: `initial`, doubling with each further ban of the same
//! peer, up to `max`. A peer that stays clean for four times `max` starts over from `initial`.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
use tokio::time::Instant;

pub(crate) struct Bans {
    threshold: f64,
    initial: Duration,
    max: Duration,
    /// Per peer: bans so far and when the last one ends.
    history: HashMap<PeerId, (u32, Instant)>,
}

impl Bans {
    pub(crate) fn new(threshold: f64, initial: Duration, max: Duration) -> Bans {
        Bans {
            threshold,
            initial,
            max,
            history: HashMap::new(),
        }
    }

    /// Whether a score is low enough for a ban.
    pub(crate) fn crossed(&self, score: f64) -> bool {
        score <= self.threshold
    }

    /// Records a ban starting `now`; returns when it ends.
    pub(crate) fn ban(&mut self, peer: PeerId, now: Instant) -> Instant {
        let forgive = self.max.saturating_mul(4);
        self.history
            .retain(|_, (_, until)| now.saturating_duration_since(*until) < forgive);
        let strikes = self.history.get(&peer).map_or(0, |(n, _)| *n);
        let length = self
            .initial
            .saturating_mul(1u32 << strikes.min(16))
            .min(self.max);
        let until = now + length;
        self.history
            .insert(peer, (strikes.saturating_add(1), until));
        until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_double_up_to_the_cap_and_are_forgiven_after_a_clean_while() {
        let mut bans = Bans::new(-100.0, Duration::from_secs(30), Duration::from_secs(100));
        let p = PeerId::random();
        let t0 = Instant::now();
        assert!(bans.crossed(-100.0) && !bans.crossed(-99.0));
        assert_eq!(bans.ban(p, t0) - t0, Duration::from_secs(30));
        assert_eq!(bans.ban(p, t0) - t0, Duration::from_secs(60));
        assert_eq!(bans.ban(p, t0) - t0, Duration::from_secs(100));
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(bans.ban(p, later) - later, Duration::from_secs(30));
    }
}
