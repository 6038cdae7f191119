//! `tally run`: one validator until SIGINT/SIGTERM.

use crate::config::Config;
use crate::process::{init_logging, runtime, shutdown_signal};
use crate::runtime::{NodeOptions, RunningNode};
use clap::Args;
use std::path::PathBuf;

/// `tally run --config node.toml`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node's config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Log format, overriding the config's `logging.format` (`pretty` or `json`).
    #[arg(long)]
    pub log_format: Option<String>,
}

/// Runs the validator.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let format = args.log_format.as_deref().unwrap_or(&config.logging.format);
    init_logging(format, &config.logging.filter)?;
    let options = NodeOptions::from_config(&config)?;
    runtime()?.block_on(async move {
        let mut node = RunningNode::start(options).await?;
        let result = tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!("signal received, shutting down");
                Ok(())
            }
            why = node.failed() => Err(anyhow::anyhow!(why)),
        };
        node.shutdown().await;
        result
    })
}
