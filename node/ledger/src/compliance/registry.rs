//! Who is who: the role registry (members, validators, KYC providers, issuers, liquidity
//! providers, regulators) and KYC'd identities, as stored in the state key space.

use crate::primitives::{
    AccountId, AssetCode, Hash, Height, IdentityId, Jurisdiction, TimestampMs,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::rules::Tier;
use super::window::Window;
pub use crate::primitives::{check_identity_id, MAX_IDENTITY_ID};

/// Longest free-text reason or name in a compliance record.
pub const MAX_TEXT: usize = 256;

/// A role a key can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A consortium member: proposes and votes in governance.
    Member,
    /// Runs a validator.
    Validator,
    /// Registers identities and binds accounts to them.
    KycProvider,
    /// Issues assets (the asset's own issuer account is named in the asset record).
    Issuer,
    /// Provides liquidity in corridors (recorded for audit; no extra ledger powers).
    LiquidityProvider,
    /// Supervises the jurisdictions listed in its entry: freezes and unfreezes identities there.
    Regulator,
    /// Oversees the regulators: reads every node's access log in full (who asked what).
    Oversight,
}

impl Role {
    /// The role's stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Validator => "validator",
            Role::KycProvider => "kyc_provider",
            Role::Issuer => "issuer",
            Role::LiquidityProvider => "liquidity_provider",
            Role::Regulator => "regulator",
            Role::Oversight => "oversight",
        }
    }
}

/// One key's entry in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    /// Human name of the institution.
    pub name: String,
    /// Its ed25519 key.
    pub key: AccountId,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// For a regulator, the jurisdictions it supervises; for a KYC provider (required), the
    /// jurisdictions it may register identities in and act on.
    #[serde(default)]
    pub jurisdictions: BTreeSet<Jurisdiction>,
    /// For a KYC provider (required): the highest tier it may register or raise an identity
    /// to. Set by governance with the role; lowering it makes its identities above the new
    /// maximum unusable until it lowers their tier.
    #[serde(default)]
    pub max_tier: Option<Tier>,
}

impl RoleEntry {
    /// Whether the key holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// For a KYC provider in office, the highest tier it may vouch for; `None` otherwise.
    pub fn provider_max_tier(&self) -> Option<Tier> {
        self.max_tier.filter(|_| self.has(Role::KycProvider))
    }

    /// Checks text fields; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > MAX_TEXT {
            return Err(format!("role.name: 1 to {MAX_TEXT} characters"));
        }
        let covers = self.has(Role::Regulator) || self.has(Role::KycProvider);
        if !self.jurisdictions.is_empty() && !covers {
            return Err(
                "role.jurisdictions: only regulators and KYC providers cover jurisdictions".into(),
            );
        }
        if self.has(Role::KycProvider) && self.jurisdictions.is_empty() {
            return Err(
                "role.jurisdictions: a KYC provider needs the jurisdictions it may register identities in"
                    .into(),
            );
        }
        match (self.has(Role::KycProvider), self.max_tier) {
            (true, None) => {
                Err("role.max_tier: a KYC provider needs the highest tier it may register".into())
            }
            (false, Some(_)) => Err("role.max_tier: only KYC providers have a maximum tier".into()),
            _ => Ok(()),
        }
    }
}

/// A freeze and who put it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// The regulator or issuer that froze.
    pub by: AccountId,
    /// Why.
    pub reason: String,
    /// The block that froze.
    pub height: Height,
}

/// A KYC'd identity. Personal data stays with the KYC provider; the ledger holds a salted
/// commitment to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The provider's id for it.
    pub id: IdentityId,
    /// The KYC provider that registered it and alone may change it.
    pub provider: AccountId,
    /// ISO 3166-1 alpha-2 jurisdiction.
    pub jurisdiction: Jurisdiction,
    /// KYC tier.
    pub tier: Tier,
    /// Block time after which it can no longer send or receive.
    pub expires_ms: TimestampMs,
    /// sha2-256 over salt and personal data, kept off-ledger by the provider.
    pub commitment: Hash,
    /// Revoked by its provider (permanent).
    pub revoked: bool,
    /// Frozen by a regulator of its jurisdiction.
    pub frozen: Option<Freeze>,
}

/// Rolling usage of one identity as a sender, in reference minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Transfers over the rolling hour.
    pub hour: Window,
    /// Amount and transfers over the rolling 24 hours.
    pub day: Window,
    /// Amount over the rolling 30 days.
    pub thirty_days: Window,
    /// Near-threshold transfers over the rolling 24 hours (structuring).
    pub near_threshold: Window,
}

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(b'/');
        }
        k.extend_from_slice(p);
    }
    k
}

/// `role/` + key.
pub fn role_key(key_id: &AccountId) -> Vec<u8> {
    key(b"role/", &[&key_id.0])
}

/// `ident/` + identity id.
pub fn identity_key(id: &str) -> Vec<u8> {
    key(b"ident/", &[id.as_bytes()])
}

/// `usage/` + identity id.
pub fn usage_key(id: &str) -> Vec<u8> {
    key(b"usage/", &[id.as_bytes()])
}

/// `sanction/` + identity id: present when the identity is on a sanctions list.
pub fn sanction_key(id: &str) -> Vec<u8> {
    key(b"sanction/", &[id.as_bytes()])
}

/// `afreeze/` + asset + `/` + identity id: the issuer froze this identity for its asset.
pub fn asset_freeze_key(asset: &AssetCode, id: &str) -> Vec<u8> {
    key(b"afreeze/", &[asset.as_str().as_bytes(), id.as_bytes()])
}

/// The current rule set.
pub const RULES_KEY: &[u8] = b"rules/current";

/// The KYC providers and the highest tier each may register (`BTreeMap<AccountId, Tier>`),
/// kept in step with the role entries. Roles change only between blocks (genesis,
/// governance at a block's start), so execution reads it once per block.
pub const PROVIDERS_KEY: &[u8] = b"gov/kyc_providers";
