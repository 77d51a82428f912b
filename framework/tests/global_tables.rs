//! Global tables through the test driver, on both store backends.

mod common;

use common::{backends, s};
use weir::serde::{Json, Utf8};
use weir::{Consumed, Produced, StreamsBuilder};

/// orders `(product, quantity)` joined with a products global table by
/// product, after a re-keying that a global join does not mind.
fn topology(left_join: bool) -> weir::Topology {
    let builder = StreamsBuilder::new();
    let products = builder.global_table(
        "products",
        Consumed::with(Utf8, Json::<String>::new()).store("products"),
    );
    let orders = builder
        .stream("orders", Consumed::with(Utf8, Json::<(String, u32)>::new()))
        .select_key(|order, _| format!("by-{order}"));
    let key = |_: &String, (product, _): &(String, u32)| (!product.is_empty()).then(|| product.clone());
    let joined = if left_join {
        orders.left_join_global(&products, key, |(_, n), name| {
            format!("{n} x {}", name.map_or("?", String::as_str))
        })
    } else {
        orders.join_global(&products, key, |(_, n), name| format!("{n} x {name}"))
    };
    joined.to("lines", Produced::with(Utf8, Utf8));
    builder.build().unwrap()
}

#[test]
fn a_global_join_reads_the_rows_as_they_are_when_each_record_arrives() {
    for stores in backends() {
        for left_join in [false, true] {
            let driver = common::driver(topology(left_join), stores, 3);
            let products = driver.input_topic("products", Utf8, Json::<String>::new());
            let orders = driver.input_topic("orders", Utf8, Json::<(String, u32)>::new());
            let lines = driver.output_topic("lines", Utf8, Utf8);
            products.pipe(s("p1"), s("pen")).unwrap();
            orders.pipe(s("o1"), (s("p1"), 2)).unwrap();
            orders.pipe(s("o2"), (s("p2"), 1)).unwrap(); // no such product
            orders.pipe(s("o3"), (s(""), 1)).unwrap(); // no product at all
            products.pipe(s("p1"), s("fountain pen")).unwrap();
            products.pipe(s("p2"), s("paper")).unwrap();
            orders.pipe(s("o4"), (s("p1"), 3)).unwrap();
            orders.pipe(s("o5"), (s("p2"), 4)).unwrap();
            products.pipe_tombstone(s("p2")).unwrap();
            orders.pipe(s("o6"), (s("p2"), 5)).unwrap();
            let mut expected = vec![(s("by-o1"), Some(s("2 x pen")))];
            if left_join {
                expected.push((s("by-o2"), Some(s("1 x ?"))));
                expected.push((s("by-o3"), Some(s("1 x ?"))));
            }
            expected.push((s("by-o4"), Some(s("3 x fountain pen"))));
            expected.push((s("by-o5"), Some(s("4 x paper"))));
            if left_join {
                expected.push((s("by-o6"), Some(s("5 x ?"))));
            }
            let mut got = lines.read_key_values().unwrap();
            // Records on different partitions come out in partition order.
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "{stores:?}, left join {left_join}");
        }
    }
}

#[test]
fn a_global_table_leaves_out_what_does_not_decode_and_says_where_it_is() {
    let driver = common::driver(topology(true), backends()[0], 1);
    driver
        .input_topic("products", Utf8, Utf8)
        .pipe(s("p1"), s("not json"))
        .unwrap();
    driver
        .input_topic("orders", Utf8, Json::<(String, u32)>::new())
        .pipe(s("o1"), (s("p1"), 1))
        .unwrap();
    let lines = driver.output_topic("lines", Utf8, Utf8).read_key_values().unwrap();
    assert_eq!(lines, vec![(s("by-o1"), Some(s("1 x ?")))]);
    let description = topology(true).describe().to_string();
    assert!(
        description.contains("global table products (topic products)"),
        "{description}"
    );
}

#[test]
fn a_topic_read_by_a_global_table_and_a_stream_is_refused() {
    let builder = StreamsBuilder::new();
    builder.global_table("t", Consumed::with(Utf8, Utf8));
    builder
        .stream("t", Consumed::with(Utf8, Utf8))
        .to("out", Produced::with(Utf8, Utf8));
    let error = builder.build().unwrap_err().to_string();
    assert!(error.contains("topic 't' is read by two sources"), "{error}");
}
