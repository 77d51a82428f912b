//! The Processor API through the test driver: stores, punctuations on
//! stream time and on the wall clock, one processor per task, and the
//! mistakes `build` or the driver reports.

mod common;

use common::{backends, s};
use std::collections::BTreeMap;
use std::time::Duration;
use weir::process::{Context, Init, Processor, PunctuationType, Store, StoreSpec};
use weir::record::Record;
use weir::serde::{Utf8, I64};
use weir::testing::TestRecord;
use weir::{Consumed, Produced, StreamsBuilder, WeirError};

/// Remembers when each key was last seen (the record's timestamp) and,
/// on each punctuation of `kind`, forgets the keys not seen within `ttl`
/// of the punctuation's time, forwarding a tombstone for each.
struct Expiry {
    kind: PunctuationType,
    ttl: i64,
    seen: Option<Store<String, i64>>,
}

impl Processor<String, String> for Expiry {
    type KeyOut = String;
    type ValueOut = Option<String>;

    fn init(&mut self, init: &mut Init<'_, '_>) -> Result<(), WeirError> {
        self.seen = Some(init.store("seen")?);
        init.schedule(self.kind, Duration::from_secs(1));
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut Context<'_, '_, String, Option<String>>,
        record: Record<String, String>,
    ) -> Result<(), WeirError> {
        let seen = self.seen.as_ref().expect("initialized");
        seen.put(ctx, &record.key, &record.timestamp)?;
        ctx.forward(Record::new(record.key, Some(record.value), record.timestamp))
    }

    fn punctuate(
        &mut self,
        ctx: &mut Context<'_, '_, String, Option<String>>,
        _: PunctuationType,
        time: i64,
    ) -> Result<(), WeirError> {
        let seen = self.seen.as_ref().expect("initialized");
        for (key, last) in seen.all()? {
            if time - last > self.ttl {
                seen.delete(ctx, &key)?;
                ctx.forward(Record::new(key, None, time))?;
            }
        }
        Ok(())
    }
}

fn topology(kind: PunctuationType, ttl: i64) -> weir::Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Utf8))
        .process(
            move || Expiry { kind, ttl, seen: None },
            vec![StoreSpec::key_value("seen", Utf8, I64)],
        )
        .to("out", Produced::with(Utf8, weir::serde::Nullable(Utf8)));
    builder.build().unwrap()
}

#[test]
fn a_stream_time_punctuation_runs_when_records_move_the_stream_time() {
    for stores in backends() {
        let driver = common::driver(topology(PunctuationType::StreamTime, 1_500), stores, 1);
        let input = driver.input_topic("in", Utf8, Utf8);
        let out = driver.output_topic("out", Utf8, Utf8);
        let at = |key: &str, value: &str, time: i64| TestRecord::new(s(key), Some(s(value))).at(time);
        input.pipe_record(at("a", "1", 10_000)).unwrap();
        input.pipe_record(at("b", "1", 10_500)).unwrap();
        // Due at 11_000: nothing is older than 1.5 s yet.
        input.pipe_record(at("b", "2", 11_000)).unwrap();
        assert_eq!(out.read_key_values().unwrap().len(), 3);
        // Due at 12_000: `a` was last seen at 10_000.
        input.pipe_record(at("c", "1", 12_000)).unwrap();
        assert_eq!(
            out.read_key_values().unwrap(),
            [(s("c"), Some(s("1"))), (s("a"), None)],
            "{stores:?}"
        );
        // The wall clock moves no stream-time punctuation.
        driver.advance_wall_clock(Duration::from_secs(3600)).unwrap();
        assert!(out.read_key_values().unwrap().is_empty());
        // An old record does not move the stream time back.
        input.pipe_record(at("d", "1", 1_000)).unwrap();
        input.pipe_record(at("e", "1", 13_000)).unwrap();
        let said = out.read_key_values().unwrap();
        assert!(
            said.contains(&(s("b"), None)) && said.contains(&(s("d"), None)),
            "{said:?}"
        );
        let seen: BTreeMap<String, i64> = driver.store_contents("seen", Utf8, I64).unwrap().into_iter().collect();
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [(s("c"), 12_000), (s("e"), 13_000)]
        );
    }
}

#[test]
fn a_wall_clock_punctuation_runs_when_the_clock_moves_in_every_task() {
    for stores in backends() {
        let driver = common::driver(topology(PunctuationType::WallClockTime, 0), stores, 3);
        let input = driver.input_topic("in", Utf8, Utf8);
        let out = driver.output_topic("out", Utf8, Utf8);
        // Timestamps far in the past: every key is older than the clock.
        for key in ["a", "b", "c", "d", "e", "f"] {
            input.pipe_record(TestRecord::new(s(key), Some(s("x"))).at(0)).unwrap();
        }
        assert_eq!(out.read_key_values().unwrap().len(), 6);
        driver.advance_wall_clock(Duration::from_millis(999)).unwrap();
        assert!(out.read_key_values().unwrap().is_empty(), "not due yet");
        driver.advance_wall_clock(Duration::from_millis(1)).unwrap();
        let mut expired: Vec<_> = out.read_key_values().unwrap();
        expired.sort();
        let all: Vec<_> = ["a", "b", "c", "d", "e", "f"].map(|k| (s(k), None)).into();
        assert_eq!(expired, all, "{stores:?}");
        assert!(driver.store_contents("seen", Utf8, I64).unwrap().is_empty());
    }
}

#[test]
fn a_processors_store_must_be_declared_with_its_types() {
    struct Wrong;
    impl Processor<String, String> for Wrong {
        type KeyOut = String;
        type ValueOut = String;
        fn init(&mut self, init: &mut Init<'_, '_>) -> Result<(), WeirError> {
            init.store::<String, String>("seen").map(|_| ())
        }
        fn process(
            &mut self,
            _: &mut Context<'_, '_, String, String>,
            _: Record<String, String>,
        ) -> Result<(), WeirError> {
            Ok(())
        }
    }
    for (stores, expected) in [
        (
            vec![StoreSpec::key_value("seen", Utf8, I64)],
            "other key or value types",
        ),
        (vec![], "not declared"),
    ] {
        let builder = StreamsBuilder::new();
        builder
            .stream("in", Consumed::with(Utf8, Utf8))
            .process(|| Wrong, stores)
            .to("out", Produced::with(Utf8, Utf8));
        let error = match weir::testing::TopologyTestDriver::new(builder.build().unwrap()) {
            Ok(_) => panic!("a driver with a mistyped store"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{error}");
    }
}
