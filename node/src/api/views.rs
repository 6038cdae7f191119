//! JSON shapes of API answers. Amounts are JSON integers in minor units; hashes and keys are
//! lowercase hex.

use super::node::Node;
use super::ApiError;
use crate::storage::StoredBlock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tally_ledger::block::{BlockHeader, CommitCertificate, InclusionProof};
use tally_ledger::primitives::{AccountId, Amount, AssetCode, Hash, Height, IdentityId};
use tally_ledger::{AccountState, Receipt};

/// Answer to a single submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    /// Transaction hash.
    pub hash: Hash,
    /// Always `pending`.
    pub status: String,
}

impl Submitted {
    pub(crate) fn pending(hash: Hash) -> Submitted {
        Submitted {
            hash,
            status: "pending".into(),
        }
    }
}

/// One item of a batch submission's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemResult {
    /// The hash when accepted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hash: Option<Hash>,
    /// The error when refused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorView>,
}

/// An error inside a batch answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorView {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// Answer to a batch submission: one result per transaction, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSubmitted {
    /// How many were accepted.
    pub accepted: usize,
    /// Per transaction.
    pub results: Vec<ItemResult>,
}

impl BatchSubmitted {
    pub(crate) fn new(results: Vec<Result<Hash, ApiError>>) -> BatchSubmitted {
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        BatchSubmitted {
            accepted,
            results: results
                .into_iter()
                .map(|r| match r {
                    Ok(h) => ItemResult {
                        hash: Some(h),
                        error: None,
                    },
                    Err(e) => ItemResult {
                        hash: None,
                        error: Some(ErrorView {
                            code: e.code().into(),
                            message: e.message().into(),
                        }),
                    },
                })
                .collect(),
        }
    }
}

/// A transaction's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxStatus {
    /// Its hash.
    pub hash: Hash,
    /// `pending`, `committed` (applied) or `rejected` (in a block, changed nothing).
    pub status: String,
    /// Block height when final.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub height: Option<Height>,
    /// Position in the block.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<u32>,
    /// The receipt when final.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub receipt: Option<Receipt>,
    /// Inclusion proof (receipt → receipt root → header → quorum certificate), once the
    /// block's certificate is gathered; check it offline with `tally verify-proof`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub proof: Option<InclusionProof>,
}

impl TxStatus {
    pub(crate) fn pending(hash: Hash) -> TxStatus {
        TxStatus {
            hash,
            status: "pending".into(),
            height: None,
            index: None,
            receipt: None,
            proof: None,
        }
    }

    pub(crate) fn committed(
        hash: Hash,
        height: Height,
        index: u32,
        receipt: Receipt,
        proof: Option<InclusionProof>,
    ) -> TxStatus {
        let status = match receipt.outcome {
            tally_ledger::Outcome::Applied => "committed",
            tally_ledger::Outcome::Rejected => "rejected",
        };
        TxStatus {
            hash,
            status: status.into(),
            height: Some(height),
            index: Some(index),
            receipt: Some(receipt),
            proof,
        }
    }
}

/// Answer to a dry run: what execution and compliance would decide if the transaction were
/// alone in the next block. Nothing was written or admitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRun {
    /// The transaction's hash.
    pub hash: Hash,
    /// `would_apply` or `would_reject`.
    pub status: String,
    /// The height it was simulated at (the next one).
    pub height: Height,
    /// The receipt it would get.
    pub receipt: Receipt,
}

impl DryRun {
    pub(crate) fn new(hash: Hash, height: Height, receipt: Receipt) -> DryRun {
        let status = match receipt.outcome {
            tally_ledger::Outcome::Applied => "would_apply",
            tally_ledger::Outcome::Rejected => "would_reject",
        };
        DryRun {
            hash,
            status: status.into(),
            height,
            receipt,
        }
    }
}

/// A governance proposal, and for a rule-set change what it would change if applied now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalView {
    /// The proposal as stored (status as of the last committed height).
    #[serde(flatten)]
    pub proposal: tally_ledger::compliance::Proposal,
    /// For `set_rules`: each top-level field of the rule set it would change, from and to,
    /// against the rules in force (the sanctions list stays as it is). Absent for other
    /// actions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub changes: Option<BTreeMap<String, RuleChange>>,
    /// For `update_sanctions` read by anyone but a consortium institution: how many identities
    /// it lists or delists; their ids are left out (docs/privacy.md).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub identities_withheld: Option<usize>,
}

/// One field of a rule-set change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleChange {
    /// In force now.
    pub from: serde_json::Value,
    /// Once applied.
    pub to: serde_json::Value,
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountView {
    /// Its public key.
    pub id: AccountId,
    /// Next sequence number it must use.
    pub sequence: u64,
    /// Balances in minor units.
    pub balances: BTreeMap<AssetCode, Amount>,
    /// The KYC'd identity it is bound to, if any.
    pub identity: Option<IdentityId>,
    /// Height of the state read.
    pub height: Height,
}

impl AccountView {
    pub(crate) fn new(id: AccountId, state: AccountState, height: Height) -> AccountView {
        AccountView {
            id,
            sequence: state.sequence,
            balances: state.balances,
            identity: state.identity,
            height,
        }
    }
}

/// An identity with its standing and rolling usage (reference minor units).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityView {
    /// The identity record (no personal data: a commitment only).
    pub identity: tally_ledger::compliance::Identity,
    /// The sanctions list naming it, if one does.
    pub sanctioned_by: Option<String>,
    /// Rolling usage as a sender at the last block's time.
    pub usage: UsageView,
    /// Height of the state read.
    pub height: Height,
}

/// Rolling usage of an identity as a sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageView {
    /// Transfers in the rolling hour.
    pub transfers_last_hour: u32,
    /// Transfers in the rolling 24 hours.
    pub transfers_last_24h: u32,
    /// Amount sent in the rolling 24 hours.
    pub amount_last_24h: u64,
    /// Amount sent in the rolling 30 days.
    pub amount_last_30d: u64,
    /// Near-threshold transfers in the rolling 24 hours (structuring watch).
    pub near_threshold_last_24h: u32,
}

/// The rule set in force and the governance parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RulesView {
    /// The rule set (its `version` is the one receipts name).
    pub rules: tally_ledger::compliance::RuleSet,
    /// Governance parameters.
    pub params: tally_ledger::compliance::Params,
    /// Current consortium members.
    pub members: Vec<AccountId>,
    /// The consensus validator set: its epoch and the first height it signs.
    pub validators: Option<tally_ledger::compliance::ValidatorEpoch>,
    /// Height of the state read.
    pub height: Height,
}

/// One transaction's outcome inside a block view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockTx {
    /// Hash.
    pub hash: Hash,
    /// `ok` or the rejection code.
    pub code: String,
}

/// A committed block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockView {
    /// The executed header.
    pub header: BlockHeader,
    /// Its hash.
    pub hash: Hash,
    /// The quorum's signatures over it, once gathered.
    pub certificate: Option<CommitCertificate>,
    /// With `?receipts=true`: each transaction's hash and code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transactions: Option<Vec<BlockTx>>,
}

impl BlockView {
    pub(crate) fn new(block: StoredBlock, receipts: Option<Vec<Receipt>>) -> BlockView {
        BlockView {
            hash: block.header.hash(),
            header: block.header,
            certificate: block.certificate,
            transactions: receipts.map(|rs| {
                rs.into_iter()
                    .map(|r| BlockTx {
                        hash: r.tx_hash,
                        code: r.code,
                    })
                    .collect()
            }),
        }
    }
}

/// The node's view of the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// Network name.
    pub chain_id: String,
    /// Node name.
    pub node: String,
    /// This validator's key.
    pub validator: AccountId,
    /// Executed height.
    pub height: Height,
    /// Consensus round.
    pub round: u64,
    /// Consensus epoch.
    pub epoch: u64,
    /// Leader of the current round.
    pub leader: Option<AccountId>,
    /// The validator set.
    pub validators: Vec<AccountId>,
    /// Connected peers.
    pub peers: usize,
    /// Transactions in the mempool.
    pub mempool: usize,
    /// Software version.
    pub version: String,
    /// Height of the highest block this node has seen certified by a quorum.
    pub certified_height: Height,
    /// Certified blocks this node has not executed yet (`certified_height - height`): one or
    /// two in a healthy network, more while it catches up.
    pub sync_lag: Height,
    /// Caught up (`sync_lag` at most [`READY_LAG`]), not diverged and, in a network of more
    /// than one validator, connected to a peer: ready to serve reads that reflect the network.
    pub ready: bool,
    /// The first height at which a quorum certified another header than this node executed:
    /// its state diverged from the network's and it must be resynced. Null when healthy.
    pub diverged_at: Option<Height>,
}

/// The most certified blocks a node may not have executed and still be ready.
pub const READY_LAG: Height = 10;

impl StatusView {
    pub(crate) fn new(shared: &dyn Node) -> StatusView {
        let s = shared.status();
        let height = shared.height();
        let sync_lag = s.certified_height.saturating_sub(height);
        let peers = shared.connected_peers();
        let validators = shared.validators();
        let connected = peers > 0 || validators.len() <= 1;
        StatusView {
            chain_id: shared.chain_id().to_owned(),
            node: shared.name().to_owned(),
            validator: shared.account(),
            height,
            round: s.round,
            epoch: s.epoch,
            leader: s.leader,
            validators,
            peers,
            mempool: shared.mempool_len(),
            version: env!("CARGO_PKG_VERSION").into(),
            certified_height: s.certified_height,
            sync_lag,
            ready: not_ready(s.diverged_at, connected, sync_lag).is_none(),
            diverged_at: s.diverged_at,
        }
    }

    /// Why this node is not ready (`GET /ready`'s `reason`), or `None` when it is.
    pub(crate) fn not_ready_reason(&self) -> Option<&'static str> {
        let connected = self.peers > 0 || self.validators.len() <= 1;
        not_ready(self.diverged_at, connected, self.sync_lag)
    }
}

/// The readiness rule, in one place for `/v1/status` and `/ready`.
fn not_ready(
    diverged_at: Option<Height>,
    connected: bool,
    sync_lag: Height,
) -> Option<&'static str> {
    if diverged_at.is_some() {
        Some("diverged")
    } else if !connected {
        Some("no_peers")
    } else if sync_lag > READY_LAG {
        Some("catching_up")
    } else {
        None
    }
}
