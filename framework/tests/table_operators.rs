//! KTable operators and stream-table joins, on both store backends.

mod common;

use common::{backends, s};
use weir::serde::{Json, Utf8};
use weir::testing::TestStores;
use weir::{Consumed, Produced, StreamsBuilder};

type Updates = Vec<(String, Option<i64>)>;

#[test]
fn a_table_upserts_deletes_and_forwards_one_tombstone_per_deletion() {
    for stores in backends() {
        let builder = StreamsBuilder::new();
        builder
            .table("in", Consumed::with(Utf8, Json::<i64>::new()).store("t"))
            .to("out", Produced::with(Utf8, Json::new()));
        let driver = common::driver(builder.build().unwrap(), stores, 2);
        let input = driver.input_topic("in", Utf8, Json::<i64>::new());
        input.pipe(s("a"), 1).unwrap();
        input.pipe(s("a"), 2).unwrap();
        input.pipe(s("b"), 3).unwrap();
        input.pipe_tombstone(s("a")).unwrap();
        input.pipe_tombstone(s("a")).unwrap(); // deleting what is gone changes nothing
        input.pipe_tombstone(s("never")).unwrap();
        let out = driver.output_topic("out", Utf8, Json::<i64>::new());
        let expected: Updates = vec![(s("a"), Some(1)), (s("a"), Some(2)), (s("b"), Some(3)), (s("a"), None)];
        assert_eq!(out.read_key_values().unwrap(), expected, "{stores:?}");
        let store = driver.store_contents("t", Utf8, Json::<i64>::new()).unwrap();
        assert_eq!(store, [(s("b"), 3)].into_iter().collect(), "{stores:?}");
    }
}

#[test]
fn every_store_write_reaches_the_changelog_on_the_task_partition() {
    for stores in backends() {
        let builder = StreamsBuilder::new();
        builder.table("in", Consumed::with(Utf8, Json::<i64>::new()).store("t"));
        let driver = common::driver(builder.build().unwrap(), stores, 3);
        let input = driver.input_topic("in", Utf8, Json::<i64>::new());
        for i in 0..12 {
            input.pipe(format!("k{i}"), i).unwrap();
        }
        input.pipe_tombstone(s("k3")).unwrap();
        let changelog = driver.changelog_topic("t");
        assert_eq!(changelog, "test-app-t-changelog");
        let records = driver
            .output_topic(&changelog, Utf8, Json::<i64>::new())
            .read_records()
            .unwrap();
        assert_eq!(records.len(), 13);
        for record in &records {
            let input_partition = weir::partition::partition_for_key(record.key.as_bytes(), 3);
            assert_eq!(record.partition, Some(input_partition));
        }
        assert_eq!(records.last().unwrap().value, None);
    }
}

#[test]
fn filter_turns_rows_that_stop_matching_into_tombstones() {
    for stores in backends() {
        let builder = StreamsBuilder::new();
        builder
            .table("in", Consumed::with(Utf8, Json::<i64>::new()))
            .filter(|_, v| *v % 2 == 0)
            .to("out", Produced::with(Utf8, Json::new()));
        let driver = common::driver(builder.build().unwrap(), stores, 1);
        let input = driver.input_topic("in", Utf8, Json::<i64>::new());
        input.pipe(s("a"), 1).unwrap(); // never matched: nothing
        input.pipe(s("a"), 2).unwrap(); // now matches
        input.pipe(s("a"), 4).unwrap(); // still matches: update
        input.pipe(s("a"), 5).unwrap(); // stops matching: tombstone
        input.pipe_tombstone(s("a")).unwrap(); // not in the filtered table: nothing
        let out = driver.output_topic("out", Utf8, Json::<i64>::new());
        let expected: Updates = vec![(s("a"), Some(2)), (s("a"), Some(4)), (s("a"), None)];
        assert_eq!(out.read_key_values().unwrap(), expected);
    }
}

#[test]
fn map_values_and_to_stream_carry_updates_and_deletions() {
    let builder = StreamsBuilder::new();
    builder
        .table("in", Consumed::with(Utf8, Json::<i64>::new()))
        .map_values(|v| format!("#{v}"))
        .to_stream()
        .to("out", Produced::with(Utf8, Json::<Option<String>>::new()));
    let driver = common::driver(builder.build().unwrap(), TestStores::InMemory, 1);
    let input = driver.input_topic("in", Utf8, Json::<i64>::new());
    input.pipe(s("a"), 1).unwrap();
    input.pipe_tombstone(s("a")).unwrap();
    let out = driver.output_topic("out", Utf8, Json::<String>::new());
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![(s("a"), Some(s("#1"))), (s("a"), None)]
    );
}

/// users ⋈ prefs through each join kind, with a fixed sequence of updates.
fn table_join_outputs(kind: &str, stores: TestStores) -> Vec<(String, Option<String>)> {
    let builder = StreamsBuilder::new();
    let users = builder.table("users", Consumed::with(Utf8, Utf8));
    let prefs = builder.table("prefs", Consumed::with(Utf8, Json::<bool>::new()));
    let show = |u: Option<&String>, p: Option<&bool>| {
        format!("{}|{}", u.map_or("-", |u| u), p.map_or(s("-"), |p| p.to_string()))
    };
    let joined = match kind {
        "inner" => users.join(&prefs, move |u, p| show(Some(u), Some(p))),
        "left" => users.left_join(&prefs, move |u, p| show(Some(u), p)),
        _ => users.outer_join(&prefs, show),
    };
    joined.to("out", Produced::with(Utf8, Utf8));
    let driver = common::driver(builder.build().unwrap(), stores, 2);
    let u = driver.input_topic("users", Utf8, Utf8);
    let p = driver.input_topic("prefs", Utf8, Json::<bool>::new());
    u.pipe(s("1"), s("ada")).unwrap();
    p.pipe(s("1"), true).unwrap();
    p.pipe(s("1"), false).unwrap();
    u.pipe(s("1"), s("ada2")).unwrap();
    p.pipe_tombstone(s("1")).unwrap();
    u.pipe_tombstone(s("1")).unwrap();
    p.pipe(s("2"), true).unwrap();
    driver.output_topic("out", Utf8, Utf8).read_key_values().unwrap()
}

#[test]
fn inner_join_emits_while_both_sides_exist_and_a_tombstone_when_one_leaves() {
    for stores in backends() {
        let some = |v: &str| (s("1"), Some(s(v)));
        assert_eq!(
            table_join_outputs("inner", stores),
            vec![some("ada|true"), some("ada|false"), some("ada2|false"), (s("1"), None)]
        );
    }
}

#[test]
fn left_join_follows_the_left_side() {
    for stores in backends() {
        assert_eq!(table_join_outputs("left", stores), left_join_expected());
    }
}

/// The left side's whole life: alone, joined, updated, alone again, deleted.
fn left_join_expected() -> Vec<(String, Option<String>)> {
    let some = |v: &str| (s("1"), Some(s(v)));
    vec![
        some("ada|-"),
        some("ada|true"),
        some("ada|false"),
        some("ada2|false"),
        some("ada2|-"),
        (s("1"), None),
    ]
}

#[test]
fn outer_join_emits_while_either_side_exists() {
    for stores in backends() {
        // The left join's outputs, then the right-only row.
        let mut expected = left_join_expected();
        expected.push((s("2"), Some(s("-|true"))));
        assert_eq!(table_join_outputs("outer", stores), expected);
    }
}

#[test]
fn a_join_of_a_filtered_table_reads_through_the_filter() {
    let builder = StreamsBuilder::new();
    let users = builder.table("users", Consumed::with(Utf8, Utf8));
    let active = builder
        .table("status", Consumed::with(Utf8, Utf8))
        .filter(|_, status| status == "active");
    users
        .join(&active, |u, _| u.clone())
        .to("out", Produced::with(Utf8, Utf8));
    let driver = common::driver(builder.build().unwrap(), TestStores::InMemory, 1);
    let (u, st) = (
        driver.input_topic("users", Utf8, Utf8),
        driver.input_topic("status", Utf8, Utf8),
    );
    st.pipe(s("1"), s("inactive")).unwrap();
    u.pipe(s("1"), s("ada")).unwrap(); // the filtered side has no row: no output
    st.pipe(s("1"), s("active")).unwrap();
    st.pipe(s("1"), s("banned")).unwrap();
    let out = driver.output_topic("out", Utf8, Utf8).read_key_values().unwrap();
    assert_eq!(out, vec![(s("1"), Some(s("ada"))), (s("1"), None)]);
}

#[test]
fn stream_table_joins_look_up_the_table_at_the_time_of_each_record() {
    for stores in backends() {
        let builder = StreamsBuilder::new();
        let prices = builder.table("prices", Consumed::with(Utf8, Json::<i64>::new()));
        let orders = builder.stream("orders", Consumed::with(Utf8, Json::<i64>::new()));
        orders
            .join(&prices, |qty, price| qty * price)
            .to("inner", Produced::with(Utf8, Json::new()));
        orders
            .left_join(&prices, |qty, price| price.map(|p| qty * p))
            .to("left", Produced::with(Utf8, Json::<Option<i64>>::new()));
        let driver = common::driver(builder.build().unwrap(), stores, 3);
        let prices_in = driver.input_topic("prices", Utf8, Json::<i64>::new());
        let orders_in = driver.input_topic("orders", Utf8, Json::<i64>::new());
        orders_in.pipe(s("apple"), 1).unwrap(); // no price yet
        prices_in.pipe(s("apple"), 10).unwrap(); // a table update alone emits nothing
        orders_in.pipe(s("apple"), 2).unwrap();
        prices_in.pipe(s("apple"), 20).unwrap();
        orders_in.pipe(s("apple"), 3).unwrap();
        prices_in.pipe_tombstone(s("apple")).unwrap();
        orders_in.pipe(s("apple"), 4).unwrap();
        let inner = driver
            .output_topic("inner", Utf8, Json::<i64>::new())
            .read_key_values()
            .unwrap();
        assert_eq!(inner, vec![(s("apple"), Some(20)), (s("apple"), Some(60))]);
        let left = driver
            .output_topic("left", Utf8, Json::<i64>::new())
            .read_key_values()
            .unwrap();
        assert_eq!(
            left,
            vec![
                (s("apple"), None),
                (s("apple"), Some(20)),
                (s("apple"), Some(60)),
                (s("apple"), None)
            ]
        );
    }
}

/// orders (`user:amount`, or just `amount` for an order of nobody) left
/// joined by foreign key with users (their emails).
fn orders_with_emails(left_join: bool) -> weir::Topology {
    use weir::ForeignKeyJoined;
    let builder = StreamsBuilder::new();
    let orders = builder.table("orders", Consumed::with(Utf8, Utf8));
    let users = builder.table("users", Consumed::with(Utf8, Utf8));
    let user_of = |order: &String| order.split_once(':').map(|(user, _)| user.to_string());
    let joined = ForeignKeyJoined::with(Utf8, Utf8, Utf8, Utf8, Utf8).named("orders-users");
    let result = if left_join {
        orders.left_join_on_foreign_key(
            &users,
            user_of,
            |order, email| format!("{order} for {}", email.map_or("nobody", String::as_str)),
            joined,
        )
    } else {
        orders.join_on_foreign_key(&users, user_of, |order, email| format!("{order} for {email}"), joined)
    };
    result.to("out", Produced::with(Utf8, Utf8));
    builder.build().unwrap()
}

#[test]
fn a_foreign_key_join_follows_orders_moving_users_changing_and_deletions() {
    for stores in backends() {
        for left_join in [false, true] {
            let driver = common::driver(orders_with_emails(left_join), stores, 3);
            let orders = driver.input_topic("orders", Utf8, Utf8);
            let users = driver.input_topic("users", Utf8, Utf8);
            let out = driver.output_topic("out", Utf8, Utf8);
            let step = |expected: Vec<(&str, Option<&str>)>| {
                let expected: Vec<(String, Option<String>)> =
                    expected.into_iter().map(|(k, v)| (s(k), v.map(s))).collect();
                assert_eq!(
                    out.read_key_values().unwrap(),
                    expected,
                    "{stores:?}, left join {left_join}"
                );
            };
            users.pipe(s("ada"), s("ada@example.com")).unwrap();
            orders.pipe(s("o1"), s("ada:10")).unwrap();
            step(vec![("o1", Some("ada:10 for ada@example.com"))]);
            // An order naming a user nobody has written yet.
            orders.pipe(s("o2"), s("bob:20")).unwrap();
            step(if left_join {
                vec![("o2", Some("bob:20 for nobody"))]
            } else {
                vec![]
            });
            users.pipe(s("bob"), s("bob@example.com")).unwrap();
            step(vec![("o2", Some("bob:20 for bob@example.com"))]);
            // A user's change reaches every order that names them.
            orders.pipe(s("o3"), s("ada:30")).unwrap();
            users.pipe(s("ada"), s("ada@new.org")).unwrap();
            let updated = out.read_key_values().unwrap();
            assert_eq!(updated[0], (s("o3"), Some(s("ada:30 for ada@example.com"))));
            let mut rest: Vec<_> = updated[1..].to_vec();
            rest.sort();
            assert_eq!(
                rest,
                vec![
                    (s("o1"), Some(s("ada:10 for ada@new.org"))),
                    (s("o3"), Some(s("ada:30 for ada@new.org")))
                ]
            );
            // An order moves to another user, then names nobody.
            orders.pipe(s("o1"), s("bob:11")).unwrap();
            step(vec![("o1", Some("bob:11 for bob@example.com"))]);
            orders.pipe(s("o1"), s("12")).unwrap();
            step(vec![("o1", if left_join { Some("12 for nobody") } else { None })]);
            // A deleted user, then a deleted order.
            users.pipe_tombstone(s("bob")).unwrap();
            step(vec![("o2", if left_join { Some("bob:20 for nobody") } else { None })]);
            orders.pipe_tombstone(s("o3")).unwrap();
            step(vec![("o3", None)]);
            // A deleted user left its subscribers subscribed: it comes back.
            users.pipe(s("bob"), s("bob@back.net")).unwrap();
            step(vec![("o2", Some("bob:20 for bob@back.net"))]);
        }
    }
}

#[test]
fn a_foreign_key_join_names_its_topics_and_stores() {
    let description = orders_with_emails(true).describe().to_string();
    for part in [
        "orders-users-subscription-repartition",
        "orders-users-response-repartition",
        "orders-users-subscriptions",
        "KTABLE-FK-LEFTJOIN-RESOLVE",
    ] {
        assert!(description.contains(part), "{part} missing from\n{description}");
    }
}
