//! A table's TTL against a reference: random writes (with timestamps up to
//! twice the TTL old), deletes and moves of the driver's wall clock; after
//! each step the compacted output must hold exactly the rows the reference
//! keeps, which expires rows on the same schedule of checks.

mod common;

use common::backends;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use weir::serde::Utf8;
use weir::testing::{TestRecord, TestStores};
use weir::{Consumed, Produced, StreamsBuilder};

const TTL_MS: i64 = 10_000;
/// How often the table checks: a tenth of the TTL.
const CHECK_MS: i64 = 1_000;

#[derive(Debug, Clone)]
enum Step {
    /// A row written with a timestamp `age_ms` before the clock.
    Put {
        key: u8,
        value: u8,
        age_ms: i64,
    },
    Delete {
        key: u8,
    },
    Advance {
        ms: i64,
    },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u8..6, 0u8..10, 0i64..2 * TTL_MS).prop_map(|(key, value, age_ms)| Step::Put { key, value, age_ms }),
            1 => (0u8..6).prop_map(|key| Step::Delete { key }),
            3 => (0i64..3 * CHECK_MS).prop_map(|ms| Step::Advance { ms }),
        ],
        1..50,
    )
}

/// The rows and when each was written, and the table's schedule of checks.
struct Reference {
    rows: BTreeMap<String, (String, i64)>,
    next_check: i64,
}

impl Reference {
    /// The clock moved to `now`: a check due by then runs once, at `now`.
    fn advance(&mut self, now: i64) {
        if now < self.next_check {
            return;
        }
        self.rows.retain(|_, (_, written)| *written + TTL_MS > now);
        self.next_check = now - (now - self.next_check) % CHECK_MS + CHECK_MS;
    }
}

fn check(stores: TestStores, merge: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    builder
        .table(
            "rows",
            Consumed::with(Utf8, Utf8).ttl(Duration::from_millis(TTL_MS as u64)),
        )
        .to("out", Produced::with(Utf8, Utf8));
    let driver = common::merging(builder.build().unwrap(), stores, 2, merge);
    let input = driver.input_topic("rows", Utf8, Utf8);
    let output = driver.output_topic("out", Utf8, Utf8);
    let start = driver.wall_clock_ms();
    let mut reference = Reference {
        rows: BTreeMap::new(),
        next_check: start + CHECK_MS,
    };
    let mut view: HashMap<String, String> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let now = driver.wall_clock_ms();
        match *step {
            Step::Put { key, value, age_ms } => {
                let (key, value) = (format!("k{key}"), value.to_string());
                input
                    .pipe_record(TestRecord::new(key.clone(), Some(value.clone())).at(now - age_ms))
                    .unwrap();
                reference.rows.insert(key, (value, now - age_ms));
            }
            Step::Delete { key } => {
                let key = format!("k{key}");
                input.pipe_tombstone(key.clone()).unwrap();
                reference.rows.remove(&key);
            }
            Step::Advance { ms } => {
                driver.advance_wall_clock(Duration::from_millis(ms as u64)).unwrap();
                reference.advance(now + ms);
            }
        }
        if merge {
            driver.commit().unwrap();
        }
        for (key, value) in output.read_key_values().unwrap() {
            match value {
                Some(value) => view.insert(key, value),
                None => view.remove(&key),
            };
        }
        let expected: HashMap<String, String> = reference
            .rows
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        prop_assert_eq!(&view, &expected, "after step {} ({:?})", i, step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_tables_rows_expire_as_the_reference_says(steps in steps()) {
        for stores in backends() {
            for merge in [false, true] {
                check(stores, merge, &steps)?;
            }
        }
    }
}
