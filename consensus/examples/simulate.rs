//! Runs the deterministic consensus simulator over many seeds.
//!
//!     cargo run --release -p tally-consensus --example simulate -- --validators 4 --seeds 1000 --adversary all
//!
//! `--adversary classic|twins|forge|all` picks the Byzantine behaviours (default `classic`);
//! `--broken-rule voting|qc|timeout-lock|aggregation|two-chain` runs honest replicas without
//! one safety rule (the run is then expected to fail: it shows the checker catches it).
//!
//! Prints one line per failing seed (everything needed to replay it: `--seed S` with the same
//! flags) and a summary line; exits non-zero on any safety violation or liveness failure.

use std::process::ExitCode;
use tally_consensus::sim::{run, Adversary, SimConfig};
use tally_consensus::Rule;

fn parse_rule(s: &str) -> Option<Rule> {
    match s {
        "voting" => Some(Rule::Voting),
        "qc" => Some(Rule::QcVerification),
        "timeout-lock" => Some(Rule::TimeoutLock),
        "aggregation" => Some(Rule::WholeTupleAggregation),
        "two-chain" => Some(Rule::TwoChainCommit),
        _ => None,
    }
}

fn main() -> ExitCode {
    let mut validators = 4usize;
    let mut byzantine: Option<usize> = None;
    let mut seeds = 100u64;
    let mut chaos_s: Option<u64> = None;
    let mut first_seed = 0u64;
    let mut broken: Option<(String, Rule)> = None;
    let mut adversary = ("classic".to_string(), Adversary::Classic);
    let mut verbose = false;
    let mut calm = false;
    let mut loss: Option<f64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> u64 {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => v,
                None => {
                    eprintln!("{name} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--validators" => validators = value("--validators") as usize,
            "--byzantine" => byzantine = Some(value("--byzantine") as usize),
            "--seeds" => seeds = value("--seeds"),
            "--seed" => {
                first_seed = value("--seed");
                seeds = 1;
            }
            "--first-seed" => first_seed = value("--first-seed"),
            "--broken-voting" => broken = Some(("two-chain".into(), Rule::TwoChainCommit)),
            "--broken-rule" => {
                let name = args.next().unwrap_or_default();
                match parse_rule(&name) {
                    Some(rule) => broken = Some((name, rule)),
                    None => {
                        eprintln!(
                            "--broken-rule needs voting|qc|timeout-lock|aggregation|two-chain"
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            "--adversary" => {
                let name = args.next().unwrap_or_default();
                match Adversary::parse(&name) {
                    Some(a) => adversary = (name, a),
                    None => {
                        eprintln!("--adversary needs classic|twins|forge|all");
                        return ExitCode::from(2);
                    }
                }
            }
            "--verbose" => verbose = true,
            "--loss-percent" => loss = Some(value("--loss-percent") as f64 / 100.0),
            "--no-faults" => calm = true,
            "--chaos-seconds" => chaos_s = Some(value("--chaos-seconds")),
            other => {
                eprintln!("unknown argument {other}; flags: --validators N --byzantine F --seeds K [--seed S] [--first-seed S] [--adversary classic|twins|forge|all] [--broken-rule RULE] [--chaos-seconds S] [--no-faults] [--verbose]");
                return ExitCode::from(2);
            }
        }
    }
    let f = byzantine.unwrap_or((validators.saturating_sub(1)) / 3);
    if validators == 0 || f * 3 >= validators {
        eprintln!("need n >= 3f + 1 (n = {validators}, f = {f})");
        return ExitCode::from(2);
    }
    let (mut safety, mut liveness, mut commits, mut seconds) = (0u64, 0u64, 0u64, 0f64);
    let config = |seed: u64| {
        let mut cfg = SimConfig::new(validators, f, seed);
        cfg.broken_rule = broken.as_ref().map(|b| b.1);
        cfg.adversary = adversary.1;
        if let Some(s) = chaos_s {
            cfg.chaos_ms = s.saturating_mul(1000);
        }
        if let Some(p) = loss {
            cfg.loss = p.min(1.0);
        }
        if calm {
            cfg.loss = 0.0;
            cfg.duplication = 0.0;
            cfg.crashes = false;
            cfg.partitions = false;
        }
        cfg
    };
    // Seeds are independent: run them on every core, report in seed order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let all: Vec<u64> = (first_seed..first_seed + seeds).collect();
    let mut reports = Vec::with_capacity(all.len());
    for chunk in all.chunks(threads.max(1) as usize * 4) {
        let handles: Vec<_> = chunk
            .chunks(4)
            .map(|part| {
                let part = part.to_vec();
                let cfgs: Vec<_> = part.iter().map(|s| config(*s)).collect();
                std::thread::spawn(move || cfgs.iter().map(run).collect::<Vec<_>>())
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(rs) => reports.extend(rs),
                Err(_) => {
                    eprintln!("a simulation thread panicked");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    for (seed, r) in all.iter().copied().zip(reports) {
        commits += r.min_honest_commits;
        seconds += r.simulated_s;
        let replay = format!(
            "--validators {validators} --byzantine {f} --adversary {} --seed {seed}{}{}",
            adversary.0,
            broken
                .as_ref()
                .map_or(String::new(), |b| format!(" --broken-rule {}", b.0)),
            if calm { " --no-faults" } else { "" }
        );
        if let Some(v) = &r.safety_violation {
            safety += 1;
            println!(
                "seed {seed}: SAFETY VIOLATION: {v} (byzantine: {:?}; replay: {replay})",
                r.behaviours
            );
        }
        if let Some(l) = &r.liveness_failure {
            liveness += 1;
            println!(
                "seed {seed}: LIVENESS FAILURE: {l} (byzantine: {:?}; replay: {replay})",
                r.behaviours
            );
        }
        if verbose {
            println!("seed {seed}: {r:?}");
        }
    }
    println!(
        "seeds: {seeds}, safety violations: {safety}, liveness failures: {liveness}, commits/simulated-second: {:.1}",
        commits as f64 / seconds.max(0.001)
    );
    if safety + liveness > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
