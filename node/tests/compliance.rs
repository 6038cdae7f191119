//! Compliance rules through real execution: each rule's allow, reject and flag paths with their
//! codes, rolling windows at their edges, freezes, revocation, governance applying exactly at
//! its height, and a property that blocked identities never move money. (Long because every
//! rule keeps its allow, reject and flag cases side by side.)

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tally_ledger::compliance::governance::{proposal_key, VALIDATORS_KEY};
use tally_ledger::compliance::registry::role_key;
use tally_ledger::compliance::{
    FreezeOp, GovAction, IdentityOp, Limit, Params, Party, Proposal, ProposalStatus, Role,
    RoleEntry, TravelRuleData, ValidatorEpoch,
};
use tally_ledger::genesis::{
    Genesis, GenesisAccount, GenesisAsset, GenesisIdentity, GenesisValidator,
};
use tally_ledger::primitives::{AccountId, AssetCode, Hash, Jurisdiction};
use tally_ledger::tx::{Payload, Transaction, Transfer, VerifiedTransaction};
use tally_ledger::{execute_block, BlockContext, Event, Outcome, Receipt, State};
use tally_node::keys::account_id;
use tally_node::tools::testnet_compliance::{demo_rules, UNIT};

const CHAIN: &str = "compliance";
const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
/// Block time of the first block: day 100, 00:00.
const T0: u64 = 100 * DAY_MS;

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn id(i: u8) -> AccountId {
    account_id(&key(i))
}

fn usd() -> AssetCode {
    AssetCode::new("USD").unwrap()
}

fn sgd() -> AssetCode {
    AssetCode::new("SGD").unwrap()
}

fn jur(c: &str) -> Jurisdiction {
    Jurisdiction::new(c).unwrap()
}

// Keys.
const KYC: u8 = 1;
/// The highest tier the KYC providers may vouch for (tier 5 has no limits in the demo rules).
const KYC_MAX_TIER: u8 = 5;
const REG_EU: u8 = 2;
const REG_SG: u8 = 3;
const ISSUER_USD: u8 = 4;
const ISSUER_SGD: u8 = 5;
const KYC_2: u8 = 6; // a second KYC provider
const MEMBERS: [u8; 4] = [10, 11, 12, 13];
// Accounts: (key, identity, jurisdiction, tier).
const RETAIL_DE: u8 = 20; // tier 1
const PAYER_DE: u8 = 21; // tier 2
const PAYEE_GB: u8 = 22;
const PAYER_SG: u8 = 23;
const PAYEE_US: u8 = 24;
const KP: u8 = 25;
const LISTED: u8 = 26;
const EXPIRED: u8 = 27;
const UNBOUND: u8 = 28;
const PAYER_FR: u8 = 29;
const RETAIL_DE_2: u8 = 30; // tier 1

const PEOPLE: &[(u8, &str, u8)] = &[
    (RETAIL_DE, "DE", 1),
    (PAYER_DE, "DE", 2),
    (PAYEE_GB, "GB", 2),
    (PAYER_SG, "SG", 2),
    (PAYEE_US, "US", 2),
    (KP, "KP", 2),
    (LISTED, "DE", 2),
    (EXPIRED, "FR", 2),
    (PAYER_FR, "FR", 2),
    (RETAIL_DE_2, "DE", 1),
];

/// Where the first KYC provider may act: every jurisdiction of `PEOPLE`.
const KYC_JURISDICTIONS: &[&str] = &["DE", "FR", "GB", "KP", "SG", "US"];

/// The genesis validators (id 98 joins in a test).
const VALIDATORS: [u8; 4] = [95, 96, 97, 99];

fn validator(k: u8) -> GenesisValidator {
    GenesisValidator {
        name: format!("v{k}"),
        public_key: id(k),
        p2p_addr: format!("/ip4/127.0.0.1/tcp/{k}"),
        api_addr: format!("127.0.0.1:{k}"),
    }
}

fn ident(k: u8) -> String {
    format!("person-{k}")
}

fn genesis() -> Genesis {
    let role = |k: u8, roles: &[Role], js: &[&str]| RoleEntry {
        name: format!("key-{k}"),
        key: id(k),
        roles: roles.iter().copied().collect(),
        jurisdictions: js.iter().map(|c| jur(c)).collect(),
        max_tier: roles.contains(&Role::KycProvider).then_some(KYC_MAX_TIER),
    };
    let mut roles = vec![
        role(KYC, &[Role::KycProvider], KYC_JURISDICTIONS),
        role(KYC_2, &[Role::KycProvider], &["DE", "SG"]),
        role(REG_EU, &[Role::Regulator], &["DE", "FR"]),
        role(REG_SG, &[Role::Regulator], &["SG"]),
        role(ISSUER_USD, &[Role::Issuer], &[]),
        role(ISSUER_SGD, &[Role::Issuer], &[]),
    ];
    roles.extend(MEMBERS.iter().map(|m| role(*m, &[Role::Member], &[])));
    let mut identities: Vec<GenesisIdentity> = PEOPLE
        .iter()
        .map(|(k, j, tier)| GenesisIdentity {
            id: ident(*k),
            provider: id(KYC),
            jurisdiction: jur(j),
            tier: *tier,
            expires_ms: if *k == EXPIRED {
                T0 - 1
            } else {
                T0 + 365 * DAY_MS
            },
            commitment: Hash([*k; 32]),
            accounts: vec![id(*k)],
        })
        .collect();
    for (issuer, jurisdiction) in [(ISSUER_USD, "DE"), (ISSUER_SGD, "SG")] {
        identities.push(GenesisIdentity {
            id: ident(issuer),
            provider: id(KYC),
            jurisdiction: jur(jurisdiction),
            tier: 3,
            expires_ms: T0 + 365 * DAY_MS,
            commitment: Hash([issuer; 32]),
            accounts: vec![id(issuer)],
        });
    }
    let mut accounts: Vec<GenesisAccount> = PEOPLE
        .iter()
        .map(|(k, ..)| GenesisAccount {
            id: id(*k),
            balances: [(usd(), 1_000_000 * UNIT), (sgd(), 1_000_000 * UNIT)].into(),
        })
        .collect();
    accounts.push(GenesisAccount {
        id: id(UNBOUND),
        balances: [(usd(), 10_000 * UNIT)].into(),
    });
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: T0 - 1,
        validators: VALIDATORS.iter().map(|k| validator(*k)).collect(),
        members: vec![],
        assets: vec![
            GenesisAsset {
                code: usd(),
                decimals: 6,
                issuer: id(ISSUER_USD),
            },
            GenesisAsset {
                code: sgd(),
                decimals: 6,
                issuer: id(ISSUER_SGD),
            },
        ],
        accounts,
        roles,
        identities,
        sanctioned_identities: [(ident(LISTED), "test list".to_owned())].into(),
        rules: demo_rules(),
        params: Params {
            epoch_blocks: 10,
            ..Params::default()
        },
    }
}

/// A ledger driven block by block, signing for any key and tracking sequences.
struct Ledger {
    state: State,
    height: u64,
    seqs: BTreeMap<u8, u64>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            state: genesis().initial_state().unwrap(),
            height: 0,
            seqs: BTreeMap::new(),
        }
    }

    fn tx(&mut self, signer: u8, payload: Payload) -> VerifiedTransaction {
        let seq = self.seqs.entry(signer).or_default();
        let signed = Transaction {
            chain_id: CHAIN.into(),
            sender: id(signer),
            sequence: *seq,
            expiry_height: u64::MAX,
            payload,
        }
        .sign(&key(signer));
        signed.verify(CHAIN).unwrap()
    }

    /// Executes one block at time `at` and commits it; sequences of rejected transactions are
    /// not consumed.
    fn block(&mut self, at: u64, txs: Vec<VerifiedTransaction>) -> Vec<Receipt> {
        self.height += 1;
        let ctx = BlockContext {
            height: self.height,
            timestamp_ms: at,
        };
        let out = execute_block(&self.state, &ctx, &txs).unwrap();
        self.state.apply(&out.writes);
        for (tx, r) in txs.iter().zip(&out.receipts) {
            if r.outcome == Outcome::Applied {
                let signer = self.signer_of(&tx.tx.sender);
                *self.seqs.entry(signer).or_default() += 1;
            }
        }
        out.receipts
    }

    fn signer_of(&self, a: &AccountId) -> u8 {
        (0..=255u8).find(|k| id(*k) == *a).unwrap()
    }

    /// One transaction in its own block at `at`.
    fn run(&mut self, at: u64, signer: u8, payload: Payload) -> Receipt {
        let tx = self.tx(signer, payload);
        self.block(at, vec![tx]).remove(0)
    }

    fn pay(&mut self, at: u64, from: u8, to: u8, asset: AssetCode, major: u64) -> Receipt {
        self.run(at, from, transfer(from, to, asset, major * UNIT, false))
    }

    fn balance(&self, k: u8, asset: &AssetCode) -> u64 {
        self.state
            .get_raw(&tally_ledger::account_key(&id(k)))
            .map(|b| {
                tally_ledger::codec::decode::<tally_ledger::AccountState>(b, 1 << 20)
                    .unwrap()
                    .balance(asset)
            })
            .unwrap_or(0)
    }
}

fn travel(from: u8, to: u8) -> TravelRuleData {
    TravelRuleData {
        originator: Party {
            name: "Erika Mustermann".into(),
            account: id(from),
            address: Some("Heidestrasse 17, 51147 Koeln, DE".into()),
            national_id: None,
            date_and_place_of_birth: None,
        },
        beneficiary: Party {
            name: "John Smith".into(),
            account: id(to),
            address: None,
            national_id: None,
            date_and_place_of_birth: None,
        },
    }
}

fn transfer(from: u8, to: u8, asset: AssetCode, amount: u64, with_travel: bool) -> Payload {
    Payload::Transfer(Transfer {
        to: id(to),
        asset,
        amount,
        memo: None,
        travel: with_travel.then(|| travel(from, to)),
    })
}

/// `(code, rule)` of a receipt: rule is the flag's rule id, or "" when there is none.
/// The stateless check's refusal of a member's proposal (it never reaches a block).
fn stateless_refusal(action: GovAction) -> tally_ledger::tx::TxError {
    Transaction {
        chain_id: CHAIN.into(),
        sender: id(MEMBERS[0]),
        sequence: 1,
        expiry_height: 10,
        payload: Payload::Propose {
            action,
            effective_height: 20,
        },
    }
    .sign(&key(MEMBERS[0]))
    .verify(CHAIN)
    .unwrap_err()
}

fn decision(r: &Receipt) -> (String, String) {
    (
        r.code.clone(),
        r.flags
            .first()
            .map(|f| f.rule_id.clone())
            .unwrap_or_default(),
    )
}

#[test]
fn each_rule_allows_and_refuses_with_its_code() {
    struct Case {
        name: &'static str,
        from: u8,
        to: u8,
        asset: fn() -> AssetCode,
        major: u64,
        travel: bool,
        expect: (&'static str, &'static str),
    }
    let case = |name, from, to, major, expect| Case {
        name,
        from,
        to,
        asset: usd,
        major,
        travel: false,
        expect,
    };
    let cases = [
        case("domestic tier 2", PAYER_DE, RETAIL_DE, 500, ("ok", "")),
        case("open corridor", PAYER_DE, PAYEE_GB, 500, ("ok", "")),
        case("open corridor to US", PAYER_DE, PAYEE_US, 500, ("ok", "")),
        case(
            "closed corridor",
            PAYER_SG,
            PAYEE_US,
            5,
            ("compliance_rejected", "corridor.closed"),
        ),
        case(
            "closed corridor, other direction",
            PAYEE_US,
            PAYER_SG,
            5,
            ("compliance_rejected", "corridor.closed"),
        ),
        case(
            "sanctioned sender",
            LISTED,
            PAYER_DE,
            5,
            ("compliance_rejected", "sanctions.identity"),
        ),
        case(
            "sanctioned receiver",
            PAYER_DE,
            LISTED,
            5,
            ("compliance_rejected", "sanctions.identity"),
        ),
        case(
            "sanctioned jurisdiction",
            PAYER_DE,
            KP,
            5,
            ("compliance_rejected", "sanctions.jurisdiction"),
        ),
        case(
            "expired sender",
            EXPIRED,
            PAYER_FR,
            5,
            ("compliance_rejected", "identity.expired"),
        ),
        case(
            "expired receiver",
            PAYER_FR,
            EXPIRED,
            5,
            ("compliance_rejected", "identity.expired"),
        ),
        case(
            "unbound sender",
            UNBOUND,
            PAYER_DE,
            5,
            ("compliance_rejected", "identity.unbound"),
        ),
        case(
            "unbound receiver",
            PAYER_DE,
            UNBOUND,
            5,
            ("compliance_rejected", "identity.unbound"),
        ),
        case(
            "tier 1 at its per-transaction limit",
            RETAIL_DE,
            PAYER_DE,
            999,
            ("ok", ""),
        ),
        case(
            "tier 1 over its per-transaction limit",
            RETAIL_DE,
            PAYER_DE,
            1_001,
            ("compliance_rejected", "limit.per_transaction"),
        ),
        case(
            "tier 2 over the travel-rule threshold without data",
            PAYER_DE,
            PAYEE_GB,
            1_500,
            ("compliance_rejected", "travel_rule.missing"),
        ),
        Case {
            travel: true,
            ..case(
                "tier 2 over the travel-rule threshold with data",
                PAYER_DE,
                PAYEE_GB,
                1_500,
                ("ok", ""),
            )
        },
        Case {
            asset: sgd,
            // 1,400 SGD is 1,036 USD: over the threshold in reference terms.
            ..case(
                "threshold applies in reference currency",
                PAYER_SG,
                PAYEE_GB,
                1_400,
                ("compliance_rejected", "travel_rule.missing"),
            )
        },
        Case {
            asset: sgd,
            ..case(
                "under the threshold in reference currency",
                PAYER_SG,
                PAYEE_GB,
                1_300,
                ("ok", ""),
            )
        },
    ];
    for c in cases {
        let mut l = Ledger::new();
        let before = l.state.root();
        let r = l.run(
            T0,
            c.from,
            transfer(c.from, c.to, (c.asset)(), c.major * UNIT, c.travel),
        );
        let (code, rule) = decision(&r);
        assert_eq!(
            (code.as_str(), rule.as_str()),
            c.expect,
            "{}: {}",
            c.name,
            r.reason
        );
        if r.outcome == Outcome::Rejected {
            assert_eq!(
                l.state.root(),
                before,
                "{}: a rejection changed state",
                c.name
            );
            assert_eq!(r.flags[0].rule_version, 1, "{}", c.name);
            assert!(
                r.reason.contains(&rule),
                "{}: reason names the rule",
                c.name
            );
        }
    }
}

#[test]
fn travel_rule_data_must_match_the_transfer() {
    let mut l = Ledger::new();
    let mut data = travel(PAYER_DE, PAYEE_GB);
    data.beneficiary.account = id(RETAIL_DE);
    let p = Payload::Transfer(Transfer {
        to: id(PAYEE_GB),
        asset: usd(),
        amount: 2_000 * UNIT,
        memo: None,
        travel: Some(data),
    });
    let r = l.run(T0, PAYER_DE, p);
    assert_eq!(decision(&r).1, "travel_rule.missing");
    assert!(r.reason.contains("accounts"), "{}", r.reason);
    let mut data = travel(PAYER_DE, PAYEE_GB);
    data.originator.address = None;
    let p = Payload::Transfer(Transfer {
        to: id(PAYEE_GB),
        asset: usd(),
        amount: 2_000 * UNIT,
        memo: None,
        travel: Some(data),
    });
    let r = l.run(T0, PAYER_DE, p);
    assert!(r.reason.contains("address"), "{}", r.reason);
}

#[test]
fn daily_limit_counts_the_rolling_24_hours_to_the_edge() {
    let mut l = Ledger::new();
    // Tier 1: 2,000 USD per 24 h. 10:00 and 10:30 on day 0.
    let t = T0 + 10 * HOUR_MS;
    assert_eq!(l.pay(t, RETAIL_DE, PAYER_DE, usd(), 800).code, "ok");
    assert_eq!(
        l.pay(t + 30 * 60_000, RETAIL_DE, PAYER_DE, usd(), 800).code,
        "ok"
    );
    let r = l.pay(t + 5 * HOUR_MS, RETAIL_DE, PAYER_DE, usd(), 800);
    assert_eq!(decision(&r).1, "limit.daily", "{}", r.reason);
    // At 10:00 the next day the 10:30 payment is 23 h 30 min old: both still count, or two
    // daily caps would fit within 24 hours...
    let r = l.pay(t + DAY_MS, RETAIL_DE, PAYER_DE, usd(), 800);
    assert_eq!(decision(&r).1, "limit.daily", "{}", r.reason);
    // ...and so they do up to the end of their hour's bucket (24 h 30 min after the later)...
    let r = l.pay(t + DAY_MS + HOUR_MS - 1, RETAIL_DE, PAYER_DE, usd(), 800);
    assert_eq!(decision(&r).1, "limit.daily");
    // ...and at 11:00 they have left the window.
    assert_eq!(
        l.pay(t + DAY_MS + HOUR_MS, RETAIL_DE, PAYER_DE, usd(), 800)
            .code,
        "ok"
    );
}

#[test]
fn thirty_day_limit_and_velocity_windows() {
    let mut l = Ledger::new();
    // Tier 1: 10,000 USD per 30 days, 2,000 per day: 900 a day for 11 days is 9,900.
    for d in 0..11 {
        assert_eq!(
            l.pay(T0 + d * DAY_MS, RETAIL_DE, PAYER_DE, usd(), 900).code,
            "ok"
        );
    }
    let r = l.pay(T0 + 11 * DAY_MS, RETAIL_DE, PAYER_DE, usd(), 200);
    assert_eq!(decision(&r).1, "limit.30_days", "{}", r.reason);
    assert_eq!(
        l.pay(T0 + 11 * DAY_MS, RETAIL_DE, PAYER_DE, usd(), 100)
            .code,
        "ok"
    );
    // 30 days after day 0's 900 it still counts (the window is never shorter than 30 days)...
    let r = l.pay(T0 + 30 * DAY_MS, RETAIL_DE, PAYER_DE, usd(), 900);
    assert_eq!(decision(&r).1, "limit.30_days", "{}", r.reason);
    // ...and on day 31 it has left.
    assert_eq!(
        l.pay(T0 + 31 * DAY_MS, RETAIL_DE, PAYER_DE, usd(), 900)
            .code,
        "ok"
    );

    // Velocity: tier 1 makes at most 20 transfers per rolling hour.
    let mut l = Ledger::new();
    let t = T0 + 3 * HOUR_MS;
    for i in 0..20 {
        assert_eq!(l.pay(t + i, RETAIL_DE_2, PAYER_DE, usd(), 1).code, "ok");
    }
    let r = l.pay(t + 20, RETAIL_DE_2, PAYER_DE, usd(), 1);
    assert_eq!(decision(&r).1, "velocity.hourly");
    // An hour after the first they still count; a minute later (the first minute's bucket has
    // left) there is room again.
    let r = l.pay(t + HOUR_MS, RETAIL_DE_2, PAYER_DE, usd(), 1);
    assert_eq!(decision(&r).1, "velocity.hourly");
    assert_eq!(
        l.pay(t + HOUR_MS + 60_000, RETAIL_DE_2, PAYER_DE, usd(), 1)
            .code,
        "ok"
    );
}

#[test]
fn daily_velocity_counts_transfers_over_the_rolling_24_hours() {
    // Tier 1: 20 transfers an hour and 100 a day: 20 in each of five hours (62 minutes apart,
    // so the hourly window has let the last 20 go) is the day's 100.
    let mut l = Ledger::new();
    let slot = |h: u64| T0 + h * (HOUR_MS + 120_000);
    for h in 0..5 {
        for i in 0..20 {
            let r = l.pay(slot(h) + i, RETAIL_DE, PAYER_DE, usd(), 1);
            assert_eq!(r.code, "ok", "hour {h}, transfer {i}: {}", r.reason);
        }
    }
    let r = l.pay(slot(5), RETAIL_DE, PAYER_DE, usd(), 1);
    assert_eq!(decision(&r).1, "velocity.daily", "{}", r.reason);
    // 24 hours after the first hour's transfers they still count; once that hour's bucket
    // has left, there is room again.
    let r = l.pay(T0 + DAY_MS, RETAIL_DE, PAYER_DE, usd(), 1);
    assert_eq!(decision(&r).1, "velocity.daily", "{}", r.reason);
    let r = l.pay(T0 + DAY_MS + HOUR_MS, RETAIL_DE, PAYER_DE, usd(), 1);
    assert_eq!(r.code, "ok", "{}", r.reason);
}

#[test]
fn every_threshold_admits_its_exact_value_and_refuses_one_unit_more() {
    let mut l = Ledger::new();
    // Per transaction (tier 1: 1,000 USD), with travel data (the threshold is also 1,000).
    let pay = |l: &mut Ledger, from: u8, to: u8, amount: u64, travel: bool| {
        l.run(T0, from, transfer(from, to, usd(), amount, travel))
    };
    let r = pay(&mut l, RETAIL_DE, PAYER_DE, 1_000 * UNIT + 1, true);
    assert_eq!(decision(&r).1, "limit.per_transaction", "{}", r.reason);
    assert_eq!(
        pay(&mut l, RETAIL_DE, PAYER_DE, 1_000 * UNIT, true).code,
        "ok"
    );
    // The travel rule applies from its threshold up: one minor unit below needs no data.
    let r = pay(&mut l, PAYER_DE, PAYEE_GB, 1_000 * UNIT, false);
    assert_eq!(decision(&r).1, "travel_rule.missing", "{}", r.reason);
    assert_eq!(
        pay(&mut l, PAYER_DE, PAYEE_GB, 1_000 * UNIT - 1, false).code,
        "ok"
    );
    // An identity may pay at its expiry time, not one millisecond later.
    let expires = T0 + 365 * DAY_MS;
    let r = l.pay(expires, PAYER_DE, PAYEE_GB, usd(), 5);
    assert_eq!(r.code, "ok", "{}", r.reason);
    let r = l.pay(expires + 1, PAYER_DE, PAYEE_GB, usd(), 5);
    assert_eq!(decision(&r).1, "identity.expired", "{}", r.reason);
}

#[test]
fn an_asset_without_a_rate_and_a_tier_without_limits_are_refused_by_default() {
    let mut g = genesis();
    g.rules.rates.remove(&sgd());
    let mut l = Ledger {
        state: g.initial_state().unwrap(),
        height: 0,
        seqs: BTreeMap::new(),
    };
    let r = l.pay(T0, PAYER_DE, RETAIL_DE, sgd(), 5);
    assert_eq!(decision(&r).1, "rates.missing", "{}", r.reason);
    assert!(r.reason.contains("SGD"), "{}", r.reason);
    assert_eq!(l.pay(T0, PAYER_DE, RETAIL_DE, usd(), 5).code, "ok");
    // Tier 5 has no limits entry: deny by default, naming the jurisdiction and tier.
    let update = Payload::Identity(IdentityOp::Update {
        id: ident(PAYER_DE),
        tier: 5,
        expires_ms: T0 + 30 * DAY_MS,
        commitment: Hash([7; 32]),
    });
    assert_eq!(l.run(T0, KYC, update).code, "ok");
    let r = l.pay(T0, PAYER_DE, RETAIL_DE, usd(), 5);
    assert_eq!(decision(&r).1, "limit.undefined", "{}", r.reason);
}

#[test]
fn structuring_is_flagged_not_refused() {
    let mut l = Ledger::new();
    // Three transfers of 950 USD (just under 1,000) within 24 hours.
    let first = l.pay(T0, PAYER_FR, PAYER_DE, usd(), 950);
    let second = l.pay(T0 + HOUR_MS, PAYER_FR, PAYER_DE, usd(), 950);
    let third = l.pay(T0 + 2 * HOUR_MS, PAYER_FR, PAYER_DE, usd(), 950);
    assert_eq!(decision(&first), ("ok".into(), "".into()));
    assert_eq!(decision(&second), ("ok".into(), "".into()));
    assert_eq!(
        decision(&third),
        ("ok".into(), "structuring.suspected".into())
    );
    assert!(
        third.flags[0].reason.contains("3 transfers"),
        "{}",
        third.flags[0].reason
    );
    // A transfer well under the band is not counted and not flagged.
    assert!(l
        .pay(T0 + 3 * HOUR_MS, PAYER_FR, PAYER_DE, usd(), 100)
        .flags
        .is_empty());
    assert_eq!(l.balance(PAYER_FR, &usd()), (1_000_000 - 2_950) * UNIT);
}

#[test]
fn regulators_freeze_their_jurisdictions_and_issuers_their_asset() {
    let mut l = Ledger::new();
    let freeze = |id| {
        Payload::Freeze(FreezeOp::Freeze {
            id,
            reason: "court order 17/2026".into(),
        })
    };
    // The SG regulator cannot freeze a DE identity.
    let r = l.run(T0, REG_SG, freeze(ident(PAYER_DE)));
    assert_eq!(r.code, "unauthorized");
    assert_eq!(l.run(T0, REG_EU, freeze(ident(PAYER_DE))).code, "ok");
    let r = l.pay(T0, PAYER_DE, PAYEE_GB, usd(), 5);
    assert_eq!(decision(&r).1, "identity.frozen");
    assert!(r.reason.contains("court order"), "{}", r.reason);
    let r = l.pay(T0, PAYEE_GB, PAYER_DE, usd(), 5);
    assert_eq!(
        decision(&r).1,
        "identity.frozen",
        "a frozen identity cannot receive"
    );
    let unfreeze = Payload::Freeze(FreezeOp::Unfreeze {
        id: ident(PAYER_DE),
    });
    assert_eq!(l.run(T0, REG_EU, unfreeze).code, "ok");
    assert_eq!(l.pay(T0, PAYER_DE, PAYEE_GB, usd(), 5).code, "ok");

    // The SGD issuer freezes an identity for SGD only.
    let fa = Payload::Freeze(FreezeOp::FreezeAsset {
        asset: sgd(),
        id: ident(PAYER_SG),
        reason: "issuer review".into(),
    });
    assert_eq!(
        l.run(T0, ISSUER_USD, fa.clone()).code,
        "unauthorized_issuer"
    );
    assert_eq!(l.run(T0, ISSUER_SGD, fa).code, "ok");
    let r = l.pay(T0, PAYER_SG, PAYEE_GB, sgd(), 5);
    assert_eq!(decision(&r).1, "asset.frozen");
    assert_eq!(l.pay(T0, PAYER_SG, PAYEE_GB, usd(), 5).code, "ok");
}

/// Issuing and redeeming pass the same identity checks as a payment: the issuer's own identity
/// must be in good standing, and new units cross a border only along an open corridor.
#[test]
fn issuers_are_checked_like_payers() {
    let mut l = Ledger::new();
    let issue = |to, amount| Payload::Issue {
        to: id(to),
        asset: sgd(),
        amount,
    };
    let redeem = |amount| Payload::Redeem {
        asset: sgd(),
        amount,
    };
    assert_eq!(l.run(T0, ISSUER_SGD, issue(PAYER_SG, 50)).code, "ok");
    assert_eq!(l.run(T0, ISSUER_SGD, issue(ISSUER_SGD, 10)).code, "ok");
    // SG to US is not a corridor: the SGD issuer in SG cannot mint into a US account.
    let r = l.run(T0, ISSUER_SGD, issue(PAYEE_US, 50));
    assert_eq!(decision(&r).1, "corridor.closed", "{}", r.reason);
    // A regulator freezes the issuer's identity: it can neither issue nor redeem.
    let freeze = Payload::Freeze(FreezeOp::Freeze {
        id: ident(ISSUER_SGD),
        reason: "supervisory action 3/2026".into(),
    });
    assert_eq!(l.run(T0, REG_SG, freeze).code, "ok");
    let r = l.run(T0, ISSUER_SGD, issue(PAYER_SG, 50));
    assert_eq!(decision(&r).1, "identity.frozen", "{}", r.reason);
    assert!(r.reason.contains("issuer"), "{}", r.reason);
    let r = l.run(T0, ISSUER_SGD, redeem(1));
    assert_eq!(decision(&r).1, "identity.frozen", "{}", r.reason);
    let unfreeze = Payload::Freeze(FreezeOp::Unfreeze {
        id: ident(ISSUER_SGD),
    });
    assert_eq!(l.run(T0, REG_SG, unfreeze).code, "ok");
    assert_eq!(l.run(T0, ISSUER_SGD, redeem(1)).code, "ok");
}

#[test]
fn kyc_providers_register_bind_change_and_revoke() {
    let mut l = Ledger::new();
    let register = Payload::Identity(IdentityOp::Register {
        id: "new-person".into(),
        jurisdiction: jur("DE"),
        tier: 1,
        expires_ms: T0 + 100 * DAY_MS,
        commitment: Hash([7; 32]),
    });
    assert_eq!(l.run(T0, PAYER_DE, register.clone()).code, "unauthorized");
    assert_eq!(l.run(T0, KYC, register.clone()).code, "ok");
    assert_eq!(l.run(T0, KYC, register).code, "identity_exists");
    let bind = Payload::Identity(IdentityOp::Bind {
        id: "new-person".into(),
        account: id(UNBOUND),
    });
    assert_eq!(l.run(T0, KYC, bind).code, "ok");
    assert_eq!(l.pay(T0, UNBOUND, PAYER_DE, usd(), 5).code, "ok");
    // Tier 1 refuses 1,500; after an upgrade to tier 2 it passes (with travel data).
    let big = transfer(UNBOUND, PAYER_DE, usd(), 1_500 * UNIT, true);
    assert_eq!(
        decision(&l.run(T0, UNBOUND, big.clone())).1,
        "limit.per_transaction"
    );
    let upgrade = Payload::Identity(IdentityOp::Update {
        id: "new-person".into(),
        tier: 2,
        expires_ms: T0 + 100 * DAY_MS,
        commitment: Hash([8; 32]),
    });
    assert_eq!(l.run(T0, KYC, upgrade).code, "ok");
    assert_eq!(l.run(T0, UNBOUND, big).code, "ok");
    let revoke = Payload::Identity(IdentityOp::Revoke {
        id: "new-person".into(),
    });
    assert_eq!(l.run(T0, KYC, revoke).code, "ok");
    assert_eq!(
        decision(&l.pay(T0, UNBOUND, PAYER_DE, usd(), 5)).1,
        "identity.revoked"
    );
    // Identities expire by block time.
    let r = l.pay(T0 + 365 * DAY_MS + 1, PAYER_DE, PAYEE_GB, usd(), 5);
    assert_eq!(decision(&r).1, "identity.expired");
}

#[test]
fn a_governance_rule_change_applies_exactly_at_its_height() {
    let mut l = Ledger::new();
    let mut rules = demo_rules();
    for limit in rules.limits.iter_mut().filter(|x| x.tier == 1) {
        limit.per_transaction = Some(1_500 * UNIT);
    }
    let effective = 7;
    let propose = Payload::Propose {
        action: GovAction::SetRules(rules),
        effective_height: effective,
    };
    // A non-member cannot propose.
    assert_eq!(l.run(T0, PAYER_DE, propose.clone()).code, "unauthorized");
    let r = l.run(T0, MEMBERS[0], propose); // height 2
    assert_eq!(r.code, "ok");
    assert_eq!(l.height, 2);
    let vote = |approve| Payload::Vote {
        proposal: 1,
        approve,
    };
    // 2 of 4 is not more than two thirds; 3 of 4 is.
    assert_eq!(l.run(T0, MEMBERS[1], vote(true)).events.len(), 1); // height 3
    let r = l.run(T0, MEMBERS[2], vote(true)); // height 4
    assert!(
        format!("{:?}", r.events).contains("ProposalPassed"),
        "{:?}",
        r.events
    );
    assert_eq!(l.run(T0, MEMBERS[3], vote(false)).code, "proposal_closed");
    // Height 6: still version 1.
    let tx = l.tx(
        RETAIL_DE,
        transfer(RETAIL_DE, PAYER_DE, usd(), 1_200 * UNIT, true),
    );
    let r = l.block(T0, vec![tx]).remove(0);
    assert_eq!(l.height, effective - 1);
    assert_eq!(decision(&r).1, "limit.per_transaction");
    assert_eq!(r.flags[0].rule_version, 1);
    assert_eq!(r.rules_version, 1);
    // Height 7: the new rule set is in force from the block's first transaction.
    let tx = l.tx(
        RETAIL_DE,
        transfer(RETAIL_DE, PAYER_DE, usd(), 1_200 * UNIT, true),
    );
    let r = l.block(T0, vec![tx]).remove(0);
    assert_eq!(l.height, effective);
    assert_eq!(r.code, "ok", "{}", r.reason);
    // An applied payment's receipt names the rule-set version that checked it, flags or not.
    assert!(r.flags.is_empty());
    assert_eq!(r.rules_version, 2);
    let r = l.pay(T0, RETAIL_DE, PAYER_DE, usd(), 1_600);
    assert_eq!(r.flags[0].rule_version, 2);
    // A proposal that never passes: a vote once its effective height has come is refused,
    // not answered `ok`, and the proposal reads as expired.
    let late = Payload::Propose {
        action: GovAction::SetParameter {
            name: "proposal_voting_blocks".into(),
            value: 10,
        },
        effective_height: l.height + 3,
    };
    assert_eq!(l.run(T0, MEMBERS[0], late).code, "ok"); // proposal 2
    let stored = |l: &Ledger| -> tally_ledger::compliance::Proposal {
        tally_ledger::codec::decode(
            l.state
                .get_raw(&tally_ledger::compliance::governance::proposal_key(2))
                .expect("proposal 2"),
            1 << 16,
        )
        .expect("proposal decode")
    };
    let params = tally_ledger::compliance::Params::default();
    use tally_ledger::compliance::ProposalStatus;
    let due = stored(&l).effective_height;
    assert_eq!(stored(&l).status_at(due - 1, &params), ProposalStatus::Open);
    while l.height + 1 < due {
        l.block(T0, Vec::new());
    }
    let late_vote = Payload::Vote {
        proposal: 2,
        approve: true,
    };
    let r = l.run(T0, MEMBERS[1], late_vote); // at the effective height
    assert_eq!(r.code, "proposal_closed", "{}", r.reason);
    assert!(r.events.is_empty());
    assert_eq!(
        stored(&l).status_at(l.height, &params),
        ProposalStatus::Expired
    );
}

/// Proposals due at the same height apply in the order they passed: of two changes to the
/// same parameter, the one that passed last is in force, whatever their ids.
#[test]
fn proposals_due_together_apply_in_the_order_they_passed() {
    use tally_ledger::compliance::governance::{Params, PARAMS_KEY};
    let mut l = Ledger::new();
    let effective = 20;
    let set = |value| Payload::Propose {
        action: GovAction::SetParameter {
            name: "proposal_voting_blocks".into(),
            value,
        },
        effective_height: effective,
    };
    assert_eq!(l.run(T0, MEMBERS[0], set(500)).code, "ok"); // proposal 1
    assert_eq!(l.run(T0, MEMBERS[1], set(700)).code, "ok"); // proposal 2
    let vote = |proposal| Payload::Vote {
        proposal,
        approve: true,
    };
    // Proposal 2 passes first (its proposer, then two more), proposal 1 last.
    for m in [MEMBERS[2], MEMBERS[3]] {
        assert_eq!(l.run(T0, m, vote(2)).code, "ok");
    }
    for m in [MEMBERS[2], MEMBERS[3]] {
        assert_eq!(l.run(T0, m, vote(1)).code, "ok");
    }
    while l.height < effective {
        l.block(T0, Vec::new());
    }
    let params: Params = tally_ledger::codec::decode(
        l.state.get_raw(PARAMS_KEY).expect("params in state"),
        1 << 10,
    )
    .expect("params decode");
    assert_eq!(params.proposal_voting_blocks, 500, "proposal 1 passed last");
}

/// A rule-set change names the version it was drafted against and cannot touch sanctions: one
/// drafted before a sanctions update is superseded, not applied over it; one that leaves the
/// list out keeps the list in force; one that names an old version or another list is refused.
#[test]
fn a_rule_change_cannot_lift_sanctions_or_undo_a_newer_change() {
    use tally_ledger::compliance::registry::RULES_KEY;
    use tally_ledger::compliance::{ProposalStatus, RuleSet};
    let rules_of = |l: &Ledger| -> RuleSet {
        tally_ledger::codec::decode(l.state.get_raw(RULES_KEY).expect("rules"), 1 << 20)
            .expect("rules decode")
    };
    let status_of = |l: &Ledger, id: u64| -> ProposalStatus {
        let p: tally_ledger::compliance::Proposal = tally_ledger::codec::decode(
            l.state
                .get_raw(&tally_ledger::compliance::governance::proposal_key(id))
                .expect("proposal"),
            1 << 20,
        )
        .expect("proposal decode");
        p.status
    };
    let mut l = Ledger::new();
    let v1 = rules_of(&l);
    assert_eq!(v1.version, 1);
    assert!(!v1.sanctioned_jurisdictions.is_empty());
    let propose = |action, effective_height| Payload::Propose {
        action,
        effective_height,
    };
    let pass = |l: &mut Ledger, proposal| {
        for m in &MEMBERS[1..3] {
            let r = l.run(
                T0,
                *m,
                Payload::Vote {
                    proposal,
                    approve: true,
                },
            );
            assert_eq!(r.code, "ok", "{}", r.reason);
        }
    };
    // A limit change drafted against version 1 that leaves the sanctions list out.
    let mut limits_only = v1.clone();
    limits_only.sanctioned_jurisdictions.clear();
    for limit in limits_only.limits.iter_mut() {
        limit.per_transaction = Some(1_234 * UNIT);
    }
    // Refused: an old base version, or a sanctions list of its own.
    let mut stale = limits_only.clone();
    stale.version = 0;
    let r = l.run(T0, MEMBERS[0], propose(GovAction::SetRules(stale), 30));
    assert_eq!(r.code, "invalid_proposal");
    assert!(r.reason.starts_with("version"), "{}", r.reason);
    let mut lifting = v1.clone();
    let lifted = *v1
        .sanctioned_jurisdictions
        .iter()
        .next()
        .expect("a sanction");
    lifting.sanctioned_jurisdictions.remove(&lifted);
    lifting.sanctioned_jurisdictions.insert(jur("ZZ"));
    let r = l.run(T0, MEMBERS[0], propose(GovAction::SetRules(lifting), 30));
    assert_eq!(r.code, "invalid_proposal");
    assert!(
        r.reason.starts_with("sanctioned_jurisdictions"),
        "{}",
        r.reason
    );

    // Proposal 1: the limit change, due at 30. Proposal 2: a sanctions update, due at 20.
    let change = GovAction::SetRules(limits_only.clone());
    assert_eq!(l.run(T0, MEMBERS[0], propose(change, 30)).code, "ok");
    let csv = "action,type,value\nadd,jurisdiction,RU\n";
    let update = tally_ledger::compliance::SanctionsUpdate::from_csv("list-3", csv).unwrap();
    let r = l.run(
        T0,
        MEMBERS[0],
        propose(GovAction::UpdateSanctions(update), 20),
    );
    assert_eq!(r.code, "ok", "{}", r.reason);
    pass(&mut l, 1);
    pass(&mut l, 2);
    while l.height < 30 {
        l.block(T0, Vec::new());
    }
    // The sanctions update applied (version 2); the change drafted against version 1 would
    // have undone it, so it was superseded and nothing of it applied.
    let now = rules_of(&l);
    assert_eq!(now.version, 2);
    assert!(now.sanctioned_jurisdictions.contains(&jur("RU")));
    assert!(now.sanctioned_jurisdictions.contains(&lifted));
    assert_ne!(now.limits, limits_only.limits);
    assert_eq!(status_of(&l, 1), ProposalStatus::Superseded);
    assert_eq!(status_of(&l, 2), ProposalStatus::Applied);

    // Drafted again against version 2, still without the list: applied, sanctions intact.
    let mut again = limits_only.clone();
    again.version = 2;
    let effective = l.height + 10;
    let r = l.run(
        T0,
        MEMBERS[0],
        propose(GovAction::SetRules(again), effective),
    );
    assert_eq!(r.code, "ok", "{}", r.reason);
    pass(&mut l, 3);
    while l.height < effective {
        l.block(T0, Vec::new());
    }
    let now = rules_of(&l);
    assert_eq!(now.version, 3);
    assert_eq!(now.limits, limits_only.limits);
    assert!(now.sanctioned_jurisdictions.contains(&jur("RU")));
    assert!(now.sanctioned_jurisdictions.contains(&lifted));
    assert_eq!(status_of(&l, 3), ProposalStatus::Applied);
}

#[test]
fn sanctions_lists_change_by_governance() {
    let mut l = Ledger::new();
    let csv = "action,type,value\nadd,identity,person-21\nremove,identity,person-26\n";
    let update = tally_ledger::compliance::SanctionsUpdate::from_csv("list-2", csv).unwrap();
    let propose = Payload::Propose {
        action: GovAction::UpdateSanctions(update),
        effective_height: 11,
    };
    assert_eq!(l.run(T0, MEMBERS[0], propose).code, "ok");
    for m in &MEMBERS[1..3] {
        l.run(
            T0,
            *m,
            Payload::Vote {
                proposal: 1,
                approve: true,
            },
        );
    }
    while l.height < 9 {
        l.block(T0, Vec::new());
    }
    assert_eq!(l.pay(T0, PAYER_DE, PAYEE_GB, usd(), 5).code, "ok"); // height 10
    assert_eq!(l.height, 10);
    let r = l.pay(T0, PAYER_DE, PAYEE_GB, usd(), 5);
    assert_eq!(decision(&r).1, "sanctions.identity");
    assert!(r.reason.contains("list-2"));
    assert_eq!(r.flags[0].rule_version, 2);
    assert_eq!(l.pay(T0, LISTED, PAYEE_GB, usd(), 5).code, "ok", "delisted");
}

#[test]
fn a_validator_set_change_applies_at_its_epoch_boundary_and_nowhere_else() {
    let mut l = Ledger::new();
    // Validator 99 hands over to 98; 95, 96 and 97 stay.
    let next_set: Vec<GenesisValidator> = [95, 96, 97, 98].map(validator).to_vec();
    let next = validator(98);
    let change = |h| Payload::Propose {
        action: GovAction::SetValidators {
            validators: next_set.clone(),
        },
        effective_height: h,
    };
    // Not a multiple of epoch_blocks (10): refused when proposed.
    let r = l.run(T0, MEMBERS[0], change(15));
    assert_eq!(r.code, "invalid_proposal", "{}", r.reason);
    assert!(r.reason.contains("epoch boundary"), "{}", r.reason);
    // epoch_blocks is fixed at genesis.
    let fixed = stateless_refusal(GovAction::SetParameter {
        name: "epoch_blocks".into(),
        value: 5,
    });
    assert!(fixed.to_string().contains("fixed at genesis"), "{fixed}");
    // A key that is not an ed25519 point would stop every node at the boundary: refused.
    let mut bad = next.clone();
    bad.public_key = (2..=255u8)
        .map(|b| AccountId([b; 32]))
        .find(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.0).is_err())
        .expect("some byte pattern is not a curve point");
    let err = stateless_refusal(GovAction::SetValidators {
        validators: vec![bad],
    });
    assert!(err.to_string().contains("not an ed25519 key"), "{err}");
    // Neither is a small-order key (here the identity point), which consensus refuses.
    let mut weak = next.clone();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    weak.public_key = AccountId(identity);
    let err = stateless_refusal(GovAction::SetValidators {
        validators: vec![weak],
    });
    assert!(err.to_string().contains("full order"), "{err}");

    assert_eq!(l.run(T0, MEMBERS[0], change(20)).code, "ok");
    for m in &MEMBERS[1..3] {
        let vote = Payload::Vote {
            proposal: 1,
            approve: true,
        };
        assert_eq!(l.run(T0, *m, vote).code, "ok");
    }
    let epoch = |l: &Ledger| -> ValidatorEpoch {
        tally_ledger::codec::decode(l.state.get_raw(VALIDATORS_KEY).unwrap(), 1 << 20).unwrap()
    };
    while l.height < 19 {
        l.block(T0, Vec::new());
    }
    assert_eq!(epoch(&l).epoch, 0, "nothing changes before the boundary");
    assert_eq!(epoch(&l).validators[3].public_key, id(99));
    l.block(T0, Vec::new()); // height 20: the boundary
    let e = epoch(&l);
    assert_eq!((e.epoch, e.first_height), (1, 21));
    assert_eq!(e.validators, next_set);
    assert_eq!(e.validators[3], next);
    let role = |k: u8| -> Option<RoleEntry> {
        let bytes = l.state.get_raw(&role_key(&id(k)))?;
        Some(tally_ledger::codec::decode(bytes, 1 << 20).unwrap())
    };
    assert!(role(98).is_some_and(|r| r.has(Role::Validator)));
    assert!(!role(99).is_some_and(|r| r.has(Role::Validator)));
}

/// Members 0..3 pass `action` (three blocks: the proposal and two votes), due two blocks
/// later, and the ledger runs up to it.
fn govern(l: &mut Ledger, action: GovAction) {
    let due = l.height + 5;
    let r = l.run(
        T0,
        MEMBERS[0],
        Payload::Propose {
            action,
            effective_height: due,
        },
    );
    assert_eq!(r.code, "ok", "{}", r.reason);
    let Some(Event::ProposalCreated { proposal, .. }) = r.events.first().cloned() else {
        panic!("no proposal in {r:?}");
    };
    for m in &MEMBERS[1..3] {
        let vote = Payload::Vote {
            proposal,
            approve: true,
        };
        assert_eq!(l.run(T0, *m, vote).code, "ok");
    }
    while l.height < due {
        l.block(T0, Vec::new());
    }
}

#[test]
fn kyc_providers_vouch_only_up_to_their_tier_and_only_while_in_office() {
    let mut l = Ledger::new();
    let register = |id: &str, tier| {
        Payload::Identity(IdentityOp::Register {
            id: id.into(),
            jurisdiction: jur("DE"),
            tier,
            expires_ms: T0 + 30 * DAY_MS,
            commitment: Hash([7; 32]),
        })
    };
    // Above its maximum tier: refused when registering and when updating.
    let r = l.run(T0, KYC, register("new-person", KYC_MAX_TIER + 1));
    assert_eq!(r.code, "unauthorized", "{}", r.reason);
    assert!(r.reason.contains("above 5"), "{}", r.reason);
    let update = Payload::Identity(IdentityOp::Update {
        id: ident(PAYER_DE),
        tier: KYC_MAX_TIER + 1,
        expires_ms: T0 + 30 * DAY_MS,
        commitment: Hash([7; 32]),
    });
    assert_eq!(l.run(T0, KYC, update).code, "unauthorized");
    assert_eq!(
        l.run(T0, KYC, register("new-person", KYC_MAX_TIER)).code,
        "ok"
    );
    // Another provider cannot take over an identity whose provider is in office.
    let r = l.run(T0, KYC_2, register(&ident(RETAIL_DE), 1));
    assert_eq!(r.code, "identity_exists", "{}", r.reason);

    // Governance lowers the provider's maximum to tier 1: its tier-2 identities stop, as
    // senders and as receivers; its tier-1 identities go on.
    let provider = |max_tier: Option<u8>, roles: &[Role]| RoleEntry {
        name: "key-1".into(),
        key: id(KYC),
        roles: roles.iter().copied().collect(),
        jurisdictions: KYC_JURISDICTIONS.iter().map(|c| jur(c)).collect(),
        max_tier,
    };
    govern(
        &mut l,
        GovAction::SetRole(provider(Some(1), &[Role::KycProvider])),
    );
    let r = l.pay(T0, PAYER_DE, RETAIL_DE, usd(), 5);
    assert_eq!(
        decision(&r),
        (
            "compliance_rejected".into(),
            "identity.tier_not_allowed".into()
        ),
        "{}",
        r.reason
    );
    assert!(r.reason.contains("tier 2, above the 1"), "{}", r.reason);
    let r = l.pay(T0, RETAIL_DE, PAYER_DE, usd(), 5);
    assert_eq!(decision(&r).1, "identity.tier_not_allowed", "{}", r.reason);
    assert_eq!(l.pay(T0, RETAIL_DE, RETAIL_DE_2, usd(), 5).code, "ok");

    // Out of office: every identity it vouched for stops, until another provider registers
    // it again; its bound account then pays as before.
    govern(&mut l, GovAction::RemoveRole { key: id(KYC) });
    let r = l.pay(T0, RETAIL_DE, RETAIL_DE_2, usd(), 5);
    assert_eq!(decision(&r).1, "identity.provider_removed", "{}", r.reason);
    assert!(r.reason.contains("must register it again"), "{}", r.reason);
    let r = l.run(T0, KYC, register("another", 1));
    assert_eq!(
        r.code, "unauthorized",
        "a former provider registers nothing"
    );
    // Taking an identity over keeps its jurisdiction (its regulator, corridors, listings).
    let elsewhere = Payload::Identity(IdentityOp::Register {
        id: ident(RETAIL_DE),
        jurisdiction: jur("SG"),
        tier: 1,
        expires_ms: T0 + 30 * DAY_MS,
        commitment: Hash([7; 32]),
    });
    let r = l.run(T0, KYC_2, elsewhere);
    assert_eq!(r.code, "invalid_request", "{}", r.reason);
    assert!(r.reason.contains("keeps its jurisdiction"), "{}", r.reason);
    for k in [RETAIL_DE, RETAIL_DE_2] {
        assert_eq!(l.run(T0, KYC_2, register(&ident(k), 1)).code, "ok");
    }
    assert_eq!(l.pay(T0, RETAIL_DE, RETAIL_DE_2, usd(), 5).code, "ok");
}

#[test]
fn a_validator_set_change_never_depends_on_more_new_keys_than_the_old_ones_can_outvote() {
    let mut l = Ledger::new();
    let propose = |set: &[u8], h| Payload::Propose {
        action: GovAction::SetValidators {
            validators: set.iter().map(|k| validator(*k)).collect(),
        },
        effective_height: h,
    };
    // Two of four replaced: the two that stay are not a quorum (3) of the new set, which
    // would halt if the newcomers were not running at the boundary.
    let r = l.run(T0, MEMBERS[0], propose(&[95, 96, 98, 94], 20));
    assert_eq!(r.code, "invalid_proposal", "{}", r.reason);
    assert!(
        r.reason
            .contains("2 of the 4 validators are in the current set")
            && r.reason.contains("replace at most 1 at a time"),
        "{}",
        r.reason
    );
    // Two added to four: 4 of 6 stay, and a quorum of 6 is 5.
    let r = l.run(T0, MEMBERS[0], propose(&[95, 96, 97, 99, 98, 94], 20));
    assert_eq!(r.code, "invalid_proposal", "{}", r.reason);
    // One added (4 of 5 stay, quorum 4), one removed (3 of 3 stay): both fine.
    assert_eq!(
        l.run(T0, MEMBERS[0], propose(&[95, 96, 97, 99, 98], 20))
            .code,
        "ok"
    );
    assert_eq!(l.run(T0, MEMBERS[0], propose(&[95, 96, 97], 20)).code, "ok");
    // Both pass; the first applies at the boundary, the second finds the set it was checked
    // against gone and is superseded (one change per boundary).
    for proposal in [1, 2] {
        for m in &MEMBERS[1..3] {
            let vote = Payload::Vote {
                proposal,
                approve: true,
            };
            assert_eq!(l.run(T0, *m, vote).code, "ok");
        }
    }
    while l.height < 20 {
        l.block(T0, Vec::new());
    }
    let e: ValidatorEpoch =
        tally_ledger::codec::decode(l.state.get_raw(VALIDATORS_KEY).unwrap(), 1 << 20).unwrap();
    assert_eq!(e.validators.len(), 5, "the first change applied");
    let status = |id: u64| -> ProposalStatus {
        let bytes = l.state.get_raw(&proposal_key(id)).unwrap();
        tally_ledger::codec::decode::<Proposal>(bytes, 1 << 20)
            .unwrap()
            .status
    };
    assert_eq!(status(1), ProposalStatus::Applied);
    assert_eq!(status(2), ProposalStatus::Superseded);
}

#[test]
fn votes_count_to_the_last_block_of_the_voting_window_and_not_after() {
    let mut g = genesis();
    g.params.proposal_voting_blocks = 3;
    let mut l = Ledger {
        state: g.initial_state().unwrap(),
        height: 0,
        seqs: BTreeMap::new(),
    };
    let propose = Payload::Propose {
        action: GovAction::SetParameter {
            name: "identity_max_validity_days".into(),
            value: 400,
        },
        effective_height: 100,
    };
    assert_eq!(l.run(T0, MEMBERS[0], propose).code, "ok"); // height 1: voting to height 4
    l.block(T0, Vec::new());
    l.block(T0, Vec::new());
    let vote = |approve| Payload::Vote {
        proposal: 1,
        approve,
    };
    let r = l.run(T0, MEMBERS[1], vote(true)); // height 4, the window's last block
    assert_eq!((r.code.as_str(), l.height), ("ok", 4), "{}", r.reason);
    let r = l.run(T0, MEMBERS[2], vote(true)); // height 5
    assert_eq!(r.code, "proposal_closed", "{}", r.reason);
    assert!(r.reason.contains("closed after height 4"), "{}", r.reason);
    assert!(r.events.is_empty());
}

#[test]
fn proposals_that_cannot_pass_are_rejected() {
    let mut l = Ledger::new();
    let propose = Payload::Propose {
        action: GovAction::SetParameter {
            name: "proposal_voting_blocks".into(),
            value: 10,
        },
        effective_height: 100,
    };
    assert_eq!(l.run(T0, MEMBERS[0], propose).code, "ok");
    l.run(
        T0,
        MEMBERS[1],
        Payload::Vote {
            proposal: 1,
            approve: false,
        },
    );
    let r = l.run(
        T0,
        MEMBERS[2],
        Payload::Vote {
            proposal: 1,
            approve: false,
        },
    );
    assert!(format!("{:?}", r.events).contains("ProposalRejected"));
    let bad = Payload::Propose {
        action: GovAction::SetParameter {
            name: "no_such".into(),
            value: 1,
        },
        effective_height: 100,
    };
    let err = Transaction {
        chain_id: CHAIN.into(),
        sender: id(MEMBERS[0]),
        sequence: 9,
        expiry_height: 10,
        payload: bad,
    }
    .sign(&key(MEMBERS[0]))
    .verify(CHAIN)
    .unwrap_err();
    assert_eq!(err.code(), "invalid_payload");
    assert!(err.to_string().contains("no_such"));
}

/// What a random step does.
#[derive(Debug, Clone)]
enum Step {
    Pay { from: u8, to: u8, major: u64 },
    Freeze(u8),
    Unfreeze(u8),
    Revoke(u8),
    Advance(u64),
}

const SENDERS: [u8; 6] = [PAYER_DE, PAYEE_GB, PAYER_FR, LISTED, EXPIRED, RETAIL_DE];

fn step() -> impl Strategy<Value = Step> {
    let who = prop::sample::select(SENDERS.to_vec());
    prop_oneof![
        6 => (who.clone(), who.clone(), 1u64..3_000).prop_map(|(from, to, major)| Step::Pay { from, to, major }),
        1 => who.clone().prop_map(Step::Freeze),
        1 => who.clone().prop_map(Step::Unfreeze),
        1 => who.prop_map(Step::Revoke),
        1 => (0u64..3 * DAY_MS).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Sanctioned, frozen, revoked or expired identities never move money, whatever the
    /// sequence of payments, freezes, revocations and time.
    #[test]
    fn blocked_identities_never_move_money(steps in prop::collection::vec(step(), 1..40)) {
        let mut l = Ledger::new();
        let mut now = T0;
        for s in steps {
            let payload = match s {
                Step::Advance(ms) => { now += ms; continue; }
                Step::Freeze(k) => (regulator_of(k), Payload::Freeze(FreezeOp::Freeze { id: ident(k), reason: "r".into() })),
                Step::Unfreeze(k) => (regulator_of(k), Payload::Freeze(FreezeOp::Unfreeze { id: ident(k) })),
                Step::Revoke(k) => (KYC, Payload::Identity(IdentityOp::Revoke { id: ident(k) })),
                Step::Pay { from, to, major } => (from, transfer(from, to, usd(), major * UNIT, true)),
            };
            let (signer, payload) = payload;
            let is_pay = matches!(payload, Payload::Transfer(_));
            // Who was blocked before this transaction.
            let blocked = |l: &Ledger, k: u8| -> bool {
                let raw = l.state.get_raw(&tally_ledger::compliance::registry::identity_key(&ident(k))).unwrap();
                let i: tally_ledger::compliance::Identity = tally_ledger::codec::decode(raw, 1 << 20).unwrap();
                i.revoked || i.frozen.is_some() || now > i.expires_ms || k == LISTED
            };
            let parties = match &payload {
                Payload::Transfer(t) => Some((signer, l.signer_of(&t.to))),
                _ => None,
            };
            let was_blocked = parties.map(|(a, b)| blocked(&l, a) || blocked(&l, b));
            let before: Vec<u64> = SENDERS.iter().map(|k| l.balance(*k, &usd())).collect();
            let r = l.run(now, signer, payload);
            if is_pay && was_blocked == Some(true) {
                prop_assert_eq!(r.outcome, Outcome::Rejected);
                let after: Vec<u64> = SENDERS.iter().map(|k| l.balance(*k, &usd())).collect();
                prop_assert_eq!(before, after);
            }
        }
    }
}

/// The regulator covering an identity's jurisdiction in this fixture (GB has none, so its
/// freezes are refused — which must not matter to the property).
fn regulator_of(k: u8) -> u8 {
    match k {
        PAYEE_GB => REG_SG,
        _ => REG_EU,
    }
}

/// Optional cap: `None` a third of the time.
fn cap(max: u64) -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.67, 1..=max)
}

/// Random limits for DE tiers 1 and 2 (amounts in major reference units).
fn de_limits() -> impl Strategy<Value = Vec<Limit>> {
    let limit = |tier: u8| {
        (cap(50), cap(200), cap(500), cap(10), cap(30)).prop_map(move |(tx, day, month, h, d)| {
            Limit {
                jurisdiction: jur("DE"),
                tier,
                per_transaction: tx.map(|v| v * UNIT),
                per_day: day.map(|v| v * UNIT),
                per_30_days: month.map(|v| v * UNIT),
                transfers_per_hour: h.map(|v| v as u32),
                transfers_per_day: d.map(|v| v as u32),
            }
        })
    };
    (limit(1), limit(2)).prop_map(|(a, b)| vec![a, b])
}

/// One step of a payment stream: time passes, then someone in DE pays someone in DE.
#[derive(Debug, Clone)]
struct Paid {
    advance_ms: u64,
    from: u8,
    to: u8,
    in_sgd: bool,
    major: u64,
}

fn paid() -> impl Strategy<Value = Paid> {
    let people = [RETAIL_DE, RETAIL_DE_2, PAYER_DE];
    (
        prop::sample::select(vec![
            0,
            1_000,
            60_000,
            10 * 60_000,
            HOUR_MS - 1,
            HOUR_MS,
            5 * HOUR_MS,
            DAY_MS - 1,
            DAY_MS,
            3 * DAY_MS,
            10 * DAY_MS,
        ]),
        prop::sample::select(people.to_vec()),
        prop::sample::select(people.to_vec()),
        any::<bool>(),
        1..=60u64,
    )
        .prop_map(|(advance_ms, from, to, in_sgd, major)| Paid {
            advance_ms,
            from,
            to,
            in_sgd,
            major,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the limits and the payments, no identity ever sends more than a cap allows
    /// within any span of the cap's window: amounts (in reference units, SGD converted at a
    /// random rate) over 24 hours and 30 days, counts over an hour and a day, and no single
    /// payment above the per-transaction cap.
    #[test]
    fn no_identity_exceeds_any_cap_within_any_window(
        limits in de_limits(),
        (numerator, denominator) in (1..=300u64, 1..=300u64),
        stream in prop::collection::vec(paid(), 1..80),
    ) {
        let mut g = genesis();
        g.rules.limits.retain(|l| l.jurisdiction != jur("DE") || l.tier > 2);
        g.rules.limits.extend(limits.iter().cloned());
        let rate = tally_ledger::compliance::Rate { numerator, denominator };
        g.rules.rates.insert(sgd(), rate);
        let mut l = Ledger {
            state: g.initial_state().unwrap(),
            height: 0,
            seqs: BTreeMap::new(),
        };
        let tier = |k: u8| -> u8 { if k == PAYER_DE { 2 } else { 1 } };
        // (time, reference amount) of every applied payment, per sender.
        let mut sent: BTreeMap<u8, Vec<(u64, u64)>> = BTreeMap::new();
        let mut now = T0;
        for p in stream {
            now += p.advance_ms;
            let (asset, amount) = if p.in_sgd { (sgd(), p.major * UNIT) } else { (usd(), p.major * UNIT) };
            let reference = if p.in_sgd { rate.to_reference(amount) } else { amount };
            let r = l.run(now, p.from, transfer(p.from, p.to, asset, amount, false));
            if r.outcome != Outcome::Applied {
                continue;
            }
            let history = sent.entry(p.from).or_default();
            history.push((now, reference));
            let limit = &limits[usize::from(tier(p.from) - 1)];
            let within = |w: u64| history.iter().filter(move |(t, _)| now - t < w);
            let total = |w: u64| within(w).map(|(_, a)| a).sum::<u64>();
            if let Some(c) = limit.per_transaction {
                prop_assert!(reference <= c, "one payment of {reference} over {c}");
            }
            if let Some(c) = limit.per_day {
                prop_assert!(total(DAY_MS) <= c, "{} in 24 h over {c}", total(DAY_MS));
            }
            if let Some(c) = limit.per_30_days {
                prop_assert!(total(30 * DAY_MS) <= c, "{} in 30 days over {c}", total(30 * DAY_MS));
            }
            if let Some(c) = limit.transfers_per_hour {
                prop_assert!(within(HOUR_MS).count() <= c as usize, "{} transfers in an hour over {c}", within(HOUR_MS).count());
            }
            if let Some(c) = limit.transfers_per_day {
                prop_assert!(within(DAY_MS).count() <= c as usize, "{} transfers in a day over {c}", within(DAY_MS).count());
            }
        }
    }
}

#[test]
fn kyc_providers_act_only_in_the_jurisdictions_governance_gave_them() {
    let mut l = Ledger::new();
    let register = |id: &str, j: &str| {
        Payload::Identity(IdentityOp::Register {
            id: id.into(),
            jurisdiction: jur(j),
            tier: 1,
            expires_ms: T0 + 30 * DAY_MS,
            commitment: Hash([7; 32]),
        })
    };
    // The second provider covers DE and SG only.
    let r = l.run(T0, KYC_2, register("gb-person", "GB"));
    assert_eq!(r.code, "unauthorized", "{}", r.reason);
    assert!(r.reason.contains("jurisdiction GB"), "{}", r.reason);
    assert_eq!(l.run(T0, KYC_2, register("de-person", "DE")).code, "ok");
    // Governance narrows the first provider to GB: it can no longer act on its DE customers.
    let mut entry = RoleEntry {
        name: "key-1".into(),
        key: id(KYC),
        roles: [Role::KycProvider].into_iter().collect(),
        jurisdictions: [jur("GB")].into_iter().collect(),
        max_tier: Some(KYC_MAX_TIER),
    };
    govern(&mut l, GovAction::SetRole(entry.clone()));
    let update = Payload::Identity(IdentityOp::Update {
        id: ident(PAYER_DE),
        tier: 1,
        expires_ms: T0 + 30 * DAY_MS,
        commitment: Hash([9; 32]),
    });
    let r = l.run(T0, KYC, update.clone());
    assert_eq!(r.code, "unauthorized", "{}", r.reason);
    let unbind = Payload::Identity(IdentityOp::Unbind {
        account: id(PAYER_DE),
    });
    assert_eq!(l.run(T0, KYC, unbind).code, "unauthorized");
    assert_eq!(l.run(T0, KYC, register("gb-person", "GB")).code, "ok");
    // A KYC provider with no jurisdictions is not a valid registry entry: a proposal naming
    // one is refused before it reaches a block.
    entry.jurisdictions.clear();
    let proposal = Transaction {
        chain_id: CHAIN.into(),
        sender: id(MEMBERS[0]),
        sequence: 0,
        expiry_height: u64::MAX,
        payload: Payload::Propose {
            action: GovAction::SetRole(entry),
            effective_height: 100,
        },
    }
    .sign(&key(MEMBERS[0]));
    let e = proposal.verify(CHAIN).unwrap_err();
    assert!(e.to_string().contains("role.jurisdictions"), "{e}");
}

#[test]
fn a_frozen_or_listed_person_cannot_walk_away_from_their_account() {
    let mut l = Ledger::new();
    let unbind = |k: u8| Payload::Identity(IdentityOp::Unbind { account: id(k) });
    // A regulator's freeze: the provider cannot unbind the account to bind it to a fresh
    // identity (which would leave the freeze, the listing and the rolling limits behind).
    let freeze = Payload::Freeze(FreezeOp::Freeze {
        id: ident(RETAIL_DE),
        reason: "court order 18/2026".into(),
    });
    assert_eq!(l.run(T0, REG_EU, freeze).code, "ok");
    let r = l.run(T0, KYC, unbind(RETAIL_DE));
    assert_eq!(r.code, "invalid_request", "{}", r.reason);
    assert!(r.reason.contains("frozen"), "{}", r.reason);
    // Nor after the provider revokes the identity.
    let revoke = Payload::Identity(IdentityOp::Revoke {
        id: ident(RETAIL_DE),
    });
    assert_eq!(l.run(T0, KYC, revoke).code, "ok");
    assert_eq!(l.run(T0, KYC, unbind(RETAIL_DE)).code, "invalid_request");
    // A sanctions listing holds the same way.
    let r = l.run(T0, KYC, unbind(LISTED));
    assert_eq!(r.code, "invalid_request", "{}", r.reason);
    assert!(r.reason.contains("sanctions"), "{}", r.reason);
    // An issuer's freeze for an asset the account holds.
    let asset_freeze = Payload::Freeze(FreezeOp::FreezeAsset {
        asset: usd(),
        id: ident(PAYER_DE),
        reason: "issuer review".into(),
    });
    assert_eq!(l.run(T0, ISSUER_USD, asset_freeze).code, "ok");
    let r = l.run(T0, KYC, unbind(PAYER_DE));
    assert_eq!(r.code, "invalid_request", "{}", r.reason);
    assert!(r.reason.contains("frozen for USD"), "{}", r.reason);
    // Once the freeze is lifted, the provider may unbind as before.
    let lift = Payload::Freeze(FreezeOp::UnfreezeAsset {
        asset: usd(),
        id: ident(PAYER_DE),
    });
    assert_eq!(l.run(T0, ISSUER_USD, lift).code, "ok");
    assert_eq!(l.run(T0, KYC, unbind(PAYER_DE)).code, "ok");
}
