//! Stateless KStream operators, through the test driver.

mod common;

use common::s;
use std::sync::{Arc, Mutex};
use weir::serde::{Json, Utf8};
use weir::testing::{TestRecord, TopologyTestDriver};
use weir::{Consumed, KStream, Produced, Repartitioned, StreamsBuilder};

type Build = fn(KStream<String, i64>) -> KStream<String, i64>;

/// Runs `build` over a stream of `inputs` and returns what reached "out".
fn run(build: Build, inputs: &[(&str, i64)]) -> Vec<(String, Option<i64>)> {
    let builder = StreamsBuilder::new();
    let stream = builder.stream("in", Consumed::with(Utf8, Json::<i64>::new()));
    build(stream).to("out", Produced::with(Utf8, Json::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let input = driver.input_topic("in", Utf8, Json::<i64>::new());
    for (k, v) in inputs {
        input.pipe(s(k), *v).unwrap();
    }
    driver
        .output_topic("out", Utf8, Json::<i64>::new())
        .read_key_values()
        .unwrap()
}

#[test]
fn filter_and_filter_not_keep_complementary_records() {
    let inputs = [("a", 1), ("b", 20), ("c", 3), ("d", 40)];
    assert_eq!(
        run(|s| s.filter(|_, v| *v >= 10), &inputs),
        vec![(s("b"), Some(20)), (s("d"), Some(40))]
    );
    assert_eq!(
        run(|s| s.filter_not(|_, v| *v >= 10), &inputs),
        vec![(s("a"), Some(1)), (s("c"), Some(3))]
    );
}

#[test]
fn map_map_values_and_select_key_transform_in_order() {
    let inputs = [("a", 1), ("b", 2)];
    assert_eq!(
        run(|s| s.map(|k, v| (format!("{k}{v}"), v * 100)), &inputs),
        vec![(s("a1"), Some(100)), (s("b2"), Some(200))]
    );
    assert_eq!(
        run(|s| s.map_values(|v| -v), &inputs),
        vec![(s("a"), Some(-1)), (s("b"), Some(-2))]
    );
    assert_eq!(
        run(|s| s.select_key(|k, v| format!("{v}-{k}")), &inputs),
        vec![(s("1-a"), Some(1)), (s("2-b"), Some(2))]
    );
}

#[test]
fn flat_map_and_flat_map_values_emit_zero_or_more_records() {
    let inputs = [("a", 0), ("b", 2)];
    assert_eq!(
        run(
            |s| s.flat_map(|k, v| (0..v).map(move |i| (format!("{k}{i}"), i))),
            &inputs
        ),
        vec![(s("b0"), Some(0)), (s("b1"), Some(1))]
    );
    assert_eq!(
        run(|s| s.flat_map_values(|v| vec![v; v as usize]), &inputs),
        vec![(s("b"), Some(2)), (s("b"), Some(2))]
    );
}

#[test]
fn peek_sees_every_record_and_passes_it_on() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let builder = StreamsBuilder::new();
    let sink = seen.clone();
    builder
        .stream("in", Consumed::with(Utf8, Json::<i64>::new()))
        .peek(move |k, v| sink.lock().unwrap().push((k.clone(), *v)))
        .to("out", Produced::with(Utf8, Json::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let input = driver.input_topic("in", Utf8, Json::<i64>::new());
    input.pipe(s("x"), 7).unwrap();
    input.pipe(s("y"), 8).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(s("x"), 7), (s("y"), 8)]);
    let out = driver.output_topic("out", Utf8, Json::<i64>::new());
    assert_eq!(out.read_key_values().unwrap().len(), 2);
}

#[test]
fn split_sends_each_record_to_the_first_matching_branch() {
    let builder = StreamsBuilder::new();
    let branches = builder
        .stream("in", Consumed::with(Utf8, Json::<i64>::new()))
        .split()
        .branch(|_, v| *v < 0)
        .branch(|_, v| *v < 10)
        .default_branch();
    assert_eq!(branches.len(), 3);
    for (i, branch) in branches.iter().enumerate() {
        branch.to(&format!("out-{i}"), Produced::with(Utf8, Json::new()));
    }
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let input = driver.input_topic("in", Utf8, Json::<i64>::new());
    for (k, v) in [("a", -5), ("b", 5), ("c", 50), ("d", -1)] {
        input.pipe(s(k), v).unwrap();
    }
    let read = |i: usize| {
        driver
            .output_topic(&format!("out-{i}"), Utf8, Json::<i64>::new())
            .read_key_values()
            .unwrap()
    };
    assert_eq!(read(0), vec![(s("a"), Some(-5)), (s("d"), Some(-1))]);
    assert_eq!(read(1), vec![(s("b"), Some(5))]);
    assert_eq!(read(2), vec![(s("c"), Some(50))]);
}

#[test]
fn split_without_default_branch_drops_unmatched_records() {
    let builder = StreamsBuilder::new();
    let branches = builder
        .stream("in", Consumed::with(Utf8, Json::<i64>::new()))
        .split()
        .branch(|_, v| *v > 0)
        .no_default_branch();
    branches[0].to("positive", Produced::with(Utf8, Json::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let input = driver.input_topic("in", Utf8, Json::<i64>::new());
    input.pipe(s("a"), -1).unwrap();
    input.pipe(s("b"), 1).unwrap();
    let out = driver.output_topic("positive", Utf8, Json::<i64>::new());
    assert_eq!(out.read_key_values().unwrap(), vec![(s("b"), Some(1))]);
}

#[test]
fn merge_interleaves_two_streams_in_arrival_order() {
    let builder = StreamsBuilder::new();
    let a = builder.stream("a", Consumed::with(Utf8, Json::<i64>::new()));
    let b = builder.stream("b", Consumed::with(Utf8, Json::<i64>::new()));
    a.merge(&b.map_values(|v| v * 10))
        .to("out", Produced::with(Utf8, Json::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let (ia, ib) = (
        driver.input_topic("a", Utf8, Json::<i64>::new()),
        driver.input_topic("b", Utf8, Json::<i64>::new()),
    );
    ia.pipe(s("k"), 1).unwrap();
    ib.pipe(s("k"), 2).unwrap();
    ia.pipe(s("k"), 3).unwrap();
    let out = driver.output_topic("out", Utf8, Json::<i64>::new());
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![(s("k"), Some(1)), (s("k"), Some(20)), (s("k"), Some(3))]
    );
}

#[test]
fn outputs_keep_timestamps_and_land_on_the_key_partition() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Json::<i64>::new()))
        .map_values(|v| v + 1)
        .to("out", Produced::with(Utf8, Json::new()));
    let driver = common::driver(builder.build().unwrap(), weir::testing::TestStores::InMemory, 4);
    let input = driver.input_topic("in", Utf8, Json::<i64>::new());
    input
        .pipe_record(TestRecord::new(s("key-1"), Some(1)).at(1234))
        .unwrap();
    let out = driver
        .output_topic("out", Utf8, Json::<i64>::new())
        .read_records()
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].timestamp, 1234);
    let expected = weir::partition::partition_for_key(b"key-1", 4);
    assert_eq!(out[0].partition, Some(expected));
}

#[test]
fn repartition_moves_records_to_their_new_key_partition() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Json::<i64>::new()))
        .select_key(|_, v| format!("user-{v}"))
        .repartition(Repartitioned::with(Utf8, Json::new()).named("by-user"))
        .to("out", Produced::with(Utf8, Json::new()));
    let topology = builder.build().unwrap();
    assert_eq!(topology.subtopologies().len(), 2);
    let driver = common::driver(topology, weir::testing::TestStores::InMemory, 3);
    let input = driver.input_topic("in", Utf8, Json::<i64>::new());
    for i in 0..20 {
        input.pipe(format!("k{i}"), i % 5).unwrap();
    }
    let repartition = driver.repartition_topic("by-user");
    assert_eq!(repartition, "test-app-by-user-repartition");
    let shipped = driver
        .output_topic(&repartition, Utf8, Json::<i64>::new())
        .read_records()
        .unwrap();
    assert_eq!(shipped.len(), 20);
    for record in shipped {
        assert_eq!(
            record.partition,
            Some(weir::partition::partition_for_key(record.key.as_bytes(), 3))
        );
    }
    let out = driver
        .output_topic("out", Utf8, Json::<i64>::new())
        .read_key_values()
        .unwrap();
    assert_eq!(out.len(), 20);
}
