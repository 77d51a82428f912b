//! What windowed operations cost per record, without Kafka: records piped
//! through the test driver (one task, RocksDB stores with their changelog
//! records collected) into each windowed operation, beside a floor that
//! only reads and writes the records, in the same run.
//!
//! Records of 1,000 keys arrive about 1 ms apart (a few out of order);
//! windows of 60 s (hopping: every 10 s), grace 5 s; sessions with a 30 s
//! gap; sliding windows of 10 s; a join of two streams within 1 s.
//!
//! `cargo bench -p weir-benches --bench windows` (`-- <records>` for
//! another count; 100,000 by default).

use std::time::{Duration, Instant};
use weir::serde::{Bytes, Nullable, Utf8, I64};
use weir::state::RocksDbConfig;
use weir::testing::{TestDriverConfig, TestRecord, TestStores, TopologyTestDriver};
use weir::window::{JoinWindows, SessionWindows, SlidingWindows, StreamJoined, Suppressed, TimeWindows, WindowedSerde};
use weir::{Consumed, Grouped, Materialized, Produced, Serdes, StreamsBuilder, Topology};
use weir_benches::rate;

const KEYS: u64 = 1_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The topologies measured, by name: each reads `in` (and `other`).
fn topologies() -> Vec<(&'static str, Topology)> {
    let grouped = |builder: &StreamsBuilder| {
        builder
            .stream("in", Consumed::with(Utf8, I64))
            .group_by_key(Grouped::with(Utf8, I64))
    };
    let windowed_out = Produced::with(WindowedSerde::new(Utf8), Nullable(I64));
    let mut all = Vec::new();

    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, I64))
        .to("out", Produced::with(Utf8, I64));
    all.push(("floor: read and write", builder.build().unwrap()));

    let builder = StreamsBuilder::new();
    grouped(&builder)
        .windowed_by(TimeWindows::of(secs(60)).grace(secs(5)))
        .count(Materialized::named("tumbling"))
        .to_stream()
        .to("out", windowed_out.clone());
    all.push(("tumbling count", builder.build().unwrap()));

    let builder = StreamsBuilder::new();
    grouped(&builder)
        .windowed_by(TimeWindows::of(secs(60)).grace(secs(5)))
        .count(Materialized::named("tumbling"))
        .suppress(
            Suppressed::UntilWindowCloses,
            Serdes::with(WindowedSerde::new(Utf8), I64),
        )
        .to_stream()
        .to("out", windowed_out.clone());
    all.push(("tumbling count, suppressed", builder.build().unwrap()));

    let builder = StreamsBuilder::new();
    grouped(&builder)
        .windowed_by(TimeWindows::of(secs(60)).advance_by(secs(10)).grace(secs(5)))
        .count(Materialized::named("hopping"))
        .to_stream()
        .to("out", windowed_out.clone());
    all.push(("hopping count (6 windows a record)", builder.build().unwrap()));

    let builder = StreamsBuilder::new();
    grouped(&builder)
        .windowed_by_session(SessionWindows::with_inactivity_gap(secs(30)).grace(secs(5)))
        .count(Materialized::named("sessions"))
        .to_stream()
        .to("out", windowed_out.clone());
    all.push(("session count", builder.build().unwrap()));

    let builder = StreamsBuilder::new();
    grouped(&builder)
        .windowed_by_sliding(SlidingWindows::of(secs(10)).grace(secs(5)))
        .count(Materialized::named("sliding"))
        .to_stream()
        .to("out", windowed_out);
    all.push(("sliding count", builder.build().unwrap()));

    let builder = StreamsBuilder::new();
    let left = builder.stream("in", Consumed::with(Utf8, I64));
    let right = builder.stream("other", Consumed::with(Utf8, I64));
    left.left_join_stream(
        &right,
        |l, r| l + r.copied().unwrap_or(0),
        JoinWindows::of(secs(1)).grace(secs(5)),
        StreamJoined::with(Utf8, I64, I64).named("join"),
    )
    .to("out", Produced::with(Utf8, I64));
    all.push((
        "stream left join (half the records each side)",
        builder.build().unwrap(),
    ));
    all
}

fn main() {
    let records: u64 = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map(|arg| arg.parse().expect("the argument is a number of records"))
        .unwrap_or(100_000);
    let inputs: Vec<(String, i64)> = (0..records)
        .map(|n| {
            // About 1 ms apart, every 50th 3 s late.
            let at = n as i64 - if n % 50 == 0 { 3_000 } else { 0 };
            (format!("k{}", fastrand::u64(0..KEYS)), at.max(0))
        })
        .collect();
    println!("{records} records of {KEYS} keys, one task, RocksDB stores");
    let mut floor = None;
    for (name, topology) in topologies() {
        let driver = TopologyTestDriver::with_config(
            topology,
            TestDriverConfig::default()
                .default_partitions(1)
                .stores(TestStores::RocksDb(RocksDbConfig::default())),
        )
        .expect("a valid topology");
        let joined = name.starts_with("stream");
        let main = driver.input_topic("in", Utf8, I64);
        let other = joined.then(|| driver.input_topic("other", Utf8, I64));
        let started = Instant::now();
        for (n, (key, at)) in inputs.iter().enumerate() {
            let record = TestRecord::new(key.clone(), Some(n as i64)).at(*at);
            match (&other, n % 2) {
                (Some(other), 1) => other.pipe_record(record),
                _ => main.pipe_record(record),
            }
            .expect("the record is processed");
        }
        let elapsed = started.elapsed();
        let out = driver.output_topic("out", Bytes, Bytes).read_records().map(|r| r.len());
        let per_second = rate(records, elapsed);
        let floor = *floor.get_or_insert(per_second);
        println!(
            "{name:<48} {per_second:>9} records/s, {:>3}% of the floor  ({} output records)",
            per_second * 100 / floor.max(1),
            out.map_or_else(|e| format!("unreadable: {e}"), |n| n.to_string())
        );
    }
}
