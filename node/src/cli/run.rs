//! `tally run`: one validator until SIGINT/SIGTERM.

use crate::config::Config;
use crate::runtime::{NodeOptions, RunningNode};
use anyhow::Context;
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

/// Starts logging: `format` is `pretty` or `json`; RUST_LOG, when set, overrides `filter`.
pub fn init_logging(format: &str, filter: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let filter = EnvFilter::try_new(&filter).with_context(|| format!("log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation in one process (tests) keeps the first subscriber.
    match format {
        "json" => {
            let _ = builder.json().try_init();
        }
        "pretty" => {
            let _ = builder.try_init();
        }
        other => anyhow::bail!("log format {other:?}: expected \"pretty\" or \"json\""),
    }
    Ok(())
}

/// Builds the async runtime every long-running command uses.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
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
