//! Compliance: KYC-bound identities, the consortium's rule engine and governance. All of it runs
//! inside deterministic execution (time is the block timestamp), so every validator reaches the
//! same decision, and every decision names its rule, the rule-set version and a human reason.
//! docs/compliance.md describes each rule.

mod check;
pub mod governance;
mod ops;
pub mod registry;
pub mod rules;
pub mod window;

pub use check::{check_party, check_transfer, Party, Payment, TravelRuleData};
pub use governance::{GovAction, Params, PendingValidators, Proposal, ProposalStatus};
pub use ops::{freeze_op, identity_op, FreezeOp, IdentityOp};
pub use registry::{Freeze, Identity, Role, RoleEntry, Usage};
pub use rules::{
    Corridor, Limit, Rate, RuleSet, Rules, SanctionsUpdate, Structuring, Tier, TravelRule,
};
