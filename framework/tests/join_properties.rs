//! Property tests: random upserts and deletes on both inputs, spread over
//! several partitions, against a reference computed from the inputs' state.
//! After every input record, the compacted view of the output (last value
//! per key) must equal the reference; so must the final one.
//!
//! Each runs twice: with every change passed on at once, and with tables'
//! changes merged between commits at random points (the view is compared
//! after each commit).

mod common;

use common::backends;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use weir::serde::{Json, Utf8, I64};
use weir::testing::{TestInputTopic, TestStores, TopologyTestDriver};
use weir::{Consumed, Grouped, KTable, Materialized, Produced, StreamsBuilder};

const PARTITIONS: i32 = 3;

/// One input record: on the left (or right) topic, `value: None` deletes.
#[derive(Debug, Clone)]
struct Update {
    left: bool,
    key: u8,
    value: Option<u8>,
    /// Whether the driver commits after it, when it does not after each record.
    commit: bool,
}

fn updates() -> impl Strategy<Value = Vec<Update>> {
    prop::collection::vec(
        (
            any::<bool>(),
            0u8..8,
            prop::option::weighted(0.75, 0u8..4),
            prop::bool::weighted(0.25),
        )
            .prop_map(|(left, key, value, commit)| Update {
                left,
                key,
                value,
                commit,
            }),
        1..60,
    )
}

/// Whether the view is to be compared after `updates[i]`: after every
/// update when every change is passed on at once, else after the updates
/// the driver commits after (and the last), committing first.
fn committed_after(driver: &TopologyTestDriver, merge: bool, updates: &[Update], i: usize) -> bool {
    if !merge {
        return true;
    }
    if !updates[i].commit && i + 1 < updates.len() {
        return false;
    }
    driver.commit().unwrap();
    true
}

#[derive(Debug, Clone, Copy)]
enum JoinKind {
    Inner,
    Left,
    Outer,
}

type Joined = (Option<u8>, Option<u8>);

/// What the joined table holds for `key`, from the inputs' current rows.
fn reference_row(kind: JoinKind, left: Option<u8>, right: Option<u8>) -> Option<Joined> {
    match kind {
        JoinKind::Inner => (left.is_some() && right.is_some()).then_some((left, right)),
        JoinKind::Left => left.is_some().then_some((left, right)),
        JoinKind::Outer => (left.is_some() || right.is_some()).then_some((left, right)),
    }
}

/// `left` ⋈ `right` with the join kind; the joined value shows both sides.
fn join_tables(builder: &StreamsBuilder, kind: JoinKind) -> KTable<String, Joined> {
    let left = builder.table("left", Consumed::with(Utf8, Json::<u8>::new()));
    let right = builder.table("right", Consumed::with(Utf8, Json::<u8>::new()));
    match kind {
        JoinKind::Inner => left.join(&right, |l, r| (Some(*l), Some(*r))),
        JoinKind::Left => left.left_join(&right, |l, r| (Some(*l), r.copied())),
        JoinKind::Outer => left.outer_join(&right, |l, r| (l.copied(), r.copied())),
    }
}

/// Pipes an update into its side's topic and applies it to the reference state.
fn pipe_update(inputs: &[TestInputTopic<String, u8>; 2], state: &mut [BTreeMap<String, u8>; 2], update: &Update) {
    let side = usize::from(!update.left);
    let key = format!("k{}", update.key);
    match update.value {
        Some(v) => {
            inputs[side].pipe(key.clone(), v).unwrap();
            state[side].insert(key, v);
        }
        None => {
            inputs[side].pipe_tombstone(key.clone()).unwrap();
            state[side].remove(&key);
        }
    }
}

fn check_table_join(kind: JoinKind, stores: TestStores, merge: bool, updates: &[Update]) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let joined = join_tables(&builder, kind);
    joined.to("out", Produced::with(Utf8, Json::new()));
    let driver = common::merging(builder.build().unwrap(), stores, PARTITIONS, merge);
    let inputs = [
        driver.input_topic("left", Utf8, Json::<u8>::new()),
        driver.input_topic("right", Utf8, Json::<u8>::new()),
    ];
    let mut state: [BTreeMap<String, u8>; 2] = Default::default();
    let output = driver.output_topic("out", Utf8, Json::<Joined>::new());

    let mut view: HashMap<String, Joined> = HashMap::new();
    for (i, update) in updates.iter().enumerate() {
        pipe_update(&inputs, &mut state, update);
        if !committed_after(&driver, merge, updates, i) {
            continue;
        }
        apply(&mut view, output.read_key_values().unwrap());
        let expected: HashMap<String, Joined> = state[0]
            .keys()
            .chain(state[1].keys())
            .filter_map(|k| {
                Some((
                    k.clone(),
                    reference_row(kind, state[0].get(k).copied(), state[1].get(k).copied())?,
                ))
            })
            .collect();
        prop_assert_eq!(&view, &expected, "after {:?}", update);
    }
    Ok(())
}

/// One stream-table input: a table upsert/delete, or a stream event.
#[derive(Debug, Clone)]
enum Event {
    Table { key: u8, value: Option<u8> },
    Stream { key: u8, value: u8 },
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            (0u8..6, prop::option::weighted(0.7, 0u8..10)).prop_map(|(key, value)| Event::Table { key, value }),
            (0u8..6, 0u8..10).prop_map(|(key, value)| Event::Stream { key, value }),
        ],
        1..60,
    )
}

/// Stream-table joins emit events, so the whole output sequence is checked:
/// each stream record joined with the table row current at its arrival,
/// even while the row's change is deferred (`merge`: the driver never
/// commits).
fn check_stream_table_join(
    left_join: bool,
    stores: TestStores,
    merge: bool,
    events: &[Event],
) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let table = builder.table("table", Consumed::with(Utf8, Json::<u8>::new()));
    let stream = builder.stream("stream", Consumed::with(Utf8, Json::<u8>::new()));
    let joined = if left_join {
        stream.left_join(&table, |v, row| (*v, row.copied()))
    } else {
        stream.join(&table, |v, row| (*v, Some(*row)))
    };
    joined.to("out", Produced::with(Utf8, Json::new()));
    let driver = common::merging(builder.build().unwrap(), stores, PARTITIONS, merge);
    let table_in = driver.input_topic("table", Utf8, Json::<u8>::new());
    let stream_in = driver.input_topic("stream", Utf8, Json::<u8>::new());

    let mut rows: BTreeMap<String, u8> = BTreeMap::new();
    let mut expected = Vec::new();
    for event in events {
        match *event {
            Event::Table { key, value } => {
                let key = format!("k{key}");
                match value {
                    Some(v) => {
                        table_in.pipe(key.clone(), v).unwrap();
                        rows.insert(key, v);
                    }
                    None => {
                        table_in.pipe_tombstone(key.clone()).unwrap();
                        rows.remove(&key);
                    }
                }
            }
            Event::Stream { key, value } => {
                let key = format!("k{key}");
                stream_in.pipe(key.clone(), value).unwrap();
                let row = rows.get(&key).copied();
                if left_join || row.is_some() {
                    expected.push((key, Some((value, row))));
                }
            }
        }
    }
    let actual = driver
        .output_topic("out", Utf8, Json::<(u8, Option<u8>)>::new())
        .read_key_values()
        .unwrap();
    prop_assert_eq!(actual, expected);
    Ok(())
}

/// Rows `key → (group, amount)` grouped by `group`: the count and the sum of
/// each group must follow every upsert, move and delete.
fn check_table_aggregation(stores: TestStores, merge: bool, updates: &[Update]) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let grouped = builder.table("rows", Consumed::with(Utf8, Json::<u8>::new())).group_by(
        |_, v| (format!("g{}", v % 3), i64::from(*v)),
        Grouped::with(Utf8, Json::new()),
    );
    grouped
        .count(Materialized::named("counts"))
        .to("counts", Produced::with(Utf8, I64));
    grouped
        .aggregate(
            || 0i64,
            |_, v, sum| sum + v,
            |_, v, sum| sum - v,
            Materialized::with(Json::new()),
        )
        .to("sums", Produced::with(Utf8, Json::new()));
    let driver = common::merging(builder.build().unwrap(), stores, PARTITIONS, merge);
    let input = driver.input_topic("rows", Utf8, Json::<u8>::new());
    let counts_out = driver.output_topic("counts", Utf8, I64);
    let sums_out = driver.output_topic("sums", Utf8, Json::<i64>::new());

    let mut rows: BTreeMap<String, u8> = BTreeMap::new();
    let (mut counts, mut sums) = (HashMap::new(), HashMap::new());
    for (i, update) in updates.iter().enumerate() {
        // Use both sides' keys as one key space: more rows per group.
        let key = format!("k{}{}", update.key, u8::from(update.left));
        match update.value {
            Some(v) => {
                input.pipe(key.clone(), v).unwrap();
                rows.insert(key, v);
            }
            None => {
                input.pipe_tombstone(key.clone()).unwrap();
                rows.remove(&key);
            }
        }
        if !committed_after(&driver, merge, updates, i) {
            continue;
        }
        apply(&mut counts, counts_out.read_key_values().unwrap());
        apply(&mut sums, sums_out.read_key_values().unwrap());
        let (mut expected_counts, mut expected_sums) = (HashMap::new(), HashMap::new());
        for v in rows.values() {
            let group = format!("g{}", v % 3);
            *expected_counts.entry(group.clone()).or_insert(0i64) += 1;
            *expected_sums.entry(group).or_insert(0i64) += i64::from(*v);
        }
        prop_assert_eq!(&counts, &expected_counts, "counts after {:?}", update);
        prop_assert_eq!(&sums, &expected_sums, "sums after {:?}", update);
    }
    Ok(())
}

/// A table aggregation over a join result: the join's old values must be
/// right too, or the subtraction of a replaced joined row goes wrong.
fn check_aggregation_over_join(
    kind: JoinKind,
    stores: TestStores,
    merge: bool,
    updates: &[Update],
) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let joined = join_tables(&builder, kind);
    joined
        .group_by(
            |_, row: &Joined| (format!("{:?}", row.1), i64::from(row.0.unwrap_or(0))),
            Grouped::with(Utf8, Json::new()),
        )
        .aggregate(
            || 0i64,
            |_, v, sum| sum + v,
            |_, v, sum| sum - v,
            Materialized::with(Json::new()),
        )
        .to("sums", Produced::with(Utf8, Json::new()));
    let driver = common::merging(builder.build().unwrap(), stores, PARTITIONS, merge);
    let inputs = [
        driver.input_topic("left", Utf8, Json::<u8>::new()),
        driver.input_topic("right", Utf8, Json::<u8>::new()),
    ];
    let mut state: [BTreeMap<String, u8>; 2] = Default::default();
    let output = driver.output_topic("sums", Utf8, Json::<i64>::new());
    let mut view = HashMap::new();
    for (i, update) in updates.iter().enumerate() {
        pipe_update(&inputs, &mut state, update);
        if !committed_after(&driver, merge, updates, i) {
            continue;
        }
        apply(&mut view, output.read_key_values().unwrap());
        let mut expected = HashMap::new();
        for k in state[0]
            .keys()
            .chain(state[1].keys().filter(|k| !state[0].contains_key(*k)))
        {
            if let Some(row) = reference_row(kind, state[0].get(k).copied(), state[1].get(k).copied()) {
                *expected.entry(format!("{:?}", row.1)).or_insert(0i64) += i64::from(row.0.unwrap_or(0));
            }
        }
        prop_assert_eq!(&view, &expected, "after {:?}", update);
    }
    Ok(())
}

/// Each store backend, passing every change on at once and merging them
/// between commits.
fn runs() -> impl Iterator<Item = (TestStores, bool)> {
    backends()
        .into_iter()
        .flat_map(|stores| [(stores, false), (stores, true)])
}

fn apply<V>(view: &mut HashMap<String, V>, updates: Vec<(String, Option<V>)>) {
    for (k, v) in updates {
        match v {
            Some(v) => view.insert(k, v),
            None => view.remove(&k),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn table_inner_join_matches_the_reference(updates in updates()) {
        for (stores, merge) in runs() {
            check_table_join(JoinKind::Inner, stores, merge, &updates)?;
        }
    }

    #[test]
    fn table_left_join_matches_the_reference(updates in updates()) {
        for (stores, merge) in runs() {
            check_table_join(JoinKind::Left, stores, merge, &updates)?;
        }
    }

    #[test]
    fn table_outer_join_matches_the_reference(updates in updates()) {
        for (stores, merge) in runs() {
            check_table_join(JoinKind::Outer, stores, merge, &updates)?;
        }
    }

    #[test]
    fn stream_table_inner_join_matches_the_reference(events in events()) {
        for (stores, merge) in runs() {
            check_stream_table_join(false, stores, merge, &events)?;
        }
    }

    #[test]
    fn stream_table_left_join_matches_the_reference(events in events()) {
        for (stores, merge) in runs() {
            check_stream_table_join(true, stores, merge, &events)?;
        }
    }

    #[test]
    fn aggregations_over_each_join_kind_match_the_reference(updates in updates()) {
        for (stores, merge) in runs() {
            for kind in [JoinKind::Inner, JoinKind::Left, JoinKind::Outer] {
                check_aggregation_over_join(kind, stores, merge, &updates)?;
            }
        }
    }

    #[test]
    fn table_aggregation_matches_the_reference(updates in updates()) {
        for (stores, merge) in runs() {
            check_table_aggregation(stores, merge, &updates)?;
        }
    }
}
