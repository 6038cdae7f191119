//! The batcher: seals the mempool into batches by count or age, gossips each batch to the
//! validators and hands it to the driver. It stops taking from the mempool while too many of
//! this validator's transactions wait in uncommitted batches (`batching.max_inflight_txs`),
//! so that overload fills the mempool and the API refuses the excess (back-pressure) instead
//! of queues growing without bound.

use super::batches;
use super::internal::Internal;
use super::wire::BATCH_TOPIC;
use super::NodeShared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub(crate) async fn run(
    shared: Arc<NodeShared>,
    max_txs: usize,
    max_age: Duration,
    max_inflight_txs: usize,
    internal: mpsc::Sender<Internal>,
    mut stop: watch::Receiver<bool>,
) {
    let tick = (max_age / 4).max(Duration::from_millis(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = interval.tick() => {}
        }
        loop {
            let inflight = shared.own_pending_txs.load(Ordering::Relaxed);
            if inflight >= max_inflight_txs {
                break;
            }
            let full = shared.mempool.len() >= max_txs;
            let old = shared.mempool.oldest_age().is_some_and(|a| a >= max_age);
            if !full && !old {
                break;
            }
            let taken = shared
                .mempool
                .take(max_txs.min(max_inflight_txs - inflight));
            if taken.is_empty() {
                break;
            }
            shared.start_inflight(&taken);
            let batch = batches::pack(shared.me, nonce, taken.into_iter().map(|p| p.tx).collect());
            nonce += 1;
            shared
                .metrics
                .batch_size_transactions
                .observe(batch.txs.len() as f64);
            if let Err(e) = shared
                .network
                .publish(BATCH_TOPIC, batch.bytes.to_vec())
                .await
            {
                tracing::debug!(error = %e, "batch gossip failed; peers will fetch it");
            }
            shared
                .own_pending_txs
                .fetch_add(batch.txs.len(), Ordering::Relaxed);
            if internal.send(Internal::OwnBatch(batch)).await.is_err() {
                return;
            }
        }
    }
}
