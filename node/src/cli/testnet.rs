//! `tally testnet init` and `tally config check`.

use crate::config::Config;
use crate::tools::testnet::{Testnet, TestnetSpec};
use std::path::PathBuf;
use tally_ledger::genesis::Genesis;

/// `tally testnet ...`
#[derive(Debug, clap::Subcommand)]
pub enum TestnetCommand {
    /// Write a genesis, validator keys and configs, and demo account keys into a directory.
    Init {
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Number of demo payment accounts.
        #[arg(long, default_value_t = 200)]
        accounts: usize,
        /// Chain id.
        #[arg(long, default_value = "tally-devnet")]
        chain_id: String,
        /// First HTTP API port (validator i uses base + i).
        #[arg(long, default_value_t = 8700)]
        api_base_port: u16,
        /// First libp2p port (validator i uses base + i).
        #[arg(long, default_value_t = 7700)]
        p2p_base_port: u16,
        /// For containers and pods: validator i's host name, with `{i}` standing for i (e.g.
        /// `validator-{i}` for Compose, `tally-{i}.tally.tally.svc.cluster.local` for a
        /// Kubernetes StatefulSet). Validators then listen on all interfaces at the base ports,
        /// dial each other by name, keep data in /var/lib/tally, and each directory holds its
        /// own genesis.json.
        #[arg(long)]
        host_template: Option<String>,
        /// Output directory (created; must not already hold a genesis).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `tally config ...`
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a node config and the genesis and key files it names.
    Check {
        /// The node config TOML.
        file: PathBuf,
    },
}

pub fn run(cmd: TestnetCommand) -> anyhow::Result<()> {
    let TestnetCommand::Init {
        validators,
        accounts,
        chain_id,
        api_base_port,
        p2p_base_port,
        host_template,
        out,
    } = cmd;
    if out.join("genesis.json").exists() {
        anyhow::bail!(
            "{} already holds a genesis.json; choose an empty directory",
            out.display()
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let net = Testnet::generate(TestnetSpec {
        chain_id,
        validators,
        accounts,
        api_base_port,
        p2p_base_port,
        genesis_time_ms: now,
        host_template,
        ..TestnetSpec::default()
    })?;
    net.write(&out)?;
    crate::outln!(
        "wrote {} validators, {} demo accounts and genesis {} to {}",
        validators,
        accounts,
        net.genesis.hash(),
        out.display()
    );
    for v in &net.genesis.validators {
        crate::outln!(
            "  {}  {}  api {}  p2p {}",
            v.name,
            v.public_key,
            v.api_addr,
            v.p2p_addr
        );
    }
    Ok(())
}

pub fn run_config(cmd: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { file } = cmd;
    let config = Config::load(&file)?;
    let genesis = Genesis::load(&config.node.genesis_file)?;
    let key = crate::keys::read_key_file(&config.node.key_file)?;
    let me = crate::keys::account_id(&key);
    let role = if genesis.validator_keys().contains(&me) {
        "a genesis validator"
    } else {
        "not a genesis validator"
    };
    crate::outln!(
        "{}: ok (node {}, chain {}, key {} is {})",
        file.display(),
        config.node.name,
        genesis.chain_id,
        me,
        role
    );
    Ok(())
}
