//! A local test network on one machine: genesis, validator keys and commented node configs,
//! and demo accounts with their keys so a load generator can sign. Used by `tally testnet init`
//! and `tally devnet`.

use crate::keys;
use crate::tools::testnet_compliance::{demo_rules, DemoCompliance};
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tally_ledger::genesis::{Genesis, GenesisAccount, GenesisAsset, GenesisValidator};
use tally_ledger::primitives::{AccountId, AssetCode};

/// Shape of a local network.
#[derive(Debug, Clone)]
pub struct TestnetSpec {
    /// Chain id.
    pub chain_id: String,
    /// Number of validators.
    pub validators: usize,
    /// Number of demo payment accounts.
    pub accounts: usize,
    /// Validator i's HTTP API listens on 127.0.0.1:(api_base_port + i).
    pub api_base_port: u16,
    /// Validator i's libp2p listens on 127.0.0.1:(p2p_base_port + i).
    pub p2p_base_port: u16,
    /// Genesis time; 0 means the time of generation.
    pub genesis_time_ms: u64,
    /// For validators in containers or pods: validator i's host name is this template with
    /// `{i}` replaced by i (e.g. `validator-{i}`). Each then listens on every interface at
    /// the base ports, peers dial `/dns4/<host>/tcp/<p2p_base_port>`, its data goes to
    /// [`CONTAINER_DATA_DIR`] and its directory holds its own copy of the genesis (it is
    /// mounted alone). `None`: every validator on 127.0.0.1 at base port + i.
    pub host_template: Option<String>,
    /// `consensus.heartbeat_ms` and `consensus.max_heartbeat_ms` written into every
    /// validator's config.
    pub heartbeat_ms: (u64, u64),
}

/// Where a validator's data goes in the container image (a volume).
pub const CONTAINER_DATA_DIR: &str = "/var/lib/tally";

impl Default for TestnetSpec {
    fn default() -> Self {
        TestnetSpec {
            chain_id: "tally-devnet".into(),
            validators: 4,
            accounts: 200,
            api_base_port: 8700,
            p2p_base_port: 7700,
            genesis_time_ms: 0,
            host_template: None,
            heartbeat_ms: (1000, 15_000),
        }
    }
}

/// Demo assets: code, and opening balance of each demo account in minor units (6 decimals).
pub const DEMO_ASSETS: &[(&str, u64)] = &[
    ("USD", 1_000_000_000_000),
    ("EUR", 1_000_000_000_000),
    ("SGD", 1_000_000_000_000),
];

/// Keys read back from an earlier network, to regenerate the same one.
#[derive(Default)]
pub struct ReusedKeys {
    /// Validator keys in order.
    pub validators: Vec<SigningKey>,
    /// Issuer keys by asset.
    pub issuers: BTreeMap<AssetCode, SigningKey>,
    /// Demo account keys in order.
    pub accounts: Vec<SigningKey>,
    /// Named keys.
    pub named: BTreeMap<String, SigningKey>,
}

/// Everything generated, with keys in memory.
#[derive(Clone)]
pub struct Testnet {
    /// The genesis.
    pub genesis: Genesis,
    /// Validator keys, in genesis order.
    pub validator_keys: Vec<SigningKey>,
    /// Issuer key per demo asset.
    pub issuer_keys: BTreeMap<AssetCode, SigningKey>,
    /// Demo payment account keys.
    pub account_keys: Vec<SigningKey>,
    /// Consortium and scenario keys by name (members, KYC provider, regulators, scenario
    /// accounts): see `testnet_compliance`.
    pub named_keys: BTreeMap<String, SigningKey>,
    /// The spec it was made from.
    pub spec: TestnetSpec,
}

/// A failure writing the testnet files.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file could not be written.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The spec is unusable.
    #[error("{0}")]
    Invalid(String),
}

impl Testnet {
    /// Generates fresh keys and the genesis for `spec`.
    pub fn generate(spec: TestnetSpec) -> Result<Testnet, TestnetError> {
        Testnet::generate_with(spec, None)
    }

    /// Generates the genesis for `spec`, reusing `keys` (validators, issuers, accounts, named)
    /// where given.
    pub fn generate_with(
        spec: TestnetSpec,
        reuse: Option<ReusedKeys>,
    ) -> Result<Testnet, TestnetError> {
        if spec.validators == 0 || spec.validators > 100 {
            return Err(TestnetError::Invalid(
                "--validators must be between 1 and 100".into(),
            ));
        }
        let mut reuse = reuse.unwrap_or_default();
        let mut spec = spec;
        if spec.genesis_time_ms == 0 {
            // Genesis time anchors the demo identities' expiry; block times are wall-clock
            // readings agreed by consensus, so a network made now starts now.
            spec.genesis_time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
        }
        let validator_keys: Vec<SigningKey> = if reuse.validators.is_empty() {
            (0..spec.validators).map(|_| keys::generate()).collect()
        } else {
            std::mem::take(&mut reuse.validators)
        };
        let account_keys: Vec<SigningKey> = if reuse.accounts.is_empty() {
            (0..spec.accounts).map(|_| keys::generate()).collect()
        } else {
            std::mem::take(&mut reuse.accounts)
        };
        let mut issuer_keys = BTreeMap::new();
        let mut assets = Vec::new();
        for (code, _) in DEMO_ASSETS {
            let code = AssetCode::new(code)
                .ok_or_else(|| TestnetError::Invalid(format!("bad asset {code}")))?;
            let key = reuse.issuers.remove(&code).unwrap_or_else(keys::generate);
            assets.push(GenesisAsset {
                code: code.clone(),
                decimals: 6,
                issuer: keys::account_id(&key),
            });
            issuer_keys.insert(code, key);
        }
        let demo = DemoCompliance::build(
            validator_keys.len(),
            spec.genesis_time_ms,
            &issuer_keys,
            &account_keys,
            std::mem::take(&mut reuse.named),
        );
        let mut accounts: Vec<GenesisAccount> = account_keys
            .iter()
            .map(|k| GenesisAccount {
                id: keys::account_id(k),
                balances: DEMO_ASSETS
                    .iter()
                    .filter_map(|(c, amount)| Some((AssetCode::new(c)?, *amount)))
                    .collect(),
            })
            .collect();
        accounts.extend(demo.accounts);
        assets.extend(demo.assets);
        if let Some(t) = &spec.host_template {
            let host = t.replace("{i}", "0");
            let valid = t.contains("{i}")
                && !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid {
                return Err(TestnetError::Invalid(format!(
                    "--host-template {t:?}: must contain {{i}} and otherwise only letters, \
                     digits, '-' and '.' (a DNS name such as validator-{{i}})"
                )));
            }
        }
        let validators = validator_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let (p2p_addr, api_addr) = match &spec.host_template {
                    Some(t) => {
                        let host = t.replace("{i}", &i.to_string());
                        (
                            format!("/dns4/{host}/tcp/{}", spec.p2p_base_port),
                            format!("{host}:{}", spec.api_base_port),
                        )
                    }
                    None => (
                        format!("/ip4/127.0.0.1/tcp/{}", spec.p2p_base_port as usize + i),
                        format!("127.0.0.1:{}", spec.api_base_port as usize + i),
                    ),
                };
                GenesisValidator {
                    name: format!("validator-{i}"),
                    public_key: keys::account_id(k),
                    p2p_addr,
                    api_addr,
                }
            })
            .collect();
        let genesis = Genesis {
            chain_id: spec.chain_id.clone(),
            genesis_time_ms: spec.genesis_time_ms,
            validators,
            members: Vec::new(),
            assets,
            accounts,
            roles: demo.roles,
            identities: demo.identities,
            sanctioned_identities: demo.sanctioned,
            rules: demo_rules(),
            params: tally_ledger::compliance::Params::default(),
        };
        Ok(Testnet {
            genesis,
            validator_keys,
            issuer_keys,
            account_keys,
            named_keys: demo.keys,
            spec,
        })
    }

    /// Writes `genesis.json`, `validator-i/{node.toml,validator.key}`, `issuers/<CODE>.key` and
    /// `accounts/account-j.key` under `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), TestnetError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TestnetError::Io { path, source }
        };
        for sub in ["issuers", "accounts", "keys"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
        }
        let genesis_path = dir.join("genesis.json");
        let text = serde_json::to_string_pretty(&self.genesis)
            .map_err(|e| TestnetError::Invalid(e.to_string()))?;
        std::fs::write(&genesis_path, text + "\n").map_err(io(&genesis_path))?;
        for (i, key) in self.validator_keys.iter().enumerate() {
            let vdir = dir.join(format!("validator-{i}"));
            std::fs::create_dir_all(&vdir).map_err(io(&vdir))?;
            keys::write_key_file(&vdir.join("validator.key"), key)?;
            if self.spec.host_template.is_some() {
                let copy = vdir.join("genesis.json");
                std::fs::copy(&genesis_path, &copy).map_err(io(&copy))?;
            }
            let cfg = vdir.join("node.toml");
            std::fs::write(&cfg, self.node_config(i)).map_err(io(&cfg))?;
        }
        for (code, key) in &self.issuer_keys {
            keys::write_key_file(&dir.join("issuers").join(format!("{code}.key")), key)?;
        }
        for (j, key) in self.account_keys.iter().enumerate() {
            keys::write_key_file(&dir.join("accounts").join(format!("account-{j}.key")), key)?;
        }
        for (name, key) in &self.named_keys {
            keys::write_key_file(&dir.join("keys").join(format!("{name}.key")), key)?;
        }
        Ok(())
    }

    /// The commented node config of validator `i` (paths relative to its directory).
    pub fn node_config(&self, i: usize) -> String {
        let bootstrap: Vec<String> = self
            .genesis
            .validators
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, v)| format!("\"{}@{}\"", v.public_key, v.p2p_addr))
            .collect();
        let v = &self.genesis.validators[i];
        let (p2p, api, data_dir, genesis_file) = match &self.spec.host_template {
            Some(_) => (
                format!("/ip4/0.0.0.0/tcp/{}", self.spec.p2p_base_port),
                format!("0.0.0.0:{}", self.spec.api_base_port),
                CONTAINER_DATA_DIR,
                "genesis.json",
            ),
            None => (
                v.p2p_addr.clone(),
                v.api_addr.clone(),
                "data",
                "../genesis.json",
            ),
        };
        format!(
            r#"# Tally node configuration for {name}. Every field is described in docs/config.md.
# Relative paths are resolved against the directory of this file.

[node]
# Name used in logs and metrics.
name = "{name}"
# Directory of the node's database (created if missing). Keep it on durable storage.
data_dir = "{data_dir}"
# This validator's ed25519 key file (mode 0600): consensus key and libp2p identity.
key_file = "validator.key"
# The network's genesis file; every validator must use the same one.
genesis_file = "{genesis_file}"

[network]
# libp2p listen address (TCP, Noise, Yamux).
listen = "{p2p}"
# Peers dialled at start, as "<hex public key>@<multiaddr>". Only consortium members may connect.
bootstrap = [{bootstrap}]

[api]
# HTTP API listen address (/v1/..., /health, /metrics).
listen = "{api}"
# Largest accepted request body, in bytes.
max_body_bytes = 4194304
# Most transactions accepted in one POST /v1/transactions/batch.
max_batch_submit = 1000

[mempool]
# Most pending transactions held; beyond this, submissions get 429 mempool_full.
max_txs = 2000
# Most pending bytes held.
max_bytes = 67108864

[batching]
# A batch is sealed at this many transactions...
max_txs = 1000
# ...or when its oldest transaction has waited this many milliseconds.
max_age_ms = 20
# Most of this validator's transactions in batches not yet committed; beyond it no batch is
# sealed, the mempool fills and the API refuses the excess (back-pressure).
max_inflight_txs = 1000

[consensus]
# Round timeout before a view change, in milliseconds; doubles on consecutive timeouts.
base_timeout_ms = 1500
# Most transaction batches named by one block.
max_batches_per_block = 64
# When nothing waits to be ordered, a leader waits this long for a batch before proposing an
# empty block (the idle heartbeat); a batch arriving ends the wait at once. The wait doubles
# with each further empty block, up to max_heartbeat_ms (keep it well under the 30 s window of
# the TallyNoBlockFinalized alert).
heartbeat_ms = {heartbeat}
max_heartbeat_ms = {max_heartbeat}

[logging]
# "pretty" for people, "json" for log pipelines.
format = "pretty"
# RUST_LOG-style filter; the RUST_LOG environment variable overrides it.
filter = "info"
"#,
            name = v.name,
            bootstrap = bootstrap.join(", "),
            heartbeat = self.spec.heartbeat_ms.0,
            max_heartbeat = self.spec.heartbeat_ms.1,
        )
    }

    /// A named key (see `named_keys`).
    pub fn named(&self, name: &str) -> Option<&SigningKey> {
        self.named_keys.get(name)
    }

    /// Account id of demo account `j`.
    pub fn account(&self, j: usize) -> Option<AccountId> {
        self.account_keys.get(j).map(keys::account_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn generated_files_load_back_and_configs_validate() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TestnetSpec {
            accounts: 3,
            ..TestnetSpec::default()
        };
        let net = Testnet::generate(spec).unwrap();
        net.write(dir.path()).unwrap();
        let genesis = Genesis::load(&dir.path().join("genesis.json")).unwrap();
        assert_eq!(genesis, net.genesis);
        for i in 0..4 {
            let cfg = Config::load(&dir.path().join(format!("validator-{i}/node.toml"))).unwrap();
            assert_eq!(
                Genesis::load(&cfg.node.genesis_file).unwrap().hash(),
                genesis.hash()
            );
            let key = keys::read_key_file(&cfg.node.key_file).unwrap();
            assert_eq!(keys::account_id(&key), genesis.validators[i].public_key);
            assert_eq!(cfg.network.bootstrap.len(), 3);
        }
        let state = genesis.initial_state().unwrap();
        assert!(
            state.len() > 6,
            "assets, accounts, roles, identities and rules"
        );
        let written = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
        assert_eq!(written, net.named_keys.len());
    }

    /// `--host-template`: each validator directory stands alone (it is mounted into its
    /// container by itself), listens on every interface at the base ports, dials its peers by
    /// name, and keeps its data on the image's volume.
    #[test]
    fn a_container_network_dials_peers_by_name_and_each_directory_stands_alone() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TestnetSpec {
            accounts: 2,
            host_template: Some("validator-{i}".into()),
            ..TestnetSpec::default()
        };
        let net = Testnet::generate(spec).unwrap();
        net.write(dir.path()).unwrap();
        for i in 0..4 {
            let vdir = dir.path().join(format!("validator-{i}"));
            let cfg = Config::load(&vdir.join("node.toml")).unwrap();
            assert_eq!(cfg.node.genesis_file, vdir.join("genesis.json"));
            assert_eq!(
                Genesis::load(&cfg.node.genesis_file).unwrap().hash(),
                net.genesis.hash()
            );
            assert_eq!(cfg.node.data_dir, Path::new(CONTAINER_DATA_DIR));
            assert_eq!(cfg.network.listen, "/ip4/0.0.0.0/tcp/7700");
            assert_eq!(cfg.api.listen, "0.0.0.0:8700");
            let mut peers: Vec<String> = cfg
                .network
                .bootstrap
                .iter()
                .map(|b| b.split('@').nth(1).unwrap().to_owned())
                .collect();
            peers.sort();
            let expected: Vec<String> = (0..4)
                .filter(|j| *j != i)
                .map(|j| format!("/dns4/validator-{j}/tcp/7700"))
                .collect();
            assert_eq!(peers, expected);
        }
        for bad in ["validator", "validator_{i}", "{i} x", ""] {
            let spec = TestnetSpec {
                host_template: Some(bad.into()),
                ..TestnetSpec::default()
            };
            assert!(Testnet::generate(spec).is_err(), "{bad:?}");
        }
    }
}
