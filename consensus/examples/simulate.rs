//! Runs the deterministic consensus simulator over many seeds.
//!
//!     cargo run --release -p tally-consensus --example simulate -- --validators 4 --byzantine 1 --seeds 1000
//!
//! Prints one line per failing seed (everything needed to replay it: `--seed S` with the same
//! flags) and a summary line; exits non-zero on any safety violation or liveness failure.

use std::process::ExitCode;
use tally_consensus::sim::{run, SimConfig};

fn main() -> ExitCode {
    let mut validators = 4usize;
    let mut byzantine: Option<usize> = None;
    let mut seeds = 100u64;
    let mut first_seed = 0u64;
    let mut broken = false;
    let mut verbose = false;
    let mut calm = false;
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
            "--broken-voting" => broken = true,
            "--verbose" => verbose = true,
            "--no-faults" => calm = true,
            other => {
                eprintln!("unknown argument {other}; flags: --validators N --byzantine F --seeds K [--seed S] [--first-seed S] [--broken-voting] [--no-faults] [--verbose]");
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
        cfg.broken_voting = broken;
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
            "--validators {validators} --byzantine {f} --seed {seed}{}",
            if broken { " --broken-voting" } else { "" }
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
