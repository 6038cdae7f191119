//! `tally keygen`.

use crate::keys;
use std::path::PathBuf;

/// Arguments of `tally keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key file; an existing file is never overwritten.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let key = keys::generate();
    keys::write_key_file(&args.out, &key)?;
    crate::outln!("{}", keys::account_id(&key));
    Ok(())
}
