//! order-details: each order of a shop's database, with its user's name
//! and the name of the user's country, as one object on a compacted topic.
//!
//! - `orders` and `users` arrive from Debezium (MySQL, JSON) as CDC tables;
//!   an order names its user by `user_id`, so the two are joined by foreign
//!   key ([`weir::KTable::left_join_on_foreign_key`]): the result follows an
//!   order moving to another user, a user changing, and deletions on
//!   either side.
//! - `countries` is reference data another service publishes on a
//!   compacted topic (code → name), held whole by every instance as a
//!   global table; each change of an order's result looks its user's
//!   country up there ([`weir::KStream::left_join_global`]), without
//!   re-partitioning. A country renamed later reaches an order with its
//!   next change.
//! - The result goes to `order-details`, keyed by order id; a deleted order
//!   leaves a tombstone.

use serde::{Deserialize, Serialize};
use weir::cdc::Cdc;
use weir::serde::{Json, Nullable, Utf8};
use weir::{Consumed, ForeignKeyJoined, Produced, StreamsBuilder, Topology, WeirError};

/// A row of the `orders` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: i64,
    /// `None` for an order without a user (a guest checkout).
    pub user_id: Option<i64>,
    pub total_cents: i64,
}

/// A row of the `users` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub country_code: Option<String>,
}

/// A record of the `countries` topic, keyed by country code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Country {
    pub name: String,
}

/// An order with its user, as the foreign-key join keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderWithUser {
    pub order: Order,
    pub user: Option<User>,
}

/// What `order-details` holds per order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetails {
    pub order_id: i64,
    pub total_cents: i64,
    /// The user's name; `None` when the order names no user or a user that
    /// does not exist (any more).
    pub user: Option<String>,
    /// The name of the user's country, when the user has a country code
    /// that `countries` knows.
    pub country: Option<String>,
}

/// The topics the application reads and writes.
#[derive(Debug, Clone)]
pub struct Topics {
    pub orders: String,
    pub users: String,
    pub countries: String,
    pub details: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            orders: "mysql.shop.orders".into(),
            users: "mysql.shop.users".into(),
            countries: "countries".into(),
            details: "order-details".into(),
        }
    }
}

/// orders ⟕ users by `user_id`, then ⟕ countries (global) by the user's
/// country code → `order-details`.
pub fn topology(topics: &Topics) -> Result<Topology, WeirError> {
    let builder = StreamsBuilder::new();
    let orders = builder.cdc_table::<i64, Order>(&topics.orders, Cdc::json().store("orders"));
    let users = builder.cdc_table::<i64, User>(&topics.users, Cdc::json().store("users"));
    let countries = builder.global_table(
        &topics.countries,
        Consumed::with(Utf8, Json::<Country>::new()).store("countries"),
    );
    orders
        .left_join_on_foreign_key(
            &users,
            |order| order.user_id,
            |order, user| OrderWithUser {
                order: order.clone(),
                user: user.cloned(),
            },
            ForeignKeyJoined::with(Json::new(), Json::new(), Json::new(), Json::new(), Json::new())
                .named("orders-with-users"),
        )
        .to_stream()
        .left_join_global(
            &countries,
            |_, joined| joined.as_ref()?.user.as_ref()?.country_code.clone(),
            |joined, country| {
                joined.as_ref().map(|joined| OrderDetails {
                    order_id: joined.order.order_id,
                    total_cents: joined.order.total_cents,
                    user: joined.user.as_ref().map(|u| u.name.clone()),
                    country: country.map(|c| c.name.clone()),
                })
            },
        )
        .to(&topics.details, Produced::with(Json::new(), Nullable(Json::new())));
    builder.build()
}
