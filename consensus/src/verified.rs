//! Certificates this replica has already checked. One QC arrives many times (in the proposal
//! that extends it, in every timeout that carries it, in sync answers), and checking its
//! signatures each time dominates a replica's work under timeouts. A certificate is remembered
//! by the digest of its whole encoding, signatures included, so only a byte-identical copy is
//! taken unchecked. Bounded; emptied when the validator set changes.

use crate::types::{encode, hash_parts, Digest, QuorumCert, TimeoutCert};
use std::collections::{BTreeSet, VecDeque};

/// How many certificates are remembered (the oldest is forgotten first).
const CAPACITY: usize = 512;

const QC_DOMAIN: &[u8] = b"tally/consensus/verified-qc/v1";
const TC_DOMAIN: &[u8] = b"tally/consensus/verified-tc/v1";

#[derive(Default)]
pub(crate) struct Verified {
    order: VecDeque<Digest>,
    known: BTreeSet<Digest>,
}

impl Verified {
    pub(crate) fn qc_key(qc: &QuorumCert) -> Digest {
        hash_parts(QC_DOMAIN, &encode(qc))
    }

    pub(crate) fn tc_key(tc: &TimeoutCert) -> Digest {
        hash_parts(TC_DOMAIN, &encode(tc))
    }

    pub(crate) fn contains(&self, key: &Digest) -> bool {
        self.known.contains(key)
    }

    pub(crate) fn insert(&mut self, key: Digest) {
        if !self.known.insert(key) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.known.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_byte_identical_certificates_are_remembered_and_the_oldest_go_first() {
        let qc = |round| QuorumCert {
            epoch: 0,
            round,
            height: 1,
            block: Digest([1; 32]),
            signatures: Vec::new(),
        };
        let mut v = Verified::default();
        v.insert(Verified::qc_key(&qc(1)));
        assert!(v.contains(&Verified::qc_key(&qc(1))));
        assert!(!v.contains(&Verified::qc_key(&qc(2))));
        for r in 2..=CAPACITY as u64 + 1 {
            v.insert(Verified::qc_key(&qc(r)));
        }
        assert!(!v.contains(&Verified::qc_key(&qc(1))));
        assert!(v.contains(&Verified::qc_key(&qc(2))));
        assert_eq!(v.known.len(), CAPACITY);
    }
}
