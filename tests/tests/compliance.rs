//! Compliance across a 4-validator network, through the HTTP API: the demo consortium's
//! scenarios make every rule fire under the rule-set version they claim, and every validator
//! decides every scenario the same (identical receipts and state). Two tests, so a failure
//! names the property that broke.

use std::time::Duration;
use tally_node::api::TxStatus;
use tally_node::tools::scenarios::Scenarios;
use tally_tests::cluster::Cluster;

/// Starts a network and runs the scenarios against validator 0; fails on any unexpected
/// receipt.
async fn run_scenarios(cluster: &Cluster) -> Scenarios<'_> {
    let mut scenarios = Scenarios::new(&cluster.testnet, &cluster.url(0));
    assert!(scenarios.applicable().await.expect("rules readable"));
    scenarios.run_all().await.expect("scenarios run");
    let failed: Vec<_> = scenarios.results.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{}", scenarios.report());
    scenarios
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_fires_under_the_rule_set_version_it_names() {
    let cluster = Cluster::start(4).await;
    let scenarios = run_scenarios(&cluster).await;
    let report = scenarios.report();
    // Every rule id a receipt can name was hit, except the two that take a governance change
    // to a KYC provider (node/tests/compliance.rs,
    // `kyc_providers_vouch_only_up_to_their_tier_and_only_while_in_office`).
    let seen: std::collections::BTreeSet<&str> = scenarios
        .results
        .iter()
        .filter_map(|r| r.got.split_once('/').map(|(_, rule)| rule))
        .collect();
    for (rule, _) in tally_ledger::compliance::RULE_IDS {
        if matches!(
            *rule,
            "identity.provider_removed" | "identity.tier_not_allowed"
        ) {
            continue;
        }
        assert!(seen.contains(rule), "no scenario hit {rule}\n{report}");
    }
    // Every receipt before the governance change names version 1, in the receipt and in its
    // rule's flag; the payment after it passed under version 2.
    let (last, before) = scenarios.results.split_last().expect("results");
    for r in before {
        assert_eq!(r.rules_version, 1, "{}: {report}", r.name);
        assert!(
            r.flag_version.is_none_or(|v| v == 1),
            "{}: {report}",
            r.name
        );
    }
    assert!(last.name.starts_with("after the rule change"), "{report}");
    assert_eq!(
        (last.got.as_str(), last.rules_version),
        ("ok", 2),
        "{report}"
    );
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

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validator_decides_every_scenario_the_same() {
    let cluster = Cluster::start(4).await;
    let scenarios = run_scenarios(&cluster).await;
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
