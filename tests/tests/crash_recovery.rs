//! kill -9 at random moments loses nothing committed: after every kill, reopening the store
//! gives exactly the state of a from-scratch replay up to the committed height, and that height
//! is at least the last one the writer reported as committed.

use rand::Rng;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tally_ledger::{execute_block, BlockContext};
use tally_node::chain::Chain;
use tally_tests::crash_workload;

/// Reference state roots by height, from an in-memory replay.
fn reference_roots(up_to: u64) -> Vec<tally_ledger::primitives::Hash> {
    let g = crash_workload::genesis();
    let mut state = g.initial_state().unwrap();
    let mut roots = vec![state.root()];
    for h in 1..=up_to {
        let (p, txs) = crash_workload::block(h);
        let ctx = BlockContext {
            height: h,
            timestamp_ms: p.timestamp_ms,
        };
        let out = execute_block(&state, &ctx, &txs).unwrap();
        state.apply(&out.writes);
        roots.push(state.root());
    }
    roots
}

#[test]
fn sigkill_at_random_moments_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut acknowledged = 0u64;
    let mut kills = 0;
    let started = Instant::now();
    while kills < 20 && started.elapsed() < Duration::from_secs(240) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(h) = line.strip_prefix("committed ") {
                    last = h.parse::<u64>().ok();
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        if let Some(h) = reader.join().unwrap() {
            acknowledged = acknowledged.max(h);
        }

        let chain = Chain::open(dir.path(), &crash_workload::genesis()).unwrap();
        let height = chain.height();
        assert!(
            height >= acknowledged,
            "kill {kills}: block {acknowledged} was reported committed but the store reopened at {height}"
        );
        let roots = reference_roots(height);
        assert_eq!(
            chain.state().root(),
            roots[height as usize],
            "kill {kills}: state at height {height} differs from a replay"
        );
        if let Some(header) = chain.last_header() {
            assert_eq!(header.state_root, roots[height as usize]);
        }
    }
    assert!(kills >= 5, "too few kill cycles ran");
    assert!(acknowledged > 0, "the writer never committed a block");
}
