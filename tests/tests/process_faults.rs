//! Fault tests on real `tally run` processes (four validators on loopback, each its own OS
//! process with its own sled directory): under a steady load of signed payments, a random
//! validator (the current leader half of the time) is killed with SIGKILL at a random moment
//! and restarted, 30 times. Afterwards every validator agrees on the state root, and every
//! payment any validator accepted is final (the client resubmits a payment that is not final
//! after a while to another validator, as a real client does; a resubmission commits once).
//!
//! And a Byzantine validator among three honest `tally run` processes: the test process holds
//! validator 3's key and sends forged messages; the three keep finalizing with the same state
//! root, refuse and count every forgery, keep the evidence and ban it.
//!
//! Slow: run by `scripts/slow-tests` (`TALLY_BIN` names the release binary):
//!     TALLY_BIN=target/release/tally cargo test -p tally-tests --test process_faults -- --ignored

use rand::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tally_ledger::primitives::{AccountId, Hash};
use tally_ledger::tx::SignedTransaction;
use tally_node::tools::testnet::{Testnet, TestnetSpec};
use tally_tests::remote::{self, free_ports};

const VALIDATORS: usize = 4;
const KILLS: usize = 30;

struct Net {
    dir: PathBuf,
    bin: PathBuf,
    testnet: Testnet,
    api_base: u16,
    procs: Vec<Option<Child>>,
    http: reqwest::Client,
}

impl Net {
    fn start(dir: &Path, bin: PathBuf) -> Net {
        Net::start_some(dir, bin, VALIDATORS)
    }

    /// The first `running` validators of a four-validator network.
    fn start_some(dir: &Path, bin: PathBuf, running: usize) -> Net {
        let api_base = free_ports(VALIDATORS as u16, 21_000..29_000);
        let p2p_base = free_ports(VALIDATORS as u16, 21_000..29_000);
        let testnet = Testnet::generate(TestnetSpec {
            chain_id: "tally-faults".into(),
            validators: VALIDATORS,
            accounts: 64,
            api_base_port: api_base,
            p2p_base_port: p2p_base,
            genesis_time_ms: 0,
            host_template: None,
            // These tests count blocks while the network idles between phases: a 100 ms
            // heartbeat keeps the block rate they were written for (the idle backoff has its
            // own test in validators.rs).
            heartbeat_ms: (100, 100),
        })
        .expect("testnet");
        testnet.write(dir).expect("write testnet");
        let mut net = Net {
            dir: dir.to_owned(),
            bin,
            testnet,
            api_base,
            procs: (0..VALIDATORS).map(|_| None).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        };
        for i in 0..running {
            net.spawn(i);
        }
        net
    }

    async fn metric(&self, i: usize, series: &str) -> f64 {
        let Ok(r) = self.http.get(self.url(i, "/metrics")).send().await else {
            return 0.0;
        };
        tally_tests::metric_sum(&r.text().await.unwrap_or_default(), series)
    }

    /// Waits until validators `0..n` reach `target` and asserts that their state roots there
    /// are all present and equal.
    async fn roots_agree_at(&self, n: usize, target: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for i in 0..n {
            while self.height(i).await.unwrap_or(0) < target {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "validator {i} did not reach height {target}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let mut roots = Vec::new();
        for i in 0..n {
            let b = self
                .get(i, &format!("/v1/blocks/{target}"))
                .await
                .expect("block");
            roots.push(b["header"]["state_root"].clone());
        }
        assert!(
            roots.iter().all(|r| *r == roots[0] && !r.is_null()),
            "{roots:?}"
        );
    }

    fn spawn(&mut self, i: usize) {
        let vdir = self.dir.join(format!("validator-{i}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(vdir.join("log.txt"))
            .expect("log file");
        let child = Command::new(&self.bin)
            .args(["run", "--config", "node.toml", "--log-format", "json"])
            .current_dir(&vdir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tally run");
        self.procs[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_base + i as u16)
    }

    async fn get(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let r = remote::signed_get(&self.http, &self.testnet, &self.url(i, ""), path)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    async fn submit(&self, i: usize, tx: &SignedTransaction) -> bool {
        remote::submit(&self.http, &self.url(i, ""), tx).await
    }

    async fn status(&self, i: usize, hash: &Hash) -> Option<String> {
        remote::tx_status(&self.http, &self.testnet, &self.url(i, ""), hash).await
    }

    fn transfer(&self, from: usize, to: usize, sequence: u64) -> SignedTransaction {
        remote::transfer(&self.testnet, from, to, sequence)
    }

    async fn height(&self, i: usize) -> Option<u64> {
        self.get(i, "/v1/status").await?["height"].as_u64()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..VALIDATORS {
            self.kill(i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: real processes; run by scripts/slow-tests with TALLY_BIN"]
async fn kill_9_of_random_validators_under_load_loses_nothing_and_roots_agree() {
    let bin = PathBuf::from(std::env::var("TALLY_BIN").expect("TALLY_BIN names the tally binary"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut net = Net::start(dir.path(), bin);
    let mut rng = rand::thread_rng();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while net.height(0).await.unwrap_or(0) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the network never started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Accepted payments by hash. Like a real client, each account has one payment in flight
    // at a time: the next one is signed only when the last is final, and a payment that is not
    // final is resubmitted (to any running validator) instead.
    let mut accepted: BTreeMap<Hash, SignedTransaction> = BTreeMap::new();
    let mut sequences = vec![0u64; 64];
    let mut in_flight: Vec<Option<Hash>> = vec![None; 64];
    for kill in 0..KILLS {
        for _ in 0..40 {
            let running: Vec<usize> = (0..VALIDATORS)
                .filter(|i| net.procs[*i].is_some())
                .collect();
            let at = running[rng.gen_range(0..running.len())];
            let from = rng.gen_range(0..64);
            if let Some(h) = in_flight[from] {
                match net.status(at, &h).await.as_deref() {
                    Some("pending") | None => {
                        let _ = net.submit(at, &accepted[&h]).await;
                        continue;
                    }
                    Some(_) => in_flight[from] = None,
                }
            }
            let to = (from + 1 + rng.gen_range(0..63)) % 64;
            let tx = net.transfer(from, to, sequences[from]);
            if net.submit(at, &tx).await {
                sequences[from] += 1;
                in_flight[from] = Some(tx.hash());
                accepted.insert(tx.hash(), tx);
            }
        }
        // The victim: the current leader half of the time.
        let round = net
            .get(0, "/v1/status")
            .await
            .and_then(|s| s["round"].as_u64());
        let victim = match round {
            Some(r) if rng.gen_bool(0.5) => (r % VALIDATORS as u64) as usize,
            _ => rng.gen_range(0..VALIDATORS),
        };
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..1500))).await;
        net.kill(victim);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..2000))).await;
        net.spawn(victim);
        eprintln!(
            "kill {}: validator {victim}, {} accepted so far",
            kill + 1,
            accepted.len()
        );
    }

    // Every accepted payment becomes final; a client resubmits what is not final.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut pending: Vec<Hash> = accepted.keys().copied().collect();
    while !pending.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} accepted payments never became final",
            pending.len()
        );
        let mut still = Vec::new();
        for h in pending {
            match net.status(0, &h).await.as_deref() {
                Some("committed") => {}
                Some(other) if other != "pending" => {
                    let receipt = net.get(0, &format!("/v1/transactions/{h}")).await;
                    panic!("payment {h} ended {other}: {receipt:?}")
                }
                _ => {
                    let at = rng.gen_range(0..VALIDATORS);
                    let _ = net.submit(at, &accepted[&h]).await;
                    still.push(h);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // Every validator reaches a common height with the same state root.
    let target = net.height(0).await.expect("height") + 3;
    net.roots_agree_at(VALIDATORS, target, Duration::from_secs(180))
        .await;
    eprintln!(
        "{} payments accepted, all final; roots agree at height {target}",
        accepted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: real processes; run by scripts/slow-tests with TALLY_BIN"]
async fn a_byzantine_validator_among_real_processes_is_refused_counted_and_banned() {
    use tally_tests::forger::Forger;
    let bin = PathBuf::from(std::env::var("TALLY_BIN").expect("TALLY_BIN names the tally binary"));
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Net::start_some(dir.path(), bin, 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while net.height(0).await.unwrap_or(0) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the network never started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let me = &net.testnet.genesis.validators[3];
    let forger = Forger::join(
        net.testnet.validator_keys[3].clone(),
        3,
        me.p2p_addr.parse().expect("multiaddr"),
        &net.testnet.genesis,
    )
    .await;
    let tx = net.transfer(0, 1, 0);
    let author = AccountId(net.testnet.validator_keys[0].verifying_key().to_bytes());
    forger.batch_in_the_name_of(author, tx.clone()).await;
    let refused = "tally_sync_requests_total{kind=\"blocks\",outcome=\"refused\"}";
    for _ in 0..10 {
        forger.sync_flood(24).await;
        if net.metric(0, refused).await >= 1.0 {
            break;
        }
    }
    let round = net.metric(0, "tally_consensus_round").await as u64 + 1;
    forger.equivocate(round).await;
    let mut rounds: Vec<u64> = (5..16).collect();
    rounds.push(u64::MAX - 1);
    forger.forged_root_timeouts(&rounds).await;

    // The three keep finalizing, with one state root.
    let target = net.height(0).await.expect("height") + 10;
    net.roots_agree_at(3, target, Duration::from_secs(120))
        .await;
    for i in 0..3 {
        assert!(net.metric(i, "tally_consensus_round").await < 10_000.0);
    }
    let bad_timeout = "tally_consensus_invalid_messages_total{reason=\"bad_timeout\"}";
    assert!(net.metric(0, bad_timeout).await >= 1.0);
    assert!(
        net.metric(0, "tally_consensus_evidence_total{kind=\"vote\"}")
            .await
            >= 1.0
    );
    assert!(net.metric(0, refused).await >= 1.0);
    let mut wrong_author = 0.0;
    for i in 0..3 {
        wrong_author += net
            .metric(i, "tally_batches_rejected_total{reason=\"wrong_author\"}")
            .await;
    }
    assert!(wrong_author >= 1.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while net.metric(0, "tally_network_peer_bans_total").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "never banned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        net.status(0, &tx.hash()).await.as_deref(),
        Some("committed")
    );
    eprintln!("forgeries refused and counted, forger banned; roots agree at height {target}");
    forger.net.shutdown().await;
}

/// A stopped validator (SIGSTOP: its sockets stay open, nothing it is sent is answered or
/// refused, as under `docker pause`) must not hold the other three: each time, for three
/// round timeouts, the three keep finalizing, and after SIGCONT the stopped one catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: real processes; run by scripts/slow-tests with TALLY_BIN"]
async fn a_stopped_validator_does_not_hold_the_other_three() {
    const PAUSES: usize = 8;
    const BASE_TIMEOUT: Duration = Duration::from_millis(1500);
    let bin = PathBuf::from(std::env::var("TALLY_BIN").expect("TALLY_BIN names the tally binary"));
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Net::start(dir.path(), bin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while net.height(0).await.unwrap_or(0) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the network never started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rng = rand::thread_rng();
    let mut sequences = vec![0u64; 64];
    let mut progress = Vec::new();
    for pause in 0..PAUSES {
        // The victim: the leader of the next round half of the time (its predecessor's votes
        // go to it), otherwise any validator.
        let round = net
            .get(0, "/v1/status")
            .await
            .and_then(|s| s["round"].as_u64());
        let victim = match round {
            Some(r) if rng.gen_bool(0.5) => ((r + 1) % VALIDATORS as u64) as usize,
            _ => rng.gen_range(0..VALIDATORS),
        };
        let others: Vec<usize> = (0..VALIDATORS).filter(|i| *i != victim).collect();
        // Some load first, so batches by every author (the victim's included) are in flight.
        for _ in 0..40 {
            let from = rng.gen_range(0..64);
            let to = (from + 1 + rng.gen_range(0..63)) % 64;
            let tx = net.transfer(from, to, sequences[from]);
            if net.submit(others[rng.gen_range(0..3)], &tx).await {
                sequences[from] += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
        let pid = net.procs[victim]
            .as_ref()
            .expect("running")
            .id()
            .to_string();
        let signal = |s: &str| {
            let ok = Command::new("kill")
                .args([s, &pid])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {s} {pid}");
        };
        signal("-STOP");
        let mut h0 = 0;
        for &i in &others {
            h0 = h0.max(net.height(i).await.unwrap_or(0));
        }
        tokio::time::sleep(BASE_TIMEOUT * 3).await;
        let mut h1 = 0;
        for &i in &others {
            h1 = h1.max(net.height(i).await.unwrap_or(0));
        }
        signal("-CONT");
        eprintln!(
            "pause {}: validator {victim} stopped for {} ms; the others finalized {} blocks",
            pause + 1,
            (BASE_TIMEOUT * 3).as_millis(),
            h1 - h0
        );
        progress.push((victim, h1 - h0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while net.height(victim).await.unwrap_or(0) < h1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "validator {victim} did not catch up after SIGCONT"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        progress.iter().all(|(_, blocks)| *blocks > 0),
        "the others stalled while a validator was stopped: {progress:?}"
    );
    let target = net.height(0).await.expect("height") + 3;
    net.roots_agree_at(VALIDATORS, target, Duration::from_secs(120))
        .await;
}
