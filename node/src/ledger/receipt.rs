//! Receipts: what happened to each transaction of a block, and why.

use crate::codec;
use crate::merkle;
use crate::primitives::{AccountId, Amount, AssetCode, Hash};
use serde::{Deserialize, Serialize};

/// Domain tag of receipt leaves.
const RECEIPT_DOMAIN: &[u8] = b"tally/receipt/v1";

/// Applied or rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The transaction's effects are in the state.
    Applied,
    /// The transaction changed nothing; `code` and `reason` say why.
    Rejected,
}

/// Why execution refused a transaction. The snake_case name is the stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The block is past the transaction's expiry height.
    Expired,
    /// The sequence number is not the sender's next one.
    BadSequence,
    /// The sender holds less than the amount.
    InsufficientFunds,
    /// The asset is not registered.
    UnknownAsset,
    /// Only the asset's issuer may issue or redeem it.
    UnauthorizedIssuer,
    /// A balance or the supply would overflow.
    AmountOverflow,
    /// A compliance rule refused the transaction (the receipt names the rule).
    ComplianceRejected,
}

impl RejectCode {
    /// The stable code.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectCode::Expired => "expired",
            RejectCode::BadSequence => "bad_sequence",
            RejectCode::InsufficientFunds => "insufficient_funds",
            RejectCode::UnknownAsset => "unknown_asset",
            RejectCode::UnauthorizedIssuer => "unauthorized_issuer",
            RejectCode::AmountOverflow => "amount_overflow",
            RejectCode::ComplianceRejected => "compliance_rejected",
        }
    }
}

/// A refusal with its human explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code.
    pub code: RejectCode,
    /// Human reason.
    pub reason: String,
}

impl Rejection {
    /// A refusal with a reason.
    pub fn new(code: RejectCode, reason: impl Into<String>) -> Rejection {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

/// A compliance note on an applied transaction (flagged for review) or the rule behind a
/// rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// Rule id.
    pub rule_id: String,
    /// Version of the rule set that decided.
    pub rule_version: u64,
    /// Human reason.
    pub reason: String,
}

/// A state change an applied transaction made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Units moved between accounts.
    Transferred {
        /// Payer.
        from: AccountId,
        /// Payee.
        to: AccountId,
        /// Asset.
        asset: AssetCode,
        /// Minor units.
        amount: Amount,
    },
    /// New units created by the issuer.
    Issued {
        /// Receiving account.
        to: AccountId,
        /// Asset.
        asset: AssetCode,
        /// Minor units.
        amount: Amount,
    },
    /// Units destroyed by the issuer.
    Redeemed {
        /// Asset.
        asset: AssetCode,
        /// Minor units.
        amount: Amount,
    },
}

/// The result of one transaction in a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction id.
    pub tx_hash: Hash,
    /// Applied or rejected.
    pub outcome: Outcome,
    /// `ok` when applied, otherwise the stable rejection code.
    pub code: String,
    /// Human explanation.
    pub reason: String,
    /// State changes (empty when rejected).
    pub events: Vec<Event>,
    /// Compliance notes: flags on applied transactions, the deciding rule on rejections.
    pub flags: Vec<Flag>,
}

impl Receipt {
    /// Receipt of an applied transaction.
    pub fn applied(tx_hash: Hash, events: Vec<Event>, flags: Vec<Flag>) -> Receipt {
        Receipt {
            tx_hash,
            outcome: Outcome::Applied,
            code: "ok".into(),
            reason: "applied".into(),
            events,
            flags,
        }
    }

    /// Receipt of a rejected transaction.
    pub fn rejected(tx_hash: Hash, rejection: Rejection, flags: Vec<Flag>) -> Receipt {
        Receipt {
            tx_hash,
            outcome: Outcome::Rejected,
            code: rejection.code.as_str().into(),
            reason: rejection.reason,
            events: Vec::new(),
            flags,
        }
    }

    /// The Merkle leaf of this receipt.
    pub fn leaf(&self) -> Hash {
        merkle::leaf_hash(&codec::encode(&(RECEIPT_DOMAIN, self)))
    }
}

/// Merkle root over a block's receipts, in block order.
pub fn receipt_root(receipts: &[Receipt]) -> Hash {
    let leaves: Vec<Hash> = receipts.iter().map(Receipt::leaf).collect();
    merkle::root(&leaves)
}
