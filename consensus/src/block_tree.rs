//! The tree of uncommitted blocks above the last committed one, the certificates known for
//! them, and the two-chain commit rule: when block B is certified and its parent P is from the
//! round just before (B.round == P.round + 1), P and every uncommitted ancestor commit.

use crate::types::{Block, Digest, EpochProof, Height, QuorumCert};
use std::collections::HashMap;

pub(crate) struct BlockTree {
    root: Block,
    root_qc: QuorumCert,
    blocks: HashMap<Digest, Block>,
    certs: HashMap<Digest, QuorumCert>,
    highest_qc: QuorumCert,
    /// Test-only: commit a block on its own certificate (the broken one-chain rule).
    pub(crate) one_chain: bool,
    /// Last height of the current epoch, when a reconfiguration is pending: nothing above it
    /// commits in this epoch.
    pub(crate) commit_limit: Option<Height>,
    /// The QC whose arrival last committed something (the second link of the two-chain that
    /// committed the root): with the blocks from the root to it, the proof of the root's
    /// commit.
    commit_qc: Option<QuorumCert>,
    /// Empty blocks in a row ending at the root, as committed through this tree (a tree built
    /// at start or from a sync counts from its root: one if it is empty).
    root_quiet_streak: u64,
}

impl BlockTree {
    pub(crate) fn new(root: Block, root_qc: QuorumCert) -> BlockTree {
        BlockTree {
            root_quiet_streak: u64::from(root.payload.is_empty()),
            highest_qc: root_qc.clone(),
            root,
            root_qc,
            blocks: HashMap::new(),
            certs: HashMap::new(),
            one_chain: false,
            commit_limit: None,
            commit_qc: None,
        }
    }

    /// The proof that the root committed: the blocks from the root's child up to the block
    /// of the QC that committed it, and that QC. `None` if the root committed before this tree
    /// was built (at start) or that QC's block is no longer held.
    ///
    /// The proof is the shortest one on that path: up to the first block whose own certificate
    /// commits its parent by the two-chain rule (and so the root), at most `SYNC_CHUNK` blocks.
    pub(crate) fn commit_proof(&self) -> Option<EpochProof> {
        let qc = self.commit_qc.as_ref()?;
        let path = self.path_to(&qc.block);
        let mut parent_round = self.root.round;
        for (i, (id, b)) in path.iter().enumerate() {
            if i >= crate::SYNC_CHUNK as usize {
                return None;
            }
            let cert = if *id == qc.block {
                Some(qc)
            } else {
                self.certs.get(id)
            };
            if let Some(cert) = cert.filter(|_| parent_round.checked_add(1) == Some(b.round)) {
                let blocks = path[..=i].iter().map(|(_, b)| (*b).clone()).collect();
                return Some(EpochProof {
                    blocks,
                    qc: cert.clone(),
                });
            }
            parent_round = b.round;
        }
        None
    }

    pub(crate) fn root(&self) -> &Block {
        &self.root
    }

    pub(crate) fn root_qc(&self) -> &QuorumCert {
        &self.root_qc
    }

    pub(crate) fn root_id(&self) -> Digest {
        self.root_qc.block
    }

    pub(crate) fn committed_height(&self) -> Height {
        self.root.height
    }

    pub(crate) fn highest_qc(&self) -> &QuorumCert {
        &self.highest_qc
    }

    /// True if the block is the root or in the tree.
    pub(crate) fn knows(&self, id: &Digest) -> bool {
        *id == self.root_id() || self.blocks.contains_key(id)
    }

    pub(crate) fn get(&self, id: &Digest) -> Option<&Block> {
        if *id == self.root_id() {
            return Some(&self.root);
        }
        self.blocks.get(id)
    }

    /// Adds a block whose parent is known and that is above the root.
    pub(crate) fn insert(&mut self, block: Block) -> bool {
        if block.height <= self.root.height || !self.knows(&block.parent) {
            return false;
        }
        let parent_height = self.get(&block.parent).map_or(0, |p| p.height);
        if parent_height.checked_add(1) != Some(block.height) {
            return false;
        }
        self.blocks.insert(block.id(), block);
        true
    }

    /// Empty blocks in a row ending at `id` (zero if it names a batch or is not held).
    pub(crate) fn quiet_streak(&self, id: &Digest) -> u64 {
        let mut streak = 0u64;
        let mut cur = *id;
        while let Some(b) = self.blocks.get(&cur) {
            if !b.payload.is_empty() {
                return streak;
            }
            streak = streak.saturating_add(1);
            cur = b.parent;
        }
        if cur == self.root_id() {
            streak = streak.saturating_add(self.root_quiet_streak);
        }
        streak
    }

    /// Whether a round extending `id` is quiet: `id` names no batch and it is the root or its
    /// parent is (nothing below it waits to commit). `None` if the block is not held.
    pub(crate) fn quiet(&self, id: &Digest) -> Option<bool> {
        let b = self.get(id)?;
        Some(b.payload.is_empty() && (*id == self.root_id() || b.parent == self.root_id()))
    }

    /// Payload digests of the uncommitted blocks from `id` down to the root.
    pub(crate) fn uncommitted_payload(&self, id: &Digest) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut cur = *id;
        while let Some(b) = self.blocks.get(&cur) {
            out.extend(b.payload.iter().copied());
            cur = b.parent;
        }
        out
    }

    /// Puts back a block persisted with the safety state (verified when it was received): its
    /// certificate of the parent is recorded and may raise the highest QC; nothing commits
    /// here (the next certificate that arrives commits what it commits).
    pub(crate) fn restore(&mut self, block: Block) {
        let justify = block.justify.clone();
        if self.insert(block) {
            self.record_qc(&justify);
        }
    }

    /// Records a verified QC without committing anything: it may raise the highest QC, and it
    /// certifies its block for a later commit. (On restart: commits are emitted only by
    /// [`BlockTree::add_qc`] when the next certificate arrives, never silently.)
    pub(crate) fn record_qc(&mut self, qc: &QuorumCert) {
        if qc.round > self.highest_qc.round {
            self.highest_qc = qc.clone();
        }
        if qc.height > self.root.height {
            self.certs.entry(qc.block).or_insert_with(|| qc.clone());
        }
    }

    /// The uncommitted blocks from the root up to `id`, oldest first (empty if `id` is the
    /// root or unknown).
    pub(crate) fn path_to(&self, id: &Digest) -> Vec<(Digest, &Block)> {
        let mut path = Vec::new();
        let mut cur = *id;
        while let Some(b) = self.blocks.get(&cur) {
            path.push((cur, b));
            cur = b.parent;
        }
        if cur != self.root_id() {
            return Vec::new();
        }
        path.reverse();
        path
    }

    /// Records a verified QC. Returns the blocks it commits, oldest first, each with a QC that
    /// certifies it.
    pub(crate) fn add_qc(&mut self, qc: &QuorumCert) -> Vec<(Block, QuorumCert)> {
        self.record_qc(qc);
        if qc.height <= self.root.height {
            return Vec::new();
        }
        let Some(block) = self.blocks.get(&qc.block) else {
            return Vec::new();
        };
        let committed = if self.one_chain {
            self.commit_through(qc.block)
        } else {
            let Some(parent) = self.blocks.get(&block.parent) else {
                return Vec::new();
            };
            if parent.round.checked_add(1) != Some(block.round) {
                return Vec::new();
            }
            let parent_id = block.parent;
            self.commit_through(parent_id)
        };
        if !committed.is_empty() {
            self.commit_qc = Some(qc.clone());
        }
        committed
    }

    /// Commits `id` and its uncommitted ancestors; the tree is pruned to the new root.
    fn commit_through(&mut self, id: Digest) -> Vec<(Block, QuorumCert)> {
        let mut chain = Vec::new();
        let mut cur = id;
        while let Some(b) = self.blocks.get(&cur) {
            chain.push(cur);
            cur = b.parent;
        }
        if cur != self.root_id() {
            return Vec::new();
        }
        chain.reverse();
        let mut out = Vec::new();
        for id in chain {
            if self
                .blocks
                .get(&id)
                .is_some_and(|b| self.commit_limit.is_some_and(|l| b.height > l))
            {
                break;
            }
            // The QC of a block is its child's justify; every block on the chain has one.
            let Some(qc) = self.certs.get(&id).cloned() else {
                break;
            };
            let Some(block) = self.blocks.get(&id).cloned() else {
                break;
            };
            self.root_quiet_streak = if block.payload.is_empty() {
                self.root_quiet_streak.saturating_add(1)
            } else {
                0
            };
            self.root = block.clone();
            self.root_qc = qc.clone();
            out.push((block, qc));
        }
        self.prune();
        out
    }

    /// Drops blocks that do not descend from the root.
    fn prune(&mut self) {
        let root_id = self.root_id();
        let root_height = self.root.height;
        let mut keep: HashMap<Digest, bool> = HashMap::new();
        let ids: Vec<Digest> = self.blocks.keys().copied().collect();
        for id in ids {
            self.descends(id, root_id, root_height, &mut keep);
        }
        self.blocks
            .retain(|id, _| keep.get(id).copied().unwrap_or(false));
        let blocks = &self.blocks;
        self.certs.retain(|id, _| blocks.contains_key(id));
    }

    fn descends(
        &self,
        id: Digest,
        root: Digest,
        root_height: Height,
        memo: &mut HashMap<Digest, bool>,
    ) -> bool {
        let mut path = Vec::new();
        let mut cur = id;
        let verdict = loop {
            if cur == root {
                break true;
            }
            if let Some(v) = memo.get(&cur) {
                break *v;
            }
            match self.blocks.get(&cur) {
                Some(b) if b.height > root_height => {
                    path.push(cur);
                    cur = b.parent;
                }
                _ => break false,
            }
        };
        for p in path {
            memo.insert(p, verdict);
        }
        verdict
    }

    /// See [`crate::Consensus::uncommitted_chain`].
    pub(crate) fn uncommitted_chain(
        &self,
        id: &Digest,
        after: Height,
    ) -> Option<(Height, Vec<Block>)> {
        if *id == self.root_id() {
            return Some((self.root.height, Vec::new()));
        }
        self.blocks.get(id)?;
        let mut upper = Vec::new();
        let mut cur = *id;
        while let Some(b) = self.blocks.get(&cur) {
            if b.height <= after {
                break;
            }
            upper.push(b.clone());
            cur = b.parent;
        }
        upper.reverse();
        Some((self.root.height, upper))
    }

    /// The chain ending at `id` above height `after`, oldest first, at most `max` blocks (the
    /// oldest ones), from this tree; `committed` supplies blocks at or below the root.
    pub(crate) fn chain(
        &self,
        id: &Digest,
        after: Height,
        max: usize,
        committed: &dyn Fn(Height) -> Option<Block>,
    ) -> Vec<Block> {
        let (top, upper) = match self.uncommitted_chain(id, after) {
            Some(plan) => plan,
            None => match committed_height_of(id, self, committed) {
                Some(h) => (h, Vec::new()),
                None => return Vec::new(),
            },
        };
        assemble_chain(after, max, top, upper, committed)
    }
}

/// A sync answer: the committed blocks from `after + 1` up to `top` (read with `committed`,
/// stopping at the first missing one), then `upper` (the uncommitted blocks above `top`), at
/// most `max` blocks in all, oldest first.
pub(crate) fn assemble_chain(
    after: Height,
    max: usize,
    top: Height,
    upper: Vec<Block>,
    committed: &dyn Fn(Height) -> Option<Block>,
) -> Vec<Block> {
    let mut out = Vec::new();
    let mut h = after.saturating_add(1);
    while h <= top && out.len() < max {
        match committed(h) {
            Some(b) => out.push(b),
            None => return out,
        }
        h = h.saturating_add(1);
    }
    out.extend(upper.into_iter().filter(|b| b.height > after));
    out.truncate(max);
    out
}

/// Height of a committed block other than the root, searched down from the root.
fn committed_height_of(
    id: &Digest,
    tree: &BlockTree,
    committed: &dyn Fn(Height) -> Option<Block>,
) -> Option<Height> {
    let mut h = tree.root.height;
    let floor = h.saturating_sub(u64::from(crate::SYNC_CHUNK));
    while h > floor {
        let b = committed(h)?;
        if b.id() == *id {
            return Some(h);
        }
        h = h.saturating_sub(1);
    }
    None
}
