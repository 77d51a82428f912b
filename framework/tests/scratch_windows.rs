use std::time::Duration;
use weir::serde::{Utf8, I64};
use weir::testing::{TestRecord, TopologyTestDriver};
use weir::window::{TimeWindows, WindowedSerde};
use weir::{Consumed, Grouped, Materialized, StreamsBuilder};
#[test]
fn scratch() {
    let builder = StreamsBuilder::new();
    builder
        .stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::of(Duration::from_secs(60)))
        .count(Materialized::named("cpm"));
    let t = builder.build().unwrap();
    println!("{}", t.describe());
    let driver = TopologyTestDriver::new(t).unwrap();
    let clicks = driver.input_topic("clicks", Utf8, Utf8);
    for at in [1_000, 59_000, 61_000] {
        clicks.pipe_record(TestRecord::new("ada".to_string(), Some("/".to_string())).at(at)).unwrap();
    }
    println!("{:?}", driver.metrics());
    println!("{:?}", driver.store_contents("cpm", WindowedSerde::new(Utf8), I64).unwrap());
    println!("{:?}", driver.store_contents("cpm-index", weir::serde::Bytes, weir::serde::Bytes).unwrap());
}
