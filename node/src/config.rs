//! The node's configuration: one TOML file per node. Unknown fields are refused and every
//! semantic check names the field it is about, e.g.
//! `config error: api.listen: invalid socket address "abc"`.
//! docs/config.md documents every field; `tally testnet init` writes a commented example.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config error: cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, a missing or unknown field, or a wrong type.
    #[error("config error: {0}")]
    Parse(String),
    /// A field has a value the node cannot use.
    #[error("config error: {field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `api.listen`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and files of this node.
    pub node: NodeSection,
    /// Peer-to-peer networking.
    pub network: NetworkSection,
    /// The HTTP API.
    pub api: ApiSection,
    /// The pending-transaction pool.
    #[serde(default)]
    pub mempool: MempoolSection,
    /// How transactions are packed into batches.
    #[serde(default)]
    pub batching: BatchingSection,
    /// Consensus timing.
    #[serde(default)]
    pub consensus: ConsensusSection,
    /// Logs.
    #[serde(default)]
    pub logging: LoggingSection,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Name in logs and metrics.
    pub name: String,
    /// Where the node's database lives (created if missing).
    pub data_dir: PathBuf,
    /// The validator's ed25519 key file.
    pub key_file: PathBuf,
    /// The network's genesis file.
    pub genesis_file: PathBuf,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// libp2p listen address, e.g. `/ip4/0.0.0.0/tcp/7000`.
    pub listen: String,
    /// Peers to dial at start: `<hex public key>@<multiaddr>`. Empty means: every other
    /// validator at its genesis `p2p_addr`.
    #[serde(default)]
    pub bootstrap: Vec<String>,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// HTTP listen address, e.g. `0.0.0.0:8700`.
    pub listen: String,
    /// Largest accepted request body in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest number of transactions in one batch submission.
    #[serde(default = "default_max_submit")]
    pub max_batch_submit: usize,
}

fn default_max_body() -> usize {
    4 << 20
}

fn default_max_submit() -> usize {
    1000
}

/// `[mempool]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolSection {
    /// Most transactions held; beyond it submissions get 429 `mempool_full`.
    pub max_txs: usize,
    /// Most encoded bytes held.
    pub max_bytes: usize,
}

impl Default for MempoolSection {
    fn default() -> Self {
        MempoolSection {
            max_txs: 2_000,
            max_bytes: 64 << 20,
        }
    }
}

/// `[batching]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSection {
    /// A batch is sealed when it holds this many transactions...
    pub max_txs: usize,
    /// ...or when its oldest transaction has waited this long.
    pub max_age_ms: u64,
    /// Most transactions of this validator's own batches that wait to be committed; while
    /// that many wait, no new batch is sealed, the mempool fills, and the API refuses the
    /// excess with 429 `mempool_full` (back-pressure).
    #[serde(default = "default_max_inflight_txs")]
    pub max_inflight_txs: usize,
    /// Verify every signature of every peer batch here instead of trusting f + 1 attestations
    /// (docs/consensus.md, "Verify once"): about twice this validator's verification work.
    #[serde(default)]
    pub verify_all_signatures: bool,
}

fn default_max_inflight_txs() -> usize {
    1_000
}

impl Default for BatchingSection {
    fn default() -> Self {
        BatchingSection {
            max_txs: 1000,
            max_age_ms: 20,
            max_inflight_txs: default_max_inflight_txs(),
            verify_all_signatures: false,
        }
    }
}

/// `[consensus]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusSection {
    /// Round timeout before the first view change; doubles on consecutive timeouts.
    pub base_timeout_ms: u64,
    /// The cap of the doubling: the longest message delay the network is expected to recover
    /// from, and what each Byzantine leader can cost after a long outage (docs/consensus.md,
    /// "Liveness after a heal").
    #[serde(default = "default_max_timeout")]
    pub max_timeout_ms: u64,
    /// Most batch digests one block names.
    pub max_batches_per_block: usize,
    /// When nothing waits to be ordered (no batch to propose, none in the block extended, and
    /// everything below it committed), how long a leader waits for a batch before proposing an
    /// empty block: the idle network's heartbeat. It doubles with each further empty block in
    /// a row, up to `max_heartbeat_ms`. A batch arriving ends the wait at once; every replica
    /// allows `max_heartbeat_ms` in the timer of such a round. (`empty_block_delay_ms` is its
    /// former name.)
    #[serde(default = "default_heartbeat", alias = "empty_block_delay_ms")]
    pub heartbeat_ms: u64,
    /// The longest idle wait between empty blocks.
    #[serde(default = "default_max_heartbeat")]
    pub max_heartbeat_ms: u64,
}

fn default_max_timeout() -> u64 {
    10_000
}

fn default_heartbeat() -> u64 {
    1000
}

fn default_max_heartbeat() -> u64 {
    15_000
}

impl Default for ConsensusSection {
    fn default() -> Self {
        ConsensusSection {
            base_timeout_ms: 1500,
            max_timeout_ms: default_max_timeout(),
            max_batches_per_block: 64,
            heartbeat_ms: default_heartbeat(),
            max_heartbeat_ms: default_max_heartbeat(),
        }
    }
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// `pretty` for people, `json` for machines.
    pub format: String,
    /// RUST_LOG-style filter, e.g. `info,tally_network=debug`.
    pub filter: String,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            format: "pretty".into(),
            filter: "info".into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths in `[node]` are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.node.data_dir,
            &mut config.node.key_file,
            &mut config.node.genesis_file,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(parse_message(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The API listen address.
    pub fn api_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.api.listen.parse().map_err(|_| ConfigError::Invalid {
            field: "api.listen",
            message: format!("invalid socket address {:?}", self.api.listen),
        })
    }

    /// Checks every value, naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, message: String| Err(ConfigError::Invalid { field, message });
        if self.node.name.trim().is_empty() {
            return invalid("node.name", "must not be empty".into());
        }
        self.api_addr()?;
        if self
            .network
            .listen
            .parse::<tally_network::Multiaddr>()
            .is_err()
        {
            return invalid(
                "network.listen",
                format!("invalid multiaddr {:?}", self.network.listen),
            );
        }
        for (i, b) in self.network.bootstrap.iter().enumerate() {
            if parse_bootstrap(b).is_none() {
                return Err(ConfigError::Invalid {
                    field: "network.bootstrap",
                    message: format!("entry {i} {b:?} is not <hex public key>@<multiaddr>"),
                });
            }
        }
        if self.api.max_body_bytes < 1024 {
            return invalid("api.max_body_bytes", "must be at least 1024".into());
        }
        if self.api.max_batch_submit == 0 {
            return invalid("api.max_batch_submit", "must be at least 1".into());
        }
        if self.mempool.max_txs == 0 {
            return invalid("mempool.max_txs", "must be at least 1".into());
        }
        if self.mempool.max_bytes < tally_ledger::tx::MAX_TX_BYTES {
            return invalid(
                "mempool.max_bytes",
                "must hold at least one transaction".into(),
            );
        }
        if self.batching.max_txs == 0 || self.batching.max_txs > 10_000 {
            return invalid("batching.max_txs", "must be between 1 and 10000".into());
        }
        if self.batching.max_inflight_txs < self.batching.max_txs {
            return invalid(
                "batching.max_inflight_txs",
                "must be at least batching.max_txs".into(),
            );
        }
        if self.batching.max_age_ms == 0 {
            return invalid("batching.max_age_ms", "must be at least 1".into());
        }
        if self.consensus.base_timeout_ms < 100 {
            return invalid("consensus.base_timeout_ms", "must be at least 100".into());
        }
        if self.consensus.max_timeout_ms < self.consensus.base_timeout_ms
            || self.consensus.max_timeout_ms > 120_000
        {
            return invalid(
                "consensus.max_timeout_ms",
                "must be at least consensus.base_timeout_ms and at most 120000".into(),
            );
        }
        if self.consensus.max_heartbeat_ms > 60_000 {
            return invalid(
                "consensus.max_heartbeat_ms",
                "must be at most 60000 (a minute without a block hides a failed network)".into(),
            );
        }
        if self.consensus.heartbeat_ms > self.consensus.max_heartbeat_ms {
            return invalid(
                "consensus.heartbeat_ms",
                format!(
                    "must be at most consensus.max_heartbeat_ms ({})",
                    self.consensus.max_heartbeat_ms
                ),
            );
        }
        if self.consensus.max_batches_per_block == 0 {
            return invalid(
                "consensus.max_batches_per_block",
                "must be at least 1".into(),
            );
        }
        if !matches!(self.logging.format.as_str(), "pretty" | "json") {
            return invalid(
                "logging.format",
                format!(
                    "{:?} is neither \"pretty\" nor \"json\"",
                    self.logging.format
                ),
            );
        }
        Ok(())
    }
}

/// `<hex public key>@<multiaddr>` → (key, address).
pub fn parse_bootstrap(entry: &str) -> Option<([u8; 32], tally_network::Multiaddr)> {
    let (key, addr) = entry.split_once('@')?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(key, &mut out).ok()?;
    Some((out, addr.parse().ok()?))
}

/// toml's message, which names the key and the line, in one line.
fn parse_message(e: &toml::de::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "validator-0"
data_dir = "data"
key_file = "validator-0.key"
genesis_file = "genesis.json"

[network]
listen = "/ip4/127.0.0.1/tcp/7000"

[api]
listen = "127.0.0.1:8700"
"#;

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.batching, BatchingSection::default());
        assert_eq!(c.api_addr().unwrap().port(), 8700);
    }

    #[test]
    fn errors_name_the_field() {
        let e = error_of(&GOOD.replace("127.0.0.1:8700", "abc"));
        assert!(e.contains("api.listen") && e.contains("abc"), "{e}");
        let e = error_of(&GOOD.replace("/ip4/127.0.0.1/tcp/7000", "nonsense"));
        assert!(e.contains("network.listen"), "{e}");
        let e = error_of(&format!(
            "{GOOD}\n[batching]\nmax_txs = 0\nmax_age_ms = 5\n"
        ));
        assert!(e.contains("batching.max_txs"), "{e}");
        let e = error_of(&GOOD.replace("name = \"validator-0\"", "name = \"v\"\ncolour = 1"));
        assert!(e.contains("colour"), "{e}");
        let e = error_of(&GOOD.replace("key_file = \"validator-0.key\"\n", ""));
        assert!(e.contains("key_file"), "{e}");
        let e = error_of(&format!(
            "{GOOD}\n[logging]\nformat = \"xml\"\nfilter = \"info\"\n"
        ));
        assert!(e.contains("logging.format"), "{e}");
        let e = error_of(&format!(
            "{GOOD}\n[consensus]\nbase_timeout_ms = 2000\nmax_batches_per_block = 64\nmax_timeout_ms = 1000\n"
        ));
        assert!(e.contains("consensus.max_timeout_ms"), "{e}");
    }
}
