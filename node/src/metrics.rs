//! The node's Prometheus metrics: one [`Metrics`] per node, registered into that node's own
//! [`Registry`] (never the process-wide default: `tally devnet` and the tests run several nodes in
//! one process), served as text on `GET /metrics`.
//!
//! Every metric is named `tally_*` with its unit in the name. deploy/grafana and
//! deploy/prometheus/alerts.yml use exactly these names; docs/monitoring.md explains each one.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0,
];

/// Size buckets for counts of transactions (per batch, per block).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
];

/// All metrics of one node. Cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Highest committed block height.
    pub consensus_height: IntGauge,
    /// Current consensus round.
    pub consensus_round: IntGauge,
    /// Consensus epoch (validator-set changes).
    pub consensus_epoch: IntGauge,
    /// Blocks committed (final) since start.
    pub consensus_committed_blocks: IntCounter,
    /// Time from a block's proposal (its timestamp) to its commit on this node.
    pub consensus_commit_latency: Histogram,
    /// Rounds that ended in a local timeout.
    pub consensus_timeouts: IntCounter,
    /// Rounds entered through a timeout certificate (view changes).
    pub consensus_view_changes: IntCounter,
    /// Equivocation evidence recorded, by kind (proposal, vote).
    pub consensus_evidence: IntCounterVec,
    /// Consensus messages dropped before the round logic, by reason.
    pub consensus_invalid_messages: IntCounterVec,
    /// Consensus messages set aside without a penalty, by reason.
    pub consensus_ignored_messages: IntCounterVec,
    /// Peers' sync requests, by kind (`blocks`, `batch`) and outcome (`served`, `refused`).
    pub sync_requests: IntCounterVec,
    /// Transactions accepted into this node's mempool from clients.
    pub transactions_received: IntCounter,
    /// Transactions executed in committed blocks (applied or rejected), by outcome.
    pub transactions_committed: IntCounterVec,
    /// Transactions refused, by stage (`ingress`, `execution`) and stable code.
    pub transactions_rejected: IntCounterVec,
    /// Time from a client's submission to this node until the transaction is final.
    pub transaction_finality_latency: Histogram,
    /// Compliance decisions, by rule id and decision (`reject`, `flag`).
    pub compliance_decisions: IntCounterVec,
    /// Transactions waiting in the mempool.
    pub mempool_transactions: IntGauge,
    /// Encoded bytes waiting in the mempool.
    pub mempool_bytes: IntGauge,
    /// Capacity of the mempool in transactions (for "near full" alerts).
    pub mempool_capacity_transactions: IntGauge,
    /// Transactions per batch this node created.
    pub batch_size_transactions: Histogram,
    /// Batches by origin (`local`, `peer`) stored by this node.
    pub batches_stored: IntCounterVec,
    /// Peer batches refused (bad signature, bad encoding, non-member), by reason.
    pub batches_rejected: IntCounterVec,
    /// Peer batches accepted, by how: `signatures` (every signature verified here, as one of
    /// the author's checkers or for a fetched batch), `attested` (everything but the
    /// signatures, used once f + 1 validators attest it), `late_attestations` (attestations did
    /// not come in time, so the signatures were verified here after all).
    pub batches_checked: IntCounterVec,
    /// Time to execute one committed block.
    pub block_execution_seconds: Histogram,
    /// Transactions per committed block.
    pub block_transactions: Histogram,
    /// Heights at which a quorum certified another header than this node's.
    pub state_divergence: IntCounter,
    /// On-disk size of the node's store.
    pub storage_size_bytes: IntGauge,
    /// Bytes free on the data directory's volume.
    pub storage_free_bytes: IntGauge,
    /// Time to write one committed block to the store, with its fsync.
    pub storage_commit_seconds: Histogram,
    /// Version of the rule set in force.
    pub compliance_rules_version: IntGauge,
    /// Certified blocks not yet executed (`certified_height - height`).
    pub sync_lag_blocks: IntGauge,
    /// HTTP requests by matched route, method and status code.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by matched route.
    pub http_request_duration: HistogramVec,
    /// Unix time at which the process started.
    pub process_start_time_seconds: Gauge,
    /// Always 1; labels carry the version and chain id.
    pub build_info: IntGaugeVec,
}

/// Registering a metric failed; only possible if two metrics share a name (a bug).
#[derive(Debug, thiserror::Error)]
#[error("metrics registration failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates every metric and registers it into a fresh registry for this node.
    pub fn new(chain_id: &str) -> Result<Metrics, MetricsError> {
        // Every series of this node carries its chain: one Prometheus can watch several networks.
        let labels =
            std::collections::HashMap::from([("chain_id".to_owned(), chain_id.to_owned())]);
        let registry = Registry::new_custom(None, Some(labels))?;
        let r = &registry;
        let m = Metrics {
            consensus_height: gauge(
                r,
                "tally_consensus_height",
                "Highest committed block height",
            )?,
            consensus_round: gauge(r, "tally_consensus_round", "Current consensus round")?,
            consensus_epoch: gauge(
                r,
                "tally_consensus_epoch",
                "Current consensus epoch (advances when governance changes the validator set)",
            )?,
            consensus_committed_blocks: counter(
                r,
                "tally_consensus_committed_blocks_total",
                "Blocks committed since start",
            )?,
            consensus_commit_latency: histogram(
                r,
                "tally_consensus_commit_latency_seconds",
                "Time from a block's proposal to its commit on this node",
                LATENCY_BUCKETS,
            )?,
            consensus_timeouts: counter(
                r,
                "tally_consensus_timeouts_total",
                "Rounds that ended in a local timeout",
            )?,
            consensus_view_changes: counter(
                r,
                "tally_consensus_view_changes_total",
                "Rounds entered through a timeout certificate",
            )?,
            consensus_evidence: counter_vec(
                r,
                "tally_consensus_evidence_total",
                "Equivocation evidence recorded, by kind",
                &["kind"],
            )?,
            consensus_invalid_messages: counter_vec(
                r,
                "tally_consensus_invalid_messages_total",
                "Consensus messages dropped before the round logic, by reason",
                &["reason"],
            )?,
            consensus_ignored_messages: counter_vec(
                r,
                "tally_consensus_ignored_messages_total",
                "Consensus messages set aside without a penalty (stale, outside the round window, \
                 from a lagging peer, or proposing a payload this validator found invalid), by reason",
                &["reason"],
            )?,
            sync_requests: counter_vec(
                r,
                "tally_sync_requests_total",
                "Peers' sync requests, by kind and outcome (refused over the per-peer limits)",
                &["kind", "outcome"],
            )?,
            transactions_received: counter(
                r,
                "tally_transactions_received_total",
                "Transactions accepted into the mempool from clients",
            )?,
            transactions_committed: counter_vec(
                r,
                "tally_transactions_committed_total",
                "Transactions executed in committed blocks, by outcome",
                &["outcome"],
            )?,
            transactions_rejected: counter_vec(
                r,
                "tally_transactions_rejected_total",
                "Transactions refused, by stage and stable code",
                &["stage", "code"],
            )?,
            transaction_finality_latency: histogram(
                r,
                "tally_transaction_finality_latency_seconds",
                "Time from submission to this node until the transaction is final",
                LATENCY_BUCKETS,
            )?,
            compliance_decisions: counter_vec(
                r,
                "tally_compliance_decisions_total",
                "Compliance rejections and flags, by rule and decision",
                &["rule", "decision"],
            )?,
            mempool_transactions: gauge(
                r,
                "tally_mempool_transactions",
                "Transactions waiting in the mempool",
            )?,
            mempool_bytes: gauge(
                r,
                "tally_mempool_bytes",
                "Encoded bytes waiting in the mempool",
            )?,
            mempool_capacity_transactions: gauge(
                r,
                "tally_mempool_capacity_transactions",
                "Capacity of the mempool in transactions",
            )?,
            batch_size_transactions: histogram(
                r,
                "tally_batch_size_transactions",
                "Transactions per batch created by this node",
                COUNT_BUCKETS,
            )?,
            batches_stored: counter_vec(
                r,
                "tally_batches_stored_total",
                "Batches stored, by origin",
                &["origin"],
            )?,
            batches_rejected: counter_vec(
                r,
                "tally_batches_rejected_total",
                "Peer batches refused, by reason",
                &["reason"],
            )?,
            batches_checked: counter_vec(
                r,
                "tally_batches_checked_total",
                "Peer batches accepted, by how their signatures were vouched for",
                &["how"],
            )?,
            block_execution_seconds: histogram(
                r,
                "tally_block_execution_seconds",
                "Time to execute and persist one committed block",
                LATENCY_BUCKETS,
            )?,
            block_transactions: histogram(
                r,
                "tally_block_transactions",
                "Transactions per committed block",
                COUNT_BUCKETS,
            )?,
            state_divergence: {
                let c = IntCounter::new(
                    "tally_state_divergence_total",
                    "Heights at which a quorum certified another header than this node executed",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            storage_size_bytes: gauge(
                r,
                "tally_storage_size_bytes",
                "On-disk size of the node's store",
            )?,
            storage_free_bytes: gauge(
                r,
                "tally_storage_free_bytes",
                "Bytes free on the data directory's volume",
            )?,
            storage_commit_seconds: histogram(
                r,
                "tally_storage_commit_seconds",
                "Time to write one committed block to the store, fsync included",
                LATENCY_BUCKETS,
            )?,
            compliance_rules_version: gauge(
                r,
                "tally_compliance_rules_version",
                "Version of the compliance rule set in force",
            )?,
            sync_lag_blocks: gauge(
                r,
                "tally_sync_lag_blocks",
                "Certified blocks this node has not executed yet",
            )?,
            http_requests: counter_vec(
                r,
                "tally_http_requests_total",
                "HTTP requests by route, method and status",
                &["route", "method", "status"],
            )?,
            http_request_duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "tally_http_request_duration_seconds",
                        "HTTP request latency by route",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route"],
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            process_start_time_seconds: {
                let g = Gauge::new(
                    "tally_process_start_time_seconds",
                    "Unix time at which the process started",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            build_info: {
                let g = IntGaugeVec::new(
                    Opts::new("tally_build_info", "Build information; always 1"),
                    &["version"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.process_start_time_seconds.set(started);
        // CPU, resident memory, open file descriptors and threads of this process (Linux).
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        m.initialise_series();
        Ok(m)
    }

    /// Creates the labelled series that dashboards and alerts select, at zero, so that they
    /// exist before the first event of their kind.
    fn initialise_series(&self) {
        for outcome in ["applied", "rejected"] {
            self.transactions_committed.with_label_values(&[outcome]);
        }
        for (stage, code) in [
            ("ingress", "mempool_full"),
            ("ingress", "bad_signature"),
            ("execution", "duplicate"),
        ] {
            self.transactions_rejected.with_label_values(&[stage, code]);
        }
        for (rule, decision) in tally_ledger::compliance::RULE_IDS {
            self.compliance_decisions
                .with_label_values(&[rule, decision]);
        }
        for kind in ["proposal", "vote", "timeout"] {
            self.consensus_evidence.with_label_values(&[kind]);
        }
        // The consensus crate's reasons, and the node's own: a commit vote that does not check
        // out.
        let node_reasons = ["bad_commit_vote"];
        for reason in tally_consensus::PENALTY_REASONS.iter().chain(&node_reasons) {
            self.consensus_invalid_messages.with_label_values(&[reason]);
        }
        for reason in tally_consensus::IGNORE_REASONS {
            self.consensus_ignored_messages.with_label_values(&[reason]);
        }
        for kind in ["blocks", "batch"] {
            for outcome in ["served", "refused"] {
                self.sync_requests.with_label_values(&[kind, outcome]);
            }
        }
        for origin in ["own", "gossip", "fetched", "disk"] {
            self.batches_stored.with_label_values(&[origin]);
        }
        for reason in ["malformed", "bad_size", "wrong_author", "bad_transaction"] {
            self.batches_rejected.with_label_values(&[reason]);
        }
        for how in ["signatures", "attested", "late_attestations"] {
            self.batches_checked.with_label_values(&[how]);
        }
    }

    /// This node's registry, for components (such as the network) that register their own
    /// metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric of this node in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<Histogram, prometheus::Error> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes_in_one_process_have_separate_registries() {
        let a = Metrics::new("test-chain").unwrap();
        let b = Metrics::new("test-chain").unwrap();
        a.consensus_height.set(7);
        assert!(a
            .render()
            .contains("tally_consensus_height{chain_id=\"test-chain\"} 7"));
        assert!(b
            .render()
            .contains("tally_consensus_height{chain_id=\"test-chain\"} 0"));
        let rendered = a.render();
        let info = rendered
            .lines()
            .find(|l| l.starts_with("tally_build_info{"))
            .unwrap();
        assert!(
            info.contains("chain_id=\"test-chain\"") && info.contains("version="),
            "{info}"
        );
    }

    /// An alert on the rate of a labelled counter needs the series before its first event:
    /// every reason known in advance is there at zero, with the chain label.
    #[test]
    fn known_reasons_exist_at_zero_from_the_start() {
        let rendered = Metrics::new("test-chain").unwrap().render();
        let zero = |name: &str, label: &str| {
            rendered.lines().any(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(label)
                    && l.contains("chain_id=\"test-chain\"")
                    && l.ends_with(" 0")
            })
        };
        for reason in tally_consensus::PENALTY_REASONS {
            let label = format!("reason=\"{reason}\"");
            assert!(
                zero("tally_consensus_invalid_messages_total", &label),
                "{reason}"
            );
        }
        for reason in tally_consensus::IGNORE_REASONS {
            let label = format!("reason=\"{reason}\"");
            assert!(
                zero("tally_consensus_ignored_messages_total", &label),
                "{reason}"
            );
        }
        assert!(zero(
            "tally_batches_rejected_total",
            "reason=\"wrong_author\""
        ));
    }
}
