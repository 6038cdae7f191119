//! Receipts: what happened to each transaction of a block, and why.

use crate::codec;
use crate::merkle;
use crate::primitives::{AccountId, Amount, AssetCode, Hash, Height, IdentityId};
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
    /// The sender lacks the role the operation needs.
    Unauthorized,
    /// The identity is not registered.
    UnknownIdentity,
    /// An identity with this id is already registered.
    IdentityExists,
    /// The operation does not fit the current state (e.g. binding a bound account).
    InvalidRequest,
    /// The proposal does not exist.
    UnknownProposal,
    /// The proposal is no longer open for votes.
    ProposalClosed,
    /// The proposal cannot be accepted (e.g. its height has passed).
    InvalidProposal,
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
            RejectCode::Unauthorized => "unauthorized",
            RejectCode::UnknownIdentity => "unknown_identity",
            RejectCode::IdentityExists => "identity_exists",
            RejectCode::InvalidRequest => "invalid_request",
            RejectCode::UnknownProposal => "unknown_proposal",
            RejectCode::ProposalClosed => "proposal_closed",
            RejectCode::InvalidProposal => "invalid_proposal",
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
    /// The compliance rule that refused, if one did.
    pub flag: Option<Flag>,
}

impl Rejection {
    /// A refusal with a reason.
    pub fn new(code: RejectCode, reason: impl Into<String>) -> Rejection {
        Rejection {
            code,
            reason: reason.into(),
            flag: None,
        }
    }

    /// A compliance rule's refusal: code `compliance_rejected`, the rule named in a flag.
    pub fn rule(rule_id: &str, rule_version: u64, reason: String) -> Rejection {
        Rejection {
            code: RejectCode::ComplianceRejected,
            reason: format!("{rule_id}: {reason}"),
            flag: Some(Flag {
                rule_id: rule_id.to_owned(),
                rule_version,
                reason,
            }),
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
    /// A KYC provider registered an identity.
    IdentityRegistered {
        /// Identity.
        id: IdentityId,
    },
    /// A KYC provider changed an identity's tier, expiry or commitment.
    IdentityUpdated {
        /// Identity.
        id: IdentityId,
    },
    /// A KYC provider revoked an identity.
    IdentityRevoked {
        /// Identity.
        id: IdentityId,
    },
    /// An account was bound to an identity.
    AccountBound {
        /// Account.
        account: AccountId,
        /// Identity.
        id: IdentityId,
    },
    /// An account was unbound from its identity.
    AccountUnbound {
        /// Account.
        account: AccountId,
        /// Identity it was bound to.
        id: IdentityId,
    },
    /// A regulator froze an identity.
    IdentityFrozen {
        /// Identity.
        id: IdentityId,
    },
    /// A regulator lifted a freeze.
    IdentityUnfrozen {
        /// Identity.
        id: IdentityId,
    },
    /// An issuer froze an identity for its asset.
    AssetFrozen {
        /// Asset.
        asset: AssetCode,
        /// Identity.
        id: IdentityId,
    },
    /// An issuer lifted its freeze.
    AssetUnfrozen {
        /// Asset.
        asset: AssetCode,
        /// Identity.
        id: IdentityId,
    },
    /// A member made a governance proposal.
    ProposalCreated {
        /// Proposal id.
        proposal: u64,
        /// When it would take effect.
        effective_height: Height,
    },
    /// A member voted.
    Voted {
        /// Proposal id.
        proposal: u64,
        /// Yes or no.
        approve: bool,
    },
    /// More than two thirds of the members approved.
    ProposalPassed {
        /// Proposal id.
        proposal: u64,
        /// The height at whose start it takes effect.
        effective_height: Height,
    },
    /// The proposal can no longer pass.
    ProposalRejected {
        /// Proposal id.
        proposal: u64,
    },
    /// The proposal did not pass in time.
    ProposalExpired {
        /// Proposal id.
        proposal: u64,
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
    /// The version of the compliance rule set in force when it executed: the rules every
    /// payment of the block was checked against, applied or not.
    pub rules_version: u64,
}

impl Receipt {
    /// Receipt of an applied transaction, checked under rule-set `rules_version`.
    pub fn applied(
        tx_hash: Hash,
        events: Vec<Event>,
        flags: Vec<Flag>,
        rules_version: u64,
    ) -> Receipt {
        Receipt {
            tx_hash,
            outcome: Outcome::Applied,
            code: "ok".into(),
            reason: "applied".into(),
            events,
            flags,
            rules_version,
        }
    }

    /// Receipt of a rejected transaction, decided under rule-set `rules_version`.
    pub fn rejected(
        tx_hash: Hash,
        rejection: Rejection,
        flags: Vec<Flag>,
        rules_version: u64,
    ) -> Receipt {
        Receipt {
            tx_hash,
            outcome: Outcome::Rejected,
            code: rejection.code.as_str().into(),
            reason: rejection.reason,
            events: Vec::new(),
            flags,
            rules_version,
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
