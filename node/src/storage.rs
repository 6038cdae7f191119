//! Durable storage on sled.
//!
//! One sled tree per kind of record: `state` (the ledger key space), `blocks` (header and
//! consensus record by height), `certs` (the quorum's certificate over a header, by height),
//! `block_ids` (consensus block id → height), `receipts` (a block's receipts by height),
//! `txindex` (tx hash → height and position), `batches` (transaction batches by digest) and
//! `meta` (committed height, genesis hash, epoch proofs, evidence). The consensus safety state
//! is the file `consensus-safety` beside the database, replaced atomically at every vote.
//! Committing a block is one sled transaction over the state, block, receipt and meta trees,
//! then the block's tx-index entries (one atomic batch, outside the transaction: they are most
//! of a block's keys and derive from its receipts), then one flush (fsync). After a crash at any
//! moment, reopening gives exactly the last committed block's state; the index of that block is
//! written again on open, so an index batch that missed the flush is restored.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::borrow::Cow;
use std::path::Path;
use tally_ledger::block::{BlockHeader, CommitCertificate};
use tally_ledger::codec::{self, CodecError};
use tally_ledger::primitives::{Hash, Height};
use tally_ledger::{Receipt, State, StateError, StateView, WriteSet};

/// Largest record the store decodes.
const MAX_RECORD_BYTES: usize = 256 << 20;

const COMMITTED_HEIGHT: &[u8] = b"committed_height";
const GENESIS_HASH: &[u8] = b"genesis_hash";
const SAFETY: &[u8] = b"safety";
/// The consensus safety state's file in the data directory.
const SAFETY_FILE: &str = "consensus-safety";
/// Evidence records kept per kind (proposal, vote, timeout) and validator.
pub const MAX_EVIDENCE_PER_KIND: usize = 1_000;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled reported an I/O or corruption error.
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// A file beside the database (the consensus safety state) could not be read or written.
    #[error("storage file: {0}")]
    File(#[from] std::io::Error),
    /// A stored record does not decode.
    #[error("stored record {what} does not decode: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        source: CodecError,
    },
    /// The block does not follow the committed height.
    #[error("block {got} does not follow committed height {committed}")]
    OutOfOrder {
        /// Committed height.
        committed: Height,
        /// Height offered.
        got: Height,
    },
    /// The data directory belongs to another network.
    #[error("the store was created from genesis {stored}, not {given}")]
    GenesisMismatch {
        /// Genesis hash in the store.
        stored: Hash,
        /// Genesis hash given.
        given: Hash,
    },
    /// The data directory was written by a version whose block 1 did not name the genesis
    /// block as its parent: its chain cannot be extended by this version.
    #[error(
        "the store predates the genesis block (height 0): its chain links block 1 to a zero \
         parent, which this version does not extend; start the network from a new genesis"
    )]
    PredatesGenesisBlock,
}

/// A committed block as stored: its header and, once a quorum has signed it, its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlock {
    /// The executed header.
    pub header: BlockHeader,
    /// The quorum's signatures over the header, when collected.
    pub certificate: Option<CommitCertificate>,
    /// Consensus's record of the block (opaque to storage).
    #[serde(with = "serde_bytes")]
    pub consensus: Vec<u8>,
}

/// Where a transaction ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    /// Block height.
    pub height: Height,
    /// Position in the block.
    pub index: u32,
}

/// The node's sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: std::path::PathBuf,
    state: sled::Tree,
    blocks: sled::Tree,
    /// Height → the quorum's certificate over that executed header, collected after the
    /// block is stored (its own tree, so attaching it does not rewrite the block).
    certs: sled::Tree,
    receipts: sled::Tree,
    txindex: sled::Tree,
    batches: sled::Tree,
    meta: sled::Tree,
    /// Consensus block id → height, so that a peer's sync request for an older committed
    /// block is answered with one lookup.
    block_ids: sled::Tree,
    /// Sequence number → entry of the API's access log (`api::access_log`).
    access_log: sled::Tree,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StorageError> {
    codec::decode(bytes, MAX_RECORD_BYTES).map_err(|source| StorageError::Corrupt {
        what: what.to_owned(),
        source,
    })
}

fn epoch_proof_key(height: Height) -> Vec<u8> {
    [b"epoch-proof/".as_slice(), &height.to_be_bytes()].concat()
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        let db = open_db(dir)?;
        let store = Store {
            state: db.open_tree("state")?,
            blocks: db.open_tree("blocks")?,
            certs: db.open_tree("certs")?,
            receipts: db.open_tree("receipts")?,
            txindex: db.open_tree("txindex")?,
            batches: db.open_tree("batches")?,
            meta: db.open_tree("meta")?,
            block_ids: db.open_tree("block_ids")?,
            access_log: db.open_tree("access_log")?,
            db,
            dir: dir.to_owned(),
        };
        store.reindex_last_block()?;
        Ok(store)
    }

    /// The tx index of the last committed block goes to disk after that block's transaction, in
    /// the same flush; a crash between the two leaves the block without it. Writing it again
    /// (idempotent) restores it.
    fn reindex_last_block(&self) -> Result<(), StorageError> {
        let height = self.committed_height()?;
        if height == 0 {
            return Ok(());
        }
        if let Some(receipts) = self.receipts(height)? {
            self.txindex.apply_batch(index_batch(height, &receipts))?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Writes the genesis state and the genesis header (as the block of height 0) once; on
    /// later opens checks that the genesis is the same. Returns true if the store was new.
    pub fn init_genesis(
        &self,
        genesis_hash: Hash,
        state: &State,
        header: &BlockHeader,
    ) -> Result<bool, StorageError> {
        let block = codec::encode(&StoredBlock {
            header: header.clone(),
            certificate: None,
            consensus: Vec::new(),
        });
        let key = 0u64.to_be_bytes();
        if let Some(stored) = self.meta.get(GENESIS_HASH)? {
            let stored: Hash = decode("genesis hash", &stored)?;
            if stored != genesis_hash {
                return Err(StorageError::GenesisMismatch {
                    stored,
                    given: genesis_hash,
                });
            }
            if self.blocks.get(key)?.is_none() {
                return Err(StorageError::PredatesGenesisBlock);
            }
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in state.entries() {
            batch.insert(k.as_slice(), v.as_slice());
        }
        (&self.state, &self.meta, &self.blocks)
            .transaction(|(st, meta, bl)| {
                st.apply_batch(&batch)?;
                bl.insert(&key, block.as_slice())?;
                meta.insert(COMMITTED_HEIGHT, codec::encode(&0u64))?;
                meta.insert(GENESIS_HASH, codec::encode(&genesis_hash))?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(flatten)?;
        self.db.flush()?;
        Ok(true)
    }

    /// The last committed height (0 before the first block).
    pub fn committed_height(&self) -> Result<Height, StorageError> {
        match self.meta.get(COMMITTED_HEIGHT)? {
            Some(b) => decode("committed height", &b),
            None => Ok(0),
        }
    }

    /// The committed state, loaded into memory.
    pub fn load_state(&self) -> Result<State, StorageError> {
        let mut entries = Vec::new();
        for item in self.state.iter() {
            let (k, v) = item?;
            entries.push((k.to_vec(), v.to_vec()));
        }
        Ok(State::from_entries(entries))
    }

    /// Commits an executed block atomically — state writes, header, receipts, tx index and the
    /// committed height — then flushes once.
    pub fn commit_block(
        &self,
        header: &BlockHeader,
        receipts: &[Receipt],
        writes: &WriteSet,
        consensus: &[u8],
        consensus_id: &[u8; 32],
    ) -> Result<(), StorageError> {
        let committed = self.committed_height()?;
        if header.height != committed + 1 {
            return Err(StorageError::OutOfOrder {
                committed,
                got: header.height,
            });
        }
        let key = header.height.to_be_bytes();
        let mut state_batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => state_batch.insert(k.as_slice(), v.as_slice()),
                None => state_batch.remove(k.as_slice()),
            }
        }
        let index = index_batch(header.height, receipts);
        let block = codec::encode(&StoredBlock {
            header: header.clone(),
            certificate: None,
            consensus: consensus.to_vec(),
        });
        let receipts = codec::encode(receipts);
        let height = codec::encode(&header.height);
        (
            &self.state,
            &self.blocks,
            &self.receipts,
            &self.meta,
            &self.block_ids,
        )
            .transaction(|(st, bl, rc, meta, ids)| {
                st.apply_batch(&state_batch)?;
                bl.insert(&key, block.as_slice())?;
                ids.insert(consensus_id, &key)?;
                rc.insert(&key, receipts.as_slice())?;
                meta.insert(COMMITTED_HEIGHT, height.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(flatten)?;
        self.txindex.apply_batch(index)?;
        self.db.flush()?;
        Ok(())
    }

    /// A committed block, with its certificate once collected.
    pub fn block(&self, height: Height) -> Result<Option<StoredBlock>, StorageError> {
        let Some(bytes) = self.blocks.get(height.to_be_bytes())? else {
            return Ok(None);
        };
        let mut block: StoredBlock = decode("block", &bytes)?;
        if block.certificate.is_none() {
            block.certificate = self
                .certs
                .get(height.to_be_bytes())?
                .map(|c| decode("certificate", &c))
                .transpose()?;
        }
        Ok(Some(block))
    }

    /// Height of the committed block with this consensus id.
    pub fn height_of_block(&self, consensus_id: &[u8; 32]) -> Result<Option<Height>, StorageError> {
        Ok(self.block_ids.get(consensus_id)?.and_then(|v| {
            let bytes: [u8; 8] = v.as_ref().try_into().ok()?;
            Some(Height::from_be_bytes(bytes))
        }))
    }

    /// Attaches the quorum's certificate to a committed block.
    pub fn put_certificate(
        &self,
        height: Height,
        certificate: &CommitCertificate,
    ) -> Result<(), StorageError> {
        if self.blocks.contains_key(height.to_be_bytes())? {
            self.certs
                .insert(height.to_be_bytes(), codec::encode(certificate))?;
        }
        Ok(())
    }

    /// A committed block's receipts.
    pub fn receipts(&self, height: Height) -> Result<Option<Vec<Receipt>>, StorageError> {
        self.receipts
            .get(height.to_be_bytes())?
            .map(|b| decode("receipts", &b))
            .transpose()
    }

    /// Where a committed transaction is.
    pub fn tx_location(&self, hash: &Hash) -> Result<Option<TxLocation>, StorageError> {
        self.txindex
            .get(hash.0)?
            .map(|b| decode("tx location", &b))
            .transpose()
    }

    /// Stores a transaction batch by digest (not flushed: batches can be fetched again).
    pub fn put_batch(&self, digest: &Hash, bytes: &[u8]) -> Result<(), StorageError> {
        self.batches.insert(digest.0, bytes)?;
        Ok(())
    }

    /// A stored batch.
    pub fn batch(&self, digest: &Hash) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.batches.get(digest.0)?.map(|v| v.to_vec()))
    }

    /// Durably stores the consensus safety state: returns only after fsync. What the store
    /// holds is flushed first, so the batches and blocks a vote relies on are durable before
    /// it. The state itself is one small file replaced atomically (written beside it, fsync'd,
    /// renamed over it, the directory fsync'd), not a sled record: rewritten at every vote, in
    /// sled it left a copy in the log each round (most of an idle network's disk growth).
    pub fn put_safety_state(&self, bytes: &[u8]) -> Result<(), StorageError> {
        self.db.flush()?;
        let path = self.dir.join(SAFETY_FILE);
        let temporary = self.dir.join(format!("{SAFETY_FILE}.new"));
        {
            let mut file = std::fs::File::create(&temporary)?;
            std::io::Write::write_all(&mut file, bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        // A data directory from before the file kept the state in the meta tree: the file now
        // supersedes it, and a stale copy must never be read back.
        self.meta.remove(SAFETY)?;
        Ok(())
    }

    /// Keeps the (encoded) proof that the epoch ending with the block at `height` committed,
    /// for peers that catch up across that boundary. Written once per epoch change.
    pub fn put_epoch_proof(&self, height: Height, bytes: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(epoch_proof_key(height), bytes)?;
        Ok(())
    }

    /// The (encoded) proof of the epoch that ended at `height`, if one did.
    pub fn epoch_proof(&self, height: Height) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(epoch_proof_key(height))?.map(|v| v.to_vec()))
    }

    /// The last persisted consensus safety state.
    pub fn safety_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        match std::fs::read(self.dir.join(SAFETY_FILE)) {
            Ok(bytes) => Ok(Some(bytes)),
            // A data directory from before the file kept the state in the meta tree.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(self.meta.get(SAFETY)?.map(|v| v.to_vec()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records equivocation evidence (encoded) under `kind/validator/round`, keeping at most
    /// [`MAX_EVIDENCE_PER_KIND`] records per kind and validator (the first ones: one proven
    /// equivocation is enough, and a Byzantine validator cannot grow the disk without end).
    /// Returns whether it was stored.
    pub fn put_evidence(
        &self,
        kind: &str,
        validator: u16,
        round: u64,
        bytes: &[u8],
    ) -> Result<bool, StorageError> {
        let prefix = format!("evidence/{kind}/{validator}/");
        if self
            .meta
            .scan_prefix(&prefix)
            .take(MAX_EVIDENCE_PER_KIND)
            .count()
            >= MAX_EVIDENCE_PER_KIND
        {
            return Ok(false);
        }
        self.meta.insert(format!("{prefix}{round}"), bytes)?;
        Ok(true)
    }

    /// The last entry of the access log: its sequence number and bytes.
    pub fn last_access_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let Some((k, v)) = self.access_log.last()? else {
            return Ok(None);
        };
        let seq =
            k.as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt {
                    what: "access log key".into(),
                    source: codec::CodecError::Malformed("not 8 bytes".into()),
                })?;
        Ok(Some((seq, v.to_vec())))
    }

    /// Appends entry `seq` of the access log.
    pub fn put_access_entry(&self, seq: u64, bytes: &[u8]) -> Result<(), StorageError> {
        self.access_log.insert(seq.to_be_bytes(), bytes)?;
        Ok(())
    }

    /// Up to `limit` access-log entries after sequence number `after`, in order.
    pub fn access_entries(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, StorageError> {
        let from = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.access_log.range(from..).take(limit) {
            out.push(item?.1.to_vec());
        }
        Ok(out)
    }

    /// A committed value of the ledger state.
    pub fn state_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.state.get(key)?.map(|v| v.to_vec()))
    }

    /// Bytes the database occupies on disk.
    /// Bytes free for this process on the data directory's volume, if the system says.
    pub fn free_bytes(&self) -> Option<u64> {
        fs2::available_space(&self.dir).ok()
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// The tx-index entries of a block's receipts.
fn index_batch(height: Height, receipts: &[Receipt]) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (i, r) in receipts.iter().enumerate() {
        let loc = TxLocation {
            height,
            index: i as u32,
        };
        batch.insert(&r.tx_hash.0[..], codec::encode(&loc));
    }
    batch
}

fn flatten(e: TransactionError<()>) -> StorageError {
    match e {
        TransactionError::Storage(e) => StorageError::Sled(e),
        // No closure above aborts.
        TransactionError::Abort(()) => {
            StorageError::Sled(sled::Error::Unsupported("transaction aborted".into()))
        }
    }
}

/// Execution can read the committed state straight from the state tree on disk. The validator
/// executes against its in-memory copy (no disk read on the hot path); tools and the tests that
/// check the two agree read through this.
impl StateView for Store {
    fn read(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        match self.state.get(key) {
            Ok(value) => Ok(value.map(|v| Cow::Owned(v.to_vec()))),
            Err(e) => Err(StateError::unreadable(key, e)),
        }
    }
}

/// Opens the sled database. Sled takes an exclusive lock on the directory and releases it when
/// the last of its threads lets go of a closed database, which can be a moment after the drop:
/// a node reopened in the same process (a restart in tests, a store reopened after a check)
/// waits for it, up to `LOCK_PATIENCE`; another process holding the directory is an error
/// after that.
fn open_db(dir: &Path) -> Result<sled::Db, StorageError> {
    const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(256 << 20)
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_PATIENCE =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_ledger::primitives::AccountId;

    fn header(height: Height) -> BlockHeader {
        BlockHeader {
            chain_id: "t".into(),
            height,
            round: height,
            parent_hash: Hash::ZERO,
            proposer: AccountId([1; 32]),
            timestamp_ms: 1_000 * height,
            batch_digests: Vec::new(),
            tx_count: 2,
            receipt_root: Hash::ZERO,
            state_root: Hash::ZERO,
        }
    }

    #[test]
    fn a_store_from_before_the_genesis_block_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store
                .init_genesis(Hash([9; 32]), &State::default(), &header(0))
                .unwrap());
            assert_eq!(store.block(0).unwrap().unwrap().header, header(0));
            // As an earlier version left it: genesis recorded, no block 0.
            store.blocks.remove(0u64.to_be_bytes()).unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let err = store
            .init_genesis(Hash([9; 32]), &State::default(), &header(0))
            .unwrap_err();
        assert!(matches!(err, StorageError::PredatesGenesisBlock), "{err}");
    }

    #[test]
    fn a_block_whose_index_missed_the_disk_is_indexed_again_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let receipts: Vec<Receipt> = [3u8, 4]
            .iter()
            .map(|b| Receipt::applied(Hash([*b; 32]), Vec::new(), Vec::new(), 1))
            .collect();
        let mut writes = WriteSet::new();
        writes.insert(b"acct/x".to_vec(), Some(vec![7]));
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .init_genesis(Hash([9; 32]), &State::default(), &header(0))
                .unwrap();
            store
                .commit_block(&header(1), &receipts, &writes, b"", &[3; 32])
                .unwrap();
            // As if the crash came between the block's transaction and its index batch.
            store.txindex.remove(Hash([4; 32]).0).unwrap();
            store.db.flush().unwrap();
            assert_eq!(store.tx_location(&Hash([4; 32])).unwrap(), None);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.committed_height().unwrap(), 1);
        assert_eq!(
            store.tx_location(&Hash([4; 32])).unwrap(),
            Some(TxLocation {
                height: 1,
                index: 1
            })
        );
        assert_eq!(store.state_value(b"acct/x").unwrap(), Some(vec![7]));
    }

    #[test]
    fn the_safety_state_is_the_last_one_written_after_a_reopen_and_replaces_an_older_stores_copy() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.safety_state().unwrap(), None);
            // A store written before the file held the state in the meta tree.
            store.meta.insert(SAFETY, b"older".as_slice()).unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.safety_state().unwrap().as_deref(),
            Some(b"older".as_slice())
        );
        store.put_safety_state(b"first").unwrap();
        store.put_safety_state(b"second").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.safety_state().unwrap().as_deref(),
            Some(b"second".as_slice())
        );
        // Nothing half-written is left beside it, and the older copy is gone: losing the file
        // later cannot bring back a state from before the last vote.
        assert!(!dir.path().join(format!("{SAFETY_FILE}.new")).exists());
        assert_eq!(store.meta.get(SAFETY).unwrap(), None);
    }

    #[test]
    fn evidence_is_capped_per_kind_and_validator() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stored = (0..MAX_EVIDENCE_PER_KIND as u64 + 5)
            .filter(|r| store.put_evidence("vote", 3, *r, b"e").unwrap())
            .count();
        assert_eq!(stored, MAX_EVIDENCE_PER_KIND);
        // Another validator, or another kind, has its own allowance.
        assert!(store.put_evidence("vote", 2, 0, b"e").unwrap());
        assert!(store.put_evidence("proposal", 3, 0, b"e").unwrap());
    }
}
