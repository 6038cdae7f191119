//! Accounts and assets as stored in the state key space.

use crate::primitives::{AccountId, Amount, AssetCode, IdentityId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// State key of an account: `acct/` + the 32-byte public key.
pub fn account_key(id: &AccountId) -> Vec<u8> {
    let mut k = b"acct/".to_vec();
    k.extend_from_slice(&id.0);
    k
}

/// State key of an asset: `asset/` + its code.
pub fn asset_key(code: &AssetCode) -> Vec<u8> {
    let mut k = b"asset/".to_vec();
    k.extend_from_slice(code.as_str().as_bytes());
    k
}

/// An account's sequence number and balances. An account that never held anything has no entry
/// and reads as the default (sequence 0, no balances).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The sequence number its next transaction must carry.
    pub sequence: u64,
    /// Balances in minor units; an asset absent from the map is a zero balance.
    pub balances: BTreeMap<AssetCode, Amount>,
    /// The KYC'd identity the account is bound to; an unbound account can neither send nor
    /// receive payments.
    pub identity: Option<IdentityId>,
}

impl AccountState {
    /// Balance of one asset.
    pub fn balance(&self, asset: &AssetCode) -> Amount {
        self.balances.get(asset).copied().unwrap_or(0)
    }
}

/// A registered asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetInfo {
    /// Its code.
    pub code: AssetCode,
    /// Decimal places of one major unit (6 means 1 USD = 1,000,000 minor units).
    pub decimals: u8,
    /// The only account that may issue and redeem it.
    pub issuer: AccountId,
    /// Units in circulation: changed by issue and redeem only.
    pub supply: Amount,
}
