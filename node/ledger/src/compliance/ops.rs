//! Identity and freeze operations: KYC providers register, change, revoke and bind identities;
//! regulators freeze identities of their jurisdictions; issuers freeze identities for their
//! asset.

use super::governance::{self, params, role_entry};
use super::registry::{
    asset_freeze_key, check_identity_id, identity_key, sanction_key, Freeze, Identity, Role,
    MAX_TEXT,
};
use super::rules::Tier;
use crate::primitives::TimestampMs;
use crate::primitives::{AccountId, AssetCode, Hash, Height, IdentityId, Jurisdiction};
use crate::{account_key, asset_key, AccountState, AssetInfo, Event, Overlay};
use crate::{RejectCode, Rejection, StateError};
use serde::{Deserialize, Serialize};

/// What a KYC provider does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum IdentityOp {
    /// Registers a new identity, or one whose KYC provider has left office.
    Register {
        /// The provider's id for it.
        id: IdentityId,
        /// ISO 3166-1 alpha-2 jurisdiction.
        jurisdiction: Jurisdiction,
        /// KYC tier.
        tier: Tier,
        /// Block time after which it expires.
        expires_ms: TimestampMs,
        /// Salted sha2-256 commitment to the personal data kept off-ledger.
        commitment: Hash,
    },
    /// Changes tier, expiry (renewal) and commitment of an identity it registered.
    Update {
        /// Identity.
        id: IdentityId,
        /// New tier.
        tier: Tier,
        /// New expiry.
        expires_ms: TimestampMs,
        /// New commitment.
        commitment: Hash,
    },
    /// Revokes an identity it registered, for good.
    Revoke {
        /// Identity.
        id: IdentityId,
    },
    /// Binds an unbound account to an identity it registered.
    Bind {
        /// Identity.
        id: IdentityId,
        /// Account.
        account: AccountId,
    },
    /// Unbinds an account from an identity it registered.
    Unbind {
        /// Account.
        account: AccountId,
    },
}

/// What a regulator or issuer does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FreezeOp {
    /// A regulator of the identity's jurisdiction freezes it: it can neither send nor receive.
    Freeze {
        /// Identity.
        id: IdentityId,
        /// Why (recorded on the ledger and in receipts of refused payments).
        reason: String,
    },
    /// A regulator of the identity's jurisdiction lifts a freeze.
    Unfreeze {
        /// Identity.
        id: IdentityId,
    },
    /// An asset's issuer freezes an identity for that asset.
    FreezeAsset {
        /// The issuer's asset.
        asset: AssetCode,
        /// Identity.
        id: IdentityId,
        /// Why.
        reason: String,
    },
    /// An asset's issuer lifts its freeze.
    UnfreezeAsset {
        /// The issuer's asset.
        asset: AssetCode,
        /// Identity.
        id: IdentityId,
    },
}

impl IdentityOp {
    /// Stateless checks; the error names the field.
    pub fn check_shape(&self) -> Result<(), String> {
        match self {
            IdentityOp::Register { id, .. }
            | IdentityOp::Update { id, .. }
            | IdentityOp::Revoke { id }
            | IdentityOp::Bind { id, .. } => check_identity_id(id).map_err(|m| format!("id: {m}")),
            IdentityOp::Unbind { .. } => Ok(()),
        }
    }
}

impl FreezeOp {
    /// Stateless checks; the error names the field.
    pub fn check_shape(&self) -> Result<(), String> {
        let (id, reason) = match self {
            FreezeOp::Freeze { id, reason } | FreezeOp::FreezeAsset { id, reason, .. } => {
                (id, Some(reason))
            }
            FreezeOp::Unfreeze { id } | FreezeOp::UnfreezeAsset { id, .. } => (id, None),
        };
        check_identity_id(id).map_err(|m| format!("id: {m}"))?;
        if reason.is_some_and(|r| r.trim().is_empty() || r.len() > MAX_TEXT) {
            return Err(format!("reason: 1 to {MAX_TEXT} characters"));
        }
        Ok(())
    }
}

type Outcome = Result<Result<Vec<Event>, Rejection>, StateError>;

fn refuse(code: RejectCode, reason: String) -> Outcome {
    Ok(Err(Rejection::new(code, reason)))
}

fn load_identity(o: &Overlay<'_>, id: &str) -> Result<Result<Identity, Rejection>, StateError> {
    Ok(o.get::<Identity>(&identity_key(id))?.ok_or_else(|| {
        Rejection::new(
            RejectCode::UnknownIdentity,
            format!("identity {id} is not registered"),
        )
    }))
}

/// Runs a KYC provider's operation.
pub fn identity_op(
    o: &mut Overlay<'_>,
    sender: &AccountId,
    now: TimestampMs,
    op: &IdentityOp,
) -> Outcome {
    let Some((entry, max_tier)) =
        role_entry(o, sender)?.and_then(|e| e.provider_max_tier().map(|t| (e, t)))
    else {
        return refuse(
            RejectCode::Unauthorized,
            format!("{sender} is not a registered KYC provider"),
        );
    };
    // A provider acts only in the jurisdictions governance gave it.
    let check_jurisdiction = |j: &Jurisdiction| {
        (!entry.jurisdictions.contains(j)).then(|| {
            Rejection::new(
                RejectCode::Unauthorized,
                format!("jurisdiction {j} is not one this KYC provider may act in"),
            )
        })
    };
    let check_tier = |tier: Tier| {
        (tier > max_tier).then(|| {
            Rejection::new(
                RejectCode::Unauthorized,
                format!(
                    "tier {tier} is above {max_tier}, the highest this KYC provider may vouch for"
                ),
            )
        })
    };
    let max_expiry = now.saturating_add(
        params(o)?
            .identity_max_validity_days
            .saturating_mul(86_400_000),
    );
    let check_expiry = |expires_ms: TimestampMs| {
        (expires_ms > max_expiry).then(|| {
            Rejection::new(
                RejectCode::InvalidRequest,
                format!("expiry {expires_ms} is beyond the longest validity (until {max_expiry})"),
            )
        })
    };
    // The identity the operation is about, which the sender must have registered.
    let own = |o: &Overlay<'_>, id: &str| -> Result<Result<Identity, Rejection>, StateError> {
        Ok(load_identity(o, id)?.and_then(|i| {
            if i.provider != *sender {
                return Err(Rejection::new(
                    RejectCode::Unauthorized,
                    format!("identity {id} was registered by another KYC provider"),
                ));
            }
            match check_jurisdiction(&i.jurisdiction) {
                Some(r) => Err(r),
                None => Ok(i),
            }
        }))
    };
    match op {
        IdentityOp::Register {
            id,
            jurisdiction,
            tier,
            expires_ms,
            commitment,
        } => {
            // An identity whose provider has left office may be registered again by another
            // (a new KYC of the same customer): its bound accounts, usage and any regulator's
            // freeze stay; a revocation is permanent.
            let previous = o.get::<Identity>(&identity_key(id))?;
            if let Some(p) = &previous {
                if governance::kyc_providers(o)?.contains_key(&p.provider) {
                    return refuse(
                        RejectCode::IdentityExists,
                        format!("identity {id} is already registered"),
                    );
                }
                if p.revoked {
                    return refuse(
                        RejectCode::InvalidRequest,
                        format!("identity {id} is revoked"),
                    );
                }
                // A take-over keeps the person where they are: their regulator's scope, their
                // corridors and any sanctioned jurisdiction stay in force.
                if p.jurisdiction != *jurisdiction {
                    return refuse(
                        RejectCode::InvalidRequest,
                        format!(
                            "identity {id} is registered in {}; taking it over keeps its jurisdiction",
                            p.jurisdiction
                        ),
                    );
                }
            }
            if let Some(r) = check_jurisdiction(jurisdiction)
                .or_else(|| check_tier(*tier))
                .or_else(|| check_expiry(*expires_ms))
            {
                return Ok(Err(r));
            }
            let identity = Identity {
                id: id.clone(),
                provider: *sender,
                jurisdiction: *jurisdiction,
                tier: *tier,
                expires_ms: *expires_ms,
                commitment: *commitment,
                revoked: false,
                frozen: previous.and_then(|p| p.frozen),
            };
            o.put(identity_key(id), &identity);
            Ok(Ok(vec![Event::IdentityRegistered { id: id.clone() }]))
        }
        IdentityOp::Update {
            id,
            tier,
            expires_ms,
            commitment,
        } => {
            let mut identity = match own(o, id)? {
                Ok(i) => i,
                Err(r) => return Ok(Err(r)),
            };
            if identity.revoked {
                return refuse(
                    RejectCode::InvalidRequest,
                    format!("identity {id} is revoked"),
                );
            }
            if let Some(r) = check_tier(*tier).or_else(|| check_expiry(*expires_ms)) {
                return Ok(Err(r));
            }
            identity.tier = *tier;
            identity.expires_ms = *expires_ms;
            identity.commitment = *commitment;
            o.put(identity_key(id), &identity);
            Ok(Ok(vec![Event::IdentityUpdated { id: id.clone() }]))
        }
        IdentityOp::Revoke { id } => {
            let mut identity = match own(o, id)? {
                Ok(i) => i,
                Err(r) => return Ok(Err(r)),
            };
            identity.revoked = true;
            o.put(identity_key(id), &identity);
            Ok(Ok(vec![Event::IdentityRevoked { id: id.clone() }]))
        }
        IdentityOp::Bind { id, account } => {
            if let Err(r) = own(o, id)? {
                return Ok(Err(r));
            }
            let mut acct: AccountState = o.get(&account_key(account))?.unwrap_or_default();
            if let Some(current) = &acct.identity {
                return refuse(
                    RejectCode::InvalidRequest,
                    format!("account {account} is already bound to identity {current}"),
                );
            }
            acct.identity = Some(id.clone());
            o.put(account_key(account), &acct);
            Ok(Ok(vec![Event::AccountBound {
                account: *account,
                id: id.clone(),
            }]))
        }
        IdentityOp::Unbind { account } => {
            let mut acct: AccountState = o.get(&account_key(account))?.unwrap_or_default();
            let Some(current) = acct.identity.clone() else {
                return refuse(
                    RejectCode::InvalidRequest,
                    format!("account {account} is not bound"),
                );
            };
            let identity = match own(o, &current)? {
                Ok(i) => i,
                Err(r) => return Ok(Err(r)),
            };
            // An account stays with a frozen or listed person: unbinding it and binding it to a
            // fresh identity would walk out of the freeze, the listing and the person's
            // rolling limits.
            if let Some(why) = held(o, &identity, &acct)? {
                return refuse(
                    RejectCode::InvalidRequest,
                    format!("account {account} stays bound to identity {current}: {why}"),
                );
            }
            acct.identity = None;
            o.put(account_key(account), &acct);
            Ok(Ok(vec![Event::AccountUnbound {
                account: *account,
                id: current,
            }]))
        }
    }
}

/// Why an identity's accounts must stay bound to it, if they must: a regulator's freeze, a
/// sanctions listing, or an issuer's freeze of an asset the account holds.
fn held(
    o: &Overlay<'_>,
    identity: &Identity,
    account: &AccountState,
) -> Result<Option<String>, StateError> {
    if identity.frozen.is_some() {
        return Ok(Some("the identity is frozen".into()));
    }
    if o.get::<String>(&sanction_key(&identity.id))?.is_some() {
        return Ok(Some("a sanctions list names the identity".into()));
    }
    for asset in account.balances.keys() {
        if o.get::<Freeze>(&asset_freeze_key(asset, &identity.id))?
            .is_some()
        {
            return Ok(Some(format!("the identity is frozen for {asset}")));
        }
    }
    Ok(None)
}

/// Runs a regulator's or issuer's freeze operation.
pub fn freeze_op(
    o: &mut Overlay<'_>,
    sender: &AccountId,
    height: Height,
    op: &FreezeOp,
) -> Outcome {
    match op {
        FreezeOp::Freeze { id, .. } | FreezeOp::Unfreeze { id } => {
            let mut identity = match load_identity(o, id)? {
                Ok(i) => i,
                Err(r) => return Ok(Err(r)),
            };
            let covers = role_entry(o, sender)?.is_some_and(|e| {
                e.has(Role::Regulator) && e.jurisdictions.contains(&identity.jurisdiction)
            });
            if !covers {
                return refuse(
                    RejectCode::Unauthorized,
                    format!(
                        "{sender} is not a regulator of {}, the jurisdiction of identity {id}",
                        identity.jurisdiction
                    ),
                );
            }
            let event = if let FreezeOp::Freeze { reason, .. } = op {
                identity.frozen = Some(Freeze {
                    by: *sender,
                    reason: reason.clone(),
                    height,
                });
                Event::IdentityFrozen { id: id.clone() }
            } else {
                identity.frozen = None;
                Event::IdentityUnfrozen { id: id.clone() }
            };
            o.put(identity_key(id), &identity);
            Ok(Ok(vec![event]))
        }
        FreezeOp::FreezeAsset { asset, id, .. } | FreezeOp::UnfreezeAsset { asset, id } => {
            let Some(info) = o.get::<AssetInfo>(&asset_key(asset))? else {
                return refuse(
                    RejectCode::UnknownAsset,
                    format!("asset {asset} is not registered"),
                );
            };
            if info.issuer != *sender {
                return refuse(
                    RejectCode::UnauthorizedIssuer,
                    format!("only the issuer of {asset} may freeze identities for it"),
                );
            }
            if let Err(r) = load_identity(o, id)? {
                return Ok(Err(r));
            }
            let key = asset_freeze_key(asset, id);
            let event = if let FreezeOp::FreezeAsset { reason, .. } = op {
                o.put(
                    key,
                    &Freeze {
                        by: *sender,
                        reason: reason.clone(),
                        height,
                    },
                );
                Event::AssetFrozen {
                    asset: asset.clone(),
                    id: id.clone(),
                }
            } else {
                o.delete(key);
                Event::AssetUnfrozen {
                    asset: asset.clone(),
                    id: id.clone(),
                }
            };
            Ok(Ok(vec![event]))
        }
    }
}
