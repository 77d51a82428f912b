//! Tables whose rows expire (`Consumed::ttl`, `Cdc::ttl`), through the
//! test driver, on both store backends, with changes passed on at once
//! and merged between commits.

mod common;

use common::{backends, s};
use std::collections::BTreeMap;
use std::time::Duration;
use weir::serde::{Bytes, Json, Utf8};
use weir::testing::{TestRecord, TopologyTestDriver};
use weir::{Consumed, Produced, StreamsBuilder};

const TTL: Duration = Duration::from_secs(60);

/// sessions (with a TTL) ⋈ users → out; the sessions table also to `sessions-out`.
fn driver(stores: weir::testing::TestStores, merge: bool) -> TopologyTestDriver {
    let builder = StreamsBuilder::new();
    let sessions = builder.table("sessions", Consumed::with(Utf8, Utf8).store("sessions").ttl(TTL));
    let users = builder.table("users", Consumed::with(Utf8, Utf8));
    sessions.to("sessions-out", Produced::with(Utf8, Utf8));
    sessions
        .join(&users, |session, user| format!("{session}/{user}"))
        .to("out", Produced::with(Utf8, Utf8));
    common::merging(builder.build().unwrap(), stores, 2, merge)
}

#[test]
fn rows_not_written_for_the_ttl_leave_with_a_tombstone() {
    for stores in backends() {
        for merge in [false, true] {
            let driver = driver(stores, merge);
            let t0 = driver.wall_clock_ms();
            let sessions = driver.input_topic("sessions", Utf8, Utf8);
            let users = driver.input_topic("users", Utf8, Utf8);
            let session = |key: &str, value: Option<&str>, at: i64| {
                sessions
                    .pipe_record(TestRecord::new(s(key), value.map(s)).at(at))
                    .unwrap()
            };
            users.pipe(s("a"), s("ada")).unwrap();
            users.pipe(s("b"), s("bob")).unwrap();
            session("a", Some("s1"), t0);
            session("b", Some("s1"), t0 + 20_000);
            session("c", Some("s1"), t0);
            session("c", None, t0 + 1_000); // deleted before its time is up
            let out = driver.output_topic("sessions-out", Utf8, Utf8);
            let joined = driver.output_topic("out", Utf8, Utf8);
            let step = |by: u64| {
                driver.advance_wall_clock(Duration::from_secs(by)).unwrap();
                driver.commit().unwrap();
                let mut said = out.read_key_values().unwrap();
                said.sort();
                said
            };
            let what = format!("{stores:?}, merge {merge}");
            let mut first = step(30);
            first.retain(|(k, _)| k != "c");
            assert_eq!(first, [(s("a"), Some(s("s1"))), (s("b"), Some(s("s1")))], "{what}");
            // a is written again at 30 s: its time starts over.
            session("a", Some("s2"), t0 + 30_000);
            assert_eq!(step(1), [(s("a"), Some(s("s2")))], "{what}");
            assert!(step(40).is_empty(), "nothing is due before 80 s: {what}");
            // At 81 s: b (written at 20 s) is due, a (at 30 s) is not.
            assert_eq!(step(10), [(s("b"), None)], "{what}");
            assert_eq!(step(10), [(s("a"), None)], "{what}");
            assert!(step(600).is_empty(), "every row left once: {what}");
            // The join saw them leave.
            let mut view = BTreeMap::new();
            for (key, value) in joined.read_key_values().unwrap() {
                match value {
                    Some(value) => view.insert(key, value),
                    None => view.remove(&key),
                };
            }
            assert!(view.is_empty(), "{view:?} ({what})");
            assert!(
                driver.store_contents("sessions", Utf8, Utf8).unwrap().is_empty(),
                "{what}"
            );
            assert!(
                driver.store_contents("sessions-ttl", Bytes, Bytes).unwrap().is_empty(),
                "the index forgets what left: {what}"
            );
        }
    }
}

#[test]
fn a_cdc_tables_rows_expire_too() {
    #[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Cart {
        cart_id: i64,
        items: u32,
    }
    let builder = StreamsBuilder::new();
    builder
        .cdc_table::<i64, Cart>("mysql.shop.carts", weir::cdc::Cdc::json().store("carts").ttl(TTL))
        .to("carts", Produced::with(Json::new(), Json::new()));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let now = driver.wall_clock_ms();
    let carts = driver.input_topic("mysql.shop.carts", Bytes, Bytes);
    let event = br#"{"op":"c","before":null,"after":{"cart_id":7,"items":2},"source":{"snapshot":"false"}}"#;
    carts
        .pipe_record(TestRecord::new(br#"{"cart_id":7}"#.to_vec(), Some(event.to_vec())).at(now))
        .unwrap();
    driver.advance_wall_clock(TTL + Duration::from_secs(1)).unwrap();
    let out = driver.output_topic("carts", Json::<i64>::new(), Json::<Cart>::new());
    assert_eq!(
        out.read_key_values().unwrap(),
        [(7, Some(Cart { cart_id: 7, items: 2 })), (7, None)]
    );
}
