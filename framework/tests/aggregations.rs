//! Grouping and aggregation of streams and tables, on both store backends.

mod common;

use common::{backends, s};
use std::collections::HashMap;
use weir::serde::{Json, Utf8, I64};
use weir::{Consumed, Grouped, Materialized, Produced, StreamsBuilder};

#[test]
fn stream_count_reduce_and_aggregate_by_key() {
    for stores in backends() {
        let builder = StreamsBuilder::new();
        let grouped = builder
            .stream("in", Consumed::with(Utf8, Json::<i64>::new()))
            .group_by_key(Grouped::with(Utf8, Json::new()));
        grouped
            .count(Materialized::named("counts"))
            .to("counts", Produced::with(Utf8, I64));
        grouped
            .reduce(|a, b| a.max(b), Materialized::named("max"))
            .to("max", Produced::with(Utf8, Json::new()));
        grouped
            .aggregate(
                Vec::new,
                |_, v, mut seen: Vec<i64>| {
                    seen.push(v);
                    seen
                },
                Materialized::with(Json::new()).with_name("all"),
            )
            .to("all", Produced::with(Utf8, Json::new()));
        let topology = builder.build().unwrap();
        assert_eq!(topology.subtopologies().len(), 1, "no repartition without a key change");
        let driver = common::driver(topology, stores, 2);
        let input = driver.input_topic("in", Utf8, Json::<i64>::new());
        for (k, v) in [("a", 3), ("b", 1), ("a", 7), ("a", 5)] {
            input.pipe(s(k), v).unwrap();
        }
        let counts = driver.output_topic("counts", Utf8, I64).read_key_values().unwrap();
        assert_eq!(
            counts,
            vec![
                (s("a"), Some(1)),
                (s("b"), Some(1)),
                (s("a"), Some(2)),
                (s("a"), Some(3))
            ]
        );
        let max = driver
            .output_topic("max", Utf8, Json::<i64>::new())
            .read_key_values_to_map()
            .unwrap();
        assert_eq!(max, HashMap::from([(s("a"), 7), (s("b"), 1)]));
        let all = driver
            .output_topic("all", Utf8, Json::<Vec<i64>>::new())
            .read_key_values_to_map()
            .unwrap();
        assert_eq!(all, HashMap::from([(s("a"), vec![3, 7, 5]), (s("b"), vec![1])]));
        assert_eq!(
            driver.store_contents("counts", Utf8, I64).unwrap(),
            HashMap::from([(s("a"), 3), (s("b"), 1)])
        );
    }
}

#[test]
fn stream_group_by_a_new_key_goes_through_a_repartition_topic() {
    for stores in backends() {
        let builder = StreamsBuilder::new();
        builder
            .stream("words", Consumed::with(Utf8, Utf8))
            .group_by(|_, word| word.to_lowercase(), Grouped::with(Utf8, Utf8))
            .count(Materialized::named("word-counts"))
            .to("counts", Produced::with(Utf8, I64));
        let topology = builder.build().unwrap();
        assert_eq!(topology.subtopologies().len(), 2);
        let driver = common::driver(topology, stores, 4);
        let input = driver.input_topic("words", Utf8, Utf8);
        for (i, word) in ["Kafka", "weir", "KAFKA", "kafka", "Weir"].iter().enumerate() {
            // Keys spread the words over every input partition.
            input.pipe(format!("line-{i}"), s(word)).unwrap();
        }
        let shipped = driver
            .output_topic(&driver.repartition_topic("word-counts"), Utf8, Utf8)
            .read_records()
            .unwrap();
        assert_eq!(shipped.len(), 5);
        assert!(shipped
            .iter()
            .all(|r| r.partition == Some(weir::partition::partition_for_key(r.key.as_bytes(), 4))));
        let counts = driver
            .output_topic("counts", Utf8, I64)
            .read_key_values_to_map()
            .unwrap();
        assert_eq!(counts, HashMap::from([(s("kafka"), 3), (s("weir"), 2)]));
    }
}

#[test]
fn group_by_key_after_a_key_change_repartitions() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Utf8, Utf8))
        .select_key(|_, v| v.clone())
        .group_by_key(Grouped::with(Utf8, Utf8))
        .count(Materialized::named("c"))
        .to("out", Produced::with(Utf8, I64));
    assert_eq!(builder.build().unwrap().subtopologies().len(), 2);
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Employee {
    dept: String,
    salary: i64,
}

#[test]
fn table_aggregations_subtract_moved_rows_and_delete_empty_groups() {
    for stores in backends() {
        let builder = StreamsBuilder::new();
        let by_dept = builder
            .table("employees", Consumed::with(Utf8, Json::<Employee>::new()))
            .group_by(|_, e| (e.dept.clone(), e.salary), Grouped::with(Utf8, Json::new()));
        by_dept
            .count(Materialized::named("headcount"))
            .to("headcount", Produced::with(Utf8, I64));
        by_dept
            .reduce(|a, b| a + b, |a, b| a - b, Materialized::named("payroll"))
            .to("payroll", Produced::with(Utf8, Json::new()));
        by_dept
            .aggregate(
                || (0i64, 0i64),
                |_, salary, (n, total)| (n + 1, total + salary),
                |_, salary, (n, total)| (n - 1, total - salary),
                Materialized::with(Json::new()).with_name("stats"),
            )
            .to("stats", Produced::with(Utf8, Json::new()));
        let driver = common::driver(builder.build().unwrap(), stores, 3);
        let input = driver.input_topic("employees", Utf8, Json::<Employee>::new());
        let emp = |dept: &str, salary| Employee { dept: s(dept), salary };
        input.pipe(s("ann"), emp("eng", 100)).unwrap();
        input.pipe(s("bob"), emp("eng", 80)).unwrap();
        input.pipe(s("cyd"), emp("ops", 50)).unwrap();
        input.pipe(s("bob"), emp("eng", 90)).unwrap(); // raise: same group
        input.pipe(s("cyd"), emp("eng", 60)).unwrap(); // moves: ops loses its last member
        input.pipe_tombstone(s("ann")).unwrap();

        let headcount = driver.output_topic("headcount", Utf8, I64);
        assert_eq!(
            headcount.read_key_values_to_map().unwrap(),
            HashMap::from([(s("eng"), 2)])
        );
        let payroll = driver.output_topic("payroll", Utf8, Json::<i64>::new());
        let updates = payroll.read_key_values().unwrap();
        assert!(
            updates.contains(&(s("ops"), None)),
            "the emptied group is deleted: {updates:?}"
        );
        let final_payroll: HashMap<_, _> = updates.into_iter().fold(HashMap::new(), |mut m, (k, v)| {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
            m
        });
        assert_eq!(final_payroll, HashMap::from([(s("eng"), 150)]));
        let stats = driver.output_topic("stats", Utf8, Json::<(i64, i64)>::new());
        assert_eq!(
            stats.read_key_values_to_map().unwrap(),
            HashMap::from([(s("eng"), (2, 150))])
        );
        let stored = driver.store_contents("stats", Utf8, Json::<(i64, i64)>::new()).unwrap();
        assert_eq!(stored, HashMap::from([(s("eng"), (2, 150))]));
    }
}
