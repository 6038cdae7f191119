//! Ledger state: one ordered key space of namespaced keys (`acct/…`, `asset/…`), values in the
//! canonical encoding. Execution reads and writes through overlays — a transaction overlay,
//! discarded when the transaction is rejected, over the block's write set, over the committed
//! state — so a rejected transaction changes nothing and a block's effects are one write set.
//!
//! The committed state lives in memory (loaded from the store at start), so execution never
//! touches disk. The state root is the Merkle root over `H(key, value)` leaves in key order; leaf
//! hashes are cached, so a block re-hashes only the leaves it changed plus the O(n) inner nodes.
//! That is fine up to millions of entries per second of hashing; the upgrade path to a sparse
//! Merkle tree (O(log n) per change) keeps the same leaf definition.

use crate::codec::{self, CodecError};
use crate::merkle;
use crate::primitives::Hash;
use serde::{de::DeserializeOwned, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Largest value the state accepts when decoding its own entries.
const MAX_VALUE_BYTES: usize = 1 << 20;

/// A key's new value in a write set: `None` deletes it.
pub type WriteSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// What execution reads: the committed value of a key, in the canonical encoding. Execution
/// reads through a view and never writes through it; a block's effects come back as one
/// [`WriteSet`] that the caller applies in one batch. [`State`] (ordered, in memory) is the view
/// the node executes against and this crate's tests run on; the node's store implements it too,
/// over its state tree on disk.
pub trait StateView {
    /// The committed value of `key`, or `None` if the key is absent.
    fn read(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError>;
}

impl StateView for State {
    fn read(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        Ok(self.entries.get(key).map(|v| Cow::Borrowed(v.as_slice())))
    }
}

/// The committed ledger state with cached leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct State {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    leaves: BTreeMap<Vec<u8>, Hash>,
}

fn leaf(key: &[u8], value: &[u8]) -> Hash {
    merkle::leaf_hash(&codec::encode(&(key, value)))
}

impl State {
    /// State holding exactly these entries.
    pub fn from_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> State {
        let mut s = State::default();
        for (k, v) in entries {
            s.leaves.insert(k.clone(), leaf(&k, &v));
            s.entries.insert(k, v);
        }
        s
    }

    /// Raw value of a key.
    pub fn get_raw(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.entries.iter()
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Applies a block's write set.
    pub fn apply(&mut self, writes: &WriteSet) {
        for (k, v) in writes {
            match v {
                Some(v) => {
                    self.leaves.insert(k.clone(), leaf(k, v));
                    self.entries.insert(k.clone(), v.clone());
                }
                None => {
                    self.leaves.remove(k);
                    self.entries.remove(k);
                }
            }
        }
    }

    /// Merkle root over every entry.
    pub fn root(&self) -> Hash {
        let leaves: Vec<Hash> = self.leaves.values().copied().collect();
        merkle::root(&leaves)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the state holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The state could not be read: an entry does not decode (the state is corrupt, or a bug wrote
/// the wrong type), or the store under a view failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A stored value does not decode.
    #[error("state entry {key:?} does not decode: {source}")]
    Corrupt {
        /// The key, lossily as text.
        key: String,
        /// The decoding failure.
        source: CodecError,
    },
    /// The store under the view failed to read.
    #[error("state entry {key:?} could not be read: {reason}")]
    Unreadable {
        /// The key, lossily as text.
        key: String,
        /// What the store said.
        reason: String,
    },
}

impl StateError {
    /// A read of `key` the store under a view could not serve.
    pub fn unreadable(key: &[u8], reason: impl std::fmt::Display) -> StateError {
        StateError::Unreadable {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        }
    }
}

/// The writes of one block over the committed state, with a nested transaction overlay.
pub struct Overlay<'a> {
    base: &'a dyn StateView,
    block: WriteSet,
    tx: WriteSet,
}

impl std::fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("block", &self.block)
            .field("tx", &self.tx)
            .finish_non_exhaustive()
    }
}

impl<'a> Overlay<'a> {
    /// An empty overlay over the committed state.
    pub fn new(base: &'a dyn StateView) -> Overlay<'a> {
        Overlay {
            base,
            block: WriteSet::new(),
            tx: WriteSet::new(),
        }
    }

    fn raw(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        if let Some(v) = self.tx.get(key) {
            return Ok(v.as_deref().map(Cow::Borrowed));
        }
        if let Some(v) = self.block.get(key) {
            return Ok(v.as_deref().map(Cow::Borrowed));
        }
        self.base.read(key)
    }

    /// Typed read through both overlays.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        self.raw(key)?
            .map(|bytes| {
                codec::decode(&bytes, MAX_VALUE_BYTES).map_err(|source| StateError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Typed write into the transaction overlay.
    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.tx.insert(key, Some(codec::encode(value)));
    }

    /// Deletes a key in the transaction overlay.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.tx.insert(key, None);
    }

    /// Keeps the current transaction's writes.
    pub fn commit_tx(&mut self) {
        let tx = std::mem::take(&mut self.tx);
        self.block.extend(tx);
    }

    /// Drops the current transaction's writes.
    pub fn discard_tx(&mut self) {
        self.tx.clear();
    }

    /// The block's write set (the current transaction must be committed or discarded first).
    pub fn into_writes(mut self) -> WriteSet {
        self.discard_tx();
        self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discarded_transactions_leave_no_trace_and_roots_follow_content() {
        let base = State::from_entries([(b"a".to_vec(), codec::encode(&1u64))]);
        let mut o = Overlay::new(&base);
        o.put(b"b".to_vec(), &2u64);
        o.discard_tx();
        assert_eq!(o.get::<u64>(b"b").unwrap(), None);
        o.put(b"c".to_vec(), &3u64);
        o.delete(b"a".to_vec());
        assert_eq!(o.get::<u64>(b"a").unwrap(), None);
        o.commit_tx();
        let writes = o.into_writes();
        let mut next = base.clone();
        next.apply(&writes);
        assert_eq!(next.get_raw(b"a"), None);
        let fresh = State::from_entries([(b"c".to_vec(), codec::encode(&3u64))]);
        assert_eq!(next.root(), fresh.root());
        assert_ne!(next.root(), base.root());
    }
}
