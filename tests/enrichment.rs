//! Asynchronous enrichment in a running application, against the
//! reference ID-mapping service over real HTTP: in its own process, with
//! latency, `503`s, answers slower than the timeout, unknown ids, and an
//! outage in the middle of which the instance is killed with records held
//! behind the open breaker, then started again; and in this process, with
//! a service too slow for the input, where the backlog must stay bounded.
//! Runs on the mock cluster and on a broker process.

use id_mapping_service::{Behaviour, Mapping, MappingService};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use weir::enrich::{Enrichment, HttpJsonLookup};
use weir::error_handler::DLQ_ERROR_MESSAGE;
use weir::record::Header;
use weir::runtime::StreamsConfig;
use weir::serde::{Serde, Utf8, I64};
use weir::testing::kafka::{eventually, read_topic};
use weir::{Consumed, Produced, StreamsBuilder};
use weir_e2e::cluster::Cluster;
use weir_e2e::http::{http_get, metric_values};
use weir_e2e::instance::Instance;

const BINARY: &str = env!("CARGO_BIN_EXE_weir-e2e-instance");
const WAIT: Duration = Duration::from_secs(120);
const USERS: i64 = 40;

weir_e2e::on_every_cluster!(
    nothing_is_lost_through_errors_an_outage_and_a_kill,
    a_slow_service_holds_the_input_back_within_the_buffer_limit
);

/// A sample of the instance's enrichment metrics.
fn enrichment_metric(instance: &Instance, name: &str) -> f64 {
    let metrics = http_get(&instance.ops_address(), "/metrics").body;
    metric_values(&metrics, &format!("{name}{{enrichment=\"id-mapping\"}}"))
        .first()
        .copied()
        .unwrap_or(0.0)
}

fn nothing_is_lost_through_errors_an_outage_and_a_kill(cluster: &Cluster) {
    let service = MappingService::start(Behaviour {
        latency_ms: 2,
        jitter_ms: 8,
        error_rate: 0.05,
        hang_rate: 0.01,
        hang_ms: 2_000,
        ..Behaviour::default()
    })
    .unwrap();
    let input = cluster.create_topic("user-changes", 3);
    let output = cluster.create_topic("user-ids", 3);
    let dlq = cluster.name("user-ids-dlq");
    let application = cluster.name("enrichment");
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let settings = cluster.instance_settings(&application, "at_least_once", state.path());
    let address = service.address().to_string();
    let topology = weir_e2e::enrichment::topology(&input, &output, &dlq, &address, "first");
    let config = settings.iter().fold(StreamsConfig::default(), |c, (k, v)| c.set(k, v));
    cluster.prepare_topics(&topology, &config);
    let start = |run: &str| {
        let workload = ["enrichment", &input, &output, &dlq, &address, run];
        Instance::spawn(Path::new(BINARY), run, &workload, &settings, logs.path())
    };
    let producer = cluster.producer();
    let mut sent: Vec<(i64, i64)> = Vec::new();
    let mut send = |count: i64| {
        for _ in 0..count {
            let seq = sent.len() as i64;
            // Now and then an id the service does not know.
            let user = if seq % 97 == 13 {
                -1 - seq
            } else {
                fastrand::i64(0..USERS)
            };
            producer.send(&input, &I64, &I64, &user, Some(&seq)).unwrap();
            sent.push((user, seq));
        }
        producer.flush().unwrap();
    };

    let mut first = start("first");
    send(300);
    let outputs_arrive = eventually(WAIT, || {
        Ok(read_topic(cluster.bootstrap_servers(), &output)?.len() >= 100)
    });
    assert!(
        outputs_arrive.unwrap(),
        "no enriched output arrived:\n{}",
        first.log_tail()
    );

    // The service goes down; records pile up behind the open breaker.
    service.controls().set_outage(true);
    send(300);
    let held = eventually(WAIT, || {
        Ok(enrichment_metric(&first, "weir_enrich_breaker_state") != 0.0
            && enrichment_metric(&first, "weir_enrich_buffered") > 0.0)
    });
    assert!(
        held.unwrap(),
        "no records waited behind an open breaker:\n{}",
        first.log_tail()
    );
    // Killed in the middle of the outage, with records held: no commit, no
    // checkpoint, nothing drained.
    first.kill();
    // The coordinator lets the dead member's session expire before it hands
    // its partitions to the next one (Tansu 0.6.0 would leave them with it).
    std::thread::sleep(Duration::from_secs(7));

    let mut second = start("second");
    send(200);
    std::thread::sleep(Duration::from_secs(1));
    service.controls().set_outage(false);
    send(200);

    let expected_outputs: BTreeSet<(i64, i64)> = sent.iter().copied().filter(|(user, _)| *user >= 0).collect();
    let expected_dead: BTreeSet<(i64, i64)> = sent.iter().copied().filter(|(user, _)| *user < 0).collect();
    let done = eventually(WAIT, || {
        let (outputs, dead) = read_results(cluster, &output, &dlq)?;
        let seen: BTreeSet<(i64, i64)> = outputs.iter().map(|o| (o.user, o.seq)).collect();
        let dead: BTreeSet<(i64, i64)> = dead.iter().map(|(user, seq, _)| (*user, *seq)).collect();
        Ok(seen == expected_outputs && dead == expected_dead)
    });
    let (outputs, dead) = read_results(cluster, &output, &dlq).unwrap();
    let seen: BTreeSet<(i64, i64)> = outputs.iter().map(|o| (o.user, o.seq)).collect();
    let missing: Vec<&(i64, i64)> = expected_outputs.difference(&seen).collect();
    let dead_seen: BTreeSet<(i64, i64)> = dead.iter().map(|(user, seq, _)| (*user, *seq)).collect();
    let dead_missing: Vec<&(i64, i64)> = expected_dead.difference(&dead_seen).collect();
    let dead_unexpected: Vec<&DeadLetter> = dead
        .iter()
        .filter(|(user, seq, _)| !expected_dead.contains(&(*user, *seq)))
        .collect();
    // Where the missing went, if anywhere: a dead letter says why.
    let missing_dead: Vec<&DeadLetter> = dead
        .iter()
        .filter(|(user, seq, _)| missing.contains(&&(*user, *seq)))
        .collect();
    assert!(
        done.unwrap(),
        "every input must have its output, or its dead letter for an unknown id: missing outputs {:?}; of them \
         dead-lettered {missing_dead:?}; unexpected {:?}; missing dead letters {dead_missing:?}; unexpected dead \
         letters {dead_unexpected:?}\n{}\n{}",
        missing.iter().take(10).collect::<Vec<_>>(),
        seen.difference(&expected_outputs).take(10).collect::<Vec<_>>(),
        first.log_tail(),
        second.log_tail(),
    );

    for output in &outputs {
        assert_eq!(output.new_user_id, format!("u2-{}", output.user), "{output:?}");
    }
    // Within one instance's run, a user's records come out in input order.
    let mut last: BTreeMap<(&str, i64), i64> = BTreeMap::new();
    for output in &outputs {
        let previous = last.insert((output.run.as_str(), output.user), output.seq);
        assert!(
            previous.is_none_or(|p| p < output.seq),
            "{output:?} after seq {previous:?}"
        );
    }
    assert!(dead.iter().all(|(_, _, reason)| reason.contains("404")), "{dead:?}");
    let retries = enrichment_metric(&second, "weir_enrich_retries_total");
    assert!(retries > 0.0, "503s and timeouts were retried");
    let status = second.terminate(Duration::from_secs(60));
    assert!(status.success(), "{}", second.log_tail());
}

/// Input waits while `max_buffered` records wait for answers, both in a
/// short hold (the thread stops reading, librdkafka keeps what it fetched)
/// and in a long one (longer than a second: the input is paused), and
/// every record comes out once.
fn a_slow_service_holds_the_input_back_within_the_buffer_limit(cluster: &Cluster) {
    const MAX_BUFFERED: usize = 40;
    /// Records a stream thread may accept past the limit before it checks.
    const CHECK_SLACK: usize = 64;
    let service = MappingService::start(Behaviour {
        latency_ms: 5,
        ..Behaviour::default()
    })
    .unwrap();
    let input = cluster.create_topic("backlog-users", 3);
    let output = cluster.create_topic("backlog-ids", 3);
    let lookup = HttpJsonLookup::<i64, Mapping>::new(format!("http://{}/users/{{}}", service.address())).unwrap();
    let enrichment = Enrichment::new("id-mapping", |user: &i64, _seq: &i64| *user, lookup)
        .max_in_flight(2)
        .max_buffered(MAX_BUFFERED);
    let builder = StreamsBuilder::new();
    builder
        .stream(&input, Consumed::with(I64, I64))
        .enrich_async(enrichment, |_, seq, mapping: Mapping| {
            format!("{}:{seq}", mapping.new_user_id)
        })
        .to(&output, Produced::with(I64, Utf8));
    let topology = builder.build().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut streams = cluster.streams(topology.clone(), &cluster.config("backlog", state.path()));
    streams.start().unwrap();

    let producer = cluster.producer();
    let mut written = 0i64;
    let mut write = |count: i64| {
        for seq in written..written + count {
            producer.send(&input, &I64, &I64, &(seq % 500), Some(&seq)).unwrap();
        }
        written += count;
        producer.flush().unwrap();
        written
    };
    let mut most_buffered = 0;
    let mut watch_until_processed = |total: i64| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let buffered = topology.enrichment_metrics()["id-mapping"].buffered;
            most_buffered = most_buffered.max(buffered as usize);
            if streams.metrics().processed >= total as u64 && buffered == 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the enrichment did not drain");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // About 400 answers a second: each hold drains to half in 50 ms.
    watch_until_processed(write(600));
    // About 13 answers a second: each hold lasts 1.5 s, so the input pauses.
    service.controls().set_behaviour(Behaviour {
        latency_ms: 150,
        ..Behaviour::default()
    });
    watch_until_processed(write(60));
    assert!(
        (MAX_BUFFERED..=MAX_BUFFERED + CHECK_SLACK).contains(&most_buffered),
        "at most {MAX_BUFFERED} records (and one check's worth) wait; the most seen was {most_buffered}"
    );

    let mut outputs = Vec::new();
    let complete = eventually(WAIT, || {
        outputs = read_topic(cluster.bootstrap_servers(), &output)?;
        Ok(outputs.len() as i64 >= written)
    });
    assert!(complete.unwrap(), "{} of {written} records came out", outputs.len());
    let mut seqs: Vec<i64> = outputs
        .iter()
        .map(|read| {
            let value = Utf8.deserialize(&output, read.record.value.as_deref()).unwrap();
            value.rsplit(':').next().unwrap().parse().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..written).collect::<Vec<_>>(), "each record once");
    streams.close().unwrap();
}

#[derive(Debug)]
struct Output {
    user: i64,
    seq: i64,
    new_user_id: String,
    run: String,
}

type DeadLetter = (i64, i64, String);

fn read_results(cluster: &Cluster, output: &str, dlq: &str) -> Result<(Vec<Output>, Vec<DeadLetter>), weir::WeirError> {
    let outputs = read_topic(cluster.bootstrap_servers(), output)?
        .into_iter()
        .map(|read| {
            let user = I64.deserialize(output, read.record.key.as_deref()).unwrap();
            let value = Utf8.deserialize(output, read.record.value.as_deref()).unwrap();
            let mut parts = value.split(':');
            let (new_user_id, seq, run) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            Output {
                user,
                seq: seq.parse().unwrap(),
                new_user_id: new_user_id.to_string(),
                run: run.to_string(),
            }
        })
        .collect();
    let dead = read_topic(cluster.bootstrap_servers(), dlq)?
        .into_iter()
        .map(|read| {
            let user = I64.deserialize(dlq, read.record.key.as_deref()).unwrap();
            let seq = I64.deserialize(dlq, read.record.value.as_deref()).unwrap();
            let reason = Header::value_of(&read.record.headers, DLQ_ERROR_MESSAGE)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default();
            (user, seq, reason)
        })
        .collect();
    Ok((outputs, dead))
}
