//! `tally load`: the load generator of `tally devnet`, pointed at a running network (the
//! Compose network of deploy/compose, a Kubernetes deployment, validators started by hand).
//! It signs payments with the demo account keys of the network directory `tally testnet init`
//! wrote, sends them to the given validators' HTTP APIs at a fixed rate, follows their blocks
//! to measure submit-to-final latency, and ends with the same summary as `tally devnet`, read
//! from the validators' own API and Prometheus metrics.

use crate::cli::client::Output;
use crate::process::{runtime, shutdown_signal};
use crate::tools::devnet::{load_account_keys, parse_duration};
use crate::tools::loadgen::{get_status, Load, LoadStats};
use anyhow::{bail, ensure, Context};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Flags of `tally load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// A validator's API base URL, e.g. `http://127.0.0.1:8700`; repeat it (or separate with
    /// commas) to spread the accounts over several validators.
    #[arg(long = "target", required = true, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// The network directory `tally testnet init` wrote (genesis.json and accounts/): the
    /// load is signed with its demo account keys.
    #[arg(long)]
    pub net_dir: PathBuf,
    /// Offered load in signed payments per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// How long to send, e.g. `30s`, `2m`; without it, until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Send from the first N demo accounts only (default: all of them).
    #[arg(long)]
    pub accounts: Option<usize>,
}

/// `tally load`.
pub fn load(args: LoadArgs, output: Output) -> anyhow::Result<()> {
    ensure!(
        args.rate > 0,
        "--rate: the load is a number of payments per second, so it must be above 0"
    );
    let targets = args
        .targets
        .iter()
        .map(|t| base_url(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Only the genesis (for the network's name) and the demo account keys: the validators'
    // keys may well be on their own hosts.
    let net = &args.net_dir;
    let genesis = tally_ledger::genesis::Genesis::load(&net.join("genesis.json"))
        .with_context(|| format!("--net-dir {}", net.display()))?;
    let mut keys =
        load_account_keys(net).with_context(|| format!("--net-dir {}", net.display()))?;
    if let Some(n) = args.accounts {
        ensure!(n >= 2, "--accounts: at least 2 (a payment needs a payee)");
        keys.truncate(n);
    }
    ensure!(
        keys.len() >= 2,
        "--net-dir {}: fewer than 2 demo account keys under accounts/ (`tally testnet init` \
         writes them)",
        net.display()
    );
    let chain_id = genesis.chain_id;
    runtime()?.block_on(run(args, output, chain_id, keys, targets))
}

/// `http://host:port` without a trailing slash; the scheme must be http or https.
fn base_url(target: &str) -> anyhow::Result<String> {
    let t = target.trim().trim_end_matches('/');
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(t.to_owned()),
        _ => bail!("--target {target:?}: expected a base URL such as http://127.0.0.1:8700"),
    }
}

async fn run(
    args: LoadArgs,
    output: Output,
    chain_id: String,
    keys: Vec<ed25519_dalek::SigningKey>,
    targets: Vec<String>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client")?;
    // Every target must answer and belong to the network whose keys sign the load.
    for t in &targets {
        let status = get_status(&client, t)
            .await
            .with_context(|| format!("--target {t}: no answer from {t}/v1/status"))?;
        ensure!(
            status.chain_id == chain_id,
            "--target {t}: it serves network {:?}, the keys in --net-dir are for {:?}",
            status.chain_id,
            chain_id
        );
    }
    let quiet = matches!(output, Output::Json);
    let config =
        crate::tools::loadgen::config_for(&chain_id, &keys, &targets, args.rate, args.duration)
            .await;
    if !quiet {
        crate::outln!(
            "sending {} payments/s from {} accounts to {}",
            args.rate,
            config.accounts.len(),
            targets.join(", ")
        );
    }
    let view_changes_before = view_changes(&client, &targets).await;
    let load = Load::start(config).await;
    let started = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    let end = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let signal = shutdown_signal();
    tokio::pin!(end, signal);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = &mut signal => {
                interrupted = true;
                break;
            }
            _ = progress.tick(), if !quiet => print_progress(&load.stats, &mut last),
        }
    }
    let elapsed = started.elapsed();
    let finalized_in_window = load.stats.finalized();
    load.stop_sending();
    // Let what was accepted become final before counting latencies (after a Ctrl-C or
    // SIGTERM, a second one cuts it short).
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(10)
        && load.stats.accepted.load(Ordering::Relaxed) > load.stats.finalized()
    {
        if interrupted {
            tokio::select! {
                _ = shutdown_signal() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stats = load.finish().await;
    let view_changes_after = view_changes(&client, &targets).await;
    let mut heights = Vec::new();
    for t in &targets {
        heights.push(get_status(&client, t).await.map(|s| s.height));
    }
    let summary = serde_json::json!({
        "targets": targets,
        "rate": args.rate,
        "duration_s": elapsed.as_secs_f64(),
        "accounts": keys.len(),
        "accepted": stats.accepted.load(Ordering::Relaxed),
        "refused": stats.refused.lock().map(|m| m.clone()).unwrap_or_default(),
        "committed": stats.finalized(),
        "applied": stats.applied.load(Ordering::Relaxed),
        "rejected": stats.rejected.lock().map(|m| m.clone()).unwrap_or_default(),
        "committed_tps": (finalized_in_window as f64 / elapsed.as_secs_f64()).round(),
        "latency_ms": {
            "p50": stats.percentile(0.50),
            "p95": stats.percentile(0.95),
            "p99": stats.percentile(0.99),
        },
        "heights": heights,
        "view_changes": view_changes_after.zip(view_changes_before).map(|(a, b)| a.saturating_sub(b)),
        "state_roots_agree": roots_agree(&client, &targets).await,
    });
    if quiet {
        crate::outln!("{summary}");
    } else {
        crate::tools::devnet::print_summary(&summary);
    }
    Ok(())
}

/// The view changes the targets counted (`tally_consensus_view_changes_total`, summed over
/// the targets as `tally devnet` sums its validators: one view change that every validator
/// went through counts once per target), or `None` if one of them did not serve its metrics.
async fn view_changes(client: &reqwest::Client, targets: &[String]) -> Option<u64> {
    let mut total = 0u64;
    for t in targets {
        let text = client
            .get(format!("{t}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        total = total.saturating_add(counter(&text, "tally_consensus_view_changes_total")?);
    }
    Some(total)
}

/// A counter in a Prometheus text exposition, summed over its label sets; `None` if absent.
fn counter(exposition: &str, name: &str) -> Option<u64> {
    let mut total = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        // `name{labels} value [timestamp]`; label values here hold no spaces or braces.
        let (series, rest) = match line.find('}') {
            Some(end) => line.split_at(end + 1),
            None => line.split_once(' ').unwrap_or((line, "")),
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let series_name = series.split_once('{').map_or(series, |(n, _)| n);
        if series_name != name {
            continue;
        }
        // Counters are exposed as integers or as floats with an integral value.
        if let Ok(v) = value.parse::<f64>() {
            total = Some(total.unwrap_or(0u64).saturating_add(v as u64));
        }
    }
    total
}

/// Whether every target has the same state root at the lowest height they all executed;
/// `None` if one of them did not answer.
async fn roots_agree(client: &reqwest::Client, targets: &[String]) -> Option<bool> {
    let mut low = u64::MAX;
    for t in targets {
        low = low.min(get_status(client, t).await?.height);
    }
    if low == 0 {
        return Some(true);
    }
    let mut roots = Vec::new();
    for t in targets {
        let block: serde_json::Value = client
            .get(format!("{t}/v1/blocks/{low}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        roots.push(block["header"]["state_root"].as_str()?.to_owned());
    }
    Some(roots.windows(2).all(|w| w[0] == w[1]))
}

fn print_progress(stats: &LoadStats, last: &mut (Instant, u64)) {
    let fin = stats.finalized();
    let dt = last.0.elapsed().as_secs_f64().max(0.001);
    let tps = (fin - last.1.min(fin)) as f64 / dt;
    *last = (Instant::now(), fin);
    let refused: u64 = stats.refused.lock().map(|m| m.values().sum()).unwrap_or(0);
    let recent = stats.take_recent();
    crate::outln!(
        "height {:>6} | final {fin:>8} | {tps:>7.0} tx/s | p50 {} ms p99 {} ms (run {} / {}) | refused {refused}",
        stats.height.load(Ordering::Relaxed),
        recent.percentile(0.5).map_or("-".into(), |v| v.to_string()),
        recent.percentile(0.99).map_or("-".into(), |v| v.to_string()),
        stats.percentile(0.5).map_or("-".into(), |v| v.to_string()),
        stats.percentile(0.99).map_or("-".into(), |v| v.to_string()),
    );
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:8700/").unwrap(),
            "http://127.0.0.1:8700"
        );
        assert_eq!(
            base_url("https://validator-0.example:8700").unwrap(),
            "https://validator-0.example:8700"
        );
        for bad in [
            "127.0.0.1:8700",
            "ftp://x",
            "http://",
            "http://h:1/v1/status",
        ] {
            let e = base_url(bad).unwrap_err().to_string();
            assert!(e.contains("--target"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_view_change_counter_is_read_from_the_exposition() {
        let text = "# HELP tally_consensus_view_changes_total Rounds ended by a TC.\n\
                    # TYPE tally_consensus_view_changes_total counter\n\
                    tally_consensus_view_changes_total{chain_id=\"tally-devnet\"} 7\n\
                    tally_consensus_view_changes_total_other 9\n";
        assert_eq!(counter(text, "tally_consensus_view_changes_total"), Some(7));
        assert_eq!(
            counter("x_total 2\nx_total{a=\"b\"} 3\n", "x_total"),
            Some(5)
        );
        assert_eq!(
            counter("x_total{a=\"b\"} 4 1700000000000\n", "x_total"),
            Some(4)
        );
        assert_eq!(counter(text, "tally_consensus_timeouts_total"), None);
    }
}
