//! The genesis file: the network's identity, its first validator set, assets and balances.

use crate::codec;
use crate::ledger::{account_key, asset_key, AccountState, AssetInfo, State};
use crate::primitives::{AccountId, Amount, AssetCode, Hash, TimestampMs};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

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

/// One validator of the initial set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Human name, e.g. the member institution.
    pub name: String,
    /// Its ed25519 key: consensus key and libp2p identity.
    pub public_key: AccountId,
    /// Its libp2p address, e.g. `/ip4/10.0.0.5/tcp/7000`.
    pub p2p_addr: String,
    /// Its HTTP API address, e.g. `10.0.0.5:8700`.
    pub api_addr: String,
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
            if ed25519_dalek::VerifyingKey::from_bytes(&v.public_key.0).is_err() {
                return invalid(format!("validators[{i}].public_key: not an ed25519 key"));
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
        let mut entries = Vec::new();
        for (code, info) in &assets {
            entries.push((asset_key(code), codec::encode(info)));
        }
        for (id, acct) in &accounts {
            entries.push((account_key(id), codec::encode(acct)));
        }
        Ok(State::from_entries(entries))
    }
}
