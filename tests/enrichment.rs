//! Asynchronous enrichment in a running application, against the reference
//! ID-mapping service over real HTTP, with latency, `503`s, answers slower
//! than the timeout, unknown ids and an outage during which the instance is
//! stopped and started again. Runs on the mock cluster and on a broker
//! process.

use id_mapping_service::{Behaviour, Mapping, MappingService};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weir::enrich::{BreakerPolicy, BreakerState, Enrichment, HttpJsonLookup, RetryPolicy};
use weir::error_handler::DLQ_ERROR_MESSAGE;
use weir::runtime::{KafkaStreams, StreamsState};
use weir::serde::{Serde, Utf8, I64};
use weir::testing::kafka::{eventually, read_topic};
use weir::{Consumed, Produced, StreamsBuilder, Topology};
use weir_e2e::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(120);
const USERS: i64 = 40;

weir_e2e::on_every_cluster!(nothing_is_lost_through_errors_an_outage_and_a_restart);

/// Input: user id → sequence number. Output: user id →
/// `<new_user_id>:<seq>:<run>`, where `run` names the instance that wrote it.
fn topology(input: &str, output: &str, dlq: &str, service: &MappingService, run: &'static str) -> Topology {
    let url = format!("http://{}/users/{{}}", service.address());
    let lookup = HttpJsonLookup::<i64, Mapping>::new(url).unwrap();
    let enrichment = Enrichment::new("id-mapping", |user: &i64, _seq: &i64| *user, lookup)
        .max_in_flight(16)
        .timeout(Duration::from_millis(300))
        .retry(RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            multiplier: 2.0,
        })
        .breaker(BreakerPolicy {
            failure_threshold: 8,
            open_for: Duration::from_millis(300),
        })
        .dead_letter(dlq, I64, I64);
    let builder = StreamsBuilder::new();
    builder
        .stream(input, Consumed::with(I64, I64))
        .enrich_async(enrichment, move |_, seq, mapping: Mapping| {
            format!("{}:{seq}:{run}", mapping.new_user_id)
        })
        .to(output, Produced::with(I64, Utf8));
    builder.build().unwrap()
}

fn nothing_is_lost_through_errors_an_outage_and_a_restart(cluster: &Cluster) {
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
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("enrichment", state.path());
    let first = topology(&input, &output, &dlq, &service, "first");
    cluster.prepare_topics(&first, &config);
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

    let mut streams = cluster.streams(first.clone(), &config);
    streams.start().unwrap();
    assert!(streams.wait_for_state(StreamsState::Running, WAIT));
    send(300);
    let outputs_arrive = eventually(WAIT, || {
        Ok(read_topic(cluster.bootstrap_servers(), &output)?.len() >= 100)
    });
    assert!(outputs_arrive.unwrap(), "no enriched output arrived");

    // The service goes down; records pile up behind the open breaker.
    service.controls().set_outage(true);
    send(300);
    let opened = eventually(WAIT, || {
        Ok(first.enrichment_metrics()["id-mapping"].breaker != BreakerState::Closed)
    });
    assert!(opened.unwrap(), "the breaker did not open during the outage");
    std::thread::sleep(Duration::from_millis(500));
    let held = first.enrichment_metrics()["id-mapping"].buffered;
    assert!(held > 0, "records should wait for the service");
    // Stopped in the middle of the outage, with records held.
    streams.close().unwrap();

    let second = topology(&input, &output, &dlq, &service, "second");
    let mut streams: KafkaStreams = cluster.streams(second.clone(), &config);
    streams.start().unwrap();
    send(200);
    std::thread::sleep(Duration::from_secs(1));
    service.controls().set_outage(false);
    send(200);

    let expected_outputs: BTreeSet<(i64, i64)> = sent.iter().copied().filter(|(user, _)| *user >= 0).collect();
    let expected_dead: BTreeSet<(i64, i64)> = sent.iter().copied().filter(|(user, _)| *user < 0).collect();
    let done = eventually(WAIT, || {
        let (outputs, dead) = read_results(cluster, &output, &dlq)?;
        let seen: BTreeSet<(i64, i64)> = outputs.iter().map(|o| (o.user, o.seq)).collect();
        Ok(seen == expected_outputs && dead.len() >= expected_dead.len())
    });
    let (outputs, dead) = read_results(cluster, &output, &dlq).unwrap();
    let seen: BTreeSet<(i64, i64)> = outputs.iter().map(|o| (o.user, o.seq)).collect();
    let missing: Vec<&(i64, i64)> = expected_outputs.difference(&seen).collect();
    // Where the missing went, if anywhere: a dead letter says why.
    let missing_dead: Vec<&DeadLetter> = dead
        .iter()
        .filter(|(user, seq, _)| missing.contains(&&(*user, *seq)))
        .collect();
    assert!(
        done.unwrap(),
        "missing outputs: {:?}; of them dead-lettered: {missing_dead:?}; unexpected: {:?}; metrics of the first run \
         {:?}, of the second {:?}",
        missing.iter().take(10).collect::<Vec<_>>(),
        seen.difference(&expected_outputs).take(10).collect::<Vec<_>>(),
        first.enrichment_metrics()["id-mapping"],
        second.enrichment_metrics()["id-mapping"],
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
    let dead_keys: BTreeSet<(i64, i64)> = dead.iter().map(|(user, seq, _)| (*user, *seq)).collect();
    assert_eq!(dead_keys, expected_dead, "exactly the unknown ids are dead-lettered");
    assert!(dead.iter().all(|(_, _, reason)| reason.contains("404")), "{dead:?}");

    let metrics = second.enrichment_metrics()["id-mapping"];
    assert!(metrics.retries > 0, "503s and timeouts were retried: {metrics:?}");
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
    let dead = match read_topic(cluster.bootstrap_servers(), dlq) {
        Ok(records) => records
            .into_iter()
            .map(|read| {
                let user = I64.deserialize(dlq, read.record.key.as_deref()).unwrap();
                let seq = I64.deserialize(dlq, read.record.value.as_deref()).unwrap();
                let reason = read
                    .record
                    .headers
                    .iter()
                    .find(|h| h.key == DLQ_ERROR_MESSAGE)
                    .map(|h| String::from_utf8_lossy(&h.value).to_string())
                    .unwrap_or_default();
                (user, seq, reason)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok((outputs, dead))
}
