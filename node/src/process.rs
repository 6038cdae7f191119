//! What every long-running `tally` command sets up: logging, the async runtime, and the
//! shutdown signal. Shared by the validator (`tally run`) and the tooling (`tally devnet`).

use anyhow::Context;

/// Starts logging: `format` is `pretty` or `json`; RUST_LOG, when set, overrides `filter`.
pub fn init_logging(format: &str, filter: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let filter = EnvFilter::try_new(&filter).with_context(|| format!("log filter {filter:?}"))?;
    // Colours only on a terminal: container and journald logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_ansi(ansi)
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

/// `println!` for a command's output. When the reader of stdout has gone away
/// (`tally ... | head -1`) the command stops quietly with status 0, as a filter's upstream
/// should, instead of panicking; any other write failure is reported and exits with status 1.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::process::stdout_failed(e);
        }
    }};
}

/// `print!` for a command's output (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = write!(stdout, $($arg)*).and_then(|()| stdout.flush()) {
            $crate::process::stdout_failed(e);
        }
    }};
}

/// Ends the process after stdout failed: quietly when its reader is gone.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}
