//! Foreign-key joins against a reference: random histories of `orders`
//! (each naming a user, or none) and `users`, on tables with different
//! partition counts. After each step the compacted view of the output
//! (last value per key) must equal the join of the inputs' current rows.
//!
//! A step is one user change or a batch of order changes written together:
//! the driver processes a batch's records and everything they lead to
//! interleaved, so an order that changes again (or moves to another user)
//! within a batch has answers to its older versions arrive after its newer
//! subscriptions — the stale answers the join must drop. Each property runs
//! on both store backends, with every change passed on at once and with
//! tables' changes merged between commits at random points.

mod common;

use common::backends;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use weir::serde::{Json, Utf8};
use weir::testing::{TestDriverConfig, TestRecord, TestStores, TopologyTestDriver};
use weir::{Consumed, ForeignKeyJoined, Produced, StreamsBuilder};

/// An order's row: the user it names (if any) and its amount.
type Order = (Option<u8>, u8);
/// The joined row: the order's amount and its user's row, if any.
type Joined = (u8, Option<u8>);

#[derive(Debug, Clone)]
enum Step {
    /// Order changes written together; `None` deletes the order.
    Orders(Vec<(u8, Option<Order>)>),
    User {
        user: u8,
        value: Option<u8>,
    },
    Commit,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let order = (prop::option::weighted(0.8, 0u8..4), 0u8..10);
    prop::collection::vec(
        prop_oneof![
            4 => prop::collection::vec((0u8..6, prop::option::weighted(0.8, order)), 1..4).prop_map(Step::Orders),
            3 => (0u8..4, prop::option::weighted(0.75, 0u8..10)).prop_map(|(user, value)| Step::User { user, value }),
            1 => Just(Step::Commit),
        ],
        1..40,
    )
}

fn order_key(order: u8) -> String {
    format!("o{order}")
}

fn user_key(user: u8) -> String {
    format!("u{user}")
}

/// What the join holds, from the inputs' current rows.
fn reference(left_join: bool, orders: &BTreeMap<u8, Order>, users: &BTreeMap<u8, u8>) -> HashMap<String, Joined> {
    orders
        .iter()
        .filter_map(|(&order, &(user, amount))| {
            let row = user.and_then(|u| users.get(&u).copied());
            (left_join || row.is_some()).then(|| (order_key(order), (amount, row)))
        })
        .collect()
}

fn check(left_join: bool, stores: TestStores, merge: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let orders = builder.table("orders", Consumed::with(Utf8, Json::<Order>::new()));
    let users = builder.table("users", Consumed::with(Utf8, Json::<u8>::new()));
    let foreign_key = |order: &Order| order.0.map(user_key);
    let joined = ForeignKeyJoined::with(Utf8, Json::new(), Utf8, Json::new(), Json::new()).named("orders-users");
    let result = if left_join {
        orders.left_join_on_foreign_key(&users, foreign_key, |o, u| (o.1, u.copied()), joined)
    } else {
        orders.join_on_foreign_key(&users, foreign_key, |o, u| (o.1, Some(*u)), joined)
    };
    result.to("out", Produced::with(Utf8, Json::new()));
    let driver = TopologyTestDriver::with_config(
        builder.build().unwrap(),
        TestDriverConfig::default()
            .partitions("orders", 3)
            .partitions("users", 2)
            .stores(stores)
            .merge_table_changes(merge),
    )
    .unwrap();
    let orders_in = driver.input_topic("orders", Utf8, Json::<Order>::new());
    let users_in = driver.input_topic("users", Utf8, Json::<u8>::new());
    let output = driver.output_topic("out", Utf8, Json::<Joined>::new());

    let (mut order_rows, mut user_rows) = (BTreeMap::new(), BTreeMap::new());
    let mut view: HashMap<String, Joined> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Orders(changes) => {
                let records = changes
                    .iter()
                    .map(|(order, row)| TestRecord::new(order_key(*order), *row));
                orders_in.pipe_all(records).unwrap();
                for (order, row) in changes {
                    match row {
                        Some(row) => order_rows.insert(*order, *row),
                        None => order_rows.remove(order),
                    };
                }
            }
            Step::User { user, value } => {
                match value {
                    Some(v) => {
                        users_in.pipe(user_key(*user), *v).unwrap();
                        user_rows.insert(*user, *v);
                    }
                    None => {
                        users_in.pipe_tombstone(user_key(*user)).unwrap();
                        user_rows.remove(user);
                    }
                };
            }
            Step::Commit => {}
        }
        // Merged changes reach the output at commits; compare there, and
        // at the end.
        if merge {
            if !matches!(step, Step::Commit) && i + 1 < steps.len() {
                continue;
            }
            driver.commit().unwrap();
        }
        for (key, value) in output.read_key_values().unwrap() {
            match value {
                Some(value) => view.insert(key, value),
                None => view.remove(&key),
            };
        }
        prop_assert_eq!(
            &view,
            &reference(left_join, &order_rows, &user_rows),
            "after step {} ({:?})",
            i,
            step
        );
    }
    Ok(())
}

fn runs() -> impl Iterator<Item = (TestStores, bool)> {
    backends()
        .into_iter()
        .flat_map(|stores| [(stores, false), (stores, true)])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn foreign_key_inner_join_matches_the_reference(steps in steps()) {
        for (stores, merge) in runs() {
            check(false, stores, merge, &steps)?;
        }
    }

    #[test]
    fn foreign_key_left_join_matches_the_reference(steps in steps()) {
        for (stores, merge) in runs() {
            check(true, stores, merge, &steps)?;
        }
    }
}
