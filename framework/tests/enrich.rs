//! Asynchronous enrichment through the test driver, with lookups that are
//! async closures: order per key under concurrency, retries, timeouts, the
//! circuit breaker, the cache and failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::enrich::{BreakerPolicy, BreakerState, Enrichment, LookupError, RetryPolicy};
use weir::error_handler::{DLQ_ERROR_CLASS, DLQ_ERROR_MESSAGE, DLQ_SOURCE_OFFSET};
use weir::record::Header;
use weir::serde::{Json, Utf8};
use weir::testing::{TestDriverConfig, TestRecord, TopologyTestDriver};
use weir::{Consumed, Produced, StreamsBuilder, Topology};

/// `"<key>:<seq>"` values enriched with the lookup's answer for the key.
fn topology(enrichment: Enrichment<String, String, String, String>) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Utf8))
        .enrich_async(enrichment, |_, value, answer| format!("{value}|{answer}"))
        .to("out", Produced::with(Utf8, Utf8));
    builder.build().unwrap()
}

// The query function receives the record's key and value as they are typed.
#[allow(clippy::ptr_arg)]
fn query(key: &String, _value: &String) -> String {
    key.clone()
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        multiplier: 2.0,
    }
}

#[test]
fn records_of_one_key_keep_their_order_while_keys_run_concurrently() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let lookup = move |key: String| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move {
            // Random latency, so that later records often answer first.
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..15))).await;
            Ok::<_, LookupError>(key.to_uppercase())
        }
    };
    let driver = TopologyTestDriver::with_config(
        topology(Enrichment::new("upper", query, lookup).max_in_flight(32)),
        TestDriverConfig::default().default_partitions(3),
    )
    .unwrap();
    let keys: Vec<String> = (0..20).map(|k| format!("k{k}")).collect();
    let mut records = Vec::new();
    for seq in 0..300 {
        let key = keys[fastrand::usize(..keys.len())].clone();
        records.push(TestRecord::new(key.clone(), Some(format!("{key}:{seq}"))));
    }
    driver.input_topic("in", Utf8, Utf8).pipe_all(records.clone()).unwrap();

    let out = driver.output_topic("out", Utf8, Utf8).read_key_values().unwrap();
    assert_eq!(out.len(), records.len(), "every input gives one output");
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for (key, value) in out {
        let value = value.unwrap();
        let (input, answer) = value.split_once('|').unwrap();
        assert_eq!(answer, key.to_uppercase());
        let seq: i64 = input.rsplit(':').next().unwrap().parse().unwrap();
        let previous = last_seq.insert(key.clone(), seq).unwrap_or(-1);
        assert!(seq > previous, "{key}: {seq} after {previous}");
    }
    assert_eq!(calls.load(Ordering::Relaxed), 300, "no cache, one call per record");
    let metrics = &driver.topology().enrichment_metrics()["upper"];
    assert_eq!((metrics.calls, metrics.in_flight, metrics.buffered), (300, 0, 0));
}

#[test]
fn retryable_failures_and_timeouts_are_retried() {
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let seen = attempts.clone();
    let lookup = move |key: String| {
        let attempt = {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        async move {
            match attempt {
                1 => Err(LookupError::retryable("503")),
                2 => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok("too late".to_string())
                }
                _ => Ok(format!("{key}-ok")),
            }
        }
    };
    let enrichment = Enrichment::new("flaky", query, lookup)
        .timeout(Duration::from_millis(50))
        .retry(fast_retries())
        // Failures of several keys at once must not open the breaker here.
        .breaker(BreakerPolicy {
            failure_threshold: 1000,
            open_for: Duration::from_secs(1),
        });
    let driver = TopologyTestDriver::new(topology(enrichment)).unwrap();
    let input = driver.input_topic("in", Utf8, Utf8);
    input
        .pipe_all((0..5).map(|k| TestRecord::new(format!("k{k}"), Some("v".to_string()))))
        .unwrap();
    let out = driver.output_topic("out", Utf8, Utf8).read_key_values_to_map().unwrap();
    let expected: HashMap<String, String> = (0..5).map(|k| (format!("k{k}"), format!("v|k{k}-ok"))).collect();
    assert_eq!(out, expected);
    let metrics = &driver.topology().enrichment_metrics()["flaky"];
    assert_eq!((metrics.calls, metrics.retries, metrics.failures), (15, 10, 0));
}

#[test]
fn a_permanent_failure_or_running_out_of_attempts_goes_to_the_dead_letter_topic() {
    let lookup = |key: String| async move {
        match key.as_str() {
            "unknown" => Err(LookupError::permanent("404 Not Found")),
            "broken" => Err(LookupError::retryable("500")),
            _ => Ok(key),
        }
    };
    let enrichment = Enrichment::new("ids", query, lookup)
        .retry(fast_retries())
        .breaker(BreakerPolicy {
            failure_threshold: 1000,
            open_for: Duration::from_secs(1),
        })
        .dead_letter("ids-dlq", Utf8, Utf8);
    let driver = TopologyTestDriver::new(topology(enrichment)).unwrap();
    let input = driver.input_topic("in", Utf8, Utf8);
    for key in ["a", "unknown", "broken", "b"] {
        input.pipe(key.to_string(), format!("{key}-value")).unwrap();
    }
    let out = driver.output_topic("out", Utf8, Utf8).read_key_values().unwrap();
    assert_eq!(
        out,
        vec![
            ("a".into(), Some("a-value|a".into())),
            ("b".into(), Some("b-value|b".into()))
        ]
    );
    let dead = driver.output_topic("ids-dlq", Utf8, Utf8).read_records().unwrap();
    assert_eq!(dead.len(), 2);
    let header = |record: &TestRecord<String, String>, name: &str| {
        String::from_utf8(Header::value_of(&record.headers, name).unwrap().to_vec()).unwrap()
    };
    assert_eq!(
        (dead[0].key.as_str(), dead[0].value.as_deref()),
        ("unknown", Some("unknown-value"))
    );
    assert_eq!(header(&dead[0], DLQ_ERROR_CLASS), "enrichment");
    assert!(header(&dead[0], DLQ_ERROR_MESSAGE).contains("404 Not Found"));
    assert_eq!(header(&dead[0], DLQ_SOURCE_OFFSET), "1");
    assert!(header(&dead[1], DLQ_ERROR_MESSAGE).contains("gave up after 4 failed attempts"));
    let metrics = &driver.topology().enrichment_metrics()["ids"];
    assert_eq!(metrics.failures, 2);
    assert_eq!(
        driver
            .metrics()
            .skipped_for(weir::metrics::SkipReason::EnrichmentDeadLettered),
        2
    );
    let description = driver.topology().describe();
    assert!(description
        .to_string()
        .contains("enrichment 'ids'; failures to ids-dlq"));
    // The drawing leads a dotted arrow from the enrichment to its dead letters.
    let chart = description.mermaid();
    let dlq = chart
        .lines()
        .find_map(|line| line.trim().strip_suffix(r#"[/"ids-dlq"/]"#))
        .unwrap_or_else(|| panic!("no shape for ids-dlq in\n{chart}"));
    let enrichment = chart
        .lines()
        .find_map(|line| line.trim().split_once("[\"KSTREAM-ENRICH").map(|(id, _)| id))
        .unwrap_or_else(|| panic!("no enrichment node in\n{chart}"));
    assert!(
        chart.contains(&format!("{enrichment} -. dead letters .-> {dlq}")),
        "{chart}"
    );
}

#[test]
fn without_a_dead_letter_topic_a_failure_stops_processing_naming_the_record() {
    let lookup = |_key: String| async move { Err::<String, _>(LookupError::permanent("404 Not Found")) };
    let driver = TopologyTestDriver::new(topology(Enrichment::new("ids", query, lookup))).unwrap();
    let error = driver
        .input_topic("in", Utf8, Utf8)
        .pipe("k".into(), "v".into())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("in[0]@0") && error.contains("enrichment 'ids'") && error.contains("404"),
        "{error}"
    );
}

#[test]
fn the_breaker_holds_records_through_an_outage_without_losing_them() {
    let down = Arc::new(AtomicBool::new(true));
    let calls_while_down = Arc::new(AtomicU32::new(0));
    let (is_down, counted) = (down.clone(), calls_while_down.clone());
    let lookup = move |key: String| {
        let failing = is_down.load(Ordering::Relaxed);
        if failing {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        async move {
            if failing {
                Err(LookupError::retryable("connection refused"))
            } else {
                Ok(key)
            }
        }
    };
    let enrichment = Enrichment::new("outage", query, lookup)
        .retry(RetryPolicy {
            max_attempts: 3,
            ..fast_retries()
        })
        .breaker(BreakerPolicy {
            failure_threshold: 3,
            open_for: Duration::from_millis(100),
        })
        .dead_letter("outage-dlq", Utf8, Utf8);
    let topology = topology(enrichment);
    let driver = TopologyTestDriver::new(topology.clone()).unwrap();
    let service = std::thread::spawn({
        let topology = topology.clone();
        move || {
            // Wait until the breaker has opened, keep the service down a while, then restore it.
            while topology.enrichment_metrics()["outage"].breaker != BreakerState::Open {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(800));
            down.store(false, Ordering::Relaxed);
        }
    });
    driver
        .input_topic("in", Utf8, Utf8)
        .pipe_all((0..50).map(|k| TestRecord::new(format!("k{k}"), Some("v".to_string()))))
        .unwrap();
    service.join().unwrap();
    let out = driver.output_topic("out", Utf8, Utf8).read_key_values_to_map().unwrap();
    assert_eq!(out.len(), 50, "every record is enriched once the service is back");
    assert!(
        driver.output_topic("outage-dlq", Utf8, Utf8).is_empty(),
        "an outage dead-letters nothing"
    );
    // 50 first calls at most, then about one probe per 100 ms.
    let probes = calls_while_down.load(Ordering::Relaxed);
    assert!(probes < 50 + 20, "{probes} calls while the service was down");
    assert_eq!(topology.enrichment_metrics()["outage"].breaker, BreakerState::Closed);
}

#[test]
fn cached_answers_spare_calls_until_they_expire() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let lookup = move |key: String| {
        let n = counted.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, LookupError>(format!("{key}#{n}")) }
    };
    for ttl in [None, Some(Duration::from_millis(200))] {
        calls.store(0, Ordering::Relaxed);
        let driver =
            TopologyTestDriver::new(topology(Enrichment::new("cached", query, lookup.clone()).cache(ttl))).unwrap();
        let input = driver.input_topic("in", Utf8, Utf8);
        input.pipe("a".into(), "1".into()).unwrap();
        input.pipe("a".into(), "2".into()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        input.pipe("a".into(), "3".into()).unwrap();
        let out: Vec<String> = driver
            .output_topic("out", Utf8, Utf8)
            .read_key_values()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v.unwrap())
            .collect();
        let third = if ttl.is_some() { "3|a#1" } else { "3|a#0" };
        assert_eq!(out, vec!["1|a#0", "2|a#0", third], "ttl {ttl:?}");
        let changelog = driver.changelog_topic("cached-cache");
        let logged = driver
            .output_topic(&changelog, Utf8, weir::serde::Bytes)
            .read_records()
            .unwrap();
        assert_eq!(
            logged.len(),
            if ttl.is_some() { 2 } else { 1 },
            "each call's answer is logged"
        );
    }
}

#[test]
fn a_table_enrichment_passes_deletions_on_in_order() {
    #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    struct Profile {
        email: String,
    }
    let lookup = |user: String| async move {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..10))).await;
        Ok::<_, LookupError>(format!("new-{user}"))
    };
    let builder = StreamsBuilder::new();
    builder
        .table("profiles", Consumed::with(Utf8, Json::<Profile>::new()))
        .enrich_async(
            Enrichment::new("ids", |user: &String, _p: &Profile| user.clone(), lookup),
            |_, profile, new_id| format!("{new_id}:{}", profile.email),
        )
        .to("god-objects", Produced::with(Utf8, Json::<Option<String>>::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let input = driver.input_topic("profiles", Utf8, Json::<Profile>::new());
    let profile = |email: &str| Some(Profile { email: email.into() });
    input
        .pipe_all([
            TestRecord::new("u1".to_string(), profile("a@x")),
            TestRecord::new("u2".to_string(), profile("b@x")),
            TestRecord::new("u1".to_string(), None),
            TestRecord::new("u2".to_string(), profile("c@x")),
        ])
        .unwrap();
    let out = driver
        .output_topic("god-objects", Utf8, Json::<Option<String>>::new())
        .read_key_values()
        .unwrap();
    let by_key: BTreeMap<String, Vec<Option<Option<String>>>> =
        out.into_iter().fold(BTreeMap::new(), |mut m, (k, v)| {
            m.entry(k).or_default().push(v);
            m
        });
    assert_eq!(by_key["u1"], vec![Some(Some("new-u1:a@x".into())), None]);
    assert_eq!(
        by_key["u2"],
        vec![Some(Some("new-u2:b@x".into())), Some(Some("new-u2:c@x".into()))]
    );
}
