//! The validator runtime: everything that owns sockets, timers and disk, wired in one place.
//!
//! ```text
//!  HTTP API ──admit──▶ Mempool ──take──▶ batcher ──gossip──▶ peers
//!                                           │ own batch
//!  network events ──────────────────────▶ core (consensus state machine + batch pool)
//!                                           │ final block + its batches, in order
//!                                        executor thread (Chain: execute, one atomic write + fsync)
//!                                           │ executed header
//!                                        core: sign, gather a commit certificate, store it
//! ```
//! One task per component, bounded channels between them; the executor is an OS thread
//! because execution and fsync block.

mod batcher;
pub mod batches;
mod core;
mod executor;
mod internal;
pub mod mempool;
mod shared;
mod sync;
pub mod wire;

pub use shared::NodeShared;

use crate::api::{AdmitError, Limits, Status};
use crate::chain::Chain;
use crate::config::{parse_bootstrap, Config};
use crate::keys;
use crate::metrics::Metrics;
use crate::storage::Store;
use ed25519_dalek::SigningKey;
use mempool::Mempool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tally_consensus::{Block, Consensus, QuorumCert, SafetyState, ValidatorSet};
use tally_ledger::codec;
use tally_ledger::compliance::governance::{ValidatorEpoch, VALIDATORS_KEY};
use tally_ledger::genesis::Genesis;
use tally_ledger::primitives::{AccountId, Hash, Height};
use tally_ledger::tx::VerifiedTransaction;
use tally_network::{BootstrapPeer, Multiaddr, Network, NetworkConfig, NetworkHandle, PeerId};
use tokio::sync::{mpsc, watch};

/// Everything a validator needs to start.
#[derive(Clone)]
pub struct NodeOptions {
    /// Name in logs and metrics.
    pub name: String,
    /// Database directory.
    pub data_dir: PathBuf,
    /// The validator key (consensus key and libp2p identity).
    pub key: SigningKey,
    /// The network's genesis.
    pub genesis: Genesis,
    /// libp2p listen address.
    pub p2p_listen: Multiaddr,
    /// Peers dialled at start.
    pub bootstrap: Vec<BootstrapPeer>,
    /// HTTP listen address (port 0 picks one).
    pub api_listen: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most transactions per batch submission.
    pub max_batch_submit: usize,
    /// Mempool bounds.
    pub mempool_max_txs: usize,
    /// Mempool bounds.
    pub mempool_max_bytes: usize,
    /// Batch sealing by count.
    pub batch_max_txs: usize,
    /// Batch sealing by age.
    pub batch_max_age: Duration,
    /// Most of this validator's own transactions sealed in batches and not yet committed.
    pub batch_max_inflight_txs: usize,
    /// Verify every peer batch's signatures here, attested or not.
    pub verify_all_signatures: bool,
    /// Consensus parameters.
    pub consensus: tally_consensus::Config,
}

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is inconsistent with the genesis or the key.
    #[error("{0}")]
    Invalid(String),
    /// The store or chain could not be opened.
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The network could not start.
    #[error("network: {0}")]
    Network(#[from] tally_network::NetworkError),
    /// The key file could not be read.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// The genesis could not be read.
    #[error(transparent)]
    Genesis(#[from] tally_ledger::genesis::GenesisError),
    /// The HTTP listener could not bind.
    #[error("api.listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl NodeOptions {
    /// Options from a validated config file (paths already resolved by `Config::load`).
    pub fn from_config(config: &Config) -> Result<NodeOptions, StartError> {
        let genesis = Genesis::load(&config.node.genesis_file)?;
        let key = keys::read_key_file(&config.node.key_file)?;
        let p2p_listen: Multiaddr = config
            .network
            .listen
            .parse()
            .map_err(|e| StartError::Invalid(format!("network.listen: {e}")))?;
        let api_listen = config
            .api_addr()
            .map_err(|e| StartError::Invalid(e.to_string()))?;
        let me = keys::account_id(&key);
        let bootstrap = if config.network.bootstrap.is_empty() {
            let mut out = Vec::new();
            for v in genesis.validators.iter().filter(|v| v.public_key != me) {
                let addr = v.p2p_addr.parse().map_err(|e| {
                    StartError::Invalid(format!("genesis: validator {} p2p_addr: {e}", v.name))
                })?;
                out.push(BootstrapPeer {
                    public_key: v.public_key.0,
                    addr,
                });
            }
            out
        } else {
            config
                .network
                .bootstrap
                .iter()
                .filter_map(|b| parse_bootstrap(b))
                .map(|(public_key, addr)| BootstrapPeer { public_key, addr })
                .collect()
        };
        Ok(NodeOptions {
            name: config.node.name.clone(),
            data_dir: config.node.data_dir.clone(),
            key,
            genesis,
            p2p_listen,
            bootstrap,
            api_listen,
            max_body_bytes: config.api.max_body_bytes,
            max_batch_submit: config.api.max_batch_submit,
            mempool_max_txs: config.mempool.max_txs,
            mempool_max_bytes: config.mempool.max_bytes,
            batch_max_txs: config.batching.max_txs,
            batch_max_age: Duration::from_millis(config.batching.max_age_ms),
            batch_max_inflight_txs: config.batching.max_inflight_txs,
            verify_all_signatures: config.batching.verify_all_signatures,
            consensus: tally_consensus::Config {
                base_timeout_ms: config.consensus.base_timeout_ms,
                max_timeout_ms: config.consensus.max_timeout_ms,
                max_payload_digests: config.consensus.max_batches_per_block,
                heartbeat_ms: config.consensus.heartbeat_ms,
                max_heartbeat_ms: config.consensus.max_heartbeat_ms,
                ..tally_consensus::Config::default()
            },
        })
    }
}

/// Keys the network admits: the current validators, the previous epoch's while they finish
/// its last rounds and headers, and the consortium's members as governance last set them (the
/// genesis list until governance has written one). A key governance removed is not admitted,
/// and its open connections are closed.
pub(crate) fn network_members(
    store: &Store,
    genesis: &Genesis,
    validators: &[AccountId],
    previous: &[AccountId],
) -> Vec<[u8; 32]> {
    let governed: Option<std::collections::BTreeSet<AccountId>> = store
        .state_value(tally_ledger::compliance::governance::MEMBERS_KEY)
        .ok()
        .flatten()
        .and_then(|raw| codec::decode(&raw, 16 << 20).ok());
    let members: Vec<AccountId> = match governed {
        Some(set) => set.into_iter().collect(),
        None => genesis.members.clone(),
    };
    let mut keys: Vec<[u8; 32]> = validators
        .iter()
        .chain(previous)
        .chain(members.iter())
        .map(|k| k.0)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The safety state as written before it carried the highest QC, the TC and the uncommitted
/// blocks (docs/adr/0003-consensus-state-on-disk.md).
#[derive(serde::Deserialize)]
struct SafetyStateV1 {
    epoch: u64,
    last_voted_round: u64,
    last_proposed_round: u64,
    highest_qc_round: u64,
    last_timeout: Option<(u64, QuorumCert)>,
}

/// Decodes the persisted safety state, upgrading one written by an earlier version: its lock
/// and counters are kept, so the validator still never signs twice for a round or below its
/// lock (it times out again once it has seen a QC at least as high as the lock).
fn decode_safety_state(bytes: &[u8]) -> Result<SafetyState, codec::CodecError> {
    const MAX: usize = 256 << 20;
    match codec::decode::<SafetyState>(bytes, MAX) {
        Ok(s) => Ok(s),
        Err(e) => match codec::decode::<SafetyStateV1>(bytes, MAX) {
            Ok(v1) => Ok(SafetyState {
                epoch: v1.epoch,
                last_voted_round: v1.last_voted_round,
                last_proposed_round: v1.last_proposed_round,
                highest_qc_round: v1.highest_qc_round,
                last_timeout: v1.last_timeout,
                ..SafetyState::default()
            }),
            Err(_) => Err(e),
        },
    }
}

/// Epoch length from the executed state (fixed at genesis).
fn epoch_blocks(store: &Store) -> Result<Height, StartError> {
    let params: tally_ledger::compliance::Params = match store
        .state_value(tally_ledger::compliance::governance::PARAMS_KEY)
        .map_err(|e| StartError::Invalid(format!("reading governance parameters: {e}")))?
    {
        Some(raw) => codec::decode(&raw, 1 << 20).map_err(|e| {
            StartError::Invalid(format!("stored governance parameters do not decode: {e}"))
        })?,
        None => tally_ledger::compliance::Params::default(),
    };
    Ok(params.epoch_blocks.max(1))
}

/// Milliseconds since the Unix epoch (the proposer's clock; execution never reads it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The consensus block stored with the executed block at `height`.
pub(crate) fn stored_consensus_block(store: &Store, height: Height) -> Option<Block> {
    stored_consensus_record(store, height).map(|(b, _)| b)
}

/// The committed transaction `hash`, which the block at `height` executed at position `index`:
/// read from the block's stored batches. A block executes its batches' transactions in order,
/// less the ones already committed, so the transaction is at `index` or after it.
pub fn committed_transaction(
    store: &Store,
    height: Height,
    index: u32,
    hash: &Hash,
) -> Option<tally_ledger::tx::SignedTransaction> {
    let block = stored_consensus_block(store, height)?;
    let mut position = 0usize;
    for digest in &block.payload {
        let bytes = store.batch(&batches::to_hash(digest)).ok().flatten()?;
        let batch: batches::Batch = codec::decode(&bytes, 64 << 20).ok()?;
        let skip = (index as usize).saturating_sub(position);
        position = position.saturating_add(batch.txs.len());
        if let Some(tx) = batch.txs.into_iter().skip(skip).find(|t| t.hash() == *hash) {
            return Some(tx);
        }
    }
    None
}

fn stored_consensus_record(store: &Store, height: Height) -> Option<(Block, QuorumCert)> {
    let stored = store.block(height).ok().flatten()?;
    codec::decode(&stored.consensus, 64 << 20).ok()
}

/// A running validator.
pub struct RunningNode {
    shared: Arc<NodeShared>,
    api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    failure: watch::Receiver<Option<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    executor: Option<std::thread::JoinHandle<()>>,
}

impl RunningNode {
    /// Opens the store, joins the network, starts consensus, the batcher, the executor and the
    /// HTTP API. Must run inside a multi-threaded tokio runtime.
    pub async fn start(options: NodeOptions) -> Result<RunningNode, StartError> {
        let genesis = options.genesis.clone();
        let me = keys::account_id(&options.key);
        let metrics = Metrics::new(&genesis.chain_id)?;
        let chain = Chain::open(&options.data_dir, &genesis)?;
        let store = chain.store().clone();
        let height = chain.height();

        // The validator set of the epoch the executed state is in (genesis: epoch 0).
        let epoch: ValidatorEpoch = match store
            .state_value(VALIDATORS_KEY)
            .map_err(|e| StartError::Invalid(format!("reading the validator set: {e}")))?
        {
            Some(raw) => codec::decode(&raw, 16 << 20).map_err(|e| {
                StartError::Invalid(format!("the stored validator set does not decode: {e}"))
            })?,
            None => ValidatorEpoch {
                epoch: 0,
                first_height: 1,
                validators: genesis.validators.clone(),
            },
        };
        let epoch_blocks = epoch_blocks(&store)?;
        let validators: Vec<AccountId> = epoch.validators.iter().map(|v| v.public_key).collect();
        let my_index = validators.iter().position(|v| *v == me);
        match my_index {
            None if epoch.epoch == 0 => {
                return Err(StartError::Invalid(format!(
                    "key {me} is not a genesis validator"
                )))
            }
            None => tracing::warn!(
                epoch = epoch.epoch,
                "this key is not in the current validator set: the node serves its API and state but takes no part in consensus"
            ),
            Some(_) => {}
        }
        let validator_set =
            ValidatorSet::new(epoch.epoch, validators.iter().map(|v| v.0).collect()).map_err(
                |e| StartError::Invalid(format!("validator set of epoch {}: {e}", epoch.epoch)),
            )?;
        let root = match stored_consensus_record(&store, height) {
            Some(r) => r,
            None if height == 0 => Block::genesis(&validator_set),
            None => {
                return Err(StartError::Invalid(format!(
                    "the consensus record of committed block {height} is missing"
                )))
            }
        };
        let safety =
            match store.safety_state()? {
                Some(bytes) => Some(decode_safety_state(&bytes).map_err(|e| {
                    StartError::Invalid(format!("stored consensus safety state: {e}"))
                })?),
                None => None,
            };
        let consensus = Consensus::new(
            options.consensus.clone(),
            options.key.clone(),
            validator_set,
            root,
            safety,
        );

        let mut net_config =
            NetworkConfig::new(options.key.to_bytes(), vec![options.p2p_listen.clone()]);
        net_config.members = network_members(&store, &genesis, &validators, &[]);
        net_config.bootstrap = options.bootstrap.clone();
        net_config.topics = vec![wire::BATCH_TOPIC.to_owned()];
        net_config.redial_max = Duration::from_secs(5);
        let (network, net_events) = Network::spawn(net_config, metrics.registry())?;
        let peers: Vec<PeerId> = validators
            .iter()
            .map(|v| tally_network::peer_id_from_public_key(&v.0))
            .collect::<Result<_, _>>()?;

        let (height_tx, _) = watch::channel(height);
        let (failure_tx, failure_rx) = watch::channel(None);
        let shared = Arc::new(NodeShared {
            chain_id: genesis.chain_id.clone(),
            name: options.name.clone(),
            genesis: genesis.clone(),
            validators: RwLock::new(validators.clone()),
            me,
            mempool: Mempool::new(
                options.mempool_max_txs,
                options.mempool_max_bytes,
                metrics.clone(),
            ),
            store,
            metrics: metrics.clone(),
            network,
            max_body_bytes: options.max_body_bytes,
            max_batch_submit: options.max_batch_submit,
            status: RwLock::new(Status {
                height,
                ..Status::default()
            }),
            height: height_tx,
            failure: failure_tx,
            inflight: Mutex::new(HashMap::new()),
            own_pending_txs: AtomicUsize::new(0),
        });
        metrics.consensus_height.set(height as i64);

        let (stop_tx, stop_rx) = watch::channel(false);
        let (internal_tx, internal_rx) = mpsc::channel(4096);
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        let executor = {
            let shared = shared.clone();
            let internal = internal_tx.clone();
            std::thread::Builder::new()
                .name(format!("{}-executor", options.name))
                .spawn(move || executor::run(chain, shared, jobs_rx, internal))
                .map_err(|e| StartError::Invalid(format!("spawning the executor: {e}")))?
        };
        let gossip_limit = 16 << 20;
        let core = core::Core::new(
            shared.clone(),
            consensus,
            core::CoreParams {
                key: options.key.clone(),
                max_batch_bytes: gossip_limit,
                max_batch_txs: options.batch_max_txs.max(1),
                verify_all_signatures: options.verify_all_signatures,
                max_payload: options.consensus.max_payload_digests,
                epoch_blocks,
            },
            peers,
            jobs_tx,
            internal_tx.clone(),
            height,
        );
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(core.run(
            net_events,
            internal_rx,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(batcher::run(
            shared.clone(),
            options.batch_max_txs.max(1),
            options.batch_max_age,
            options.batch_max_inflight_txs.max(1),
            internal_tx,
            stop_rx.clone(),
        )));
        let listener = tokio::net::TcpListener::bind(options.api_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: options.api_listen,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: options.api_listen,
            source,
        })?;
        let api: Arc<dyn crate::api::Node> = shared.clone();
        tasks.push(tokio::spawn(crate::api::serve(listener, api, stop_rx)));
        tracing::info!(
            node = %options.name,
            validator = ?my_index,
            epoch = epoch.epoch,
            height,
            api = %api_addr,
            "validator started"
        );
        Ok(RunningNode {
            shared,
            api_addr,
            stop: stop_tx,
            failure: failure_rx,
            tasks,
            executor: Some(executor),
        })
    }

    /// What the node shares with its API.
    pub fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    /// The bound HTTP address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Resolves when the node fails fatally, with the reason.
    pub async fn failed(&mut self) -> String {
        match self
            .failure
            .wait_for(Option::is_some)
            .await
            .map(|f| f.clone())
        {
            Ok(Some(why)) => why,
            _ => "the node stopped".to_owned(),
        }
    }

    /// Stops every task, closes the network and waits for the executor to finish its block.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.shared.network.shutdown().await;
        if let Some(executor) = self.executor.take() {
            let _ = tokio::task::spawn_blocking(move || executor.join()).await;
        }
        tracing::info!(node = %self.shared.name, "validator stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_safety_state_written_by_the_earlier_version_is_upgraded_with_its_lock() {
        #[derive(serde::Serialize)]
        struct Old {
            epoch: u64,
            last_voted_round: u64,
            last_proposed_round: u64,
            highest_qc_round: u64,
            last_timeout: Option<(u64, QuorumCert)>,
        }
        let old = codec::encode(&Old {
            epoch: 2,
            last_voted_round: 41,
            last_proposed_round: 40,
            highest_qc_round: 39,
            last_timeout: None,
        });
        let s = decode_safety_state(&old).expect("upgraded");
        assert_eq!(
            (s.epoch, s.last_voted_round, s.highest_qc_round),
            (2, 41, 39)
        );
        assert!(s.highest_qc.is_none() && s.blocks.is_empty());
        let current = SafetyState {
            last_voted_round: 7,
            ..SafetyState::default()
        };
        assert_eq!(
            decode_safety_state(&codec::encode(&current)).expect("current"),
            current
        );
        assert!(decode_safety_state(&old[..old.len() - 1]).is_err());
    }
}
