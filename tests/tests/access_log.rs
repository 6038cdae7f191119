//! The access log through real HTTP: every signed read is appended to a hash chain on the node
//! that answered it; a regulator reads its own queries in full and the others' as digests, and
//! the chain verifies end to end, across a restart of the node.

use std::time::Duration;
use tally_ledger::primitives::Hash;
use tally_node::api::access_log::{verify, LogPage};
use tally_tests::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signed_read_is_logged_in_a_chain_each_regulator_reads_its_own() {
    let mut c = Cluster::start(4).await;
    let named = |n: &str| c.testnet.named(n).expect(n).clone();
    let (eu, apac) = (named("regulator-eu"), named("regulator-apac"));
    let (holder, holder_id) = c.account(0);
    let account = format!("/v1/accounts/{holder_id}");
    assert_eq!(c.get_as(0, &account, &eu).await.0, 200);
    assert_eq!(c.get_as(0, &account, &apac).await.0, 404);
    assert_eq!(c.get_with(0, &account, &[]).await.0, 401);
    // Only regulators and oversight keys read the log.
    let log = "/v1/audit/access-log?after=0&limit=1000";
    let (s, v) = c.get_as(0, log, &holder).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );

    let (s, v) = c.get_as(0, log, &eu).await;
    assert_eq!(s, 200, "{v}");
    let page: LogPage = serde_json::from_value(v).expect("page");
    // The EU regulator's read, the APAC regulator's, the holder's refused read of the log; the
    // unsigned request named no key and is not logged. (This read is logged after its answer.)
    let seen: Vec<_> = page.lines.iter().map(|l| l.entry.as_ref()).collect();
    assert_eq!(seen.len(), 3, "{page:?}");
    let own = seen[0].expect("its own query in full");
    assert_eq!((own.target.as_str(), own.status), (account.as_str(), 200));
    assert!(seen[1].is_none(), "another regulator's query is a digest");
    assert!(seen[2].is_none());
    let end = verify(Hash::ZERO, &page.lines).expect("the chain verifies");
    assert_eq!(end, page.head);

    // After a restart the log goes on from its last entry.
    c.kill(0).await;
    c.restart(0).await;
    c.wait_height(c.min_height() + 2, Duration::from_secs(60))
        .await;
    assert_eq!(c.get_as(0, &account, &eu).await.0, 200);
    let (_, v) = c.get_as(0, log, &eu).await;
    let page: LogPage = serde_json::from_value(v).expect("page");
    assert_eq!(page.lines.len(), 5, "{page:?}");
    verify(Hash::ZERO, &page.lines).expect("the chain verifies across the restart");
    assert_eq!(page.lines[4].entry.as_ref().map(|e| e.status), Some(200));
    c.shutdown().await;
}
