//! An in-process cluster of real validators (real libp2p on loopback, real sled directories,
//! real HTTP) for scenario tests that read like a story:
//! `Cluster::start(4).await.wait_height(10).await; cluster.kill(leader).await; ...`.

use ed25519_dalek::SigningKey;
use std::time::Duration;
use tally_ledger::primitives::{AccountId, AssetCode, Hash, Height};
use tally_ledger::tx::{Payload, SignedTransaction, Transaction, Transfer};
use tally_node::api::{AccountView, BatchSubmitted, TxStatus};
use tally_node::runtime::{NodeOptions, RunningNode};
use tally_node::tools::testnet::{Testnet, TestnetSpec};

/// A free loopback TCP port for a listener. Taken below the kernel's ephemeral range
/// (32768 and up), so that an outgoing connection of a test running in parallel cannot take
/// it between this check and the node's bind; each process walks its own slice of the range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slice = 20_000 + (std::process::id() % 60) * 200;
    for _ in 0..200 {
        let port = (slice + NEXT.fetch_add(1, Ordering::Relaxed) % 200) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running cluster.
pub struct Cluster {
    /// Keys and genesis.
    pub testnet: Testnet,
    /// Options of each validator (to restart it on the same directory).
    pub options: Vec<NodeOptions>,
    /// Running validators (`None` while stopped).
    pub nodes: Vec<Option<RunningNode>>,
    /// HTTP client.
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` validators with fast test timings and waits until they produce blocks.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |_| {}).await
    }

    /// Starts `n` validators, letting the caller adjust each one's options.
    pub async fn start_with(n: usize, adjust: impl Fn(&mut NodeOptions)) -> Cluster {
        Cluster::start_with_genesis(n, |_| {}, adjust).await
    }

    /// Starts `n` validators on an adjusted genesis, with adjusted options.
    pub async fn start_with_genesis(
        n: usize,
        adjust_genesis: impl Fn(&mut tally_ledger::genesis::Genesis),
        adjust: impl Fn(&mut NodeOptions),
    ) -> Cluster {
        // Logs only when asked for (RUST_LOG=...).
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tally_node::process::init_logging("pretty", &filter);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut testnet = Testnet::generate(TestnetSpec {
            chain_id: "tally-test".into(),
            validators: n,
            accounts: 8,
            ..TestnetSpec::default()
        })
        .expect("testnet");
        adjust_genesis(&mut testnet.genesis);
        let p2p: Vec<u16> = (0..n).map(|_| free_port()).collect();
        for (v, port) in testnet.genesis.validators.iter_mut().zip(&p2p) {
            v.p2p_addr = format!("/ip4/127.0.0.1/tcp/{port}");
        }
        testnet.write(dir.path()).expect("write testnet");
        let mut options = Vec::new();
        for (i, port) in p2p.iter().enumerate() {
            let bootstrap = testnet
                .genesis
                .validators
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| tally_network::BootstrapPeer {
                    public_key: v.public_key.0,
                    addr: v.p2p_addr.parse().expect("multiaddr"),
                })
                .collect();
            let mut o = NodeOptions {
                name: format!("validator-{i}"),
                data_dir: dir.path().join(format!("validator-{i}/data")),
                key: testnet.validator_keys[i].clone(),
                genesis: testnet.genesis.clone(),
                p2p_listen: format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr"),
                bootstrap,
                api_listen: "127.0.0.1:0".parse().expect("addr"),
                max_body_bytes: 1 << 20,
                max_batch_submit: 1000,
                mempool_max_txs: 50_000,
                mempool_max_bytes: 64 << 20,
                batch_max_txs: 500,
                batch_max_age: Duration::from_millis(10),
                batch_max_inflight_txs: 25_000,
                verify_all_signatures: false,
                consensus: tally_consensus::Config {
                    base_timeout_ms: 1500,
                    heartbeat_ms: 50,
                    max_heartbeat_ms: 50,
                    ..tally_consensus::Config::default()
                },
            };
            adjust(&mut o);
            options.push(o);
        }
        let mut nodes = Vec::new();
        for o in &options {
            nodes.push(Some(
                RunningNode::start(o.clone()).await.expect("node starts"),
            ));
        }
        let cluster = Cluster {
            testnet,
            options,
            nodes,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        cluster.wait_height(1, Duration::from_secs(60)).await;
        cluster
    }

    /// The running validator `i`.
    pub fn node(&self, i: usize) -> &RunningNode {
        self.nodes[i].as_ref().expect("validator is running")
    }

    /// Base URL of validator `i`'s API.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.node(i).api_addr())
    }

    /// Executed height of validator `i`.
    pub fn height(&self, i: usize) -> Height {
        self.node(i).shared().height()
    }

    /// Lowest executed height among running validators.
    pub fn min_height(&self) -> Height {
        self.running().map(|i| self.height(i)).min().unwrap_or(0)
    }

    /// Indices of running validators.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some())
    }

    /// Waits until every running validator has executed `height`; panics after `timeout`.
    pub async fn wait_height(&self, height: Height, timeout: Duration) {
        let waits = self
            .running()
            .map(|i| self.node(i).shared().wait_height(height))
            .collect::<Vec<_>>();
        let all = futures::future::join_all(waits);
        if tokio::time::timeout(timeout, all).await.is_err() {
            let hs: Vec<_> = self.running().map(|i| (i, self.height(i))).collect();
            panic!("height {height} not reached within {timeout:?}: {hs:?}");
        }
    }

    /// Stops validator `i` abruptly (its tasks end; what it committed stays on disk).
    pub async fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    /// Restarts validator `i` from its directory.
    pub async fn restart(&mut self, i: usize) {
        let node = RunningNode::start(self.options[i].clone())
            .await
            .expect("node restarts");
        self.nodes[i] = Some(node);
    }

    /// Index of the leader of validator `i`'s current round.
    pub fn leader(&self, i: usize) -> usize {
        let status = self.node(i).shared().status();
        let leader = status.leader.expect("a leader");
        self.testnet
            .genesis
            .validators
            .iter()
            .position(|v| v.public_key == leader)
            .expect("leader is a validator")
    }

    /// Demo account `j`'s key and id.
    pub fn account(&self, j: usize) -> (SigningKey, AccountId) {
        let k = self.testnet.account_keys[j].clone();
        let id = AccountId(k.verifying_key().to_bytes());
        (k, id)
    }

    /// A signed transfer of `amount` USD minor units from account `from` to account `to`.
    pub fn transfer(
        &self,
        from: usize,
        to: usize,
        sequence: u64,
        amount: u64,
    ) -> SignedTransaction {
        let (key, id) = self.account(from);
        Transaction {
            chain_id: self.testnet.genesis.chain_id.clone(),
            sender: id,
            sequence,
            expiry_height: 1_000_000,
            payload: Payload::Transfer(Transfer {
                to: self.account(to).1,
                asset: AssetCode::new("USD").expect("code"),
                amount,
                memo: None,
                travel: None,
            }),
        }
        .sign(&key)
    }

    /// POSTs one transaction to validator `i`; returns (status, JSON body).
    pub async fn submit(&self, i: usize, tx: &SignedTransaction) -> (u16, serde_json::Value) {
        let body = serde_json::json!({ "tx": hex::encode(tx.to_bytes()) });
        self.post_json(i, "/v1/transactions", &body).await
    }

    /// POSTs a JSON body; returns (status, JSON body).
    pub async fn post_json(
        &self,
        i: usize,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url(i)))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// POSTs many transactions at once to validator `i`.
    pub async fn submit_batch(&self, i: usize, txs: &[SignedTransaction]) -> BatchSubmitted {
        let body = serde_json::json!({
            "txs": txs.iter().map(|t| hex::encode(t.to_bytes())).collect::<Vec<_>>()
        });
        let (status, v) = self.post_json(i, "/v1/transactions/batch", &body).await;
        assert_eq!(status, 202, "batch submission refused: {v}");
        serde_json::from_value(v).expect("batch answer")
    }

    /// GET a path of validator `i`; (status, JSON).
    /// A signed read as the demo consortium's KYC provider, which registered every demo
    /// account's identity and so sees their payments in full (public routes ignore the
    /// signature).
    pub async fn get(&self, i: usize, path: &str) -> (u16, serde_json::Value) {
        let r = crate::remote::signed_get(&self.http, &self.testnet, &self.url(i), path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// A read of `path` on validator `i` with the given headers (none: unsigned).
    pub async fn get_with(
        &self,
        i: usize,
        path: &str,
        headers: &[(&str, String)],
    ) -> (u16, serde_json::Value) {
        let mut r = self.http.get(format!("{}{path}", self.url(i)));
        for (name, value) in headers {
            r = r.header(*name, value);
        }
        let r = r.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// A read of `path` on validator `i` signed by `key`.
    pub async fn get_as(&self, i: usize, path: &str, key: &SigningKey) -> (u16, serde_json::Value) {
        let headers = tally_node::api::auth::sign_request(
            key,
            &self.testnet.genesis.chain_id,
            "GET",
            path,
            b"",
        );
        self.get_with(i, path, &headers).await
    }

    /// Validator `i`'s metrics in the Prometheus text format.
    pub async fn metrics(&self, i: usize) -> String {
        self.http
            .get(format!("{}/metrics", self.url(i)))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Waits until `hash` is final on validator `i`.
    pub async fn wait_final(&self, i: usize, hash: &Hash, timeout: Duration) -> TxStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, v) = self.get(i, &format!("/v1/transactions/{hash}")).await;
            if status == 200 {
                let s: TxStatus = serde_json::from_value(v).expect("status");
                if s.status != "pending" {
                    return s;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "transaction {hash} not final on validator {i} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Account `j` as validator `i` sees it.
    pub async fn account_view(&self, i: usize, j: usize) -> AccountView {
        let id = self.account(j).1;
        let (status, v) = self.get(i, &format!("/v1/accounts/{id}")).await;
        assert_eq!(status, 200, "{v}");
        serde_json::from_value(v).expect("account")
    }

    /// Header state roots of every running validator at `height`.
    pub fn state_roots(&self, height: Height) -> Vec<Option<Hash>> {
        self.running()
            .map(|i| {
                self.node(i)
                    .shared()
                    .store
                    .block(height)
                    .expect("store")
                    .map(|b| b.header.state_root)
            })
            .collect()
    }

    /// Stops every validator.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}
