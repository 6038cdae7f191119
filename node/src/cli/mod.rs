//! The `tally` command line. One file per command family; `main.rs` only dispatches.

mod audit;
pub(crate) mod client;
mod keys;
mod proof;
pub mod run;
mod testnet;

use clap::{CommandFactory, Parser, Subcommand};

/// Tally: a permissioned settlement network for regulated cross-border micro-payments.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about)]
pub struct Cli {
    /// How read and submit commands print: `text` for people, `json` (one object per line, the
    /// API's own shape) for scripts.
    #[arg(long, global = true, value_enum, default_value_t = client::Output::Text)]
    pub output: client::Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `tally` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an ed25519 key file (mode 0600) and print its public key.
    Keygen(keys::KeygenArgs),
    /// Local test networks.
    #[command(subcommand)]
    Testnet(testnet::TestnetCommand),
    /// Node configuration files.
    #[command(subcommand)]
    Config(testnet::ConfigCommand),
    /// Check an inclusion proof offline against a genesis validator set.
    VerifyProof(proof::VerifyProofArgs),
    /// Run one validator until SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Run a local network of validators with a load of signed payments.
    Devnet(crate::tools::devnet::DevnetArgs),
    /// Run the devnet for a fixed time and print the measurements as one JSON object.
    Bench(crate::tools::devnet::DevnetArgs),
    /// Send a load of signed payments to a running network (Compose, Kubernetes, by hand)
    /// and print the same measurements as `tally devnet`.
    Load(crate::tools::load::LoadArgs),
    /// Submit and inspect transactions through the HTTP API.
    #[command(subcommand)]
    Tx(client::TxCommand),
    /// Show an account through the HTTP API.
    Account(client::AccountArgs),
    /// Show a committed block through the HTTP API.
    Block(client::BlockArgs),
    /// Show a node's view of the network through the HTTP API.
    Status(client::StatusArgs),
    /// Regulators' tools: read a node's access log, and check it offline.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Exit 0 if a node is alive (`/health`) or ready (`--ready`): the container health check.
    Probe(client::ProbeArgs),
    /// Print a shell completion script: `tally completions bash > /etc/bash_completion.d/tally`.
    Completions {
        /// The shell: bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(args) => keys::keygen(args, cli.output),
        Command::Testnet(cmd) => testnet::run(cmd),
        Command::Config(cmd) => testnet::run_config(cmd),
        Command::VerifyProof(args) => proof::verify(args),
        Command::Run(args) => run::run(args),
        Command::Devnet(args) => crate::tools::devnet::devnet(args),
        Command::Bench(args) => crate::tools::devnet::bench(args),
        Command::Load(args) => crate::tools::load::load(args, cli.output),
        Command::Tx(cmd) => client::tx(cmd, cli.output),
        Command::Account(args) => client::account(args, cli.output),
        Command::Block(args) => client::block(args, cli.output),
        Command::Status(args) => client::status(args, cli.output),
        Command::Probe(args) => client::probe(args),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tally", &mut script);
            crate::out!("{}", String::from_utf8_lossy(&script));
            Ok(())
        }
    }
}
