//! Output records that cannot be serialized, through the test driver: the
//! production error handler fails, skips (counted) or dead-letters them
//! (naming the input record and the topic they were for); a repartition
//! record that cannot be serialized always fails.

use weir::error::SerdeError;
use weir::error_handler::*;
use weir::metrics::SkipReason;
use weir::record::Header;
use weir::serde::{Bytes, Encoded, Nullable, Serde, Utf8};
use weir::testing::{TestDriverConfig, TopologyTestDriver};
use weir::{Consumed, ErrorHandler, Grouped, Produced, StreamsBuilder, Topology};

/// Text, except that "poison" cannot be written.
struct Picky;

impl Serde<String> for Picky {
    fn serialize(&self, topic: &str, value: &String, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        if value == "poison" {
            return Err(SerdeError::serialize(topic, "poison cannot be written"));
        }
        out.extend_from_slice(value.as_bytes());
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<String, SerdeError> {
        Utf8.deserialize(topic, bytes)
    }
}

fn to_output() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Utf8))
        .to("out", Produced::with(Utf8, Picky));
    builder.build().unwrap()
}

fn driver(topology: Topology, handler: ErrorHandler) -> TopologyTestDriver {
    TopologyTestDriver::with_config(topology, TestDriverConfig::default().production_error_handler(handler)).unwrap()
}

fn pipe_three(driver: &TopologyTestDriver) -> Result<(), weir::WeirError> {
    let input = driver.input_topic("in", Utf8, Utf8);
    input.pipe("a".into(), "fine".into())?;
    input.pipe("b".into(), "poison".into())?;
    input.pipe("c".into(), "also fine".into())
}

#[test]
fn an_unserializable_output_record_is_dead_lettered_with_where_it_came_from_and_went() {
    let driver = driver(to_output(), ErrorHandler::dead_letter("out-dlq"));
    pipe_three(&driver).unwrap();
    let out = driver.output_topic("out", Utf8, Utf8).read_key_values().unwrap();
    assert_eq!(
        out,
        [
            ("a".into(), Some("fine".into())),
            ("c".into(), Some("also fine".into()))
        ]
    );
    let dead = driver
        .output_topic("out-dlq", Nullable(Bytes), Nullable(Bytes))
        .read_records()
        .unwrap();
    assert_eq!(dead.len(), 1);
    let header = |key: &str| String::from_utf8(Header::value_of(&dead[0].headers, key).expect(key).to_vec()).unwrap();
    assert_eq!(header(DLQ_ERROR_CLASS), "serialization");
    assert!(header(DLQ_ERROR_MESSAGE).contains("poison cannot be written"));
    assert_eq!(header(DLQ_TARGET_TOPIC), "out");
    assert_eq!(header(DLQ_SOURCE_TOPIC), "in");
    assert_eq!(header(DLQ_SOURCE_OFFSET), "1");
    // The key was written; the value could not be.
    assert_eq!(dead[0].key, Some(b"b".to_vec()));
    assert_eq!(dead[0].value.clone().flatten(), None);
    assert_eq!(driver.metrics().skipped_for(SkipReason::ProductionDeadLettered), 1);
}

#[test]
fn an_unserializable_output_record_can_be_skipped_or_stop_the_task() {
    let lenient = driver(to_output(), ErrorHandler::LogAndContinue);
    pipe_three(&lenient).unwrap();
    assert_eq!(lenient.output_topic("out", Utf8, Utf8).read_records().unwrap().len(), 2);
    assert_eq!(lenient.metrics().skipped_for(SkipReason::ProductionError), 1);

    let strict = driver(to_output(), ErrorHandler::Fail);
    let error = pipe_three(&strict).unwrap_err().to_string();
    assert!(
        error.contains("poison cannot be written") && error.contains("in"),
        "{error}"
    );
}

/// A repartition topic is weir's own: a record that cannot be written
/// there would be lost from the aggregation downstream, whatever the
/// handler says.
#[test]
fn an_unserializable_repartition_record_always_fails() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Utf8))
        .group_by(|_, v: &String| v.clone(), Grouped::with(Picky, Utf8).named("by-value"))
        .count(weir::Materialized::named("counts"))
        .to_stream()
        .to("counts", Produced::with(Utf8, Nullable(weir::serde::I64)));
    let driver = driver(builder.build().unwrap(), ErrorHandler::LogAndContinue);
    let error = pipe_three(&driver).unwrap_err().to_string();
    assert!(error.contains("poison cannot be written"), "{error}");
}
