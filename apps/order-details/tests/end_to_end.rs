//! order-details on both brokers (the in-process cluster and a broker in
//! its own process): CDC orders and users written as Debezium's MySQL
//! connector writes them, countries as plain JSON; the compacted
//! `order-details` must follow orders moving between users, users
//! changing and being deleted, orders without a user or with an unknown
//! one, and deletions, across a restart.

use order_details::{topology, Country, Order, OrderDetails, Topics, User};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;
use weir::cdc::Op;
use weir::serde::{Json, Utf8};
use weir::testing::debezium::{Column, ColumnType, Debezium};
use weir::testing::kafka::{eventually, read_compacted, TestProducer};
use weir_e2e::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(90);

weir_e2e::on_every_cluster!(order_details_follow_orders_users_and_countries);

/// Writes the shop's change events.
struct Shop<'a> {
    topics: &'a Topics,
    producer: TestProducer,
    orders: Debezium,
    users: Debezium,
}

impl Shop<'_> {
    fn order(&self, before: Option<&Order>, after: Option<&Order>) {
        let order_id = before.or(after).expect("a row").order_id;
        self.change(&self.orders, &self.topics.orders, order_id, before, after);
    }

    fn user(&self, before: Option<&User>, after: Option<&User>) {
        let id = before.or(after).expect("a row").id;
        self.change(&self.users, &self.topics.users, id, before, after);
    }

    /// Writes the change event of a row from `before` to `after`.
    fn change<Row: Serialize>(
        &self,
        table: &Debezium,
        topic: &str,
        key: i64,
        before: Option<&Row>,
        after: Option<&Row>,
    ) {
        let op = match (before, after) {
            (None, _) => Op::Create,
            (_, None) => Op::Delete,
            _ => Op::Update,
        };
        let value = table.event(op, before, after);
        self.producer
            .send_raw(topic, None, Some(&table.key(&key)), Some(&value))
            .unwrap();
    }

    fn country(&self, code: &str, name: &str) {
        let country = Country { name: name.into() };
        self.producer
            .send(
                &self.topics.countries,
                &Utf8,
                &Json::new(),
                &code.to_string(),
                Some(&country),
            )
            .unwrap();
    }

    fn flush(&self) {
        self.producer.flush().unwrap();
    }
}

fn order(order_id: i64, user_id: Option<i64>, total_cents: i64) -> Order {
    Order {
        order_id,
        user_id,
        total_cents,
    }
}

fn user(id: i64, name: &str, country_code: Option<&str>) -> User {
    User {
        id,
        name: name.into(),
        country_code: country_code.map(str::to_string),
    }
}

fn details(order_id: i64, total_cents: i64, user: Option<&str>, country: Option<&str>) -> (i64, OrderDetails) {
    (
        order_id,
        OrderDetails {
            order_id,
            total_cents,
            user: user.map(str::to_string),
            country: country.map(str::to_string),
        },
    )
}

fn await_details(cluster: &Cluster, topics: &Topics, expected: &HashMap<i64, OrderDetails>) {
    let read = || {
        read_compacted(
            cluster.bootstrap_servers(),
            &topics.details,
            &Json::<i64>::new(),
            &Json::new(),
        )
    };
    let converged = eventually(WAIT, || Ok(&read()? == expected)).unwrap();
    assert!(converged, "order-details {:?} never became {expected:?}", read());
}

fn order_details_follow_orders_users_and_countries(cluster: &Cluster) {
    let topics = Topics {
        orders: cluster.create_topic("mysql.shop.orders", 3),
        users: cluster.create_topic("mysql.shop.users", 2),
        countries: cluster.create_topic("countries", 1),
        details: cluster.create_topic("order-details", 3),
    };
    cluster.create_topic("mysql.shop.orders-dlq", 1);
    cluster.create_topic("mysql.shop.users-dlq", 1);
    let shop = Shop {
        topics: &topics,
        producer: cluster.producer(),
        orders: Debezium::mysql("shop", "orders")
            .key_column(Column::new("order_id", ColumnType::Int64))
            .column(Column::nullable("user_id", ColumnType::Int64))
            .column(Column::new("total_cents", ColumnType::Int64)),
        users: Debezium::mysql("shop", "users")
            .key_column(Column::new("id", ColumnType::Int64))
            .column(Column::new("name", ColumnType::String))
            .column(Column::nullable("country_code", ColumnType::String)),
    };
    shop.country("fr", "France");
    shop.country("de", "Germany");
    let (ada, bob, cy) = (
        user(1, "Ada", Some("fr")),
        user(2, "Bob", Some("de")),
        user(3, "Cy", None),
    );
    for u in [&ada, &bob, &cy] {
        shop.user(None, Some(u));
    }
    let orders = [
        order(10, Some(1), 500),
        order(11, Some(2), 700),
        order(12, Some(3), 100),
        order(13, Some(9), 50), // a user that does not exist
        order(14, None, 20),    // a guest checkout
    ];
    for o in &orders {
        shop.order(None, Some(o));
    }
    shop.flush();

    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("order-details", state.path());
    let mut first = cluster.start(topology(&topics).unwrap(), &config);
    let mut expected: HashMap<i64, OrderDetails> = [
        details(10, 500, Some("Ada"), Some("France")),
        details(11, 700, Some("Bob"), Some("Germany")),
        details(12, 100, Some("Cy"), None),
        details(13, 50, None, None),
        details(14, 20, None, None),
    ]
    .into();
    await_details(cluster, &topics, &expected);

    // An order moves to another user; a user is renamed (both of their
    // orders follow); a user is deleted; an order is deleted.
    shop.order(Some(&orders[1]), Some(&order(11, Some(1), 700)));
    let ada_renamed = user(1, "Ada L.", Some("fr"));
    shop.user(Some(&ada), Some(&ada_renamed));
    shop.user(Some(&cy), None);
    shop.order(Some(&orders[3]), None);
    shop.flush();
    expected.extend([
        details(10, 500, Some("Ada L."), Some("France")),
        details(11, 700, Some("Ada L."), Some("France")),
        details(12, 100, None, None),
    ]);
    expected.remove(&13);
    await_details(cluster, &topics, &expected);
    first.close().unwrap();

    // Restarted on its state directory, after a new country was published:
    // the global table holds it before the first record is processed, so
    // a user moving there and a guest order given that user see it.
    shop.country("it", "Italy");
    shop.flush();
    let mut second = cluster.start(topology(&topics).unwrap(), &config);
    let bob_moved = user(2, "Bob", Some("it"));
    shop.user(Some(&bob), Some(&bob_moved));
    shop.order(Some(&orders[4]), Some(&order(14, Some(2), 20)));
    shop.flush();
    expected.insert(14, details(14, 20, Some("Bob"), Some("Italy")).1);
    await_details(cluster, &topics, &expected);
    second.close().unwrap();
}
