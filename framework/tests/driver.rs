//! The test driver itself, error handling, validation and describe().

mod common;

use common::s;
use weir::error_handler::*;
use weir::metrics::SkipReason;
use weir::record::Header;
use weir::serde::{Bytes, Json, Utf8, I64};
use weir::testing::{TestDriverConfig, TestStores, TopologyTestDriver};
use weir::{Consumed, ErrorHandler, Grouped, Materialized, Produced, StreamsBuilder, WeirError};

fn passthrough(on_error: Option<ErrorHandler>) -> TopologyTestDriver {
    let builder = StreamsBuilder::new();
    let consumed = Consumed::with(Utf8, Json::<i64>::new());
    let consumed = match on_error {
        Some(handler) => consumed.on_error(handler),
        None => consumed,
    };
    builder
        .stream("in", consumed)
        .to("out", Produced::with(Utf8, Json::new()));
    common::driver(builder.build().unwrap(), TestStores::InMemory, 2)
}

#[test]
fn a_bad_record_stops_processing_by_default_with_its_location() {
    let driver = passthrough(None);
    let input = driver.input_topic("in", Utf8, Bytes);
    let error = input.pipe(s("k"), b"{not json".to_vec()).unwrap_err();
    match &error {
        WeirError::Processing {
            topic, offset, cause, ..
        } => {
            assert_eq!(topic, "in");
            assert_eq!(*offset, 0);
            assert!(cause.to_string().contains("invalid JSON"), "{cause}");
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn a_failed_record_leaks_no_output_into_the_next_one() {
    let builder = StreamsBuilder::new();
    // The sink's serde fails on one value, after the first sink has written.
    struct FailsOnSeven;
    impl weir::serde::Serde<i64> for FailsOnSeven {
        fn serialize(
            &self,
            t: &str,
            v: &i64,
            out: &mut Vec<u8>,
        ) -> Result<weir::serde::Encoded, weir::error::SerdeError> {
            if *v == 7 {
                return Err(weir::error::SerdeError::serialize(t, "seven"));
            }
            I64.serialize(t, v, out)
        }
        fn deserialize(&self, t: &str, b: Option<&[u8]>) -> Result<i64, weir::error::SerdeError> {
            I64.deserialize(t, b)
        }
    }
    let stream = builder.stream("in", Consumed::with(Utf8, I64));
    stream.to("first", Produced::with(Utf8, I64));
    stream.to("second", Produced::with(Utf8, FailsOnSeven));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let input = driver.input_topic("in", Utf8, I64);
    assert!(input.pipe(s("a"), 7).is_err());
    input.pipe(s("b"), 1).unwrap();
    let first = driver.output_topic("first", Utf8, I64).read_key_values().unwrap();
    assert_eq!(first, vec![(s("b"), Some(1))]);
}

#[test]
fn log_and_continue_skips_and_counts() {
    let driver = passthrough(Some(ErrorHandler::LogAndContinue));
    let raw = driver.input_topic("in", Utf8, Bytes);
    raw.pipe(s("a"), b"1".to_vec()).unwrap();
    raw.pipe(s("b"), b"oops".to_vec()).unwrap();
    raw.pipe(s("c"), b"3".to_vec()).unwrap();
    let out = driver
        .output_topic("out", Utf8, Json::<i64>::new())
        .read_key_values()
        .unwrap();
    assert_eq!(out, vec![(s("a"), Some(1)), (s("c"), Some(3))]);
    assert_eq!(driver.metrics().skipped_for(SkipReason::DeserializationError), 1);
}

#[test]
fn dead_letters_carry_the_original_bytes_and_the_reason() {
    let driver = passthrough(Some(ErrorHandler::dead_letter("in-dlq")));
    let raw = driver.input_topic("in", Utf8, Bytes);
    raw.pipe(s("good"), b"1".to_vec()).unwrap();
    raw.pipe(s("bad"), b"[1,".to_vec()).unwrap();
    raw.pipe_raw(Some(1), Some(b"null-value".to_vec()), None, 5, Vec::new())
        .unwrap();
    raw.pipe(s("good2"), b"2".to_vec()).unwrap();

    let out = driver
        .output_topic("out", Utf8, Json::<i64>::new())
        .read_key_values()
        .unwrap();
    assert_eq!(out.len(), 2);
    let dead = driver.output_topic("in-dlq", Bytes, Bytes).read_records().unwrap();
    assert_eq!(dead.len(), 2);
    let header = |i: usize, name: &str| {
        let value = Header::value_of(&dead[i].headers, name).unwrap_or_else(|| panic!("no header {name}"));
        String::from_utf8(value.to_vec()).unwrap()
    };
    assert_eq!(dead[0].key, b"bad".to_vec());
    assert_eq!(dead[0].value, Some(b"[1,".to_vec()));
    assert_eq!(header(0, DLQ_ERROR_CLASS), "deserialization");
    assert!(header(0, DLQ_ERROR_MESSAGE).contains("invalid JSON"));
    assert_eq!(header(0, DLQ_SOURCE_TOPIC), "in");
    let partition: i32 = header(0, DLQ_SOURCE_PARTITION).parse().unwrap();
    assert_eq!(partition, weir::partition::partition_for_key(b"bad", 2));
    assert_eq!(header(0, DLQ_SOURCE_OFFSET), "0");
    // A null value where a number is expected is an error too, not a crash.
    assert_eq!(dead[1].value, None);
    assert!(
        header(1, DLQ_ERROR_MESSAGE).contains("null"),
        "{}",
        header(1, DLQ_ERROR_MESSAGE)
    );
    assert_eq!(header(1, DLQ_SOURCE_PARTITION), "1");
    assert_eq!(driver.metrics().skipped_for(SkipReason::DeadLettered), 2);
}

#[test]
fn the_application_default_handler_applies_to_sources_without_their_own() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Json::<i64>::new()))
        .to("out", Produced::with(Utf8, Json::new()));
    let driver = TopologyTestDriver::with_config(
        builder.build().unwrap(),
        TestDriverConfig::default().default_error_handler(ErrorHandler::dead_letter("dlq")),
    )
    .unwrap();
    driver.input_topic("in", Utf8, Utf8).pipe(s("k"), s("x")).unwrap();
    assert_eq!(driver.output_topic("dlq", Utf8, Utf8).read_records().unwrap().len(), 1);
}

#[test]
fn joined_topics_with_different_partition_counts_are_rejected() {
    let builder = StreamsBuilder::new();
    let a = builder.table("a", Consumed::with(Utf8, Utf8));
    let b = builder.table("b", Consumed::with(Utf8, Utf8));
    a.join(&b, |x, y| format!("{x}{y}"))
        .to("out", Produced::with(Utf8, Utf8));
    let config = TestDriverConfig::default().partitions("a", 6).partitions("b", 3);
    let error = TopologyTestDriver::with_config(builder.build().unwrap(), config)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        error.contains("a (6)") && error.contains("b (3)") && error.contains("co-partitioned"),
        "{error}"
    );
}

#[test]
fn a_join_after_a_key_change_must_repartition_first() {
    let builder = StreamsBuilder::new();
    let table = builder.table("t", Consumed::with(Utf8, Utf8));
    builder
        .stream("s", Consumed::with(Utf8, Utf8))
        .select_key(|_, v| v.clone())
        .join(&table, |a, b| format!("{a}{b}"))
        .to("out", Produced::with(Utf8, Utf8));
    let error = builder.build().unwrap_err().to_string();
    assert!(error.contains("repartition"), "{error}");
}

#[test]
fn a_topic_read_twice_is_rejected() {
    let builder = StreamsBuilder::new();
    builder
        .stream("t", Consumed::with(Utf8, Utf8))
        .to("a", Produced::with(Utf8, Utf8));
    builder
        .stream("t", Consumed::with(Utf8, Utf8))
        .to("b", Produced::with(Utf8, Utf8));
    let error = builder.build().unwrap_err().to_string();
    assert!(error.contains("'t' is read by two sources"), "{error}");
}

#[test]
fn an_aggregate_without_a_serde_and_a_reused_store_name_are_rejected() {
    let builder = StreamsBuilder::new();
    let grouped = builder
        .stream("t", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8));
    grouped.aggregate(|| 0u32, |_, _, n| n + 1, Materialized::named("n"));
    grouped.count(Materialized::named("n"));
    let error = builder.build().unwrap_err().to_string();
    assert!(error.contains("Materialized::with(serde)"), "{error}");
    assert!(error.contains("store name 'n' is used twice"), "{error}");
}

#[test]
fn piping_to_a_partition_that_does_not_exist_is_an_error() {
    let driver = passthrough(None);
    let input = driver.input_topic("in", Utf8, Utf8);
    let error = input.pipe_raw(Some(7), Some(b"k".to_vec()), Some(b"1".to_vec()), 0, Vec::new());
    assert!(error.unwrap_err().to_string().contains("no partition 7"));
}

#[test]
fn unknown_stores_are_named_in_the_error() {
    let builder = StreamsBuilder::new();
    builder.table("t", Consumed::with(Utf8, Utf8).store("users"));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let error = driver.store_contents("nope", Utf8, Utf8).unwrap_err().to_string();
    assert!(error.contains("[users]"), "{error}");
}

/// Two sub-topologies: a table join, re-partitioned into a count.
fn join_then_count() -> weir::Topology {
    let builder = StreamsBuilder::new();
    let users = builder.table("users", Consumed::with(Utf8, Utf8).store("users-store"));
    let prefs = builder.table("prefs", Consumed::with(Utf8, Utf8).store("prefs-store"));
    users
        .join(&prefs, |u, p| format!("{u}{p}"))
        .group_by(|_, v| (v.clone(), 1i64), Grouped::with(Utf8, I64))
        .count(Materialized::named("per-value"))
        .to("out", Produced::with(Utf8, I64));
    builder.build().unwrap()
}

#[test]
fn describe_shows_subtopologies_nodes_stores_and_internal_topics() {
    let text = join_then_count().describe().to_string();
    for expected in [
        "Sub-topology: 0",
        "Sub-topology: 1",
        "Source: KSTREAM-SOURCE-0000000000 (topics: [users])",
        "Processor: KTABLE-JOINTHIS",
        "(stores: [prefs-store])",
        "Co-partitioned inputs (equal partition counts required): [users, prefs]",
        "Sink: KSTREAM-SINK",
        "(topic: <application.id>-per-value-repartition)",
        "(topics: [<application.id>-per-value-repartition])",
        "Store: users-store (changelog: <application.id>-users-store-changelog)",
        "Sink: KSTREAM-SINK-",
        "(topic: out)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn the_mermaid_drawing_connects_every_node_topic_and_store() {
    let topology = join_then_count();
    let chart = topology.describe_mermaid();
    let lines: Vec<&str> = chart.lines().collect();
    assert_eq!(lines[0], "flowchart LR", "{chart}");
    let boxes = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("subgraph sub"))
        .count();
    assert_eq!(boxes, topology.subtopologies().len(), "{chart}");
    assert_eq!(lines.iter().filter(|l| l.trim() == "end").count(), boxes, "{chart}");

    // Every shape is declared once, and every arrow joins declared shapes.
    let declared: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|line| {
            let line = line.trim();
            let id_end = line.find(['[', ' '])?;
            line[id_end..]
                .starts_with('[')
                .then(|| (&line[..id_end], &line[id_end..]))
        })
        .collect();
    let id_of = |label: &str| {
        declared
            .iter()
            .find(|(_, shape)| shape.contains(label))
            .map(|(id, _)| *id)
            .unwrap_or_else(|| panic!("no shape labelled {label:?} in\n{chart}"))
    };
    let arrows: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (from, to) = (words.first()?, words.last()?);
            (words.len() > 2 && !line.contains('[')).then_some((*from, *to))
        })
        .collect();
    for (from, to) in &arrows {
        for end in [from, to] {
            assert!(
                declared.iter().any(|(id, _)| id == end),
                "{end} is not declared in\n{chart}"
            );
        }
    }
    for (id, _) in &declared {
        assert!(
            arrows.iter().any(|(from, to)| from == id || to == id),
            "{id} is connected to nothing in\n{chart}"
        );
    }

    // The re-partitioning: a sink of the first box writes the topic that a
    // source of the second reads.
    let repartition = id_of("#lt;application.id#gt;-per-value-repartition");
    let writers: Vec<&str> = arrows
        .iter()
        .filter(|(_, to)| *to == repartition)
        .map(|(f, _)| *f)
        .collect();
    let readers: Vec<&str> = arrows
        .iter()
        .filter(|(from, _)| *from == repartition)
        .map(|(_, t)| *t)
        .collect();
    assert!(
        writers.iter().all(|w| w.starts_with("n0_")) && !writers.is_empty(),
        "{chart}"
    );
    assert!(
        readers.iter().all(|r| r.starts_with("n1_")) && !readers.is_empty(),
        "{chart}"
    );
    // Inputs, the output and the stores have their shapes.
    assert!(id_of("[/\"users\"/]").starts_with('t'));
    assert!(id_of("[/\"out\"/]").starts_with('t'));
    assert!(id_of("[(\"prefs-store\")]").starts_with('s'));
    assert!(!chart.contains("<application.id>"), "unescaped in\n{chart}");
}
