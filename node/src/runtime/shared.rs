//! What the node's tasks and the HTTP API share: identity, the mempool, the store, metrics, the
//! network handle, and the consensus progress snapshot. `NodeShared` implements `api::Node`,
//! the narrow interface the API is written against.

use super::*;

/// What the API and the node's tasks share. Read-mostly; the hot path takes no lock per
/// transaction (the mempool locks once per submission, the in-flight map once per batch and
/// per block).
pub struct NodeShared {
    /// Network name.
    pub chain_id: String,
    /// Node name.
    pub name: String,
    /// The genesis.
    pub genesis: Genesis,
    /// Validator public keys of the current epoch, in consensus index order.
    pub(super) validators: RwLock<Vec<AccountId>>,
    /// This validator.
    pub me: AccountId,
    /// Pending transactions.
    pub mempool: Mempool,
    /// The database (read by the API; written by the executor).
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// The network.
    pub network: NetworkHandle,
    /// Limits of the API.
    pub max_body_bytes: usize,
    /// Limits of the API.
    pub max_batch_submit: usize,
    pub(super) status: RwLock<Status>,
    pub(super) height: watch::Sender<Height>,
    pub(super) failure: watch::Sender<Option<String>>,
    pub(super) inflight: Mutex<HashMap<Hash, Instant>>,
    /// Transactions in this validator's own batches that are not committed yet.
    pub(crate) own_pending_txs: AtomicUsize,
}

impl NodeShared {
    /// A snapshot of consensus progress.
    pub fn status(&self) -> Status {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn write_status(&self) -> std::sync::RwLockWriteGuard<'_, Status> {
        self.status.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Validator public keys of the current epoch, in consensus index order.
    pub fn validators(&self) -> Vec<AccountId> {
        self.validators
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True while this node is in the current validator set.
    pub fn is_validator(&self) -> bool {
        self.validators
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&self.me)
    }

    pub(super) fn set_validators(&self, validators: Vec<AccountId>) {
        *self.validators.write().unwrap_or_else(|e| e.into_inner()) = validators;
    }

    /// The consensus validator set as the executed state records it.
    pub fn validator_epoch(&self) -> Result<Option<ValidatorEpoch>, String> {
        let raw = self
            .store
            .state_value(VALIDATORS_KEY)
            .map_err(|e| format!("reading the validator set: {e}"))?;
        raw.map(|r| codec::decode(&r, 16 << 20))
            .transpose()
            .map_err(|e| format!("the stored validator set does not decode: {e}"))
    }

    /// Executed height.
    pub fn height(&self) -> Height {
        *self.height.borrow()
    }

    /// Waits until the executed height reaches `h`.
    pub async fn wait_height(&self, h: Height) {
        let mut rx = self.height.subscribe();
        let _ = rx.wait_for(|x| *x >= h).await;
    }

    /// Records that a quorum certified another header than this node's at `height`: its state
    /// diverged. Counted, kept (the first height) for `/health` and `/v1/status`, never cleared
    /// while the process runs.
    pub fn mark_diverged(&self, height: Height) {
        self.metrics.state_divergence.inc();
        let mut status = self.write_status();
        if status.diverged_at.is_none() {
            status.diverged_at = Some(height);
        }
    }

    pub(super) fn set_height(&self, h: Height) {
        self.write_status().height = h;
        self.height.send_replace(h);
    }

    /// True if the transaction waits in this node's mempool or in one of its uncommitted batches.
    pub fn is_pending(&self, hash: &Hash) -> bool {
        self.mempool.contains(hash) || self.lock_inflight().contains_key(hash)
    }

    pub(super) fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, Instant>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn start_inflight(&self, txs: &[mempool::Pending]) {
        let mut map = self.lock_inflight();
        for p in txs {
            map.insert(p.tx.hash, p.received);
        }
    }

    pub(super) fn finish_inflight(&self, txs: &[VerifiedTransaction]) {
        let mut map = self.lock_inflight();
        for tx in txs {
            if let Some(received) = map.remove(&tx.hash) {
                self.metrics
                    .transaction_finality_latency
                    .observe(received.elapsed().as_secs_f64());
            }
        }
        if map.len() > 1_000_000 {
            let cutoff = Duration::from_secs(600);
            map.retain(|_, t| t.elapsed() < cutoff);
        }
    }

    /// One of this validator's batches, of `txs` transactions, committed (one made before a
    /// restart counts for none).
    pub(crate) fn own_batch_committed(&self, txs: usize) {
        let _ = self.own_pending_txs.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| Some(n.saturating_sub(txs)),
        );
    }

    /// Stops the node: something that must not fail did.
    pub fn fail(&self, why: String) {
        tracing::error!(error = %why, "fatal: stopping the node");
        self.failure.send_replace(Some(why));
    }

    pub(super) fn record_evidence(&self, evidence: &tally_consensus::Evidence) {
        if let Err(e) = self.store.put_evidence(
            evidence.kind(),
            evidence.validator(),
            evidence.round(),
            &codec::encode(evidence),
        ) {
            tracing::error!(error = %e, "evidence not stored");
        }
    }
}

impl crate::api::Node for NodeShared {
    fn chain_id(&self) -> &str {
        &self.chain_id
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn account(&self) -> AccountId {
        self.me
    }

    fn status(&self) -> Status {
        NodeShared::status(self)
    }

    fn height(&self) -> Height {
        NodeShared::height(self)
    }

    fn validators(&self) -> Vec<AccountId> {
        NodeShared::validators(self)
    }

    fn is_validator(&self) -> bool {
        NodeShared::is_validator(self)
    }

    fn is_pending(&self, hash: &Hash) -> bool {
        NodeShared::is_pending(self, hash)
    }

    fn connected_peers(&self) -> usize {
        self.network.connected_peers().len()
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_batch_submit: self.max_batch_submit,
        }
    }

    fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    fn mempool_is_full(&self) -> bool {
        self.mempool.is_full()
    }

    fn admit(&self, txs: Vec<VerifiedTransaction>) -> Vec<Result<Hash, AdmitError>> {
        self.mempool.admit(txs)
    }
}
