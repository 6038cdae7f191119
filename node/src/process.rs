//! What every long-running `tally` command sets up: logging, the async runtime, and the
//! shutdown signal. Shared by the validator (`tally run`) and the tooling (`tally devnet`).

use anyhow::Context;

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
