//! `user-profile demo` as a user runs it: on its own in-process cluster,
//! and on a broker given by address (Tansu, or the cluster in
//! `KAFKA_BOOTSTRAP_SERVERS`), each run verifying the god objects it ends
//! with against what its generated changes imply, and on its own cluster
//! measuring the pass-through floor on the same records.

use std::time::Duration;
use user_profile::demo::{run_demo, DemoOptions};
use weir_e2e::cluster::Cluster;

weir_e2e::on_every_cluster!(the_demo_ends_with_exactly_the_god_objects_its_changes_imply);

fn the_demo_ends_with_exactly_the_god_objects_its_changes_imply(cluster: &Cluster) {
    let events = 3_000;
    let report = run_demo(&DemoOptions {
        events,
        users: 300,
        bootstrap_servers: (!cluster.is_embedded()).then(|| cluster.bootstrap_servers().to_string()),
        producer_settings: cluster
            .producer_settings()
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        settle_timeout: Duration::from_secs(120),
        ..DemoOptions::default()
    })
    .expect("the demo runs");
    assert_eq!(report.cdc_records, events as u64);
    let users = *report
        .verified
        .as_ref()
        .expect("the god objects are the ones the changes imply");
    assert!(users > 0 && report.god_objects_out >= users as u64, "{report:?}");
    assert!(report.pipeline_rate.is_some_and(|rate| rate > 0.0), "{report:?}");
    // The floor runs on the demo's own cluster only.
    assert_eq!(
        report.floor_rate.is_some_and(|rate| rate > 0.0),
        cluster.is_embedded(),
        "{report:?}"
    );
}
