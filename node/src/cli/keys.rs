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

pub fn keygen(args: KeygenArgs, output: super::client::Output) -> anyhow::Result<()> {
    let key = keys::generate();
    keys::write_key_file(&args.out, &key)?;
    let id = keys::account_id(&key);
    match output {
        super::client::Output::Json => crate::outln!(
            "{}",
            serde_json::json!({ "public_key": id, "path": args.out.display().to_string() })
        ),
        super::client::Output::Text => crate::outln!("{id}"),
    }
    Ok(())
}
