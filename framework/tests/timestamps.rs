//! Records' times taken from their contents (`Consumed::timestamp`,
//! `Cdc::time`): what outputs carry, what stream time follows, what a
//! table's TTL counts from.

mod common;

use common::s;
use std::time::Duration;
use weir::cdc::{Cdc, CdcTime, ChangeEvent};
use weir::process::{Context, Processor};
use weir::record::Record;
use weir::serde::{Bytes, Json, Utf8, I64};
use weir::testing::{TestRecord, TopologyTestDriver};
use weir::{Consumed, Produced, StreamsBuilder, WeirError};

/// Forwards the task's stream time as each record's value.
struct StreamTime;

impl Processor<String, i64> for StreamTime {
    type KeyOut = String;
    type ValueOut = i64;
    fn process(
        &mut self,
        ctx: &mut Context<'_, '_, String, i64>,
        record: Record<String, i64>,
    ) -> Result<(), WeirError> {
        let now = ctx.stream_time().unwrap_or(-1);
        ctx.forward(Record::new(record.key, now, record.timestamp))
    }
}

#[test]
fn a_records_time_from_its_value_is_what_outputs_and_stream_time_follow() {
    let builder = StreamsBuilder::new();
    let events = builder.stream("events", Consumed::with(Utf8, I64).timestamp(|_, at, _| *at));
    events.to("timed", Produced::with(Utf8, I64));
    events
        .process(|| StreamTime, vec![])
        .to("stream-times", Produced::with(Utf8, I64));
    let driver = common::driver(builder.build().unwrap(), weir::testing::TestStores::InMemory, 1);
    let input = driver.input_topic("events", Utf8, I64);
    // Arrival timestamps say nothing; the values are the times.
    for (key, at) in [("a", 5_000), ("b", 9_000), ("c", 7_000)] {
        input.pipe_record(TestRecord::new(s(key), Some(at)).at(1)).unwrap();
    }
    let timed: Vec<i64> = driver
        .output_topic("timed", Utf8, I64)
        .read_records()
        .unwrap()
        .iter()
        .map(|r| r.timestamp)
        .collect();
    assert_eq!(timed, [5_000, 9_000, 7_000]);
    // Stream time as each record is processed, the record counted: it
    // never moves back.
    let stream_times: Vec<Option<i64>> = driver
        .output_topic("stream-times", Utf8, I64)
        .read_key_values()
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(stream_times, [Some(5_000), Some(9_000), Some(9_000)]);
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    user_id: i64,
    email: String,
}

fn user_event(source_ts_ms: Option<i64>) -> Vec<u8> {
    let source = match source_ts_ms {
        Some(ts) => format!(r#"{{"ts_ms":{ts},"snapshot":"false"}}"#),
        None => r#"{"snapshot":"false"}"#.to_string(),
    };
    format!(r#"{{"op":"c","after":{{"user_id":1,"email":"ada@example.com"}},"source":{source},"ts_ms":2000}}"#)
        .into_bytes()
}

#[test]
fn a_cdc_table_takes_the_time_it_is_told_to_and_its_ttl_counts_from_it() {
    for (time, source_ts_ms, expected) in [
        (CdcTime::Record, Some(1_000), 7),
        (CdcTime::Connector, Some(1_000), 2_000),
        (CdcTime::Database, Some(1_000), 1_000),
        // An event without the chosen time keeps its record's.
        (CdcTime::Database, None, 7),
    ] {
        let builder = StreamsBuilder::new();
        builder
            .cdc_table::<i64, User>("mysql.app.users", Cdc::json().time(time))
            .to("users", Produced::with(Json::new(), Json::new()));
        let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
        driver
            .input_topic("mysql.app.users", Bytes, Bytes)
            .pipe_record(TestRecord::new(br#"{"user_id":1}"#.to_vec(), Some(user_event(source_ts_ms))).at(7))
            .unwrap();
        let out = driver.output_topic("users", Json::<i64>::new(), Json::<User>::new());
        let times: Vec<i64> = out.read_records().unwrap().iter().map(|r| r.timestamp).collect();
        assert_eq!(times, [expected], "{time:?}, source.ts_ms {source_ts_ms:?}");
    }

    // The TTL counts from the database's time: a change made an hour ago
    // with a TTL of a minute leaves at the first check.
    let builder = StreamsBuilder::new();
    builder
        .cdc_table::<i64, User>(
            "mysql.app.users",
            Cdc::json().time(CdcTime::Database).ttl(Duration::from_secs(60)),
        )
        .to("users", Produced::with(Json::new(), Json::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let an_hour_ago = driver.wall_clock_ms() - 3_600_000;
    let now = driver.wall_clock_ms();
    driver
        .input_topic("mysql.app.users", Bytes, Bytes)
        .pipe_record(TestRecord::new(br#"{"user_id":1}"#.to_vec(), Some(user_event(Some(an_hour_ago)))).at(now))
        .unwrap();
    driver.advance_wall_clock(Duration::from_secs(6)).unwrap();
    let out = driver.output_topic("users", Json::<i64>::new(), Json::<User>::new());
    let changes: Vec<bool> = out
        .read_key_values()
        .unwrap()
        .iter()
        .map(|(_, v)| v.is_some())
        .collect();
    assert_eq!(changes, [true, false]);
}

#[test]
fn a_cdc_stream_carries_the_connectors_time() {
    let builder = StreamsBuilder::new();
    builder
        .cdc_stream::<i64, User>("mysql.app.users", Cdc::json().time(CdcTime::Connector))
        .map_values(|event: ChangeEvent<User>| event.after)
        .to("users", Produced::with(Json::new(), Json::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    driver
        .input_topic("mysql.app.users", Bytes, Bytes)
        .pipe_record(TestRecord::new(br#"{"user_id":1}"#.to_vec(), Some(user_event(Some(1_000)))).at(7))
        .unwrap();
    let out = driver.output_topic("users", Json::<Option<i64>>::new(), Json::<Option<User>>::new());
    let times: Vec<i64> = out.read_records().unwrap().iter().map(|r| r.timestamp).collect();
    assert_eq!(times, [2_000]);
}
