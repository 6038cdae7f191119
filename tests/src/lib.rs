//! Shared helpers for Tally's multi-node, fault and end-to-end tests.

pub mod cluster;
pub mod crash_workload;
pub mod forger;
pub mod remote;

/// The sum of the values of every series in a Prometheus text exposition that matches
/// `series`: a metric name, optionally with labels (`name{label="value",...}`), each of which
/// the series must carry (it may carry more, such as the `chain_id` every series has).
pub fn metric_sum(exposition: &str, series: &str) -> f64 {
    let (name, wanted) = split_series(series.trim());
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (s, value) = l.rsplit_once(' ')?;
            let (n, labels) = split_series(s);
            let matches = n == name && wanted.iter().all(|w| labels.contains(w));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// `name{a="1",b="2"}` into the name and its `a="1"` parts (no label value holds a comma here).
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, rest)) => (
            name,
            rest.trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        None => (series, Vec::new()),
    }
}
