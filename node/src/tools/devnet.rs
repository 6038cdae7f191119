//! `tally devnet` and `tally bench`: a complete local network in one process (N validators
//! with real libp2p on loopback and real sled directories) under a built-in load of signed
//! micro-payments sent through the HTTP API.

use crate::config::Config;
use crate::process::{init_logging, runtime, shutdown_signal};
use crate::runtime::{NodeOptions, RunningNode};
use crate::tools::loadgen::{Load, LoadConfig, LoadStats};
use crate::tools::testnet::{Testnet, TestnetSpec};
use anyhow::Context;
use clap::Args;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_ledger::primitives::{AccountId, AssetCode};
use tally_ledger::tx::SignedTransaction;

/// Flags shared by `tally devnet` and `tally bench`.
#[derive(Debug, Clone, Args)]
pub struct DevnetArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Offered load in signed payments per second (0: no load).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// How long to run, e.g. `30s`, `2m`; without it, until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Directory for the genesis, configs, keys and databases (a temporary one if absent).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of demo accounts sending payments.
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,
    /// Validator i's HTTP API listens on 127.0.0.1:(api-base-port + i).
    #[arg(long, default_value_t = 8700)]
    pub api_base_port: u16,
    /// Validator i's libp2p listens on 127.0.0.1:(p2p-base-port + i).
    #[arg(long, default_value_t = 7700)]
    pub p2p_base_port: u16,
    /// Transactions per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_max_txs: usize,
    /// Batch sealing age in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub batch_max_age_ms: u64,
    /// Mempool capacity per validator, in transactions.
    #[arg(long, default_value_t = 2_000)]
    pub mempool_max_txs: usize,
    /// Most of a validator's own transactions in uncommitted batches.
    #[arg(long, default_value_t = 1_000)]
    pub max_inflight_txs: usize,
    /// Every validator verifies every signature of every batch (`batching.verify_all_signatures`)
    /// instead of trusting f + 1 attestations.
    #[arg(long)]
    pub verify_all_signatures: bool,
    /// Log filter (RUST_LOG overrides it).
    #[arg(long, default_value = "warn,libp2p_gossipsub=error")]
    pub log_filter: String,
    /// Log format: `pretty` or `json`.
    #[arg(long, default_value = "pretty")]
    pub log_format: String,
    /// Skip the compliance scenarios (payments that hit each rule, and a governance change)
    /// that `tally devnet` runs next to the load.
    #[arg(long)]
    pub no_scenarios: bool,
    /// `tally bench` only: run the network with no load for this long (e.g. `60s`) and report
    /// blocks per second and the bytes each validator writes and keeps, instead of a load run.
    #[arg(long, value_parser = parse_duration)]
    pub idle: Option<Duration>,
}

/// `30s`, `500ms`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30s, 500ms or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}

/// Reads back a network written by `Testnet::write` (to restart a devnet in the same `--dir`).
pub fn load_testnet(dir: &Path) -> anyhow::Result<Testnet> {
    let genesis = tally_ledger::genesis::Genesis::load(&dir.join("genesis.json"))?;
    let mut validator_keys = Vec::new();
    for i in 0..genesis.validators.len() {
        let path = dir.join(format!("validator-{i}")).join("validator.key");
        validator_keys.push(crate::keys::read_key_file(&path)?);
    }
    let mut issuer_keys = BTreeMap::new();
    for a in &genesis.assets {
        let path = dir.join("issuers").join(format!("{}.key", a.code));
        if path.exists() {
            issuer_keys.insert(a.code.clone(), crate::keys::read_key_file(&path)?);
        }
    }
    let account_keys = load_account_keys(dir)?;
    let mut named_keys = BTreeMap::new();
    let keys_dir = dir.join("keys");
    if keys_dir.exists() {
        for entry in std::fs::read_dir(&keys_dir)? {
            let path = entry?.path();
            if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                named_keys.insert(name.to_owned(), crate::keys::read_key_file(&path)?);
            }
        }
    }
    let spec = TestnetSpec {
        chain_id: genesis.chain_id.clone(),
        validators: genesis.validators.len(),
        accounts: account_keys.len(),
        genesis_time_ms: genesis.genesis_time_ms,
        ..TestnetSpec::default()
    };
    Ok(Testnet {
        genesis,
        validator_keys,
        issuer_keys,
        account_keys,
        named_keys,
        spec,
    })
}

/// The demo account keys `Testnet::write` put in `dir/accounts/`, in order.
pub fn load_account_keys(dir: &Path) -> anyhow::Result<Vec<ed25519_dalek::SigningKey>> {
    let mut keys = Vec::new();
    for j in 0.. {
        let path = dir.join("accounts").join(format!("account-{j}.key"));
        if !path.exists() {
            break;
        }
        keys.push(crate::keys::read_key_file(&path)?);
    }
    Ok(keys)
}

/// A running local network.
pub struct Devnet {
    /// The generated network (keys, genesis).
    pub testnet: Testnet,
    /// The validators.
    pub nodes: Vec<RunningNode>,
    /// API base URLs, by validator.
    pub urls: Vec<String>,
    _tempdir: Option<tempfile::TempDir>,
    /// Where everything lives.
    pub dir: PathBuf,
}

impl Devnet {
    /// Generates a testnet (or reuses the one in `dir`) and starts every validator.
    pub async fn start(args: &DevnetArgs) -> anyhow::Result<Devnet> {
        let (tempdir, dir) = match &args.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("tally-devnet-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        let spec = TestnetSpec {
            validators: args.validators,
            accounts: args.accounts.max(2),
            api_base_port: args.api_base_port,
            p2p_base_port: args.p2p_base_port,
            ..TestnetSpec::default()
        };
        let testnet = if dir.join("genesis.json").exists() {
            load_testnet(&dir)
                .with_context(|| format!("reusing the devnet in {}", dir.display()))?
        } else {
            let t = Testnet::generate(spec)?;
            t.write(&dir)?;
            t
        };
        let mut nodes = Vec::new();
        let mut urls = Vec::new();
        for i in 0..testnet.genesis.validators.len() {
            let path = dir.join(format!("validator-{i}")).join("node.toml");
            let config = Config::load(&path)?;
            let mut options = NodeOptions::from_config(&config)?;
            options.batch_max_txs = args.batch_max_txs;
            options.batch_max_age = Duration::from_millis(args.batch_max_age_ms);
            options.mempool_max_txs = args.mempool_max_txs;
            options.batch_max_inflight_txs = args.max_inflight_txs;
            options.verify_all_signatures = args.verify_all_signatures;
            let node = RunningNode::start(options)
                .await
                .with_context(|| format!("starting validator-{i}"))?;
            urls.push(format!("http://{}", node.api_addr()));
            nodes.push(node);
        }
        Ok(Devnet {
            testnet,
            nodes,
            urls,
            _tempdir: tempdir,
            dir,
        })
    }

    /// Waits until every validator has executed `height`.
    pub async fn wait_height(&self, height: u64, timeout: Duration) -> anyhow::Result<()> {
        let all =
            futures::future::join_all(self.nodes.iter().map(|n| n.shared().wait_height(height)));
        tokio::time::timeout(timeout, all)
            .await
            .map(|_| ())
            .map_err(|_| {
                anyhow::anyhow!("validators did not reach height {height} within {timeout:?}")
            })
    }

    /// Stops every validator.
    pub async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }

    /// True if every validator reports the same state root at the lowest executed height.
    pub fn state_roots_agree(&self) -> bool {
        let h = self
            .nodes
            .iter()
            .map(|n| n.shared().height())
            .min()
            .unwrap_or(0);
        if h == 0 {
            return true;
        }
        let roots: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                n.shared()
                    .store
                    .block(h)
                    .ok()
                    .flatten()
                    .map(|b| b.header.state_root)
            })
            .collect();
        roots.windows(2).all(|w| w[0] == w[1] && w[0].is_some())
    }

    /// The load generator's configuration for this network.
    pub async fn load_config(&self, rate: u64, duration: Option<Duration>) -> LoadConfig {
        let t = &self.testnet;
        crate::tools::loadgen::config_for(
            &t.genesis.chain_id,
            &t.account_keys,
            &self.urls,
            rate,
            duration,
        )
        .await
    }

    fn sum_metric(&self, f: impl Fn(&crate::metrics::Metrics) -> u64) -> u64 {
        self.nodes.iter().map(|n| f(&n.shared().metrics)).sum()
    }
}

/// The end-of-run summary.
fn summary(
    args: &DevnetArgs,
    devnet: &Devnet,
    stats: &LoadStats,
    elapsed: Duration,
    finalized_in_window: u64,
    ceiling: Option<f64>,
) -> serde_json::Value {
    let committed_tps = (finalized_in_window as f64 / elapsed.as_secs_f64()).round();
    let refused = stats.refused.lock().map(|m| m.clone()).unwrap_or_default();
    let rejected = stats.rejected.lock().map(|m| m.clone()).unwrap_or_default();
    let heights: Vec<u64> = devnet.nodes.iter().map(|n| n.shared().height()).collect();
    serde_json::json!({
        "validators": args.validators,
        "rate": args.rate,
        "duration_s": elapsed.as_secs_f64(),
        "accounts": args.accounts,
        "batch_max_txs": args.batch_max_txs,
        "batch_max_age_ms": args.batch_max_age_ms,
        "mempool_max_txs": args.mempool_max_txs,
        "max_inflight_txs": args.max_inflight_txs,
        "verify_all_signatures": args.verify_all_signatures,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "accepted": stats.accepted.load(Ordering::Relaxed),
        "refused": refused,
        "committed": stats.finalized(),
        "applied": stats.applied.load(Ordering::Relaxed),
        "rejected": rejected,
        "committed_tps": committed_tps,
        "signature_ceiling_per_s": ceiling.map(f64::round),
        "ceiling_ratio": ceiling.map(|c| (committed_tps / c * 1000.0).round() / 1000.0),
        "latency_ms": {
            "p50": stats.percentile(0.50),
            "p95": stats.percentile(0.95),
            "p99": stats.percentile(0.99),
        },
        "heights": heights,
        "view_changes": devnet.sum_metric(|m| m.consensus_view_changes.get()),
        "timeouts": devnet.sum_metric(|m| m.consensus_timeouts.get()),
        "state_roots_agree": devnet.state_roots_agree(),
    })
}

/// Prints a summary of `tally devnet` or `tally load` for people.
pub(crate) fn print_summary(v: &serde_json::Value) {
    crate::outln!("\n--- summary");
    let get = |k: &str| v.get(k).cloned().unwrap_or_default();
    crate::outln!("accepted           {}", get("accepted"));
    crate::outln!("refused            {}", get("refused"));
    crate::outln!(
        "committed          {} (applied {})",
        get("committed"),
        get("applied")
    );
    crate::outln!("rejected by code   {}", get("rejected"));
    crate::outln!("committed tx/s     {}", get("committed_tps"));
    let l = get("latency_ms");
    crate::outln!(
        "submit-to-final    p50 {} ms, p95 {} ms, p99 {} ms",
        l["p50"],
        l["p95"],
        l["p99"]
    );
    crate::outln!("heights            {}", get("heights"));
    crate::outln!("view changes       {}", get("view_changes"));
    crate::outln!("state roots agree  {}", get("state_roots_agree"));
}

/// `tally devnet`.
pub fn devnet(args: DevnetArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format, &args.log_filter)?;
    runtime()?.block_on(run(args, false))
}

/// `tally bench`: the same network and load, the summary as one JSON object on stdout.
/// With `--idle`, the network runs without load and the summary reports what it costs.
pub fn bench(mut args: DevnetArgs) -> anyhow::Result<()> {
    if let Some(idle) = args.idle {
        init_logging(&args.log_format, &args.log_filter)?;
        return runtime()?.block_on(run_idle(args, idle));
    }
    anyhow::ensure!(
        args.rate > 0,
        "--rate: a benchmark measures a load of payments per second, so it must be above 0 \
         (`tally devnet --rate 0` runs an idle network)"
    );
    if args.duration.is_none() {
        args.duration = Some(Duration::from_secs(30));
    }
    init_logging(&args.log_format, &args.log_filter)?;
    runtime()?.block_on(run(args, true))
}

/// Bytes under `dir`, recursively (a validator's data directory as the disk sees it).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes this process has caused to be written to storage (`write_bytes` of
/// `/proc/self/io`); `None` where the kernel does not say.
fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `tally bench --idle`: blocks per second and disk cost of a network with nothing to order.
/// Measured after a warm-up (the first blocks, sled's first segments), over `idle`.
async fn run_idle(args: DevnetArgs, idle: Duration) -> anyhow::Result<()> {
    let devnet = Devnet::start(&args).await?;
    devnet.wait_height(1, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let heartbeat_ms = Config::load(&devnet.dir.join("validator-0").join("node.toml"))
        .map(|c| c.consensus.heartbeat_ms)
        .ok();
    let dirs: Vec<PathBuf> = (0..devnet.nodes.len())
        .map(|i| devnet.dir.join(format!("validator-{i}")))
        .collect();
    let heights_before: Vec<u64> = devnet.nodes.iter().map(|n| n.shared().height()).collect();
    let bytes_before: Vec<u64> = dirs.iter().map(|d| dir_bytes(d)).collect();
    let written_before = process_write_bytes();
    let started = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(idle) => {}
        _ = shutdown_signal() => {}
    }
    let elapsed = started.elapsed().as_secs_f64();
    let heights: Vec<u64> = devnet.nodes.iter().map(|n| n.shared().height()).collect();
    let growth: Vec<i64> = dirs
        .iter()
        .zip(&bytes_before)
        .map(|(d, b)| dir_bytes(d) as i64 - *b as i64)
        .collect();
    let per_hour = |bytes: f64| (bytes * 3600.0 / elapsed).round();
    let blocks = heights
        .iter()
        .zip(&heights_before)
        .map(|(a, b)| a.saturating_sub(*b))
        .max()
        .unwrap_or(0);
    let written = written_before
        .zip(process_write_bytes())
        .map(|(b, a)| a.saturating_sub(b) / devnet.nodes.len().max(1) as u64);
    let s = serde_json::json!({
        "mode": "idle",
        "validators": args.validators,
        "duration_s": elapsed,
        "heartbeat_ms": heartbeat_ms,
        "blocks": blocks,
        "blocks_per_s": blocks as f64 / elapsed,
        "heights": heights,
        "data_dir_growth_bytes": growth,
        "data_dir_growth_bytes_per_hour": growth.iter().map(|g| per_hour(*g as f64)).collect::<Vec<_>>(),
        "written_bytes_per_validator": written,
        "written_bytes_per_validator_per_hour": written.map(|w| per_hour(w as f64)),
        "view_changes": devnet.sum_metric(|m| m.consensus_view_changes.get()),
        "timeouts": devnet.sum_metric(|m| m.consensus_timeouts.get()),
        "state_roots_agree": devnet.state_roots_agree(),
    });
    crate::outln!("{s}");
    devnet.shutdown().await;
    Ok(())
}

/// Transfers verified per second on this machine by the validators' own verifier
/// (`tx::verify_batch`: ed25519 batch verification in chunks on the rayon pool), every core
/// busy, before the network starts: the most a network that verified each signature once
/// could commit here. `tally bench` reports committed tx/s as a share of it, so that runs
/// compare across machines.
fn signature_ceiling(chain_id: &str) -> f64 {
    use rayon::prelude::*;
    use tally_ledger::tx::{Payload, Transaction, Transfer};
    const SAMPLE: usize = 8192;
    let keys: Vec<SigningKey> = (1..=64u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let ids: Vec<AccountId> = keys
        .iter()
        .map(|k| AccountId(k.verifying_key().to_bytes()))
        .collect();
    let Some(usd) = AssetCode::new("USD") else {
        return 0.0;
    };
    let txs: Vec<SignedTransaction> = (0..SAMPLE)
        .into_par_iter()
        .map(|k| {
            let from = k % keys.len();
            Transaction {
                chain_id: chain_id.to_owned(),
                sender: ids[from],
                sequence: k as u64,
                expiry_height: 1_000_000,
                payload: Payload::Transfer(Transfer {
                    to: ids[(from + 1) % ids.len()],
                    asset: usd.clone(),
                    amount: 1 + k as u64 % 9_999,
                    memo: None,
                    travel: None,
                }),
            }
            .sign(&keys[from])
        })
        .collect();
    let started = Instant::now();
    let mut verified = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        let out = tally_ledger::tx::verify_batch(txs.clone(), chain_id);
        verified += out.iter().filter(|r| r.is_ok()).count();
    }
    verified as f64 / started.elapsed().as_secs_f64()
}

async fn run(args: DevnetArgs, quiet: bool) -> anyhow::Result<()> {
    let devnet = Devnet::start(&args).await?;
    // Measured before the load starts (the validators idle), so it has the machine to itself.
    let ceiling = if quiet && args.rate > 0 {
        let chain_id = devnet.testnet.genesis.chain_id.clone();
        tokio::task::spawn_blocking(move || signature_ceiling(&chain_id))
            .await
            .ok()
    } else {
        None
    };
    if !quiet {
        crate::outln!(
            "devnet: {} validators in {}; validator-0 API at {}",
            devnet.nodes.len(),
            devnet.dir.display(),
            devnet.urls[0]
        );
    }
    devnet.wait_height(1, Duration::from_secs(60)).await?;
    let load = if args.rate > 0 {
        let config = devnet.load_config(args.rate, args.duration).await;
        if !quiet {
            crate::outln!(
                "sending {} payments/s from {} accounts",
                args.rate,
                config.accounts.len()
            );
        }
        Some(Load::start(config).await)
    } else {
        None
    };
    let scenarios = (!quiet && !args.no_scenarios).then(|| {
        let net = devnet.testnet.clone();
        let url = devnet.urls[0].clone();
        tokio::spawn(async move {
            let mut s = crate::tools::scenarios::Scenarios::new(&net, &url);
            match s.applicable().await {
                Ok(true) => {}
                Ok(false) => {
                    crate::outln!("compliance scenarios: already run on this network, skipped");
                    return;
                }
                Err(e) => {
                    crate::outln!("compliance scenarios: {e:#}");
                    return;
                }
            }
            let result = s.run_all().await;
            crate::out!("{}", s.report());
            if let Err(e) = result {
                crate::outln!("compliance scenarios stopped: {e:#}");
            }
        })
    });
    let started = Instant::now();
    let stats = load.as_ref().map(|l| l.stats.clone());
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    let end = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => shutdown_signal().await,
        }
    };
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = shutdown_signal(), if args.duration.is_some() => break,
            _ = progress.tick(), if !quiet => {
                print_progress(&devnet, stats.as_deref(), &mut last);
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(task) = scenarios {
        if !task.is_finished() {
            crate::outln!("stopping: compliance scenarios did not finish within the run");
        }
        task.abort();
    }
    let finalized_in_window = stats.as_ref().map_or(0, |s| s.finalized());
    if let Some(load) = load {
        load.stop_sending();
        // Let what was accepted become final before counting latencies.
        let drain = Instant::now();
        while drain.elapsed() < Duration::from_secs(10)
            && load.stats.accepted.load(Ordering::Relaxed) > load.stats.finalized()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stats: Arc<LoadStats> = load.finish().await;
        let s = summary(
            &args,
            &devnet,
            &stats,
            elapsed,
            finalized_in_window,
            ceiling,
        );
        if quiet {
            crate::outln!("{s}");
        } else {
            print_summary(&s);
        }
    }
    devnet.shutdown().await;
    Ok(())
}

fn print_progress(devnet: &Devnet, stats: Option<&LoadStats>, last: &mut (Instant, u64)) {
    let height = devnet.nodes[0].shared().height();
    let mempool: usize = devnet.nodes.iter().map(|n| n.shared().mempool.len()).sum();
    let mut line = format!("height {height:>6} | mempool {mempool:>6}");
    if let Some(s) = stats {
        let fin = s.finalized();
        let dt = last.0.elapsed().as_secs_f64().max(0.001);
        let tps = (fin - last.1.min(fin)) as f64 / dt;
        *last = (Instant::now(), fin);
        let refused: u64 = s.refused.lock().map(|m| m.values().sum()).unwrap_or(0);
        let recent = s.take_recent();
        line.push_str(&format!(
            " | final {fin:>8} | {tps:>7.0} tx/s | p50 {} ms p99 {} ms (run {} / {}) | refused {refused}",
            recent.percentile(0.5).map_or("-".into(), |v| v.to_string()),
            recent.percentile(0.99).map_or("-".into(), |v| v.to_string()),
            s.percentile(0.5).map_or("-".into(), |v| v.to_string()),
            s.percentile(0.99).map_or("-".into(), |v| v.to_string()),
        ));
    }
    crate::outln!("{line}");
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
