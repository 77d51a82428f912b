//! The Grafana dashboard must query metrics that weir exports.

use weir::metrics as m;

#[test]
fn every_metric_the_dashboard_queries_is_one_weir_exports() {
    let path = format!("{}/grafana/user-profile-dashboard.json", env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exported = [
        m::RECORDS_PROCESSED,
        m::RECORDS_PRODUCED,
        m::RECORDS_SKIPPED,
        m::RECORDS_DEAD_LETTERED,
        m::RESTORED_RECORDS,
        m::RESTORE_REMAINING,
        m::COMMITS,
        m::COMMIT_SECONDS,
        m::REBALANCES,
        m::ACTIVE_TASKS,
        m::ENRICH_CALLS,
        m::ENRICH_CACHE_HITS,
        m::ENRICH_RETRIES,
        m::ENRICH_FAILURES,
        m::ENRICH_IN_FLIGHT,
        m::ENRICH_BUFFERED,
        m::ENRICH_BREAKER_STATE,
        m::ENRICH_LATENCY_SECONDS,
        m::CDC_EVENTS,
        m::NODE_RECORDS_FORWARDED,
        m::CONSUMER_LAG,
        m::STORE_ENTRIES,
        m::STORE_BYTES,
    ];
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("weir_"))
            {
                assert!(
                    exported.contains(&name),
                    "{name} in {expr:?} is not a metric weir exports"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= exported.len(), "the dashboard should show every metric");
    let stages = dashboard["panels"][0]["targets"].to_string();
    for stage in ["mysql.app.(users|preferences)", "user-profile", "user-god-object"] {
        assert!(stages.contains(stage), "the stage panel misses {stage}");
    }
}
