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
pub use governance::{DueProposal, GovAction, Params, Proposal, ProposalStatus, ValidatorEpoch};
pub use ops::{freeze_op, identity_op, FreezeOp, IdentityOp};
pub use registry::{Freeze, Identity, Role, RoleEntry, Usage};
pub use rules::{
    Corridor, Limit, Rate, RuleSet, Rules, SanctionsUpdate, Structuring, Tier, TravelRule,
};

/// Every rule id a receipt can name, with its decision (`reject` or `flag`). docs/compliance.md
/// lists the same ones; a test keeps them in step.
pub const RULE_IDS: &[(&str, &str)] = &[
    ("identity.unbound", "reject"),
    ("sanctions.identity", "reject"),
    ("sanctions.jurisdiction", "reject"),
    ("identity.revoked", "reject"),
    ("identity.provider_removed", "reject"),
    ("identity.tier_not_allowed", "reject"),
    ("identity.expired", "reject"),
    ("identity.frozen", "reject"),
    ("asset.frozen", "reject"),
    ("corridor.closed", "reject"),
    ("rates.missing", "reject"),
    ("limit.undefined", "reject"),
    ("limit.per_transaction", "reject"),
    ("velocity.hourly", "reject"),
    ("velocity.daily", "reject"),
    ("limit.daily", "reject"),
    ("limit.30_days", "reject"),
    ("travel_rule.missing", "reject"),
    ("structuring.suspected", "flag"),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_is_documented_and_every_documented_rule_exists() {
        let doc = include_str!("../../../../docs/compliance.md");
        let documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(id, _)| id))
            .filter(|id| id.contains('.'))
            .collect();
        let code: Vec<&str> = super::RULE_IDS.iter().map(|(id, _)| *id).collect();
        assert_eq!(documented, code);
        let sources = [include_str!("check.rs")];
        for id in code {
            assert!(
                sources.iter().any(|s| s.contains(&format!("\"{id}\""))),
                "rule {id} is never decided"
            );
        }
    }
}
