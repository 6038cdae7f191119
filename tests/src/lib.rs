//! Shared helpers for Tally's multi-node, fault and end-to-end tests.

pub mod cluster;
pub mod crash_workload;
pub mod forger;

/// The sum of the values of every series in a Prometheus text exposition whose line starts
/// with `series` (a metric name, optionally with its labels: `name{label="value"}`).
pub fn metric_sum(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
