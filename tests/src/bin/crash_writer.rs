//! Test helper: commits the crash workload's blocks into a store, forever, printing each height
//! after it is durably committed. The crash-recovery test kills it with SIGKILL at random moments.

use std::io::Write;
use tally_node::chain::Chain;
use tally_tests::crash_workload;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: crash_writer DIR")?;
    let mut chain = Chain::open(std::path::Path::new(&dir), &crash_workload::genesis())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "start {}", chain.height())?;
    loop {
        let (proposal, txs) = crash_workload::block(chain.height() + 1);
        let (header, ..) = chain.commit(&proposal, &txs)?;
        writeln!(out, "committed {}", header.height)?;
        out.flush()?;
    }
}
