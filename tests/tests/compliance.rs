//! Compliance across a 4-validator network: the demo consortium's scenarios hit every rule
//! through the HTTP API, and every validator produces identical receipts and state.

use std::time::Duration;
use tally_node::api::TxStatus;
use tally_node::tools::scenarios::Scenarios;
use tally_tests::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_decides_the_same_on_every_validator() {
    let cluster = Cluster::start(4).await;
    let mut scenarios = Scenarios::new(&cluster.testnet, &cluster.url(0));
    assert!(scenarios.applicable().await.expect("rules readable"));
    scenarios.run_all().await.expect("scenarios run");
    let report = scenarios.report();
    let failed: Vec<_> = scenarios.results.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{report}");
    // Every rule id the demo rule set can produce, applied or refused, was hit.
    let seen: std::collections::BTreeSet<&str> = scenarios
        .results
        .iter()
        .filter_map(|r| r.got.split_once('/').map(|(_, rule)| rule))
        .collect();
    for rule in [
        "sanctions.identity",
        "sanctions.jurisdiction",
        "identity.expired",
        "identity.unbound",
        "identity.frozen",
        "identity.revoked",
        "asset.frozen",
        "corridor.closed",
        "limit.undefined",
        "limit.per_transaction",
        "limit.daily",
        "velocity.hourly",
        "travel_rule.missing",
        "structuring.suspected",
    ] {
        assert!(seen.contains(rule), "no scenario hit {rule}\n{report}");
    }
    // The refusal before the governance change names version 1; the last payment passed
    // under version 2 (checked through the rules endpoint).
    let (_, rules) = cluster.get(0, "/v1/compliance/rules").await;
    assert_eq!(rules["rules"]["version"], 2, "{rules}");
    // Jurisdictions read as the documented ISO 3166-1 alpha-2 text, never as byte arrays.
    let codes: Vec<&serde_json::Value> = rules["rules"]["sanctioned_jurisdictions"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            rules["rules"]["corridors"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| {
                    c.as_object()
                        .into_iter()
                        .flat_map(|o| o.values())
                        .filter(|v| !v.is_number())
                }),
        )
        .collect();
    assert!(!codes.is_empty(), "{rules}");
    for code in codes {
        let text = code.as_str().unwrap_or_default();
        assert!(
            text.len() == 2 && text.bytes().all(|b| b.is_ascii_uppercase()),
            "not an ISO 3166-1 alpha-2 code: {code} in {rules}"
        );
    }

    // Identical receipts on every validator.
    let last = scenarios
        .results
        .iter()
        .map(|r| r.height)
        .max()
        .unwrap_or(1);
    cluster.wait_height(last, Duration::from_secs(60)).await;
    for r in &scenarios.results {
        let mut receipts = Vec::new();
        for i in 0..4 {
            let s: TxStatus = cluster
                .wait_final(i, &r.hash, Duration::from_secs(30))
                .await;
            receipts.push((s.height, s.index, s.receipt));
        }
        assert!(
            receipts.windows(2).all(|w| w[0] == w[1]),
            "{}: receipts differ: {receipts:?}",
            r.name
        );
    }
    let roots = cluster.state_roots(last);
    assert!(
        roots.iter().all(|r| r.is_some() && *r == roots[0]),
        "{roots:?}"
    );
    cluster.shutdown().await;
}
