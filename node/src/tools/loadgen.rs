//! The load generator of `tally devnet` and `tally bench`: signed micro-payments between demo
//! accounts, sent over the real HTTP API at a fixed rate, with submit-to-final latency measured
//! by following the committed blocks of one validator.
//!
//! Each account is pinned to one validator, and each validator gets one sender that posts in
//! order, so an account's sequence numbers reach the mempool in order. A submission refused
//! with `mempool_full` (429) is retried, in order, before newer ones: back-pressure slows the
//! generator instead of breaking its accounts' sequences.

use crate::api::{BatchSubmitted, BlockView, StatusView};
use ed25519_dalek::SigningKey;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_ledger::primitives::{AccountId, AssetCode, Hash, Height};
use tally_ledger::tx::{Payload, SignedTransaction, Transaction, Transfer};
use tokio::sync::mpsc;

/// One sending account.
#[derive(Clone)]
pub struct LoadAccount {
    /// Its key.
    pub key: SigningKey,
    /// Its public key.
    pub id: AccountId,
    /// The asset it pays in.
    pub asset: AssetCode,
    /// Its next sequence number.
    pub sequence: u64,
}

/// What to send, where, how fast.
#[derive(Clone)]
pub struct LoadConfig {
    /// Offered transactions per second.
    pub rate: u64,
    /// How long to send; `None` until stopped.
    pub duration: Option<Duration>,
    /// Base URLs of the validators' APIs.
    pub targets: Vec<String>,
    /// Network name.
    pub chain_id: String,
    /// Sending accounts (account i is pinned to target i mod n).
    pub accounts: Vec<LoadAccount>,
    /// Who gets paid.
    pub recipients: Vec<AccountId>,
    /// Expiry height written into every transaction.
    pub expiry_height: Height,
    /// Most transactions per POST.
    pub max_per_request: usize,
    /// Number of accounts (filled in by `Load::start`).
    #[doc(hidden)]
    pub accounts_len: usize,
}

/// Most payments signed before a timed run starts: a benchmark's whole run fits (18,000/s for 30 s is 540,000), and a long run signs the rest as
/// they fall due instead of holding hours of them in memory.
const PRESIGN_MAX: u64 = 600_000;

/// In-order senders per validator.
const SENDERS_PER_VALIDATOR: usize = 1;

/// Pause before retrying a submission refused for back-pressure (shorter than the server's
/// `Retry-After: 1`, so that the measured network never idles for want of load).
const REFUSED_BACKOFF: Duration = Duration::from_millis(100);

/// Counters shared with the progress display.
#[derive(Default)]
pub struct LoadStats {
    /// Transactions accepted by a validator (202).
    pub accepted: AtomicU64,
    /// Submissions refused, by code (a retried transaction counts each time).
    pub refused: Mutex<BTreeMap<String, u64>>,
    /// Final transactions that were applied.
    pub applied: AtomicU64,
    /// Final transactions rejected by execution, by code.
    pub rejected: Mutex<BTreeMap<String, u64>>,
    /// Submit-to-final latencies over the whole run.
    pub latencies: Mutex<Latencies>,
    /// Submit-to-final latencies since the progress display last took them.
    pub recent: Mutex<Latencies>,
    /// Highest block followed.
    pub height: AtomicU64,
    sent_at: Mutex<HashMap<Hash, Instant>>,
}

impl LoadStats {
    fn refuse(&self, code: &str, n: u64) {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(code.to_owned()).or_default() += n;
    }

    /// Final transactions (applied + rejected).
    pub fn finalized(&self) -> u64 {
        let rejected: u64 = self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum();
        self.applied.load(Ordering::Relaxed) + rejected
    }

    /// Latency percentile in milliseconds over every final transaction so far.
    pub fn percentile(&self, p: f64) -> Option<u32> {
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .percentile(p)
    }

    /// The latencies since the last call (or the start), and a fresh window.
    pub fn take_recent(&self) -> Latencies {
        std::mem::take(&mut *self.recent.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Longest latency counted to the millisecond; longer ones count as this.
const LATENCY_CAP_MS: usize = 120_000;

/// Latencies counted per millisecond: exact percentiles, constant memory and O(1) recording
/// however long the run (a list of every latency, sorted for each progress line, grew and
/// slowed the very run it measured).
pub struct Latencies {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; LATENCY_CAP_MS + 1],
            total: 0,
        }
    }
}

impl Latencies {
    /// Counts one latency (at most `LATENCY_CAP_MS`).
    pub fn record(&mut self, ms: u32) {
        let i = (ms as usize).min(LATENCY_CAP_MS);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Number of latencies counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether none was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The latency at quantile `p` (0..=1): the element at `round((n - 1) × p)` of the sorted
    /// latencies, in milliseconds.
    pub fn percentile(&self, p: f64) -> Option<u32> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total - 1) as f64 * p.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0u64;
        for (ms, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen > rank {
                return u32::try_from(ms).ok();
            }
        }
        None
    }
}

/// A load run in progress.
pub struct Load {
    /// Live counters.
    pub stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Signs `count` payments, cycling through the accounts (parallel, before or during a run).
fn sign_payments(
    config: &LoadConfig,
    accounts: &mut [LoadAccount],
    start: u64,
    count: u64,
) -> Vec<(usize, SignedTransaction)> {
    use rayon::prelude::*;
    let n = accounts.len() as u64;
    let plan: Vec<(usize, Transaction)> = (start..start + count)
        .map(|k| {
            let i = (k % n) as usize;
            let a = &mut accounts[i];
            let seq = a.sequence;
            a.sequence += 1;
            // Deterministic spread of recipients and amounts (1..=9_999 minor units).
            let mix = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut to = config.recipients[(mix % config.recipients.len() as u64) as usize];
            if to == a.id {
                to = config.recipients[((mix + 1) % config.recipients.len() as u64) as usize];
            }
            let tx = Transaction {
                chain_id: config.chain_id.clone(),
                sender: a.id,
                sequence: seq,
                expiry_height: config.expiry_height,
                payload: Payload::Transfer(Transfer {
                    to,
                    asset: a.asset.clone(),
                    amount: 1 + (mix >> 32) % 9_999,
                    memo: None,
                    travel: None,
                }),
            };
            (i, tx)
        })
        .collect();
    let accounts: &[LoadAccount] = accounts;
    plan.into_par_iter()
        .map(|(i, tx)| (i, tx.sign(&accounts[i].key)))
        .collect()
}

impl LoadAccount {
    /// An account that pays in `asset`, next sequence `sequence`.
    pub fn new(key: SigningKey, asset: AssetCode, sequence: u64) -> LoadAccount {
        LoadAccount {
            id: AccountId(key.verifying_key().to_bytes()),
            key,
            asset,
            sequence,
        }
    }
}

impl Load {
    /// Starts sending. With a duration, every transaction is signed before the clock starts,
    /// so the measurement is of the network, not of the client's signing.
    pub async fn start(mut config: LoadConfig) -> Load {
        let stats = Arc::new(LoadStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        config.accounts_len = config.accounts.len();
        let mut accounts = std::mem::take(&mut config.accounts);
        let presigned = match config.duration {
            Some(d) => {
                let total = ((config.rate as f64 * d.as_secs_f64()).ceil() as u64).min(PRESIGN_MAX);
                let cfg = config.clone();
                let (txs, back) = tokio::task::spawn_blocking(move || {
                    let txs = sign_payments(&cfg, &mut accounts, 0, total);
                    (txs, accounts)
                })
                .await
                .unwrap_or_default();
                accounts = back;
                Some(txs)
            }
            None => None,
        };
        // Several in-order senders per validator, each with its own accounts, so that a slow
        // answer does not hold back every account of that validator.
        let lanes =
            SENDERS_PER_VALIDATOR.min((config.accounts_len / config.targets.len().max(1)).max(1));
        let n_targets = (config.targets.len() * lanes).max(1);
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        let urls: Vec<String> = (0..lanes)
            .flat_map(|_| config.targets.iter().cloned())
            .collect();
        for url in &urls {
            let (tx, rx) = mpsc::unbounded_channel::<SignedTransaction>();
            senders.push(tx);
            tasks.push(tokio::spawn(send_loop(
                client.clone(),
                url.clone(),
                rx,
                stats.clone(),
                config.max_per_request,
                stop.clone(),
            )));
        }
        if let Some(first) = config.targets.first() {
            tasks.push(tokio::spawn(follow_blocks(
                client.clone(),
                first.clone(),
                stats.clone(),
                stop.clone(),
            )));
        }
        let pacer_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut released = 0u64;
            let mut next_signed = presigned.as_ref().map_or(0, |p| p.len() as u64);
            let mut presigned = presigned.map(VecDeque::from).unwrap_or_default();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tick.tick().await;
                if pacer_stop.load(Ordering::Relaxed) {
                    return;
                }
                let elapsed = started.elapsed();
                if config.duration.is_some_and(|d| elapsed >= d) {
                    return;
                }
                let due = (config.rate as f64 * elapsed.as_secs_f64()) as u64;
                if due <= released {
                    continue;
                }
                let count = due - released;
                let take = (count as usize).min(presigned.len());
                let mut batch: Vec<(usize, SignedTransaction)> = presigned.drain(..take).collect();
                // Past the pre-signed ones (a run longer than `PRESIGN_MAX` allows, or one
                // without a duration), sign as they fall due.
                let rest = count - take as u64;
                if rest > 0 {
                    let cfg = config.clone();
                    let mut acc = std::mem::take(&mut accounts);
                    let start = next_signed;
                    let (txs, back) = tokio::task::spawn_blocking(move || {
                        let txs = sign_payments(&cfg, &mut acc, start, rest);
                        (txs, acc)
                    })
                    .await
                    .unwrap_or_default();
                    accounts = back;
                    next_signed += rest;
                    batch.extend(txs);
                }
                released += count;
                for (i, tx) in batch {
                    let _ = senders[i % n_targets].send(tx);
                }
            }
        }));
        Load { stats, stop, tasks }
    }

    /// Stops sending (blocks already final keep being counted until `finish`).
    pub fn stop_sending(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the pacer to end (the run's duration) without stopping the block follower.
    pub async fn wait_sent(&mut self) {
        if let Some(pacer) = self.tasks.pop() {
            let _ = pacer.await;
        }
    }

    /// Stops everything.
    pub async fn finish(self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        self.stats
    }
}

async fn send_loop(
    client: reqwest::Client,
    url: String,
    mut rx: mpsc::UnboundedReceiver<SignedTransaction>,
    stats: Arc<LoadStats>,
    max: usize,
    stop: Arc<AtomicBool>,
) {
    let endpoint = format!("{url}/v1/transactions/batch");
    let mut queue: VecDeque<SignedTransaction> = VecDeque::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if queue.is_empty() {
            match rx.recv().await {
                Some(tx) => queue.push_back(tx),
                None => return,
            }
        }
        while queue.len() < max {
            match rx.try_recv() {
                Ok(tx) => queue.push_back(tx),
                Err(_) => break,
            }
        }
        let n = queue.len().min(max);
        let hashes: Vec<Hash> = queue.iter().take(n).map(SignedTransaction::hash).collect();
        let body = serde_json::json!({
            "txs": queue.iter().take(n).map(|t| hex::encode(t.to_bytes())).collect::<Vec<_>>()
        });
        let sent = Instant::now();
        let response = client.post(&endpoint).json(&body).send().await;
        let Ok(response) = response else {
            stats.refuse("unreachable", n as u64);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
        {
            stats.refuse("mempool_full", n as u64);
            tokio::time::sleep(REFUSED_BACKOFF).await;
            continue;
        }
        let Ok(answer) = response.json::<BatchSubmitted>().await else {
            stats.refuse(&format!("http_{}", status.as_u16()), n as u64);
            queue.drain(..n);
            continue;
        };
        // Accepted ones leave the queue; a refused suffix (mempool full) is retried first.
        let mut done = 0;
        let mut full = false;
        {
            let mut sent_at = stats.sent_at.lock().unwrap_or_else(|e| e.into_inner());
            for (r, h) in answer.results.iter().zip(&hashes) {
                match &r.error {
                    None => {
                        sent_at.insert(*h, sent);
                        done += 1;
                    }
                    Some(e) if e.code == "mempool_full" => {
                        full = true;
                        break;
                    }
                    Some(e) => {
                        drop_refused(&stats, &e.code);
                        done += 1;
                    }
                }
            }
        }
        stats
            .accepted
            .fetch_add(answer.accepted as u64, Ordering::Relaxed);
        queue.drain(..done);
        if full {
            stats.refuse("mempool_full", (n - done) as u64);
            tokio::time::sleep(REFUSED_BACKOFF).await;
        }
    }
}

fn drop_refused(stats: &LoadStats, code: &str) {
    stats.refuse(code, 1);
}

async fn follow_blocks(
    client: reqwest::Client,
    url: String,
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
) {
    let mut next: Height = match get_status(&client, &url).await {
        Some(s) => s.height + 1,
        None => 1,
    };
    loop {
        let Some(status) = get_status(&client, &url).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while next <= status.height {
            let block_url = format!("{url}/v1/blocks/{next}?receipts=true");
            let Ok(r) = client.get(&block_url).send().await else {
                break;
            };
            let Ok(block) = r.json::<BlockView>().await else {
                break;
            };
            let now = Instant::now();
            let txs = block.transactions.unwrap_or_default();
            let mut lat = Vec::with_capacity(txs.len());
            {
                let mut sent_at = stats.sent_at.lock().unwrap_or_else(|e| e.into_inner());
                let mut rejected = stats.rejected.lock().unwrap_or_else(|e| e.into_inner());
                for t in &txs {
                    let Some(at) = sent_at.remove(&t.hash) else {
                        continue;
                    };
                    lat.push(now.duration_since(at).as_millis().min(u32::MAX as u128) as u32);
                    if t.code == "ok" {
                        stats.applied.fetch_add(1, Ordering::Relaxed);
                    } else {
                        *rejected.entry(t.code.clone()).or_default() += 1;
                    }
                }
            }
            for set in [&stats.latencies, &stats.recent] {
                let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
                for &ms in &lat {
                    set.record(ms);
                }
            }
            stats.height.store(next, Ordering::Relaxed);
            next += 1;
        }
        if stop.load(Ordering::Relaxed) && stats.sent_at.lock().map_or(true, |m| m.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /v1/status` of a validator.
pub async fn get_status(client: &reqwest::Client, url: &str) -> Option<StatusView> {
    client
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The load of the demo accounts `account_keys` (account j paying in demo asset j mod the
/// number of assets, as `tally testnet init` funded it, and pinned to `urls[j mod n]`),
/// starting from the sequence numbers the network has for them, so a load
/// can follow an earlier one on the same network.
pub async fn config_for(
    chain_id: &str,
    account_keys: &[SigningKey],
    urls: &[String],
    rate: u64,
    duration: Option<Duration>,
) -> LoadConfig {
    use crate::tools::testnet::DEMO_ASSETS;
    let client = reqwest::Client::new();
    let height = match urls.first() {
        Some(url) => get_status(&client, url).await.map_or(0, |s| s.height),
        None => 0,
    };
    let mut accounts = Vec::new();
    for (j, key) in account_keys.iter().enumerate() {
        let (code, _) = DEMO_ASSETS[j % DEMO_ASSETS.len()];
        let Some(asset) = AssetCode::new(code) else {
            continue;
        };
        let id = crate::keys::account_id(key);
        let sequence = match urls.get(j % urls.len().max(1)) {
            Some(base) => match crate::api::auth::signed_get(
                &client,
                base,
                &format!("/v1/accounts/{id}"),
                key,
                chain_id,
            )
            .send()
            .await
            {
                Ok(r) => r
                    .json::<crate::api::AccountView>()
                    .await
                    .map_or(0, |a| a.sequence),
                Err(_) => 0,
            },
            None => 0,
        };
        accounts.push(LoadAccount::new(key.clone(), asset, sequence));
    }
    LoadConfig {
        rate,
        duration,
        targets: urls.to_vec(),
        chain_id: chain_id.to_owned(),
        recipients: accounts.iter().map(|a| a.id).collect(),
        accounts,
        expiry_height: height + 1_000_000,
        max_per_request: 1000,
        accounts_len: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn percentiles_match_the_sorted_list_they_replace() {
        let mut h = Latencies::default();
        assert_eq!(h.percentile(0.5), None);
        // A spread with repeats, a long tail and one past the cap.
        let mut all: Vec<u32> = (0..5_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 20) % 900)
            .chain([3_000, 3_000, 45_000, 500_000])
            .collect();
        for &ms in &all {
            h.record(ms);
        }
        all.sort_unstable();
        for p in [0.0, 0.01, 0.5, 0.95, 0.99, 0.999, 1.0] {
            let naive = all[((all.len() as f64 - 1.0) * p).round() as usize].min(120_000);
            assert_eq!(h.percentile(p), Some(naive), "p = {p}");
        }
        assert_eq!(h.len(), all.len() as u64);
    }
}
