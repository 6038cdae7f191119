//! Binary sha2-256 Merkle trees with domain-separated leaves and inner nodes.
//!
//! Leaves are hashed as `H("tally/merkle/leaf", data)` and inner nodes as
//! `H("tally/merkle/node", left || right)`, so a leaf can never pass for an inner node. A level
//! with an odd number of nodes carries its last node up unchanged (no duplication, so no two
//! different leaf lists share a root). The root of no leaves is `H("tally/merkle/empty", "")`.

use crate::codec::hash_with_domain;
use crate::primitives::Hash;
use serde::{Deserialize, Serialize};

const LEAF: &[u8] = b"tally/merkle/leaf";
const NODE: &[u8] = b"tally/merkle/node";
const EMPTY: &[u8] = b"tally/merkle/empty";

/// Hash of one leaf's data.
pub fn leaf_hash(data: &[u8]) -> Hash {
    hash_with_domain(LEAF, data)
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&left.0);
    buf[32..].copy_from_slice(&right.0);
    hash_with_domain(NODE, &buf)
}

/// Root over leaf hashes, in order.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return hash_with_domain(EMPTY, b"");
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

fn next_level(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node_hash(l, r),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// Which side a sibling sits on (`"left"` or `"right"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The sibling is the left child; the running hash is the right one.
    Left,
    /// The sibling is the right child.
    Right,
}

/// The path from one leaf to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// Position of the leaf.
    pub index: u64,
    /// Number of leaves in the tree.
    pub leaf_count: u64,
    /// Siblings from the leaf level upward; levels where the node was carried up are skipped.
    pub siblings: Vec<(Side, Hash)>,
}

/// The proof for leaf `index`, or `None` if out of range.
pub fn prove(leaves: &[Hash], index: usize) -> Option<MerkleProof> {
    if index >= leaves.len() {
        return None;
    }
    let mut siblings = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = index;
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            let side = if sibling < i { Side::Left } else { Side::Right };
            siblings.push((side, level[sibling]));
        }
        level = next_level(&level);
        i /= 2;
    }
    Some(MerkleProof {
        index: index as u64,
        leaf_count: leaves.len() as u64,
        siblings,
    })
}

impl MerkleProof {
    /// The root this proof leads to from `leaf`.
    pub fn root_from(&self, leaf: Hash) -> Hash {
        self.siblings
            .iter()
            .fold(leaf, |acc, (side, sib)| match side {
                Side::Left => node_hash(sib, &acc),
                Side::Right => node_hash(&acc, sib),
            })
    }

    /// True if `leaf` is at this proof's position under `root`.
    pub fn verify(&self, leaf: Hash, root: &Hash) -> bool {
        self.index < self.leaf_count && self.expected_sides() && self.root_from(leaf) == *root
    }

    /// The sides must be the ones the index and leaf count imply; otherwise a proof could claim
    /// a different position than the one it proves.
    fn expected_sides(&self) -> bool {
        let (mut i, mut n) = (self.index, self.leaf_count);
        let mut sides = Vec::new();
        while n > 1 {
            let sibling = i ^ 1;
            if sibling < n {
                sides.push(if sibling < i { Side::Left } else { Side::Right });
            }
            i /= 2;
            n = n.div_ceil(2);
        }
        sides.len() == self.siblings.len()
            && sides.iter().zip(&self.siblings).all(|(a, (b, _))| a == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
            .collect()
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_tampering_fails(n in 1usize..70, pick in 0usize..70) {
            let l = leaves(n);
            let r = root(&l);
            let i = pick % n;
            let p = prove(&l, i).unwrap();
            prop_assert!(p.verify(l[i], &r));
            prop_assert!(!p.verify(leaf_hash(b"other"), &r));
            if n > 1 {
                let mut wrong = p.clone();
                wrong.index = ((i + 1) % n) as u64;
                prop_assert!(!wrong.verify(l[i], &r));
            }
        }
    }

    #[test]
    fn roots_differ_with_content_and_order() {
        assert_ne!(root(&leaves(3)), root(&leaves(4)));
        let mut swapped = leaves(4);
        swapped.swap(0, 1);
        assert_ne!(root(&leaves(4)), root(&swapped));
        assert_ne!(root(&[]), root(&leaves(1)));
        assert!(prove(&leaves(3), 3).is_none());
    }
}
