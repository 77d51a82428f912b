//! How an instance fails, on the in-process cluster: a panic in one
//! stream thread stops the instance with the panic's message (the other
//! threads close, `/health` says why); records the brokers refuse
//! go to the production error handler; brokers slower than the processing
//! hold the threads back instead of timing their records out; a thread
//! that stood still for less than its session goes on.

use std::time::Duration;
use weir::ops::OpsServer;
use weir::record::Header;
use weir::runtime::{KafkaStreams, StreamsState};
use weir::serde::Utf8;
use weir::testing::kafka::eventually;
use weir::{Consumed, Produced, StreamsBuilder, Topology};
use weir_e2e::cluster::Cluster;
use weir_e2e::http::http_get;

const PARTITIONS: i32 = 4;
const WAIT: Duration = Duration::from_secs(90);

/// `input` → `map` of each value → `output`, in UTF-8.
fn mapping(input: &str, output: &str, map: impl Fn(String) -> String + Send + Sync + 'static) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream(input, Consumed::with(Utf8, Utf8))
        .map_values(map)
        .to(output, Produced::with(Utf8, Utf8));
    builder.build().unwrap()
}

#[test]
fn a_panic_in_a_stream_thread_stops_the_instance_with_its_message() {
    let cluster = Cluster::embedded();
    let input = cluster.create_topic("words", PARTITIONS);
    let output = cluster.create_topic("shouted", PARTITIONS);
    let state = tempfile::tempdir().unwrap();
    let config = cluster
        .config("panics", state.path())
        .set("num.stream.threads", "2")
        .set("commit.interval.ms", "100");
    let topology = mapping(&input, &output, |word: String| {
        assert!(word != "boom", "the word was {word}");
        word.to_uppercase()
    });
    let mut streams = cluster.streams(topology, &config);
    let ops = OpsServer::start("127.0.0.1:0".parse().unwrap(), streams.status_handle()).unwrap();
    streams.start().unwrap();
    assert!(streams.wait_for_state(StreamsState::Running, WAIT));
    let address = ops.address().to_string();
    assert_eq!(http_get(&address, "/health").status, 200);

    let producer = cluster.producer();
    for i in 0..20 {
        producer
            .send(&input, &Utf8, &Utf8, &format!("k{i}"), Some(&"hello".to_string()))
            .unwrap();
    }
    producer
        .send(&input, &Utf8, &Utf8, &"k0".to_string(), Some(&"boom".to_string()))
        .unwrap();
    producer.flush().unwrap();

    let failed = eventually(WAIT, || Ok(streams.state() == StreamsState::Error)).unwrap();
    assert!(failed, "the instance did not fail: {:?}", streams.state());
    let health = http_get(&address, "/health");
    assert_eq!(health.status, 503);
    assert!(health.body.contains("panicked: the word was boom"), "{}", health.body);

    let error = streams.close().unwrap_err().to_string();
    assert!(error.contains("panicked: the word was boom"), "{error}");
    // The thread that panicked left its tasks' state to be rebuilt (no
    // checkpoint). The other thread's tasks have checkpoints if it closed
    // them before the group noticed the panicked thread's departure; if
    // the group was already rebalancing, their last commit was refused and
    // their state dropped too, which is also right (a checkpoint must not
    // outrun the commit).
    let app = config.get("application.id").unwrap();
    let checkpoints: Vec<String> = (0..PARTITIONS)
        .filter(|p| {
            state
                .path()
                .join(app)
                .join(format!("0_{p}"))
                .join(".checkpoint")
                .exists()
        })
        .map(|p| format!("0_{p}"))
        .collect();
    let boom_task = format!("0_{}", weir::partition::partition_for_key(b"k0", PARTITIONS));
    assert!(!checkpoints.contains(&boom_task), "{checkpoints:?}");
}

/// `run` returns the error, so that a process exits non-zero.
#[test]
fn run_returns_the_error_of_a_panicked_thread() {
    let cluster = Cluster::embedded();
    let input = cluster.create_topic("numbers", 1);
    let output = cluster.create_topic("small-numbers", 1);
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("run-panics", state.path());
    let builder = StreamsBuilder::new();
    builder
        .stream(&input, Consumed::with(Utf8, Utf8))
        .peek(|_, value: &String| {
            value.parse::<u8>().expect("small numbers only");
        })
        .to(&output, Produced::with(Utf8, Utf8));
    let streams = cluster.streams(builder.build().unwrap(), &config);
    let producer = cluster.producer();
    producer
        .send(&input, &Utf8, &Utf8, &"n".to_string(), Some(&"1000".to_string()))
        .unwrap();
    producer.flush().unwrap();
    let outcome = std::thread::spawn(move || KafkaStreams::run(streams))
        .join()
        .expect("run returns instead of panicking");
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("small numbers only"), "{error}");
}

/// An instance whose outputs include a record over `message.max.bytes`:
/// with `production.error.handler=dead_letter:<topic>` the record's dead
/// letter (cut to fit) names the topic it was for and the instance goes
/// on; by default the instance stops and says what to set.
#[test]
fn a_record_the_brokers_refuse_goes_to_the_production_error_handler() {
    let cluster = Cluster::embedded();
    let input = cluster.create_topic("documents", 1);
    let output = cluster.create_topic("documents-out", 1);
    let dead_letters = cluster.create_topic("documents-refused", 1);
    let topology = mapping(&input, &output, |size: String| "x".repeat(size.parse().unwrap_or(0)));
    let producer = cluster.producer();
    for (key, size) in [("a", "10"), ("big", "700000"), ("b", "20")] {
        producer
            .send(&input, &Utf8, &Utf8, &key.to_string(), Some(&size.to_string()))
            .unwrap();
    }
    producer.flush().unwrap();

    let state = tempfile::tempdir().unwrap();
    let config = cluster
        .config("refused", state.path())
        .set("producer.message.max.bytes", "600000");
    let lenient = config
        .clone()
        .set("production.error.handler", format!("dead_letter:{dead_letters}"));
    let mut streams = cluster.streams(topology.clone(), &lenient);
    streams.start().unwrap();
    let servers = cluster.bootstrap_servers();
    let outputs = || weir::testing::kafka::read_topic(servers, &output).unwrap();
    assert!(
        eventually(WAIT, || Ok(outputs().len() == 2)).unwrap(),
        "{:?}",
        outputs().len()
    );
    let keys: Vec<_> = outputs().iter().map(|r| r.record.key.clone().unwrap()).collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    let dead = weir::testing::kafka::read_topic(servers, &dead_letters).unwrap();
    assert_eq!(dead.len(), 1);
    let header =
        |key: &str| Header::value_of(&dead[0].record.headers, key).map(|v| String::from_utf8_lossy(v).to_string());
    assert_eq!(header("weir.error.class").as_deref(), Some("production"));
    assert_eq!(header("weir.target.topic"), Some(output.clone()));
    assert_eq!(header("weir.dlq.truncated").as_deref(), Some("key=3 value=700000"));
    assert_eq!(dead[0].record.key.as_deref(), Some(&b"big"[..]));
    let value = dead[0].record.value.as_deref().unwrap();
    assert!(
        value.len() < 600_000 && value.iter().all(|b| *b == b'x'),
        "{}",
        value.len()
    );
    streams.close().unwrap();
    let skipped = streams
        .metrics()
        .tasks
        .skipped_for(weir::metrics::SkipReason::ProductionDeadLettered);
    assert_eq!(skipped, 1);

    // The default stops, naming the remedy.
    let strict_state = tempfile::tempdir().unwrap();
    let strict = cluster
        .config("refused-strict", strict_state.path())
        .set("producer.message.max.bytes", "600000");
    let mut streams = cluster.streams(topology, &strict);
    streams.start().unwrap();
    assert!(eventually(WAIT, || Ok(streams.state() == StreamsState::Error)).unwrap());
    let error = streams.close().unwrap_err().to_string();
    assert!(
        error.contains(&output) && error.contains("production.error.handler"),
        "{error}"
    );
}

/// Exactly-once: a transaction the brokers refuse is aborted and the tasks
/// rewound, after a wait that grows; a few refusals are ridden out with
/// exact outputs, and a refusal that persists stops the instance after
/// `transaction.max.rewinds` in a row, saying why.
#[test]
fn aborted_transactions_rewind_with_a_growing_wait_and_stop_when_they_persist() {
    use weir::embedded::Request;
    let cluster = Cluster::embedded();
    let kafka = cluster.embedded_kafka().expect("the in-process cluster");
    let input = cluster.create_topic("counted", 1);
    let output = cluster.create_topic("counted-out", 1);
    let topology = mapping(&input, &output, |v: String| v.to_uppercase());
    let producer = cluster.producer();
    let send = |key: &str| {
        producer
            .send(&input, &Utf8, &Utf8, &key.to_string(), Some(&key.to_string()))
            .unwrap();
        producer.flush().unwrap();
    };

    let state = tempfile::tempdir().unwrap();
    let config = cluster
        .config("rewinds", state.path())
        .set("processing.guarantee", "exactly_once_v2")
        .set("transaction.max.rewinds", "3");
    let mut streams = cluster.streams(topology.clone(), &config);
    streams.start().unwrap();
    send("a");
    let servers = cluster.bootstrap_servers();
    let outputs = || weir::testing::kafka::read_compacted(servers, &output, &Utf8, &Utf8).unwrap();
    assert!(eventually(WAIT, || Ok(outputs().len() == 1)).unwrap());

    // Two refusals: rewound twice, then committed.
    kafka.fail_requests(Request::TxnOffsetCommit, 2);
    send("b");
    assert!(eventually(WAIT, || Ok(outputs().len() == 2)).unwrap());
    assert_eq!(outputs()["b"], "B");
    assert_eq!(streams.state(), StreamsState::Running);

    // Refusals that persist: three rewinds, then the instance stops.
    kafka.fail_requests(Request::TxnOffsetCommit, 1_000);
    let started = std::time::Instant::now();
    send("c");
    assert!(eventually(WAIT, || Ok(streams.state() == StreamsState::Error)).unwrap());
    // The waits before the rewinds: 100 + 200 + 400 ms at least.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let error = streams.close().unwrap_err().to_string();
    assert!(
        error.contains("4 transactions in a row") && error.contains("transaction.max.rewinds"),
        "{error}"
    );
}

/// Readiness tells the truth: a running instance whose fetches are refused
/// as unauthorized is not ready (`/ready` names the reason) until they go
/// through again; an input partition read from elsewhere than its
/// committed offset (out of range) is counted.
#[test]
fn readiness_reports_refused_fetches_and_offset_resets_are_counted() {
    use weir::embedded::Request;
    let cluster = Cluster::embedded();
    let kafka = cluster.embedded_kafka().expect("the in-process cluster");
    let input = cluster.create_topic("watched", 1);
    let output = cluster.create_topic("watched-out", 1);
    let builder = StreamsBuilder::new();
    builder
        .stream(&input, Consumed::with(Utf8, Utf8))
        .to(&output, Produced::with(Utf8, Utf8));
    let producer = cluster.producer();
    for i in 0..5 {
        producer
            .send(&input, &Utf8, &Utf8, &format!("k{i}"), Some(&"v".to_string()))
            .unwrap();
    }
    producer.flush().unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("readiness", state.path());
    let app = config.get("application.id").unwrap().to_string();
    // A committed offset past the partition's end, as after a topic was
    // recreated: the consumer resets to the beginning.
    weir::testing::kafka::commit_offsets(cluster.bootstrap_servers(), &app, &[(&input, 0, 1_000)]).unwrap();

    let mut streams = cluster.streams(builder.build().unwrap(), &config);
    let ops = OpsServer::start("127.0.0.1:0".parse().unwrap(), streams.status_handle()).unwrap();
    let address = ops.address().to_string();
    streams.start().unwrap();
    assert!(streams.wait_for_state(StreamsState::Running, WAIT));
    let servers = cluster.bootstrap_servers();
    let outputs = || weir::testing::kafka::read_topic(servers, &output).unwrap().len();
    assert!(eventually(WAIT, || Ok(outputs() == 5)).unwrap(), "{}", outputs());
    let metrics = http_get(&address, "/metrics").body;
    let resets: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_offset_resets_total") && l.contains(&input))
        .collect();
    assert_eq!(
        resets.len(),
        1,
        "{resets:?}\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("offset"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(resets[0].ends_with(" 1"), "{resets:?}");
    assert_eq!(http_get(&address, "/ready").status, 200);

    kafka.fail_requests(Request::UnauthorizedFetch, 20);
    let refused = eventually(WAIT, || Ok(http_get(&address, "/ready").status == 503)).unwrap();
    assert!(refused, "/ready stayed 200 while fetches were refused");
    let ready = http_get(&address, "/ready").body;
    assert!(
        ready.contains("Running, but consumer") && ready.contains("uthorization"),
        "{ready}"
    );
    assert_eq!(streams.state(), StreamsState::Running);
    let back = eventually(WAIT, || Ok(http_get(&address, "/ready").status == 200)).unwrap();
    assert!(back, "/ready did not come back: {}", http_get(&address, "/ready").body);
    streams.close().unwrap();
}

/// Brokers slower than the processing: every produce request carries one
/// record and waits 20 ms, so the producer delivers about 250 records a
/// second, while the thread could process the whole input at once. The
/// records the brokers have not acknowledged hold the thread back, so that
/// none waits past `message.timeout.ms` (5.5 s here, from the session
/// timeout less a heartbeat), and every record comes out.
#[test]
fn brokers_slower_than_the_processing_hold_the_thread_back_instead_of_timing_records_out() {
    const RECORDS: usize = 2_000;
    let cluster = Cluster::embedded();
    let kafka = cluster.embedded_kafka().expect("the in-process cluster");
    let input = cluster.create_topic("slow-acks", 1);
    let output = cluster.create_topic("slow-acks-out", 1);
    let topology = mapping(&input, &output, |v: String| v.to_uppercase());
    let producer = cluster.producer();
    for n in 0..RECORDS {
        let key = format!("k{n}");
        producer.send(&input, &Utf8, &Utf8, &key, Some(&key)).unwrap();
    }
    producer.flush().unwrap();
    kafka.set_round_trip_time(Duration::from_millis(20)).unwrap();

    let state = tempfile::tempdir().unwrap();
    let config = cluster
        .config("slow-acks", state.path())
        .set("producer.batch.num.messages", "1");
    let mut streams = cluster.streams(topology, &config);
    streams.start().unwrap();
    let servers = cluster.bootstrap_servers();
    // A commit comes after its outputs are acknowledged.
    let group = cluster.name("slow-acks");
    let committed = || weir::testing::kafka::committed_offsets(servers, &group, &[&input]);
    let done = eventually(WAIT, || {
        Ok(streams.state() == StreamsState::Error || committed()?[0].2 == Some(RECORDS as i64))
    })
    .unwrap();
    assert!(
        done && streams.state() == StreamsState::Running,
        "{:?}",
        streams.state()
    );
    kafka.set_round_trip_time(Duration::ZERO).unwrap();
    let outputs = weir::testing::kafka::read_compacted(servers, &output, &Utf8, &Utf8).unwrap();
    assert_eq!(outputs.len(), RECORDS);
    assert_eq!(outputs["k1999"], "K1999");
    streams.close().unwrap();
}

/// A record whose processing takes 2 s: the thread stood still for longer
/// than its stall threshold (1.5 s: half the session timeout less a
/// heartbeat) but not for a session, so the group keeps it. It waits for
/// the group's verdict (two heartbeats, 6 s), is kept, and goes on
/// processing; the wait itself is not taken for another stall.
#[test]
fn a_thread_that_stood_still_less_than_its_session_goes_on() {
    let cluster = Cluster::embedded();
    let input = cluster.create_topic("sleepy", 1);
    let output = cluster.create_topic("sleepy-out", 1);
    let topology = mapping(&input, &output, |v: String| {
        if v == "slow" {
            std::thread::sleep(Duration::from_secs(2));
        }
        v.to_uppercase()
    });
    let state = tempfile::tempdir().unwrap();
    let config = cluster
        .config("sleepy", state.path())
        .set("consumer.heartbeat.interval.ms", "3000");
    let mut streams = cluster.streams(topology, &config);
    streams.start().unwrap();
    let producer = cluster.producer();
    for (key, value) in [("a", "first"), ("b", "slow"), ("c", "after"), ("d", "last")] {
        producer
            .send(&input, &Utf8, &Utf8, &key.to_string(), Some(&value.to_string()))
            .unwrap();
    }
    producer.flush().unwrap();
    let servers = cluster.bootstrap_servers();
    let outputs = || weir::testing::kafka::read_compacted(servers, &output, &Utf8, &Utf8).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || Ok(outputs().len() == 4)).unwrap(),
        "{:?}",
        outputs()
    );
    assert_eq!(outputs()["d"], "LAST");
    assert_eq!(streams.state(), StreamsState::Running);
    streams.close().unwrap();
}
