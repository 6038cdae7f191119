//! The genesis file: the network's identity, its first validator set, assets and balances.

use crate::block::BlockHeader;
use crate::codec;
use crate::compliance::governance::{
    Params, ValidatorEpoch, MEMBERS_KEY, PARAMS_KEY, VALIDATORS_KEY,
};
use crate::compliance::registry::{
    check_identity_id, identity_key, role_key, sanction_key, PROVIDERS_KEY, RULES_KEY,
};
use crate::compliance::{Identity, Role, RoleEntry, RuleSet, Tier};
use crate::primitives::{
    AccountId, Amount, AssetCode, Hash, IdentityId, Jurisdiction, TimestampMs,
};
use crate::{account_key, asset_key, receipt_root, AccountState, AssetInfo, State};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use crate::compliance::governance::GenesisValidator;

/// A genesis file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// It could not be read.
    #[error("genesis file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It is not valid JSON of the right shape; the message names the field.
    #[error("genesis file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// serde's message, with line and column.
        message: String,
    },
    /// It parses but is inconsistent.
    #[error("genesis: {0}")]
    Invalid(String),
}

/// An asset and its issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAsset {
    /// Code, e.g. `USD`.
    pub code: AssetCode,
    /// Decimal places of the minor unit.
    pub decimals: u8,
    /// The only account that may issue and redeem it.
    pub issuer: AccountId,
}

/// An account with opening balances (issued at genesis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// The account's public key.
    pub id: AccountId,
    /// Opening balances in minor units.
    #[serde(default)]
    pub balances: BTreeMap<AssetCode, Amount>,
}

/// An identity registered at genesis, with the accounts bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisIdentity {
    /// The provider's id for it.
    pub id: IdentityId,
    /// The KYC provider that registered it (must hold the `kyc_provider` role).
    pub provider: AccountId,
    /// ISO 3166-1 alpha-2 jurisdiction.
    pub jurisdiction: Jurisdiction,
    /// KYC tier.
    pub tier: Tier,
    /// Block time after which it expires.
    pub expires_ms: TimestampMs,
    /// Salted sha2-256 commitment to the personal data kept off-ledger.
    pub commitment: Hash,
    /// Accounts bound to it.
    #[serde(default)]
    pub accounts: Vec<AccountId>,
}

/// The whole genesis file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The network's name; signed into every transaction.
    pub chain_id: String,
    /// Timestamp of height 0; the first block's timestamp is later.
    pub genesis_time_ms: TimestampMs,
    /// The initial validator set.
    pub validators: Vec<GenesisValidator>,
    /// Consortium members (ed25519 keys allowed to connect besides validators).
    #[serde(default)]
    pub members: Vec<AccountId>,
    /// Registered assets.
    #[serde(default)]
    pub assets: Vec<GenesisAsset>,
    /// Accounts with opening balances.
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// The first role registry (validators also get the `validator` role).
    #[serde(default)]
    pub roles: Vec<RoleEntry>,
    /// Identities registered at genesis.
    #[serde(default)]
    pub identities: Vec<GenesisIdentity>,
    /// Identities on a sanctions list at genesis, with the list's name.
    #[serde(default)]
    pub sanctioned_identities: BTreeMap<IdentityId, String>,
    /// The first rule set (version 1).
    pub rules: RuleSet,
    /// Governance parameters (defaults when absent); `epoch_blocks` is fixed here.
    #[serde(default)]
    pub params: Params,
}

impl Genesis {
    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Io {
            path: p.clone(),
            source,
        })?;
        let g: Genesis = serde_json::from_str(&text).map_err(|e| GenesisError::Parse {
            path: p,
            message: e.to_string(),
        })?;
        g.initial_state()?;
        Ok(g)
    }

    /// The genesis hash: identifies the network together with the chain id.
    pub fn hash(&self) -> Hash {
        codec::hash_value(b"tally/genesis/v1", self)
    }

    /// The header of height 0, which block 1 names as its parent: the genesis state's root
    /// (`state_root`, from [`Genesis::initial_state`]), the genesis time, no transactions and no
    /// proposer (the all-zero key).
    pub fn header(&self, state_root: Hash) -> BlockHeader {
        BlockHeader {
            chain_id: self.chain_id.clone(),
            height: 0,
            round: 0,
            parent_hash: Hash::ZERO,
            proposer: AccountId([0; 32]),
            timestamp_ms: self.genesis_time_ms,
            batch_digests: Vec::new(),
            tx_count: 0,
            receipt_root: receipt_root(&[]),
            state_root,
        }
    }

    /// Validator public keys in genesis order.
    pub fn validator_keys(&self) -> Vec<AccountId> {
        self.validators.iter().map(|v| v.public_key).collect()
    }

    /// The state at height 0, after checking the file is consistent.
    pub fn initial_state(&self) -> Result<State, GenesisError> {
        let invalid = |m: String| Err(GenesisError::Invalid(m));
        if self.chain_id.is_empty() {
            return invalid("chain_id: must not be empty".into());
        }
        if self.validators.is_empty() {
            return invalid("validators: at least one validator is required".into());
        }
        let mut seen = BTreeSet::new();
        for (i, v) in self.validators.iter().enumerate() {
            if !seen.insert(v.public_key) {
                return invalid(format!("validators[{i}].public_key: duplicate"));
            }
            if !ed25519_dalek::VerifyingKey::from_bytes(&v.public_key.0).is_ok_and(|k| !k.is_weak())
            {
                return invalid(format!(
                    "validators[{i}].public_key: not an ed25519 key of full order"
                ));
            }
        }
        let mut assets: BTreeMap<AssetCode, AssetInfo> = BTreeMap::new();
        for (i, a) in self.assets.iter().enumerate() {
            let info = AssetInfo {
                code: a.code.clone(),
                decimals: a.decimals,
                issuer: a.issuer,
                supply: 0,
            };
            if assets.insert(a.code.clone(), info).is_some() {
                return invalid(format!("assets[{i}].code: duplicate {}", a.code));
            }
        }
        let mut accounts: BTreeMap<AccountId, AccountState> = BTreeMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let entry = accounts.entry(a.id).or_default();
            for (code, amount) in &a.balances {
                let Some(info) = assets.get_mut(code) else {
                    return invalid(format!("accounts[{i}].balances: unknown asset {code}"));
                };
                let (Some(supply), Some(bal)) = (
                    info.supply.checked_add(*amount),
                    entry.balance(code).checked_add(*amount),
                ) else {
                    return invalid(format!("accounts[{i}].balances.{code}: overflow"));
                };
                info.supply = supply;
                entry.balances.insert(code.clone(), bal);
            }
        }
        let mut roles: BTreeMap<AccountId, RoleEntry> = BTreeMap::new();
        for (i, r) in self.roles.iter().enumerate() {
            r.validate()
                .map_err(|m| GenesisError::Invalid(format!("roles[{i}]: {m}")))?;
            if roles.insert(r.key, r.clone()).is_some() {
                return invalid(format!("roles[{i}].key: duplicate"));
            }
        }
        for v in &self.validators {
            roles
                .entry(v.public_key)
                .or_insert_with(|| RoleEntry {
                    name: v.name.clone(),
                    key: v.public_key,
                    roles: BTreeSet::new(),
                    jurisdictions: BTreeSet::new(),
                    max_tier: None,
                })
                .roles
                .insert(Role::Validator);
        }
        let mut identities: BTreeMap<IdentityId, Identity> = BTreeMap::new();
        for (i, g) in self.identities.iter().enumerate() {
            check_identity_id(&g.id)
                .map_err(|m| GenesisError::Invalid(format!("identities[{i}].id: {m}")))?;
            let Some(max_tier) = roles
                .get(&g.provider)
                .and_then(RoleEntry::provider_max_tier)
            else {
                return invalid(format!(
                    "identities[{i}].provider: not a key with the kyc_provider role"
                ));
            };
            let in_scope = roles
                .get(&g.provider)
                .is_some_and(|r| r.jurisdictions.contains(&g.jurisdiction));
            if !in_scope {
                return invalid(format!(
                    "identities[{i}].jurisdiction: {} is not one of its provider's jurisdictions",
                    g.jurisdiction
                ));
            }
            if g.tier > max_tier {
                return invalid(format!(
                    "identities[{i}].tier: {} is above its provider's max_tier {max_tier}",
                    g.tier
                ));
            }
            let identity = Identity {
                id: g.id.clone(),
                provider: g.provider,
                jurisdiction: g.jurisdiction,
                tier: g.tier,
                expires_ms: g.expires_ms,
                commitment: g.commitment,
                revoked: false,
                frozen: None,
            };
            if identities.insert(g.id.clone(), identity).is_some() {
                return invalid(format!("identities[{i}].id: duplicate {}", g.id));
            }
            for (j, a) in g.accounts.iter().enumerate() {
                let acct = accounts.entry(*a).or_default();
                if acct.identity.is_some() {
                    return invalid(format!(
                        "identities[{i}].accounts[{j}]: account already bound"
                    ));
                }
                acct.identity = Some(g.id.clone());
            }
        }
        for id in self.sanctioned_identities.keys() {
            check_identity_id(id)
                .map_err(|m| GenesisError::Invalid(format!("sanctioned_identities.{id}: {m}")))?;
        }
        self.rules.validate().map_err(GenesisError::Invalid)?;
        for (name, value) in [
            (
                "identity_max_validity_days",
                self.params.identity_max_validity_days,
            ),
            ("proposal_voting_blocks", self.params.proposal_voting_blocks),
            ("epoch_blocks", self.params.epoch_blocks),
        ] {
            if value == 0 {
                return invalid(format!("params.{name}: must be greater than zero"));
            }
        }
        let mut rules = self.rules.clone();
        rules.version = 1;
        let mut extra = Vec::new();
        let members: BTreeSet<AccountId> = roles
            .values()
            .filter(|r| r.has(Role::Member))
            .map(|r| r.key)
            .collect();
        extra.push((MEMBERS_KEY.to_vec(), codec::encode(&members)));
        let providers: BTreeMap<AccountId, Tier> = roles
            .values()
            .filter_map(|r| Some((r.key, r.provider_max_tier()?)))
            .collect();
        extra.push((PROVIDERS_KEY.to_vec(), codec::encode(&providers)));
        extra.push((RULES_KEY.to_vec(), codec::encode(&rules)));
        extra.push((PARAMS_KEY.to_vec(), codec::encode(&self.params)));
        extra.push((
            VALIDATORS_KEY.to_vec(),
            codec::encode(&ValidatorEpoch {
                epoch: 0,
                first_height: 1,
                validators: self.validators.clone(),
            }),
        ));
        for (key, r) in &roles {
            extra.push((role_key(key), codec::encode(r)));
        }
        for (id, identity) in &identities {
            extra.push((identity_key(id), codec::encode(identity)));
        }
        for (id, list) in &self.sanctioned_identities {
            extra.push((sanction_key(id), codec::encode(list)));
        }
        let mut entries = extra;
        for (code, info) in &assets {
            entries.push((asset_key(code), codec::encode(info)));
        }
        for (id, acct) in &accounts {
            entries.push((account_key(id), codec::encode(acct)));
        }
        Ok(State::from_entries(entries))
    }
}
