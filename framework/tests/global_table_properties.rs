//! A stream joined with a global table against a reference: random
//! product rows written and deleted between random orders (the orders on
//! three partitions, the products on two), an inner and a left join; each
//! order must be joined with its product's row as it is when the order
//! arrives, on both store backends.

mod common;

use common::backends;
use proptest::prelude::*;
use std::collections::BTreeMap;
use weir::serde::Utf8;
use weir::testing::{TestDriverConfig, TestStores, TopologyTestDriver};
use weir::{Consumed, Produced, StreamsBuilder};

#[derive(Debug, Clone)]
enum Step {
    /// A product's row, `None` to delete it.
    Product(u8, Option<u8>),
    /// An order for a product.
    Order(u8),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            2 => (0u8..5, prop::option::of(0u8..10)).prop_map(|(p, row)| Step::Product(p, row)),
            3 => (0u8..6).prop_map(Step::Order),
        ],
        1..60,
    )
}

fn check(stores: TestStores, left_join: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let builder = StreamsBuilder::new();
    let products = builder.global_table("products", Consumed::with(Utf8, Utf8).store("products"));
    let orders = builder.stream("orders", Consumed::with(Utf8, Utf8));
    let product_of = |_: &String, product: &String| Some(product.clone());
    let lines = match left_join {
        true => orders.left_join_global(&products, product_of, |product, row| {
            format!("{product}={}", row.map_or("-", String::as_str))
        }),
        false => orders.join_global(&products, product_of, |product, row| format!("{product}={row}")),
    };
    lines.to("lines", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::with_config(
        builder.build().unwrap(),
        TestDriverConfig::default()
            .stores(stores)
            .partitions("orders", 3)
            .partitions("products", 2)
            .partitions("lines", 3),
    )
    .unwrap();
    let products_in = driver.input_topic("products", Utf8, Utf8);
    let orders_in = driver.input_topic("orders", Utf8, Utf8);

    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    let mut expected = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Product(product, Some(row)) => {
                let (product, row) = (format!("p{product}"), format!("r{row}"));
                products_in.pipe(product.clone(), row.clone()).unwrap();
                rows.insert(product, row);
            }
            Step::Product(product, None) => {
                let product = format!("p{product}");
                products_in.pipe_tombstone(product.clone()).unwrap();
                rows.remove(&product);
            }
            Step::Order(product) => {
                let (order, product) = (format!("o{i}"), format!("p{product}"));
                orders_in.pipe(order.clone(), product.clone()).unwrap();
                match (rows.get(&product), left_join) {
                    (Some(row), _) => expected.push((order, Some(format!("{product}={row}")))),
                    (None, true) => expected.push((order, Some(format!("{product}=-")))),
                    (None, false) => {}
                }
            }
        }
    }
    let mut said = driver.output_topic("lines", Utf8, Utf8).read_key_values().unwrap();
    said.sort();
    expected.sort();
    prop_assert_eq!(said, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_global_join_sees_each_row_as_it_is_when_the_record_arrives(steps in steps()) {
        for stores in backends() {
            for left_join in [false, true] {
                check(stores, left_join, &steps)?;
            }
        }
    }
}
