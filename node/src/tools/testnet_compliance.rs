//! The demo compliance setup of `tally testnet init` and `tally devnet`: a consortium with
//! members, a KYC provider, regulators and a liquidity provider; identities in a few
//! jurisdictions; a realistic rule set; and dedicated scenario accounts whose payments hit each
//! rule (see `scenarios`).

use crate::keys;
use ed25519_dalek::SigningKey;
use std::collections::{BTreeMap, BTreeSet};
use tally_ledger::compliance::{
    Corridor, Limit, Rate, Role, RoleEntry, RuleSet, Structuring, TravelRule,
};
use tally_ledger::genesis::{GenesisAccount, GenesisAsset, GenesisIdentity};
use tally_ledger::primitives::{AccountId, AssetCode, Hash, Jurisdiction, TimestampMs};

/// Minor units per major unit of the demo assets (6 decimals).
pub const UNIT: u64 = 1_000_000;

/// Jurisdictions of the demo load accounts, assigned round-robin.
pub const LOAD_JURISDICTIONS: &[&str] = &["DE", "FR", "GB", "SG"];

/// Where the demo KYC provider may register identities: every jurisdiction of the demo's
/// customers (KP for the sanctioned-corridor scenario).
pub const DEMO_KYC_JURISDICTIONS: &[&str] = &["DE", "FR", "GB", "KP", "SG", "US"];

/// A demo asset listed without a reference rate: payments in it are refused (`rates.missing`)
/// until governance sets one.
pub const UNRATED_ASSET: &str = "GBP";

/// The highest tier the demo KYC provider may vouch for.
pub const DEMO_KYC_MAX_TIER: u8 = 5;

/// Demo identities are valid for two years from genesis.
const TWO_YEARS_MS: u64 = 2 * 365 * 86_400_000;

fn j(code: &str) -> Jurisdiction {
    // Only called with the literal codes of this file.
    Jurisdiction::new(code).unwrap_or_else(|| panic!("demo jurisdiction {code}"))
}

fn asset(code: &str) -> AssetCode {
    AssetCode::new(code).unwrap_or_else(|| panic!("demo asset {code}"))
}

/// The demo rule set: USD reference; EUR and SGD rates (GBP, listed later, has none yet);
/// four tiers in five jurisdictions (tier 5 has no limits: identities there cannot pay);
/// corridors among DE, FR, GB and SG plus US with DE and GB; KP and IR sanctioned; the travel
/// rule and structuring detection at 1,000 USD.
pub fn demo_rules() -> RuleSet {
    let rates = [("USD", 1, 1), ("EUR", 108, 100), ("SGD", 74, 100)]
        .into_iter()
        .map(|(c, n, d)| {
            (
                asset(c),
                Rate {
                    numerator: n,
                    denominator: d,
                },
            )
        })
        .collect();
    let mut limits = Vec::new();
    for code in ["DE", "FR", "GB", "SG", "US"] {
        limits.push(Limit {
            jurisdiction: j(code),
            tier: 1,
            per_transaction: Some(1_000 * UNIT),
            per_day: Some(2_000 * UNIT),
            per_30_days: Some(10_000 * UNIT),
            transfers_per_hour: Some(20),
            transfers_per_day: Some(100),
        });
        limits.push(Limit {
            jurisdiction: j(code),
            tier: 2,
            per_transaction: Some(10_000 * UNIT),
            per_day: Some(25_000 * UNIT),
            per_30_days: Some(100_000 * UNIT),
            transfers_per_hour: Some(200),
            transfers_per_day: Some(2_000),
        });
        // Tier 4: basic KYC (a phone and a document): small sums, few payments a day, a low
        // monthly total, no daily amount cap of its own.
        limits.push(Limit {
            jurisdiction: j(code),
            tier: 4,
            per_transaction: Some(100 * UNIT),
            per_day: None,
            per_30_days: Some(150 * UNIT),
            transfers_per_hour: None,
            transfers_per_day: Some(5),
        });
        // Tier 3: institutions and liquidity providers, monitored but not capped.
        limits.push(Limit {
            jurisdiction: j(code),
            tier: 3,
            per_transaction: None,
            per_day: None,
            per_30_days: None,
            transfers_per_hour: None,
            transfers_per_day: None,
        });
    }
    let mut corridors = Vec::new();
    for a in LOAD_JURISDICTIONS {
        for b in LOAD_JURISDICTIONS {
            if a != b {
                corridors.push(Corridor {
                    from: j(a),
                    to: j(b),
                });
            }
        }
    }
    for (a, b) in [("US", "DE"), ("DE", "US"), ("US", "GB"), ("GB", "US")] {
        corridors.push(Corridor {
            from: j(a),
            to: j(b),
        });
    }
    RuleSet {
        version: 1,
        reference_asset: asset("USD"),
        rates,
        limits,
        corridors,
        sanctioned_jurisdictions: [j("KP"), j("IR")].into(),
        travel_rule: Some(TravelRule {
            threshold: 1_000 * UNIT,
        }),
        structuring: Some(Structuring {
            threshold: 1_000 * UNIT,
            band_bps: 1_000,
            min_transfers: 3,
        }),
    }
}

/// A demo scenario account: its identity's jurisdiction and tier, and how it starts.
struct ScenarioSpec {
    name: &'static str,
    jurisdiction: &'static str,
    tier: u8,
    bound: bool,
    expired: bool,
    sanctioned: bool,
}

const SCENARIOS: &[ScenarioSpec] = &[
    spec("retail-de", "DE", 1),
    spec("velocity-de", "DE", 1),
    spec("daily-de", "DE", 1),
    spec("daily-count-de", "DE", 4),
    spec("monthly-de", "DE", 4),
    spec("payer-de", "DE", 2),
    spec("payee-gb", "GB", 2),
    spec("payer-sg", "SG", 2),
    spec("payee-us", "US", 2),
    spec("structuring-fr", "FR", 2),
    spec("frozen-de", "DE", 2),
    spec("revoked-de", "DE", 2),
    spec("asset-frozen-sg", "SG", 2),
    spec("kp-resident", "KP", 2),
    ScenarioSpec {
        sanctioned: true,
        ..spec("listed-de", "DE", 2)
    },
    ScenarioSpec {
        expired: true,
        ..spec("expired-fr", "FR", 2)
    },
    ScenarioSpec {
        bound: false,
        ..spec("unbound", "DE", 2)
    },
];

const fn spec(name: &'static str, jurisdiction: &'static str, tier: u8) -> ScenarioSpec {
    ScenarioSpec {
        name,
        jurisdiction,
        tier,
        bound: true,
        expired: false,
        sanctioned: false,
    }
}

/// The demo consortium: every key beyond validators, issuers and load accounts, by name
/// (`member-i`, `kyc`, `regulator-eu`, `regulator-apac`, `regulator-uk`, `regulator-us`,
/// `liquidity`, `scenario-<name>`).
pub struct DemoCompliance {
    /// Keys by name.
    pub keys: BTreeMap<String, SigningKey>,
    /// Role registry.
    pub roles: Vec<RoleEntry>,
    /// Identities.
    pub identities: Vec<GenesisIdentity>,
    /// Opening balances of scenario accounts.
    pub accounts: Vec<GenesisAccount>,
    /// Sanctioned identities.
    pub sanctioned: BTreeMap<String, String>,
    /// Assets of the demo beyond the ones the caller issues: GBP, listed without a reference
    /// rate (its issuer is the named key `issuer-GBP`).
    pub assets: Vec<GenesisAsset>,
}

/// Salted commitment for demo identities (the "personal data" is the id itself here).
fn commitment(id: &str) -> Hash {
    tally_ledger::codec::hash_with_domain(b"tally/demo-kyc/v1", id.as_bytes())
}

impl DemoCompliance {
    /// Builds the demo consortium around the given validators, issuers (asset → issuer key)
    /// and load accounts. `existing` keys (read back from disk) are reused by name.
    pub fn build(
        validators: usize,
        genesis_time_ms: TimestampMs,
        issuers: &BTreeMap<AssetCode, SigningKey>,
        load_accounts: &[SigningKey],
        mut existing: BTreeMap<String, SigningKey>,
    ) -> DemoCompliance {
        let mut key = |name: String| existing.remove(&name).unwrap_or_else(keys::generate);
        let mut named = BTreeMap::new();
        let mut roles = Vec::new();
        let mut add_role = |named: &mut BTreeMap<String, SigningKey>,
                            name: String,
                            k: SigningKey,
                            r: &[Role],
                            js: &[&str]| {
            roles.push(RoleEntry {
                name: name.clone(),
                key: keys::account_id(&k),
                roles: r.iter().copied().collect(),
                jurisdictions: js.iter().map(|c| j(c)).collect(),
                max_tier: None,
            });
            named.insert(name, k);
        };
        for i in 0..validators {
            let name = format!("member-{i}");
            let k = key(name.clone());
            add_role(&mut named, name, k, &[Role::Member], &[]);
        }
        let k = key("kyc".into());
        add_role(
            &mut named,
            "kyc".into(),
            k,
            &[Role::KycProvider],
            DEMO_KYC_JURISDICTIONS,
        );
        for (name, js) in [
            ("regulator-eu", &["DE", "FR"][..]),
            ("regulator-uk", &["GB"][..]),
            ("regulator-apac", &["SG"][..]),
            ("regulator-us", &["US"][..]),
        ] {
            let k = key(name.into());
            add_role(&mut named, name.into(), k, &[Role::Regulator], js);
        }
        let k = key("liquidity".into());
        add_role(
            &mut named,
            "liquidity".into(),
            k,
            &[Role::LiquidityProvider],
            &[],
        );
        // GBP is listed, held by the scenario accounts, but has no reference rate yet.
        let gbp_issuer = key(format!("issuer-{UNRATED_ASSET}"));
        let assets = vec![GenesisAsset {
            code: asset(UNRATED_ASSET),
            decimals: 6,
            issuer: keys::account_id(&gbp_issuer),
        }];
        add_role(
            &mut named,
            format!("issuer-{UNRATED_ASSET}"),
            gbp_issuer,
            &[Role::Issuer],
            &[],
        );
        // The demo scenarios register a tier-5 identity (one the rules give no limits).
        for r in roles.iter_mut().filter(|r| r.has(Role::KycProvider)) {
            r.max_tier = Some(DEMO_KYC_MAX_TIER);
        }
        let provider = keys::account_id(&named["kyc"]);
        let expires_ms = genesis_time_ms.saturating_add(TWO_YEARS_MS);
        let mut identities = Vec::new();
        let mut ident =
            |id: String, jur: &str, tier: u8, expires_ms: u64, accounts: Vec<AccountId>| {
                identities.push(GenesisIdentity {
                    commitment: commitment(&id),
                    id,
                    provider,
                    jurisdiction: j(jur),
                    tier,
                    expires_ms,
                    accounts,
                });
            };
        for (code, k) in issuers {
            let jur = match code.as_str() {
                "EUR" => "DE",
                "SGD" => "SG",
                _ => "US",
            };
            roles.push(RoleEntry {
                name: format!("issuer of {code}"),
                key: keys::account_id(k),
                roles: [Role::Issuer].into(),
                jurisdictions: BTreeSet::new(),
                max_tier: None,
            });
            ident(
                format!("issuer-{code}"),
                jur,
                3,
                expires_ms,
                vec![keys::account_id(k)],
            );
        }
        for (n, k) in load_accounts.iter().enumerate() {
            let jur = LOAD_JURISDICTIONS[n % LOAD_JURISDICTIONS.len()];
            ident(
                format!("business-{n}"),
                jur,
                3,
                expires_ms,
                vec![keys::account_id(k)],
            );
        }
        let mut accounts = Vec::new();
        let mut sanctioned = BTreeMap::new();
        for s in SCENARIOS {
            let name = format!("scenario-{}", s.name);
            let k = key(name.clone());
            let id = keys::account_id(&k);
            let identity = format!("person-{}", s.name);
            let expiry = if s.expired {
                genesis_time_ms + 1
            } else {
                expires_ms
            };
            let bound = if s.bound { vec![id] } else { Vec::new() };
            ident(identity.clone(), s.jurisdiction, s.tier, expiry, bound);
            if s.sanctioned {
                sanctioned.insert(identity, "demo consolidated list 2026-11".to_owned());
            }
            accounts.push(GenesisAccount {
                id,
                balances: [
                    (asset("USD"), 100_000 * UNIT),
                    (asset("SGD"), 100_000 * UNIT),
                    (asset(UNRATED_ASSET), 1_000 * UNIT),
                ]
                .into(),
            });
            named.insert(name, k);
        }
        DemoCompliance {
            keys: named,
            roles,
            identities,
            accounts,
            sanctioned,
            assets,
        }
    }
}

/// The simplest compliant setup, for tests and tools that are not about compliance: one KYC
/// provider (`provider`), one tier-3 identity in DE per account, and a rule set with a 1:1
/// rate for each asset and no limits.
pub struct SimpleCompliance {
    /// Roles (the provider).
    pub roles: Vec<RoleEntry>,
    /// One identity per account.
    pub identities: Vec<GenesisIdentity>,
    /// The rule set.
    pub rules: RuleSet,
}

impl SimpleCompliance {
    /// Builds it for `accounts` and `assets`, with `provider` as the KYC provider's key.
    pub fn new(provider: AccountId, accounts: &[AccountId], assets: &[AssetCode]) -> Self {
        let roles = vec![RoleEntry {
            name: "kyc".into(),
            key: provider,
            roles: [Role::KycProvider].into(),
            jurisdictions: [j("DE")].into_iter().collect(),
            max_tier: Some(3),
        }];
        let identities = accounts
            .iter()
            .map(|a| {
                let id = format!("id-{}", &a.to_hex()[..16]);
                GenesisIdentity {
                    commitment: commitment(&id),
                    id,
                    provider,
                    jurisdiction: j("DE"),
                    tier: 3,
                    expires_ms: u64::MAX,
                    accounts: vec![*a],
                }
            })
            .collect();
        let rules = RuleSet {
            version: 1,
            reference_asset: assets.first().cloned().unwrap_or_else(|| asset("USD")),
            rates: assets
                .iter()
                .map(|a| {
                    (
                        a.clone(),
                        Rate {
                            numerator: 1,
                            denominator: 1,
                        },
                    )
                })
                .collect(),
            limits: vec![Limit {
                jurisdiction: j("DE"),
                tier: 3,
                per_transaction: None,
                per_day: None,
                per_30_days: None,
                transfers_per_hour: None,
                transfers_per_day: None,
            }],
            corridors: Vec::new(),
            sanctioned_jurisdictions: BTreeSet::new(),
            travel_rule: None,
            structuring: None,
        };
        SimpleCompliance {
            roles,
            identities,
            rules,
        }
    }
}
