//! The consortium's rule set: plain data, versioned, changed only by governance.

use crate::primitives::{AccountId, Amount, AssetCode, IdentityId, Jurisdiction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An identity's KYC tier. What a tier allows is set per jurisdiction by the rule set.
pub type Tier = u8;

/// Most entries in one rule-set list (limits, corridors, rates, sanctioned jurisdictions).
pub const MAX_RULE_ENTRIES: usize = 1_000;

/// Value of one minor unit of an asset in minor units of the reference asset:
/// `reference = amount × numerator / denominator`, rounded up (against the sender: a limit is
/// never passed by a fraction of a unit). Neither part may be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Multiplier (not zero: a zero rate would value every amount at nothing and switch off
    /// every amount limit for the asset).
    pub numerator: u64,
    /// Divisor (not zero).
    pub denominator: u64,
}

impl Rate {
    /// Converts `amount` to reference units, rounding up; saturates at `u64::MAX` (a saturated
    /// value only makes limits stricter).
    pub fn to_reference(&self, amount: Amount) -> Amount {
        // (2^64 - 1)^2 + 2^64 - 2 < 2^128: no overflow in u128.
        let product = u128::from(amount) * u128::from(self.numerator);
        let v = product.div_ceil(u128::from(self.denominator.max(1)));
        u64::try_from(v).unwrap_or(u64::MAX)
    }
}

/// What identities of one jurisdiction and tier may send. `None` means no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Jurisdiction of the sending identity.
    pub jurisdiction: Jurisdiction,
    /// Tier of the sending identity.
    pub tier: Tier,
    /// Most one transfer may move, in reference minor units.
    #[serde(default)]
    pub per_transaction: Option<Amount>,
    /// Most sent over the rolling 24 hours, in reference minor units.
    #[serde(default)]
    pub per_day: Option<Amount>,
    /// Most sent over the rolling 30 days, in reference minor units.
    #[serde(default)]
    pub per_30_days: Option<Amount>,
    /// Most transfers sent over the rolling hour (velocity).
    #[serde(default)]
    pub transfers_per_hour: Option<u32>,
    /// Most transfers sent over the rolling 24 hours (velocity).
    #[serde(default)]
    pub transfers_per_day: Option<u32>,
}

/// An allowed cross-border direction of payment. Domestic payments need no corridor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corridor {
    /// Jurisdiction of the sender.
    pub from: Jurisdiction,
    /// Jurisdiction of the receiver.
    pub to: Jurisdiction,
}

/// Above `threshold` (reference minor units, inclusive) a transfer must carry originator and
/// beneficiary information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TravelRule {
    /// Smallest reference amount that needs travel-rule data.
    pub threshold: Amount,
}

/// Transfers "just under" `threshold` — at least `threshold × (10,000 − band_bps) / 10,000` —
/// are counted over the rolling 24 hours; when there are at least `min_transfers` of them and
/// their sum reaches `threshold`, the transfer that tips it is applied and flagged for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Structuring {
    /// The reporting threshold being avoided, in reference minor units.
    pub threshold: Amount,
    /// Width of the "just under" band, in basis points of the threshold (1 to 10,000).
    pub band_bps: u32,
    /// Fewest near-threshold transfers in 24 hours that can be flagged.
    pub min_transfers: u32,
}

impl Structuring {
    /// Whether a transfer of `reference` units is just under the threshold.
    pub fn is_near(&self, reference: Amount) -> bool {
        let floor =
            u128::from(self.threshold) * u128::from(10_000 - self.band_bps.min(10_000)) / 10_000;
        reference < self.threshold && u128::from(reference) >= floor
    }
}

/// The rule set. Execution reads it once per block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Set by the ledger: 1 at genesis, +1 at every change applied by governance; receipts name
    /// it. In a `set_rules` proposal it names the version the change was drafted against (the
    /// one in force); a genesis file's value is ignored.
    #[serde(default)]
    pub version: u64,
    /// The asset limits are expressed in.
    pub reference_asset: AssetCode,
    /// Reference rate of every asset that may move (the reference asset needs one too,
    /// normally 1/1). Set by governance.
    pub rates: BTreeMap<AssetCode, Rate>,
    /// Limits per (jurisdiction, tier). An identity whose pair is absent cannot send.
    pub limits: Vec<Limit>,
    /// Allowed cross-border directions.
    pub corridors: Vec<Corridor>,
    /// Jurisdictions whose identities never move money.
    #[serde(default)]
    pub sanctioned_jurisdictions: BTreeSet<Jurisdiction>,
    /// The travel rule, if in force.
    #[serde(default)]
    pub travel_rule: Option<TravelRule>,
    /// Structuring detection, if in force.
    #[serde(default)]
    pub structuring: Option<Structuring>,
}

impl RuleSet {
    /// Checks the rule set is usable; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.rates.len() > MAX_RULE_ENTRIES
            || self.limits.len() > MAX_RULE_ENTRIES
            || self.corridors.len() > MAX_RULE_ENTRIES
            || self.sanctioned_jurisdictions.len() > MAX_RULE_ENTRIES
        {
            return Err(format!(
                "rules: at most {MAX_RULE_ENTRIES} entries per list"
            ));
        }
        for (code, rate) in &self.rates {
            if rate.denominator == 0 {
                return Err(format!("rules.rates.{code}.denominator: must not be zero"));
            }
            if rate.numerator == 0 {
                return Err(format!(
                    "rules.rates.{code}.numerator: must not be zero (it would value every amount at nothing and lift every limit)"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, l) in self.limits.iter().enumerate() {
            if !seen.insert((l.jurisdiction, l.tier)) {
                return Err(format!(
                    "rules.limits[{i}]: duplicate entry for {} tier {}",
                    l.jurisdiction, l.tier
                ));
            }
        }
        for (i, c) in self.corridors.iter().enumerate() {
            if c.from == c.to {
                return Err(format!(
                    "rules.corridors[{i}]: {} to itself is domestic and needs no corridor",
                    c.from
                ));
            }
        }
        if let Some(s) = &self.structuring {
            if s.band_bps == 0 || s.band_bps > 10_000 {
                return Err("rules.structuring.band_bps: must be between 1 and 10000".into());
            }
            if s.threshold == 0 {
                return Err("rules.structuring.threshold: must be greater than zero".into());
            }
        }
        Ok(())
    }
}

/// What a block's payments are checked against: the rule set indexed for per-transfer
/// lookups, and the KYC providers in office with the highest tier each may vouch for.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The rule set as stored.
    pub set: RuleSet,
    limits: BTreeMap<(Jurisdiction, Tier), Limit>,
    corridors: BTreeSet<Corridor>,
    providers: BTreeMap<AccountId, Tier>,
}

impl Rules {
    /// Indexes a rule set; `providers` are the KYC providers in office and their maximum
    /// tiers (an identity whose provider is not among them cannot take part in payments).
    pub fn new(set: RuleSet, providers: BTreeMap<AccountId, Tier>) -> Rules {
        Rules {
            limits: set
                .limits
                .iter()
                .map(|l| ((l.jurisdiction, l.tier), l.clone()))
                .collect(),
            corridors: set.corridors.iter().copied().collect(),
            providers,
            set,
        }
    }

    /// The highest tier `provider` may vouch for, or `None` if it is not a KYC provider.
    pub fn provider_max_tier(&self, provider: &AccountId) -> Option<Tier> {
        self.providers.get(provider).copied()
    }

    /// Limits of one jurisdiction and tier.
    pub fn limit(&self, jurisdiction: Jurisdiction, tier: Tier) -> Option<&Limit> {
        self.limits.get(&(jurisdiction, tier))
    }

    /// Whether a payment from `from` to `to` is allowed (domestic always is).
    pub fn corridor_open(&self, from: Jurisdiction, to: Jurisdiction) -> bool {
        from == to || self.corridors.contains(&Corridor { from, to })
    }
}

/// An add or remove of one sanctions-list entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanctionsUpdate {
    /// Name of the list the entries come from (e.g. the authority's list and its date).
    pub list: String,
    /// Identities to list.
    #[serde(default)]
    pub add_identities: BTreeSet<IdentityId>,
    /// Identities to delist.
    #[serde(default)]
    pub remove_identities: BTreeSet<IdentityId>,
    /// Jurisdictions to list.
    #[serde(default)]
    pub add_jurisdictions: BTreeSet<Jurisdiction>,
    /// Jurisdictions to delist.
    #[serde(default)]
    pub remove_jurisdictions: BTreeSet<Jurisdiction>,
}

/// Most entries one sanctions update may carry.
pub const MAX_SANCTIONS_ENTRIES: usize = 20_000;

/// A sanctions CSV file is unusable; the message names the line.
#[derive(Debug, thiserror::Error)]
#[error("sanctions CSV line {line}: {message}")]
pub struct SanctionsCsvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl SanctionsUpdate {
    /// Parses a sanctions list in CSV with the header `action,type,value` (further columns,
    /// such as a note, are ignored): `action` is `add` or `remove`, `type` is `identity` or
    /// `jurisdiction`.
    pub fn from_csv(list: &str, text: &str) -> Result<SanctionsUpdate, SanctionsCsvError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text.as_bytes());
        let header_error = |message: String| SanctionsCsvError { line: 1, message };
        let headers = reader
            .headers()
            .map_err(|e| header_error(e.to_string()))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or_else(|| header_error(format!("missing column {name:?}")))
        };
        let (action_col, type_col, value_col) =
            (column("action")?, column("type")?, column("value")?);
        let mut update = SanctionsUpdate {
            list: list.to_owned(),
            ..SanctionsUpdate::default()
        };
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let err = |message: String| SanctionsCsvError { line, message };
            let record = record.map_err(|e| err(e.to_string()))?;
            let field = |c: usize| record.get(c).unwrap_or("");
            let (action, kind, value) = (field(action_col), field(type_col), field(value_col));
            let add = match action.to_ascii_lowercase().as_str() {
                "add" => true,
                "remove" => false,
                other => return Err(err(format!("action {other:?} is not add or remove"))),
            };
            match kind.to_ascii_lowercase().as_str() {
                "identity" => {
                    crate::primitives::check_identity_id(value).map_err(err)?;
                    let set = if add {
                        &mut update.add_identities
                    } else {
                        &mut update.remove_identities
                    };
                    set.insert(value.to_owned());
                }
                "jurisdiction" => {
                    let j = Jurisdiction::new(value).ok_or_else(|| {
                        err(format!("{value:?} is not an ISO 3166-1 alpha-2 code"))
                    })?;
                    let set = if add {
                        &mut update.add_jurisdictions
                    } else {
                        &mut update.remove_jurisdictions
                    };
                    set.insert(j);
                }
                other => {
                    return Err(err(format!(
                        "type {other:?} is not identity or jurisdiction"
                    )))
                }
            }
        }
        update
            .validate()
            .map_err(|message| SanctionsCsvError { line: 0, message })?;
        Ok(update)
    }

    /// Checks sizes and ids; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.add_identities.len()
            + self.remove_identities.len()
            + self.add_jurisdictions.len()
            + self.remove_jurisdictions.len();
        if n > MAX_SANCTIONS_ENTRIES {
            return Err(format!(
                "sanctions: {n} entries, at most {MAX_SANCTIONS_ENTRIES} per update"
            ));
        }
        if self.list.is_empty() || self.list.len() > 128 {
            return Err("sanctions.list: 1 to 128 characters".into());
        }
        for id in self.add_identities.iter().chain(&self.remove_identities) {
            crate::primitives::check_identity_id(id)
                .map_err(|m| format!("sanctions identity {id:?}: {m}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanctions_csv_names_the_bad_line() {
        let good = "action,type,value,note\nadd,identity,ID-7,listed 2026-11\n\
                    add,jurisdiction,KP,\nremove,identity,ID-9,delisted\n";
        let u = SanctionsUpdate::from_csv("UN-2026-11", good).unwrap();
        assert!(u.add_identities.contains("ID-7"));
        assert!(u.remove_identities.contains("ID-9"));
        assert_eq!(u.add_jurisdictions.len(), 1);
        let bad = "action,type,value\nadd,identity,ID-7\nadd,country,KP\n";
        let e = SanctionsUpdate::from_csv("x", bad).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("country"));
        let e = SanctionsUpdate::from_csv("x", "kind,value\n").unwrap_err();
        assert!(e.to_string().contains("action"));
    }

    #[test]
    fn near_threshold_band() {
        let s = Structuring {
            threshold: 1_000,
            band_bps: 1_000,
            min_transfers: 3,
        };
        assert!(!s.is_near(899));
        assert!(s.is_near(900));
        assert!(s.is_near(999));
        assert!(!s.is_near(1_000));
    }

    #[test]
    fn reference_conversion_rounds_against_the_sender_and_saturates() {
        let r = Rate {
            numerator: 108,
            denominator: 100,
        };
        assert_eq!(r.to_reference(1_000), 1_080);
        // 1.08 and 10.8 units: a fraction counts as a whole unit towards the limits.
        assert_eq!(r.to_reference(1), 2);
        assert_eq!(r.to_reference(10), 11);
        assert_eq!(r.to_reference(0), 0);
        assert_eq!(r.to_reference(u64::MAX), u64::MAX);
        let third = Rate {
            numerator: 1,
            denominator: 3,
        };
        assert_eq!(third.to_reference(3), 1);
        assert_eq!(third.to_reference(4), 2);
        let huge = Rate {
            numerator: u64::MAX,
            denominator: u64::MAX,
        };
        assert_eq!(huge.to_reference(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_zero_rate_is_refused_naming_the_field() {
        let usd = crate::primitives::AssetCode::new("USD").unwrap();
        let mut rules = RuleSet {
            version: 1,
            reference_asset: usd.clone(),
            rates: [(
                usd,
                Rate {
                    numerator: 1,
                    denominator: 1,
                },
            )]
            .into_iter()
            .collect(),
            limits: Vec::new(),
            corridors: Vec::new(),
            sanctioned_jurisdictions: BTreeSet::new(),
            travel_rule: None,
            structuring: None,
        };
        assert_eq!(rules.validate(), Ok(()));
        rules.rates.insert(
            crate::primitives::AssetCode::new("EUR").unwrap(),
            Rate {
                numerator: 0,
                denominator: 1,
            },
        );
        let err = rules.validate().unwrap_err();
        assert!(err.starts_with("rules.rates.EUR.numerator"), "{err}");
    }
}
