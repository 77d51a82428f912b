//! Windowed operations against references: random records of a few keys,
//! out of order, on two partitions (each task has its own stream time),
//! through time windows (tumbling and hopping, with and without grace),
//! sessions, sliding windows, `suppress(UntilWindowCloses)` and the three
//! stream-stream joins. Each reference is the operation's definition applied record by
//! record; what the topology wrote must say exactly what it says.

mod common;

use common::backends;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;
use weir::metrics::SkipReason;
use weir::partition::partition_for_key;
use weir::serde::{Nullable, Utf8, I64};
use weir::testing::{TestRecord, TestStores, TopologyTestDriver};
use weir::window::{
    JoinWindows, SessionWindows, SlidingWindows, StreamJoined, Suppressed, TimeWindows, Windowed, WindowedSerde,
};
use weir::{Consumed, Grouped, Materialized, Produced, Serdes, StreamsBuilder};

const PARTITIONS: i32 = 2;

/// A record: key, timestamp, value.
type Input = (u8, i64, i64);

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec((0u8..4, 0i64..300, 1i64..10), 1..60)
}

fn key(k: u8) -> String {
    format!("k{k}")
}

fn partition(key: &str) -> i32 {
    partition_for_key(key.as_bytes(), PARTITIONS)
}

fn ms(ms: i64) -> Duration {
    Duration::from_millis(ms as u64)
}

/// Stream time per partition, as each task's operation sees it.
#[derive(Default)]
struct Clocks(BTreeMap<i32, i64>);

impl Clocks {
    fn advance(&mut self, key: &str, timestamp: i64) -> i64 {
        let time = self.0.entry(partition(key)).or_insert(timestamp);
        *time = (*time).max(timestamp);
        *time
    }

    fn get(&self, key: &str) -> Option<i64> {
        self.0.get(&partition(key)).copied()
    }
}

fn pipe_all(driver: &TopologyTestDriver, topic: &str, inputs: &[Input]) {
    let input = driver.input_topic(topic, Utf8, I64);
    for &(k, at, value) in inputs {
        input.pipe_record(TestRecord::new(key(k), Some(value)).at(at)).unwrap();
    }
}

/// The final values a suppression said on `finals`; each window once.
fn finals(driver: &TopologyTestDriver) -> Result<BTreeMap<Windowed<String>, i64>, TestCaseError> {
    let mut said = BTreeMap::new();
    for (key, value) in driver
        .output_topic("finals", WindowedSerde::new(Utf8), Nullable(I64))
        .read_key_values()
        .unwrap()
    {
        prop_assert!(!said.contains_key(&key), "{:?} was said twice", key);
        said.insert(key, value.flatten().expect("a final value"));
    }
    Ok(said)
}

/// Time windows summing values, and their suppressed final values.
fn check_time_windows(
    stores: TestStores,
    merge: bool,
    windows: TimeWindows,
    (size, advance, grace): (i64, i64, i64),
    inputs: &[Input],
) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let sums = builder
        .stream("in", Consumed::with(Utf8, I64))
        .group_by_key(Grouped::with(Utf8, I64))
        .windowed_by(windows)
        .reduce(|a, b| a + b, Materialized::named("sums"));
    sums.to_stream()
        .to("sums", Produced::with(WindowedSerde::new(Utf8), Nullable(I64)));
    sums.suppress(
        Suppressed::UntilWindowCloses,
        Serdes::with(WindowedSerde::new(Utf8), I64),
    )
    .to_stream()
    .to("finals", Produced::with(WindowedSerde::new(Utf8), Nullable(I64)));
    let driver = common::merging(builder.build().unwrap(), stores, PARTITIONS, merge);
    pipe_all(&driver, "in", inputs);

    let mut clocks = Clocks::default();
    let mut suppress_clocks = Clocks::default();
    let mut sums: BTreeMap<Windowed<String>, i64> = BTreeMap::new();
    let mut late = 0;
    for &(k, at, value) in inputs {
        let key = key(k);
        let now = clocks.advance(&key, at);
        let starts = (0..=at).filter(|start| start % advance == 0 && at < start + size);
        let mut accepted = false;
        let mut was_late = false;
        for start in starts {
            if start + size + grace <= now {
                was_late = true;
            } else {
                accepted = true;
                *sums.entry(Windowed::new(key.clone(), start, start + size)).or_default() += value;
            }
        }
        late += u64::from(was_late);
        if accepted {
            suppress_clocks.advance(&key, at);
        }
    }

    let mut table = BTreeMap::new();
    for (key, value) in driver
        .output_topic("sums", WindowedSerde::new(Utf8), Nullable(I64))
        .read_key_values()
        .unwrap()
    {
        table.insert(key, value.flatten().expect("windows are never deleted"));
    }
    prop_assert_eq!(&table, &sums);
    prop_assert_eq!(driver.metrics().skipped_for(SkipReason::LateRecord), late);

    let said = finals(&driver)?;
    let closed: BTreeMap<_, _> = sums
        .into_iter()
        .filter(|(w, _)| {
            suppress_clocks
                .get(&w.key)
                .is_some_and(|now| w.window.end + grace <= now)
        })
        .collect();
    prop_assert_eq!(said, closed);
    Ok(())
}

/// Sessions counting records.
fn check_sessions(
    stores: TestStores,
    merge: bool,
    gap: i64,
    grace: i64,
    inputs: &[Input],
) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let sessions = builder
        .stream("in", Consumed::with(Utf8, I64))
        .group_by_key(Grouped::with(Utf8, I64))
        .windowed_by_session(SessionWindows::with_inactivity_gap(ms(gap)).grace(ms(grace)))
        .count(Materialized::named("sessions"));
    sessions
        .to_stream()
        .to("sessions", Produced::with(WindowedSerde::new(Utf8), Nullable(I64)));
    sessions
        .suppress(
            Suppressed::UntilWindowCloses,
            Serdes::with(WindowedSerde::new(Utf8), I64),
        )
        .to_stream()
        .to("finals", Produced::with(WindowedSerde::new(Utf8), Nullable(I64)));
    let driver = common::merging(builder.build().unwrap(), stores, PARTITIONS, merge);
    pipe_all(&driver, "in", inputs);

    let mut clocks = Clocks::default();
    let mut suppress_clocks = Clocks::default();
    let mut sessions: BTreeMap<Windowed<String>, i64> = BTreeMap::new();
    let mut late = 0;
    for &(k, at, _) in inputs {
        let key = key(k);
        let now = clocks.advance(&key, at);
        let merging: Vec<Windowed<String>> = sessions
            .keys()
            .filter(|s| s.key == key && s.window.end >= at - gap && s.window.start <= at + gap)
            .cloned()
            .collect();
        let start = merging.iter().map(|s| s.window.start).fold(at, i64::min);
        let end = merging.iter().map(|s| s.window.end).fold(at, i64::max);
        let closed = |end: i64| end + gap + grace < now;
        if closed(at) || merging.iter().any(|s| closed(s.window.end)) {
            late += 1;
            continue;
        }
        let count = 1 + merging.iter().map(|s| sessions.remove(s).unwrap()).sum::<i64>();
        sessions.insert(Windowed::new(key.clone(), start, end), count);
        suppress_clocks.advance(&key, at);
    }

    let mut table = BTreeMap::new();
    for (key, value) in driver
        .output_topic("sessions", WindowedSerde::new(Utf8), Nullable(I64))
        .read_key_values()
        .unwrap()
    {
        match value.flatten() {
            Some(count) => table.insert(key, count),
            None => table.remove(&key),
        };
    }
    prop_assert_eq!(&table, &sessions);
    prop_assert_eq!(driver.metrics().skipped_for(SkipReason::LateRecord), late);
    let said = finals(&driver)?;
    let closed: BTreeMap<_, _> = sessions
        .into_iter()
        .filter(|(s, _)| {
            suppress_clocks
                .get(&s.key)
                .is_some_and(|now| s.window.end + gap + grace < now)
        })
        .collect();
    prop_assert_eq!(said, closed);
    Ok(())
}

/// Sliding windows counting records. With a grace period longer than
/// the records' span, no window closes and the table must hold exactly
/// the sliding windows of all records: for each record, the window ending
/// at it and the one starting just after it when a later record falls in
/// it (early windows start at 0), each with the number of records in it.
/// With any grace, no window may say more than the records on time in it.
fn check_sliding(stores: TestStores, difference: i64, grace: i64, inputs: &[Input]) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, I64))
        .group_by_key(Grouped::with(Utf8, I64))
        .windowed_by_sliding(SlidingWindows::of(ms(difference)).grace(ms(grace)))
        .count(Materialized::named("sliding"))
        .to_stream()
        .to("sliding", Produced::with(WindowedSerde::new(Utf8), Nullable(I64)));
    let driver = common::driver(builder.build().unwrap(), stores, PARTITIONS);
    pipe_all(&driver, "in", inputs);

    let mut clocks = Clocks::default();
    let mut on_time: Vec<(String, i64)> = Vec::new();
    let mut late = 0;
    for &(k, at, _) in inputs {
        let key = key(k);
        let now = clocks.advance(&key, at);
        if at + difference + grace < now {
            late += 1;
        } else {
            on_time.push((key, at));
        }
    }
    let mut windows: BTreeMap<Windowed<String>, i64> = BTreeMap::new();
    for (key, at) in &on_time {
        let times = || on_time.iter().filter(|(k, _)| k == key).map(|(_, t)| *t);
        let mut starts = vec![(at - difference).max(0)];
        if times().any(|t| t > *at && t <= at + difference) {
            starts.push(at + 1);
        }
        for start in starts {
            let count = times().filter(|t| (start..=start + difference).contains(t)).count() as i64;
            windows.insert(Windowed::new(key.clone(), start, start + difference), count);
        }
    }
    let mut table = BTreeMap::new();
    for (key, value) in driver
        .output_topic("sliding", WindowedSerde::new(Utf8), Nullable(I64))
        .read_key_values()
        .unwrap()
    {
        table.insert(key, value.flatten().expect("windows are never deleted"));
    }
    prop_assert_eq!(driver.metrics().skipped_for(SkipReason::LateRecord), late);
    if grace > 300 + difference {
        prop_assert_eq!(table, windows);
    } else {
        for (window, count) in &table {
            let most = windows.get(window);
            prop_assert!(
                most.is_some_and(|most| count <= most),
                "{:?} said {}, at most {:?}",
                window,
                count,
                most
            );
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum JoinKind {
    Inner,
    Left,
    Outer,
}

/// A stream-stream join of records tagged with their index, so that every
/// result names the records it pairs.
fn check_join(
    stores: TestStores,
    kind: JoinKind,
    (before, after, grace): (i64, i64, i64),
    inputs: &[(bool, Input)],
) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let left = builder.stream("left", Consumed::with(Utf8, Utf8));
    let right = builder.stream("right", Consumed::with(Utf8, Utf8));
    let windows = JoinWindows::of(ms(before)).after(ms(after)).grace(ms(grace));
    let joined = StreamJoined::with(Utf8, Utf8, Utf8).named("j");
    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "_".into());
    let out = match kind {
        JoinKind::Inner => left.join_stream(&right, move |l, r| format!("{l}+{r}"), windows, joined),
        JoinKind::Left => left.left_join_stream(&right, move |l, r| format!("{l}+{}", show(r)), windows, joined),
        JoinKind::Outer => {
            left.outer_join_stream(&right, move |l, r| format!("{}+{}", show(l), show(r)), windows, joined)
        }
    };
    out.to("out", Produced::with(Utf8, Utf8));
    let driver = common::driver(builder.build().unwrap(), stores, PARTITIONS);
    let left_in = driver.input_topic("left", Utf8, Utf8);
    let right_in = driver.input_topic("right", Utf8, Utf8);

    // Each record that is not late, by side, with its key and timestamp.
    let mut clocks = Clocks::default();
    let mut accepted: Vec<(bool, String, i64, String)> = Vec::new();
    let mut late = 0;
    for (i, &(is_left, (k, at, _))) in inputs.iter().enumerate() {
        let key = key(k);
        let name = format!("{}{i}", if is_left { "l" } else { "r" });
        let input = if is_left { &left_in } else { &right_in };
        input
            .pipe_record(TestRecord::new(key.clone(), Some(name.clone())).at(at))
            .unwrap();
        let now = clocks.advance(&key, at);
        let reach_after = if is_left { after } else { before };
        if at + reach_after + grace < now {
            late += 1;
        } else {
            accepted.push((is_left, key, at, name));
        }
    }
    let mut expected = Vec::new();
    let lefts = accepted.iter().filter(|r| r.0);
    let rights: Vec<_> = accepted.iter().filter(|r| !r.0).collect();
    let pairs = |l: &(bool, String, i64, String), r: &(bool, String, i64, String)| {
        l.1 == r.1 && r.2 >= l.2 - before && r.2 <= l.2 + after
    };
    for l in lefts.clone() {
        for r in &rights {
            if pairs(l, r) {
                expected.push((l.1.clone(), format!("{}+{}", l.3, r.3)));
            }
        }
    }
    // A record alone is said once no record can join it any more.
    let done = |record: &(bool, String, i64, String)| {
        clocks
            .get(&record.1)
            .is_some_and(|now| record.2 + before + after + grace < now)
    };
    if kind != JoinKind::Inner {
        for l in lefts.clone().filter(|l| done(l) && !rights.iter().any(|r| pairs(l, r))) {
            expected.push((l.1.clone(), format!("{}+_", l.3)));
        }
    }
    if kind == JoinKind::Outer {
        for r in rights.iter().filter(|r| done(r) && !lefts.clone().any(|l| pairs(l, r))) {
            expected.push((r.1.clone(), format!("_+{}", r.3)));
        }
    }
    let mut said: Vec<(String, String)> = driver
        .output_topic("out", Utf8, Utf8)
        .read_key_values()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.expect("a joined value")))
        .collect();
    said.sort();
    expected.sort();
    prop_assert_eq!(said, expected);
    prop_assert_eq!(driver.metrics().skipped_for(SkipReason::LateRecord), late);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn time_windows_and_their_final_values_are_as_the_reference_says(
        inputs in inputs(),
        advance in prop_oneof![Just(20i64), Just(5), Just(7)],
        grace in prop_oneof![Just(0i64), Just(10), Just(50)],
    ) {
        let size = 20;
        let windows = TimeWindows::of(ms(size)).advance_by(ms(advance)).grace(ms(grace));
        for stores in backends() {
            for merge in [false, true] {
                check_time_windows(stores, merge, windows, (size, advance, grace), &inputs)?;
            }
        }
    }

    #[test]
    fn sessions_are_as_the_reference_says(
        inputs in inputs(),
        gap in 1i64..40,
        grace in prop_oneof![Just(0i64), Just(20), Just(100)],
    ) {
        for stores in backends() {
            for merge in [false, true] {
                check_sessions(stores, merge, gap, grace, &inputs)?;
            }
        }
    }

    #[test]
    fn sliding_windows_are_as_the_reference_says(
        inputs in inputs(),
        difference in 1i64..40,
        grace in prop_oneof![Just(0i64), Just(30), Just(1_000)],
    ) {
        for stores in backends() {
            check_sliding(stores, difference, grace, &inputs)?;
        }
    }

    #[test]
    fn stream_joins_are_as_the_reference_says(
        inputs in prop::collection::vec((any::<bool>(), (0u8..3, 0i64..300, 0i64..1)), 1..60),
        before in 0i64..30,
        after in 0i64..30,
        grace in prop_oneof![Just(0i64), Just(15), Just(80)],
    ) {
        for stores in backends() {
            for kind in [JoinKind::Inner, JoinKind::Left, JoinKind::Outer] {
                check_join(stores, kind, (before, after, grace), &inputs)?;
            }
        }
    }
}
