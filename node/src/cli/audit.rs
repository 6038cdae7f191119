//! `tally audit access-log` reads a node's access log with a regulator's or oversight key;
//! `tally audit verify-access-log` checks what it wrote, offline.

use crate::api::access_log::{verify, LogPage, MAX_PAGE};
use crate::api::StatusView;
use crate::keys;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tally_ledger::primitives::Hash;

/// `tally audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Read a node's access log from its beginning (or after `--after`), every page, and print
    /// it as one JSON page: your own queries in full, the others' as digests (all in full for
    /// an oversight key).
    AccessLog(AccessLogArgs),
    /// Check an access log that `tally audit access-log` printed: every entry names the one
    /// before, every visible entry matches its digest, every chain hash follows. With `--head`,
    /// the chain must end at that hash (one you obtained separately).
    VerifyAccessLog {
        /// The JSON file.
        file: PathBuf,
        /// The chain hash the log must end at.
        #[arg(long)]
        head: Option<String>,
    },
}

/// Arguments of `tally audit access-log`.
#[derive(Debug, Args)]
pub struct AccessLogArgs {
    /// API base URL of the node whose log to read.
    #[arg(long, default_value = "http://127.0.0.1:8700")]
    pub api: String,
    /// The regulator's or oversight key file the reads are signed with.
    #[arg(long)]
    pub key: PathBuf,
    /// Start after this sequence number (0: the beginning).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
}

/// Runs `tally audit`.
pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::AccessLog(args) => read(args),
        AuditCommand::VerifyAccessLog { file, head } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let page: LogPage = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an access log page", file.display()))?;
            if page.lines.first().is_some_and(|l| l.seq != 1) {
                bail!("the log does not start at entry 1: read it from the beginning");
            }
            let end = verify(Hash::ZERO, &page.lines).map_err(anyhow::Error::msg)?;
            if let Some(expected) = head {
                if end.to_string() != expected {
                    bail!("the log ends at {end}, not at the head {expected}");
                }
            }
            let visible = page.lines.iter().filter(|l| l.entry.is_some()).count();
            println!(
                "access log of node {}: {} entries chain from the start to {end} ({visible} readable, {} as digests)",
                page.node,
                page.lines.len(),
                page.lines.len() - visible
            );
            Ok(())
        }
    }
}

fn read(args: AccessLogArgs) -> anyhow::Result<()> {
    let key = keys::read_key_file(&args.key)?;
    crate::process::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let status: StatusView = client
            .get(format!("{}/v1/status", args.api))
            .send()
            .await?
            .json()
            .await?;
        let mut all: Option<LogPage> = None;
        let mut after = args.after;
        loop {
            let path = format!("/v1/audit/access-log?after={after}&limit={MAX_PAGE}");
            let r = crate::api::auth::signed_get(&client, &args.api, &path, &key, &status.chain_id)
                .send()
                .await?;
            if !r.status().is_success() {
                let code = r.status();
                let body = r.text().await.unwrap_or_default();
                bail!("GET {path}: {code} {body}");
            }
            let page: LogPage = r.json().await?;
            let last = page.lines.last().map(|l| l.seq);
            let done = page.lines.len() < MAX_PAGE;
            match all.as_mut() {
                None => all = Some(page),
                Some(a) => {
                    a.lines.extend(page.lines);
                    a.head_seq = page.head_seq;
                    a.head = page.head;
                }
            }
            match last {
                Some(seq) if !done => after = seq,
                _ => break,
            }
        }
        let page = all.context("no answer")?;
        println!("{}", serde_json::to_string(&page)?);
        Ok(())
    })
}
