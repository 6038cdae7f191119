//! Compliance scenarios of `tally devnet`: payments and operations from the demo consortium's
//! dedicated accounts that hit every rule — sanctions, identity standing, freezes, corridors,
//! limits, velocity, the travel rule, structuring — and a governance rule change, each sent
//! over the HTTP API and followed to its final receipt. A rejected transaction consumes no
//! sequence number, so each account sends one transaction at a time.

use crate::api::{AccountView, RulesView, StatusView, Submitted, TxStatus};
use crate::keys;
use crate::tools::testnet::Testnet;
use crate::tools::testnet_compliance::{demo_rules, UNIT, UNRATED_ASSET};
use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use std::time::{Duration, Instant};
use tally_ledger::compliance::{FreezeOp, GovAction, IdentityOp, Party, TravelRuleData};
use tally_ledger::primitives::{AssetCode, Hash, Height};
use tally_ledger::tx::{Payload, Transaction, Transfer};

/// The outcome of one scenario step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioResult {
    /// What it shows.
    pub name: String,
    /// Expected `code` or `code/rule`.
    pub expected: String,
    /// What the receipt said, as `code` or `code/rule`.
    pub got: String,
    /// The rule-set version the receipt says it was checked against.
    pub rules_version: u64,
    /// The rule-set version its rule's flag names, if a rule decided.
    pub flag_version: Option<u64>,
    /// The transaction.
    pub hash: Hash,
    /// Its block.
    pub height: Height,
}

impl ScenarioResult {
    /// Whether the receipt matched the expectation.
    pub fn passed(&self) -> bool {
        self.expected == self.got
    }
}

/// Drives the scenarios against one validator's API.
pub struct Scenarios<'a> {
    client: reqwest::Client,
    api: String,
    net: &'a Testnet,
    chain_id: String,
    /// Results so far.
    pub results: Vec<ScenarioResult>,
}

fn usd() -> AssetCode {
    AssetCode::new("USD").unwrap_or_else(|| unreachable!("valid literal"))
}

fn unrated() -> AssetCode {
    AssetCode::new(UNRATED_ASSET).unwrap_or_else(|| unreachable!("valid literal"))
}

fn sgd() -> AssetCode {
    AssetCode::new("SGD").unwrap_or_else(|| unreachable!("valid literal"))
}

impl<'a> Scenarios<'a> {
    /// A driver for the network `net` through the API at `api`.
    pub fn new(net: &'a Testnet, api: &str) -> Scenarios<'a> {
        Scenarios {
            client: reqwest::Client::new(),
            api: api.trim_end_matches('/').to_owned(),
            chain_id: net.genesis.chain_id.clone(),
            net,
            results: Vec::new(),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.api);
        let r = self.client.get(&url).send().await.context(url.clone())?;
        if !r.status().is_success() {
            bail!("GET {url}: {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// A signed read (docs/api/README.md, "Signed reads") as `key`.
    async fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        key: &SigningKey,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.api);
        let r = crate::api::auth::signed_get(&self.client, &self.api, path, key, &self.chain_id)
            .send()
            .await
            .context(url.clone())?;
        if !r.status().is_success() {
            bail!("GET {url}: {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// A transaction as the demo KYC provider sees it (in full: it registered the parties'
    /// identities, and as an institution it reads governance), or, when no party is its
    /// customer, as its signer does.
    async fn transaction(&self, hash: Hash, signer: &SigningKey) -> anyhow::Result<TxStatus> {
        let path = format!("/v1/transactions/{hash}");
        match self.get_as(&path, self.key("kyc")?).await {
            Ok(s) => Ok(s),
            Err(_) => self.get_as(&path, signer).await,
        }
    }

    fn key(&self, name: &str) -> anyhow::Result<&SigningKey> {
        self.net
            .named(name)
            .with_context(|| format!("the network has no key {name:?}"))
    }

    /// Signs and submits; returns the hash.
    async fn submit(&self, key: &SigningKey, payload: Payload) -> anyhow::Result<Hash> {
        let me = keys::account_id(key);
        let status: StatusView = self.get("/v1/status").await?;
        let sequence = self
            .get_as::<AccountView>(&format!("/v1/accounts/{me}"), key)
            .await
            .map_or(0, |a| a.sequence);
        self.submit_at(key, sequence, status.height, payload).await
    }

    async fn submit_at(
        &self,
        key: &SigningKey,
        sequence: u64,
        height: Height,
        payload: Payload,
    ) -> anyhow::Result<Hash> {
        let signed = Transaction {
            chain_id: self.chain_id.clone(),
            sender: keys::account_id(key),
            sequence,
            expiry_height: height + 1_000,
            payload,
        }
        .sign(key);
        let r = self
            .client
            .post(format!("{}/v1/transactions", self.api))
            .json(&serde_json::json!({ "tx": hex::encode(signed.to_bytes()) }))
            .send()
            .await?;
        if !r.status().is_success() {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            bail!("submission refused: {status} {body}");
        }
        let s: Submitted = r.json().await?;
        Ok(s.hash)
    }

    async fn wait(&self, hash: Hash, signer: &SigningKey) -> anyhow::Result<TxStatus> {
        let started = Instant::now();
        loop {
            let s = self.transaction(hash, signer).await?;
            if s.status != "pending" {
                return Ok(s);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("transaction {hash} not final after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one transaction, waits for its receipt and records it against `expected`.
    async fn step(
        &mut self,
        name: &str,
        signer: &str,
        payload: Payload,
        expected: &str,
    ) -> anyhow::Result<()> {
        let key = self.key(signer)?.clone();
        let hash = self.submit(&key, payload).await?;
        let status = self.wait(hash, &key).await?;
        let receipt = status.receipt.context("final without a receipt")?;
        let flag = receipt.flags.first();
        let got = match flag {
            Some(f) => format!("{}/{}", receipt.code, f.rule_id),
            None => receipt.code.clone(),
        };
        self.results.push(ScenarioResult {
            name: name.to_owned(),
            expected: expected.to_owned(),
            got,
            rules_version: receipt.rules_version,
            flag_version: flag.map(|f| f.rule_version),
            hash,
            height: status.height.unwrap_or(0),
        });
        Ok(())
    }

    fn account(&self, name: &str) -> anyhow::Result<tally_ledger::primitives::AccountId> {
        Ok(keys::account_id(self.key(name)?))
    }

    // Each call reads as one row of the scenario table.
    #[allow(clippy::too_many_arguments)]
    async fn pay(
        &mut self,
        name: &str,
        from: &str,
        to: &str,
        asset: AssetCode,
        major: u64,
        with_travel: bool,
        expected: &str,
    ) -> anyhow::Result<()> {
        let (from_id, to_id) = (self.account(from)?, self.account(to)?);
        let travel = with_travel.then(|| TravelRuleData {
            originator: Party {
                name: format!("Demo customer {from}"),
                account: from_id,
                address: Some("1 Demo Street, Frankfurt, DE".into()),
                national_id: None,
                date_and_place_of_birth: None,
            },
            beneficiary: Party {
                name: format!("Demo customer {to}"),
                account: to_id,
                address: None,
                national_id: None,
                date_and_place_of_birth: None,
            },
        });
        let payload = Payload::Transfer(Transfer {
            to: to_id,
            asset,
            amount: major * UNIT,
            memo: Some(name.to_owned()),
            travel,
        });
        self.step(name, from, payload, expected).await
    }

    /// Whether this network is fresh enough for the scenarios (they change identities and the
    /// rule set, so they run once per network).
    pub async fn applicable(&self) -> anyhow::Result<bool> {
        let rules: RulesView = self.get("/v1/compliance/rules").await?;
        let sender = self.account("scenario-retail-de")?;
        let acct: Option<AccountView> = self
            .get_as(&format!("/v1/accounts/{sender}"), self.key("kyc")?)
            .await
            .ok();
        Ok(rules.rules.version == 1 && acct.is_some_and(|a| a.sequence == 0))
    }

    /// Runs every scenario in turn.
    pub async fn run_all(&mut self) -> anyhow::Result<()> {
        const REJ: &str = "compliance_rejected";
        let r = |rule: &str| format!("{REJ}/{rule}");
        self.pay(
            "sanctioned identity",
            "scenario-listed-de",
            "scenario-payer-de",
            usd(),
            5,
            false,
            &r("sanctions.identity"),
        )
        .await?;
        self.pay(
            "sanctioned jurisdiction",
            "scenario-payer-de",
            "scenario-kp-resident",
            usd(),
            5,
            false,
            &r("sanctions.jurisdiction"),
        )
        .await?;
        self.pay(
            "expired identity",
            "scenario-expired-fr",
            "scenario-payer-de",
            usd(),
            5,
            false,
            &r("identity.expired"),
        )
        .await?;
        self.pay(
            "unbound account",
            "scenario-unbound",
            "scenario-payer-de",
            usd(),
            5,
            false,
            &r("identity.unbound"),
        )
        .await?;
        self.undefined_limit().await?;
        self.pay(
            "closed corridor SG to US",
            "scenario-payer-sg",
            "scenario-payee-us",
            usd(),
            5,
            false,
            &r("corridor.closed"),
        )
        .await?;
        self.pay(
            "open corridor DE to GB",
            "scenario-payer-de",
            "scenario-payee-gb",
            usd(),
            250,
            false,
            "ok",
        )
        .await?;
        self.pay(
            "per-transaction limit (tier 1)",
            "scenario-retail-de",
            "scenario-payer-de",
            usd(),
            1_200,
            true,
            &r("limit.per_transaction"),
        )
        .await?;
        self.pay(
            "daily limit: first 800",
            "scenario-daily-de",
            "scenario-payer-de",
            usd(),
            800,
            false,
            "ok",
        )
        .await?;
        self.pay(
            "daily limit: second 800",
            "scenario-daily-de",
            "scenario-payer-de",
            usd(),
            800,
            false,
            "ok",
        )
        .await?;
        self.pay(
            "daily limit: third 800",
            "scenario-daily-de",
            "scenario-payer-de",
            usd(),
            800,
            false,
            &r("limit.daily"),
        )
        .await?;
        self.velocity().await?;
        self.daily_count().await?;
        self.pay(
            "30-day limit (tier 4, 150 a month): first 100",
            "scenario-monthly-de",
            "scenario-payer-de",
            usd(),
            100,
            false,
            "ok",
        )
        .await?;
        self.pay(
            "30-day limit: 60 more",
            "scenario-monthly-de",
            "scenario-payer-de",
            usd(),
            60,
            false,
            &r("limit.30_days"),
        )
        .await?;
        self.pay(
            "an asset without a reference rate (GBP)",
            "scenario-payer-de",
            "scenario-payee-gb",
            unrated(),
            5,
            false,
            &r("rates.missing"),
        )
        .await?;
        self.pay(
            "travel rule without data",
            "scenario-payer-de",
            "scenario-payee-gb",
            usd(),
            1_500,
            false,
            &r("travel_rule.missing"),
        )
        .await?;
        self.pay(
            "travel rule with data",
            "scenario-payer-de",
            "scenario-payee-gb",
            usd(),
            1_500,
            true,
            "ok",
        )
        .await?;
        for (i, expected) in ["ok", "ok", "ok/structuring.suspected"].iter().enumerate() {
            let name = format!("structuring: 950 USD #{}", i + 1);
            self.pay(
                &name,
                "scenario-structuring-fr",
                "scenario-payer-de",
                usd(),
                950,
                false,
                expected,
            )
            .await?;
        }
        let frozen = "person-frozen-de".to_owned();
        let freeze = Payload::Freeze(FreezeOp::Freeze {
            id: frozen.clone(),
            reason: "demo: regulator hold".into(),
        });
        self.step(
            "regulator freezes a DE identity",
            "regulator-eu",
            freeze,
            "ok",
        )
        .await?;
        self.pay(
            "frozen identity pays",
            "scenario-frozen-de",
            "scenario-payer-de",
            usd(),
            5,
            false,
            &r("identity.frozen"),
        )
        .await?;
        let unfreeze = Payload::Freeze(FreezeOp::Unfreeze { id: frozen });
        self.step("regulator lifts the freeze", "regulator-eu", unfreeze, "ok")
            .await?;
        self.pay(
            "unfrozen identity pays",
            "scenario-frozen-de",
            "scenario-payer-de",
            usd(),
            5,
            false,
            "ok",
        )
        .await?;
        let wrong = Payload::Freeze(FreezeOp::Freeze {
            id: "person-payer-de".into(),
            reason: "demo: out of jurisdiction".into(),
        });
        self.step(
            "APAC regulator cannot freeze a DE identity",
            "regulator-apac",
            wrong,
            "unauthorized",
        )
        .await?;
        let revoke = Payload::Identity(IdentityOp::Revoke {
            id: "person-revoked-de".into(),
        });
        self.step("KYC provider revokes an identity", "kyc", revoke, "ok")
            .await?;
        self.pay(
            "revoked identity pays",
            "scenario-revoked-de",
            "scenario-payer-de",
            usd(),
            5,
            false,
            &r("identity.revoked"),
        )
        .await?;
        self.asset_freeze().await?;
        self.governance().await?;
        Ok(())
    }

    /// The KYC provider registers a DE identity at tier 5, for which the rule set has no limits,
    /// and binds the unbound scenario account to it: its payments are refused by default.
    async fn undefined_limit(&mut self) -> anyhow::Result<()> {
        let status: StatusView = self.get("/v1/status").await?;
        let block: crate::api::BlockView =
            self.get(&format!("/v1/blocks/{}", status.height)).await?;
        let register = Payload::Identity(IdentityOp::Register {
            id: "scenario-tier5-de".into(),
            jurisdiction: tally_ledger::primitives::Jurisdiction::new("DE")
                .context("jurisdiction")?,
            tier: 5,
            expires_ms: block.header.timestamp_ms + 30 * 86_400_000,
            commitment: Hash([4; 32]),
        });
        self.step(
            "KYC provider registers a tier-5 identity",
            "kyc",
            register,
            "ok",
        )
        .await?;
        let bind = Payload::Identity(IdentityOp::Bind {
            id: "scenario-tier5-de".into(),
            account: self.account("scenario-unbound")?,
        });
        self.step("KYC provider binds an account to it", "kyc", bind, "ok")
            .await?;
        self.pay(
            "no limits defined for the sender's tier",
            "scenario-unbound",
            "scenario-payer-de",
            usd(),
            5,
            false,
            "compliance_rejected/limit.undefined",
        )
        .await
    }

    async fn velocity(&mut self) -> anyhow::Result<()> {
        // Tier 1 allows 20 transfers per rolling hour: 20 go in one after another (in order, to
        // one validator), the 21st is refused.
        let key = self.key("scenario-velocity-de")?.clone();
        let to = self.account("scenario-payer-de")?;
        let status: StatusView = self.get("/v1/status").await?;
        let mut last = Hash::ZERO;
        for seq in 0..20 {
            let p = Payload::Transfer(Transfer {
                to,
                asset: usd(),
                amount: UNIT,
                memo: None,
                travel: None,
            });
            last = self.submit_at(&key, seq, status.height, p).await?;
        }
        let s = self.wait(last, &key).await?;
        if s.status != "committed" {
            bail!("velocity: the 20th transfer was {}", s.status);
        }
        self.pay(
            "velocity: 21st transfer in an hour",
            "scenario-velocity-de",
            "scenario-payer-de",
            usd(),
            1,
            false,
            "compliance_rejected/velocity.hourly",
        )
        .await
    }

    /// Tier 4 allows 5 transfers per rolling day (and has no hourly count): the 6th is refused.
    async fn daily_count(&mut self) -> anyhow::Result<()> {
        for n in 1..=5 {
            self.pay(
                &format!("daily count (tier 4, 5 a day): transfer {n}"),
                "scenario-daily-count-de",
                "scenario-payer-de",
                usd(),
                1,
                false,
                "ok",
            )
            .await?;
        }
        self.pay(
            "daily count: 6th transfer in a day",
            "scenario-daily-count-de",
            "scenario-payer-de",
            usd(),
            1,
            false,
            "compliance_rejected/velocity.daily",
        )
        .await
    }

    async fn asset_freeze(&mut self) -> anyhow::Result<()> {
        let issuer = self
            .net
            .issuer_keys
            .get(&sgd())
            .context("the network has no SGD issuer key")?
            .clone();
        let op = Payload::Freeze(FreezeOp::FreezeAsset {
            asset: sgd(),
            id: "person-asset-frozen-sg".into(),
            reason: "demo: issuer review".into(),
        });
        let hash = self.submit(&issuer, op).await?;
        let s = self.wait(hash, &issuer).await?;
        if s.status != "committed" {
            bail!("the SGD issuer's freeze was {}", s.status);
        }
        self.pay(
            "issuer froze the identity for SGD",
            "scenario-asset-frozen-sg",
            "scenario-payer-sg",
            sgd(),
            5,
            false,
            "compliance_rejected/asset.frozen",
        )
        .await?;
        self.pay(
            "the same identity still pays in USD",
            "scenario-asset-frozen-sg",
            "scenario-payer-sg",
            usd(),
            5,
            false,
            "ok",
        )
        .await
    }

    /// Members raise the tier-1 per-transaction limit to 1,500 USD; the payment refused
    /// earlier passes once the change is in force, under rule-set version 2.
    async fn governance(&mut self) -> anyhow::Result<()> {
        let mut rules = demo_rules();
        for l in rules.limits.iter_mut().filter(|l| l.tier == 1) {
            l.per_transaction = Some(1_500 * UNIT);
        }
        let status: StatusView = self.get("/v1/status").await?;
        // Far enough ahead for the votes to land first; near enough that an idle network,
        // whose heartbeat blocks come at most 10 s apart, reaches it within the wait below.
        let effective = status.height + 20;
        let propose = Payload::Propose {
            action: GovAction::SetRules(rules),
            effective_height: effective,
        };
        self.step(
            "member proposes a higher tier-1 limit",
            "member-0",
            propose,
            "ok",
        )
        .await?;
        let id = self
            .results
            .last()
            .map(|r| r.hash)
            .context("no proposal receipt")?;
        let proposal_id = self.proposal_id(id, &self.key("member-0")?.clone()).await?;
        let members = self.net.genesis.validators.len();
        let needed = members * 2 / 3 + 1;
        for m in 1..needed {
            let vote = Payload::Vote {
                proposal: proposal_id,
                approve: true,
            };
            self.step(
                &format!("member-{m} votes yes"),
                &format!("member-{m}"),
                vote,
                "ok",
            )
            .await?;
        }
        let started = Instant::now();
        loop {
            let s: StatusView = self.get("/v1/status").await?;
            if s.height >= effective {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("height {effective} not reached within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.pay(
            "after the rule change: 1,200 USD on tier 1",
            "scenario-retail-de",
            "scenario-payer-de",
            usd(),
            1_200,
            true,
            "ok",
        )
        .await
    }

    async fn proposal_id(&self, hash: Hash, proposer: &SigningKey) -> anyhow::Result<u64> {
        let s = self.transaction(hash, proposer).await?;
        let receipt = s.receipt.context("no receipt")?;
        receipt
            .events
            .iter()
            .find_map(|e| match e {
                tally_ledger::Event::ProposalCreated { proposal, .. } => Some(*proposal),
                _ => None,
            })
            .context("the proposal's receipt names no proposal")
    }

    /// A table of the results.
    pub fn report(&self) -> String {
        let mut out = String::from("compliance scenarios (expected -> receipt):\n");
        for r in &self.results {
            out.push_str(&format!(
                "  {} {:<46} {:<44} h{}\n",
                if r.passed() { "ok  " } else { "FAIL" },
                r.name,
                if r.passed() {
                    r.got.clone()
                } else {
                    format!("{} -> {}", r.expected, r.got)
                },
                r.height
            ));
        }
        out
    }
}
