//! The compliance decision for one payment, run inside execution against the transaction's
//! overlay: a rejection changes nothing, an applied payment updates the sender's rolling usage.

use super::registry::{asset_freeze_key, identity_key, sanction_key, usage_key, Identity, Usage};
use super::rules::Rules;
use super::window::{DAY, HOUR, THIRTY_DAYS};
use crate::primitives::{AccountId, Amount, AssetCode, TimestampMs};
use crate::{AccountState, Flag, Overlay, Rejection, StateError};
use serde::{Deserialize, Serialize};

/// Longest travel-rule text field, in bytes.
pub const MAX_TRAVEL_FIELD: usize = 140;

/// A natural or legal person in travel-rule data (IVMS101-style fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Full name (natural person) or legal name.
    pub name: String,
    /// The ledger account.
    pub account: AccountId,
    /// Geographic address.
    #[serde(default)]
    pub address: Option<String>,
    /// National or customer identification number.
    #[serde(default)]
    pub national_id: Option<String>,
    /// Date and place of birth.
    #[serde(default)]
    pub date_and_place_of_birth: Option<String>,
}

/// Originator and beneficiary information that travels with a transfer above the travel-rule
/// threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TravelRuleData {
    /// The payer.
    pub originator: Party,
    /// The payee.
    pub beneficiary: Party,
}

impl TravelRuleData {
    /// Checks field sizes; the error names the field.
    pub fn check_shape(&self) -> Result<(), String> {
        for (who, p) in [
            ("originator", &self.originator),
            ("beneficiary", &self.beneficiary),
        ] {
            let fields = [
                ("name", Some(&p.name)),
                ("address", p.address.as_ref()),
                ("national_id", p.national_id.as_ref()),
                (
                    "date_and_place_of_birth",
                    p.date_and_place_of_birth.as_ref(),
                ),
            ];
            for (name, value) in fields {
                if value.is_some_and(|v| v.len() > MAX_TRAVEL_FIELD) {
                    return Err(format!(
                        "travel_rule.{who}.{name}: longer than {MAX_TRAVEL_FIELD} bytes"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A payment as compliance sees it.
pub struct Payment<'a> {
    /// Paying account and its state.
    pub from: (&'a AccountId, &'a AccountState),
    /// Receiving account and its state.
    pub to: (&'a AccountId, &'a AccountState),
    /// Asset.
    pub asset: &'a AssetCode,
    /// Minor units.
    pub amount: Amount,
    /// Travel-rule data carried by the transfer.
    pub travel: Option<&'a TravelRuleData>,
}

/// A rule's refusal.
fn refuse(rules: &Rules, rule_id: &str, reason: String) -> Rejection {
    Rejection::rule(rule_id, rules.set.version, reason)
}

/// Loads the identity an account is bound to and checks it may take part in a payment of
/// `asset` at `now`: bound, not sanctioned, not revoked, vouched for by a KYC provider in
/// office within its maximum tier, not expired, not frozen (by a regulator, or by the issuer
/// for this asset).
pub fn check_party(
    o: &Overlay<'_>,
    rules: &Rules,
    account: (&AccountId, &AccountState),
    asset: &AssetCode,
    now: TimestampMs,
    role: &str,
) -> Result<Result<Identity, Rejection>, StateError> {
    let (id, state) = account;
    let identity = match &state.identity {
        Some(ident) => o.get::<Identity>(&identity_key(ident))?,
        None => None,
    };
    let Some(identity) = identity else {
        return Ok(Err(refuse(
            rules,
            "identity.unbound",
            format!("{role} account {id} is not bound to a KYC'd identity"),
        )));
    };
    let who = format!("{role} identity {}", identity.id);
    if let Some(list) = o.get::<String>(&sanction_key(&identity.id))? {
        return Ok(Err(refuse(
            rules,
            "sanctions.identity",
            format!("{who} is on sanctions list {list}"),
        )));
    }
    if rules
        .set
        .sanctioned_jurisdictions
        .contains(&identity.jurisdiction)
    {
        return Ok(Err(refuse(
            rules,
            "sanctions.jurisdiction",
            format!(
                "{who} is in sanctioned jurisdiction {}",
                identity.jurisdiction
            ),
        )));
    }
    if identity.revoked {
        return Ok(Err(refuse(
            rules,
            "identity.revoked",
            format!("{who} was revoked by its KYC provider"),
        )));
    }
    match rules.provider_max_tier(&identity.provider) {
        None => {
            return Ok(Err(refuse(
                rules,
                "identity.provider_removed",
                format!(
                    "{who} was registered by {}, which is no longer a KYC provider; another \
                     provider must register it again",
                    identity.provider
                ),
            )))
        }
        Some(max) if identity.tier > max => {
            return Ok(Err(refuse(
                rules,
                "identity.tier_not_allowed",
                format!(
                    "{who} is at tier {}, above the {max} its KYC provider may vouch for",
                    identity.tier
                ),
            )))
        }
        Some(_) => {}
    }
    if now > identity.expires_ms {
        return Ok(Err(refuse(
            rules,
            "identity.expired",
            format!(
                "{who} expired at {} ms, block time is {now} ms",
                identity.expires_ms
            ),
        )));
    }
    if let Some(f) = &identity.frozen {
        return Ok(Err(refuse(
            rules,
            "identity.frozen",
            format!("{who} is frozen by regulator {}: {}", f.by, f.reason),
        )));
    }
    if let Some(f) = o.get::<super::registry::Freeze>(&asset_freeze_key(asset, &identity.id))? {
        return Ok(Err(refuse(
            rules,
            "asset.frozen",
            format!("{who} is frozen for {asset} by its issuer: {}", f.reason),
        )));
    }
    Ok(Ok(identity))
}

/// Decides a transfer. On success the sender's usage is updated in the overlay and the flags
/// to put on the receipt are returned.
pub fn check_transfer(
    o: &mut Overlay<'_>,
    rules: &Rules,
    now: TimestampMs,
    p: &Payment<'_>,
) -> Result<Result<Vec<Flag>, Rejection>, StateError> {
    let sender = match check_party(o, rules, p.from, p.asset, now, "sender")? {
        Ok(i) => i,
        Err(r) => return Ok(Err(r)),
    };
    let receiver = match check_party(o, rules, p.to, p.asset, now, "receiver")? {
        Ok(i) => i,
        Err(r) => return Ok(Err(r)),
    };
    let decision = decide(o, rules, now, p, &sender, &receiver)?;
    Ok(decision)
}

fn decide(
    o: &mut Overlay<'_>,
    rules: &Rules,
    now: TimestampMs,
    p: &Payment<'_>,
    sender: &Identity,
    receiver: &Identity,
) -> Result<Result<Vec<Flag>, Rejection>, StateError> {
    let reject = |rule: &str, reason: String| Ok(Err(refuse(rules, rule, reason)));
    let (sj, rj) = (sender.jurisdiction, receiver.jurisdiction);
    if !rules.corridor_open(sj, rj) {
        return reject(
            "corridor.closed",
            format!("payments from {sj} to {rj} are not an allowed corridor"),
        );
    }
    let Some(rate) = rules.set.rates.get(p.asset) else {
        return reject(
            "rates.missing",
            format!("no reference rate is set for {}", p.asset),
        );
    };
    let reference = rate.to_reference(p.amount);
    let ref_code = &rules.set.reference_asset;
    let Some(limit) = rules.limit(sj, sender.tier) else {
        return reject(
            "limit.undefined",
            format!("no limits are defined for {sj} tier {}", sender.tier),
        );
    };
    if let Some(max) = limit.per_transaction {
        if reference > max {
            return reject(
                "limit.per_transaction",
                format!(
                    "{reference} {ref_code} exceeds the per-transaction limit {max} of {sj} tier {}",
                    sender.tier
                ),
            );
        }
    }
    let key = usage_key(&sender.id);
    let mut usage: Usage = o.get(&key)?.unwrap_or_default();
    usage.hour.advance(HOUR, now);
    usage.day.advance(DAY, now);
    usage.thirty_days.advance(THIRTY_DAYS, now);
    usage.near_threshold.advance(DAY, now);
    if let Some(max) = limit.transfers_per_hour {
        if usage.hour.count() >= max {
            return reject(
                "velocity.hourly",
                format!(
                    "{} already made {max} transfers in the rolling hour",
                    sender.id
                ),
            );
        }
    }
    if let Some(max) = limit.transfers_per_day {
        if usage.day.count() >= max {
            return reject(
                "velocity.daily",
                format!(
                    "{} already made {max} transfers in the rolling 24 hours",
                    sender.id
                ),
            );
        }
    }
    if let Some(max) = limit.per_day {
        let total = usage.day.amount().saturating_add(reference);
        if total > max {
            return reject(
                "limit.daily",
                format!(
                    "{total} {ref_code} over the rolling 24 hours would exceed the limit {max}"
                ),
            );
        }
    }
    if let Some(max) = limit.per_30_days {
        let total = usage.thirty_days.amount().saturating_add(reference);
        if total > max {
            return reject(
                "limit.30_days",
                format!("{total} {ref_code} over the rolling 30 days would exceed the limit {max}"),
            );
        }
    }
    if let Some(tr) = &rules.set.travel_rule {
        if reference >= tr.threshold {
            if let Err(why) = travel_rule_complete(p) {
                return reject(
                    "travel_rule.missing",
                    format!(
                        "{reference} {ref_code} is at or above the travel-rule threshold {}: {why}",
                        tr.threshold
                    ),
                );
            }
        }
    }
    usage.hour.add(HOUR, now, reference);
    usage.day.add(DAY, now, reference);
    usage.thirty_days.add(THIRTY_DAYS, now, reference);
    let mut flags = Vec::new();
    if let Some(s) = &rules.set.structuring {
        if s.is_near(reference) {
            usage.near_threshold.add(DAY, now, reference);
            let (n, sum) = (usage.near_threshold.count(), usage.near_threshold.amount());
            if n >= s.min_transfers && sum >= s.threshold {
                flags.push(Flag {
                    rule_id: "structuring.suspected".into(),
                    rule_version: rules.set.version,
                    reason: format!(
                        "{n} transfers just under {} {ref_code} within 24 hours sum to {sum}",
                        s.threshold
                    ),
                });
            }
        }
    }
    o.put(key, &usage);
    Ok(Ok(flags))
}

/// Travel-rule data must be present, name both parties, match the transfer's accounts, and
/// identify the originator by address, national id, or date and place of birth.
fn travel_rule_complete(p: &Payment<'_>) -> Result<(), &'static str> {
    let Some(t) = p.travel else {
        return Err("originator and beneficiary information is missing");
    };
    if t.originator.name.trim().is_empty() || t.beneficiary.name.trim().is_empty() {
        return Err("originator and beneficiary names are required");
    }
    if t.originator.account != *p.from.0 || t.beneficiary.account != *p.to.0 {
        return Err("originator and beneficiary accounts must be the transfer's accounts");
    }
    let o = &t.originator;
    let identified = [&o.address, &o.national_id, &o.date_and_place_of_birth]
        .iter()
        .any(|f| f.as_ref().is_some_and(|v| !v.trim().is_empty()));
    if !identified {
        return Err("the originator needs an address, a national id, or date and place of birth");
    }
    Ok(())
}
