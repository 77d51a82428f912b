//! Property tests for CDC tables: random row histories written as Debezium
//! would write them, in every supported JSON and Avro format, must end as
//! the reference table; joins of CDC tables whose key bytes differ must
//! equal the reference join although Debezium spread them over partitions
//! by those bytes.

mod common;

use common::{backends, driver};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use weir::avro::SchemaRegistry;
use weir::cdc::{AvroEvents, AvroKey, Cdc, Decimal, JsonEvents, Op};
use weir::serde::{Bytes, Json, Nullable};
use weir::testing::debezium::{Column, ColumnType, Debezium, EventFormat};
use weir::testing::schema_registry::TestSchemaRegistry;
use weir::testing::{TestDriverConfig, TestInputTopic, TestStores, TopologyTestDriver};
use weir::{Produced, StreamsBuilder, Topology};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Account {
    id: i64,
    name: String,
    balance: Decimal,
}

#[derive(Debug, Clone)]
enum Action {
    Upsert {
        key: i64,
        name: u8,
        cents: i64,
    },
    /// A `d` event, followed by its tombstone unless `tombstone` is false
    /// (`tombstones.on.delete=false`).
    Delete {
        key: i64,
        tombstone: bool,
    },
    /// A tombstone alone, as after compaction removed the `d` before it.
    Tombstone {
        key: i64,
    },
    /// `UPDATE … SET id = to`: `d` + tombstone under the old key, `c` under the new.
    Rekey {
        key: i64,
        to: i64,
    },
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    let key = 0i64..8;
    prop::collection::vec(
        prop_oneof![
            4 => (key.clone(), 0u8..3, -50_000i64..50_000).prop_map(|(key, name, cents)| Action::Upsert { key, name, cents }),
            2 => (key.clone(), any::<bool>()).prop_map(|(key, tombstone)| Action::Delete { key, tombstone }),
            1 => key.clone().prop_map(|key| Action::Tombstone { key }),
            1 => (key.clone(), key).prop_map(|(key, to)| Action::Rekey { key, to }),
        ],
        1..40,
    )
}

/// How Debezium's converter writes the records.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Json(EventFormat),
    /// Confluent's `AvroConverter` (the format's `schemas` flag does not apply).
    Avro(EventFormat),
}

const WIRES: [Wire; 6] = [
    Wire::Json(EventFormat::Envelope { schemas: false }),
    Wire::Json(EventFormat::Envelope { schemas: true }),
    Wire::Json(EventFormat::Flattened { schemas: false }),
    Wire::Json(EventFormat::Flattened { schemas: true }),
    Wire::Avro(EventFormat::Envelope { schemas: true }),
    Wire::Avro(EventFormat::Flattened { schemas: true }),
];

/// One registry for the whole test binary.
fn registry() -> &'static SchemaRegistry {
    static REGISTRY: OnceLock<(TestSchemaRegistry, SchemaRegistry)> = OnceLock::new();
    &REGISTRY
        .get_or_init(|| {
            let server = TestSchemaRegistry::start().expect("the test registry starts");
            let client = SchemaRegistry::new(server.url()).expect("the registry URL is valid");
            (server, client)
        })
        .1
}

/// How weir reads `wire`: without the schema, the decimal's scale is configured.
fn cdc_for<Row: serde::de::DeserializeOwned + 'static>(wire: Wire) -> Cdc<i64, Row> {
    match wire {
        Wire::Json(format) => {
            let events = if format.is_flattened() {
                JsonEvents::flattened()
            } else {
                JsonEvents::new()
            };
            let events = match format {
                EventFormat::Envelope { schemas: false } | EventFormat::Flattened { schemas: false } => {
                    events.decimal_scale("balance", 2)
                }
                _ => events,
            };
            Cdc::json().events(events)
        }
        Wire::Avro(format) => {
            let events = if format.is_flattened() {
                AvroEvents::flattened(registry())
            } else {
                AvroEvents::new(registry())
            };
            Cdc::with_decoders(AvroKey::new(registry()), events)
        }
    }
}

/// Debezium's writer for a table, in `wire`.
fn writer(table: Debezium, wire: Wire) -> Debezium {
    match wire {
        Wire::Json(format) => table.format(format),
        Wire::Avro(format) => table.format(format).avro(registry()),
    }
}

type RawInput = TestInputTopic<Option<Vec<u8>>, Vec<u8>>;

/// Writes the actions as Debezium events, applying them to `model`;
/// returns how many rows were deleted.
fn replay(actions: &[Action], debezium: &Debezium, input: &RawInput, model: &mut BTreeMap<i64, Account>) -> usize {
    let send = |key: i64, value: Option<Vec<u8>>| {
        input
            .pipe_raw(None, Some(debezium.key(&key)), value, 0, Vec::new())
            .expect("the event is processed");
    };
    let mut deletions = 0;
    for (index, action) in actions.iter().enumerate() {
        match *action {
            Action::Upsert { key, name, cents } => {
                let row = Account {
                    id: key,
                    name: format!("name-{name}"),
                    balance: Decimal::new(cents, 2).unwrap(),
                };
                let before = model.get(&key);
                let op = match before {
                    None if index < 3 => Op::Read,
                    None => Op::Create,
                    Some(_) => Op::Update,
                };
                send(key, Some(debezium.event(op, before, Some(&row))));
                model.insert(key, row);
            }
            Action::Delete { key, tombstone } => {
                if let Some(before) = model.remove(&key) {
                    send(key, Some(debezium.event(Op::Delete, Some(&before), None)));
                    if tombstone {
                        send(key, None);
                    }
                    deletions += 1;
                }
            }
            Action::Tombstone { key } => {
                send(key, None);
                deletions += usize::from(model.remove(&key).is_some());
            }
            Action::Rekey { key, to } => {
                if key != to && !model.contains_key(&to) {
                    if let Some(before) = model.remove(&key) {
                        send(key, Some(debezium.event(Op::Delete, Some(&before), None)));
                        send(key, None);
                        let moved = Account { id: to, ..before };
                        send(to, Some(debezium.event(Op::Create, None, Some(&moved))));
                        model.insert(to, moved);
                        deletions += 1;
                    }
                }
            }
        }
    }
    deletions
}

fn accounts_table(wire: Wire) -> Debezium {
    let table = Debezium::postgres("bank", "public", "accounts")
        .key_column(Column::new("id", ColumnType::Int64))
        .column(Column::new("name", ColumnType::String))
        .column(Column::new("balance", ColumnType::Decimal { scale: 2 }));
    // The registry rightly refuses a flattened schema under the subject of
    // an envelope; in Avro each layout gets its own connector and topics.
    let table = match wire {
        Wire::Avro(format) if format.is_flattened() => table.server("pg_flat"),
        _ => table,
    };
    writer(table, wire)
}

fn check_table_history(actions: &[Action], stores: TestStores) -> Result<(), TestCaseError> {
    for wire in WIRES {
        let debezium = accounts_table(wire);
        let topic = debezium.topic();
        let builder = StreamsBuilder::new();
        builder
            .cdc_table::<i64, Account>(&topic, cdc_for(wire).store("accounts"))
            .to("accounts-out", Produced::with(Json::new(), Json::new()));
        let driver = driver(builder.build().unwrap(), stores, 3);
        let input = driver.input_topic(&topic, Nullable(Bytes), Bytes);
        let mut model = BTreeMap::new();
        let deletions = replay(actions, &debezium, &input, &mut model);

        let table: BTreeMap<i64, Account> = driver
            .store_contents("accounts", Json::<i64>::new(), Json::<Account>::new())
            .unwrap()
            .into_iter()
            .collect();
        prop_assert_eq!(&table, &model, "store, {:?}", wire);
        let output = driver
            .output_topic("accounts-out", Json::<i64>::new(), Json::<Account>::new())
            .read_key_values()
            .unwrap();
        let tombstones = output.iter().filter(|(_, v)| v.is_none()).count();
        prop_assert_eq!(
            tombstones,
            deletions,
            "one downstream tombstone per deletion, {:?}",
            wire
        );
        let mut compacted = BTreeMap::new();
        for (key, value) in output {
            match value {
                Some(value) => compacted.insert(key, value),
                None => compacted.remove(&key),
            };
        }
        prop_assert_eq!(&compacted, &model, "output, {:?}", wire);
        prop_assert_eq!(driver.metrics().skipped_for(weir::metrics::SkipReason::DeadLettered), 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn cdc_table_ends_as_the_reference_table_in_every_format_json_and_avro(actions in actions()) {
        for stores in backends() {
            check_table_history(&actions, stores)?;
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct User {
    user_id: i64,
    email: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Preferences {
    user_id: i64,
    dark_mode: bool,
}

type Profile = (String, Option<bool>);

const JOIN_PARTITIONS: i32 = 6;

/// Both tables' keys are `{"user_id": n}` with the schema wrapper (or as
/// Avro under the registered key schema), whose schema name differs per
/// table, so equal ids have different key bytes.
fn users_and_preferences(wire: Wire) -> (Debezium, Debezium) {
    let users = Debezium::mysql("app", "users")
        .key_column(Column::new("user_id", ColumnType::Int64))
        .column(Column::new("email", ColumnType::String));
    let preferences = Debezium::mysql("app", "preferences")
        .key_column(Column::new("user_id", ColumnType::Int64))
        .column(Column::new("dark_mode", ColumnType::Boolean));
    (writer(users, wire), writer(preferences, wire))
}

const JSON_WITH_SCHEMA: Wire = Wire::Json(EventFormat::Envelope { schemas: true });
const JOIN_WIRES: [Wire; 2] = [JSON_WITH_SCHEMA, Wire::Avro(EventFormat::Envelope { schemas: true })];

/// users ⋈ preferences (inner, to `profiles`) and users ⟕ preferences (to
/// `profiles-left`).
fn profile_topology(co_partitioned: bool, wire: Wire) -> Topology {
    fn cdc<Row: serde::de::DeserializeOwned + 'static>(co_partitioned: bool, wire: Wire) -> Cdc<i64, Row> {
        if co_partitioned {
            cdc_for(wire).co_partitioned()
        } else {
            cdc_for(wire)
        }
    }
    let builder = StreamsBuilder::new();
    let users = builder.cdc_table::<i64, User>("mysql.app.users", cdc(co_partitioned, wire));
    let prefs = builder.cdc_table::<i64, Preferences>("mysql.app.preferences", cdc(co_partitioned, wire));
    users
        .join(&prefs, |u, p| (u.email.clone(), Some(p.dark_mode)))
        .to("profiles", Produced::with(Json::new(), Json::new()));
    users
        .left_join(&prefs, |u, p| (u.email.clone(), p.map(|p| p.dark_mode)))
        .to("profiles-left", Produced::with(Json::new(), Json::new()));
    builder.build().unwrap()
}

/// The compacted view of an output topic.
fn compacted(driver: &TopologyTestDriver, topic: &str) -> BTreeMap<i64, Profile> {
    driver
        .output_topic(topic, Json::<i64>::new(), Json::<Profile>::new())
        .read_key_values_to_map()
        .unwrap()
        .into_iter()
        .collect()
}

#[derive(Debug, Clone)]
struct JoinUpdate {
    user_side: bool,
    id: i64,
    /// `None` deletes (a `d` event and its tombstone).
    value: Option<u8>,
}

fn join_updates() -> impl Strategy<Value = Vec<JoinUpdate>> {
    prop::collection::vec(
        (any::<bool>(), 0i64..24, prop::option::weighted(0.8, 0u8..4)).prop_map(|(user_side, id, value)| JoinUpdate {
            user_side,
            id,
            value,
        }),
        1..80,
    )
}

/// Writes the updates as Debezium would (keys partitioned by murmur2 of
/// their bytes) and returns the reference inner and left joins.
fn feed_profiles(
    driver: &TopologyTestDriver,
    updates: &[JoinUpdate],
    wire: Wire,
) -> (BTreeMap<i64, Profile>, BTreeMap<i64, Profile>) {
    let (users_debezium, prefs_debezium) = users_and_preferences(wire);
    let users_in = driver.input_topic("mysql.app.users", Nullable(Bytes), Bytes);
    let prefs_in = driver.input_topic("mysql.app.preferences", Nullable(Bytes), Bytes);
    let mut users: HashMap<i64, User> = HashMap::new();
    let mut prefs: HashMap<i64, Preferences> = HashMap::new();
    for update in updates {
        let id = update.id;
        let key = |debezium: &Debezium| Some(debezium.key(&id));
        if update.user_side {
            let before = users.get(&id).cloned();
            let after = update.value.map(|v| User {
                user_id: id,
                email: format!("user{id}-{v}@example.com"),
            });
            write_change(
                &users_in,
                &users_debezium,
                key(&users_debezium),
                before.as_ref(),
                after.as_ref(),
            );
            match after {
                Some(row) => users.insert(id, row),
                None => users.remove(&id),
            };
        } else {
            let before = prefs.get(&id).cloned();
            let after = update.value.map(|v| Preferences {
                user_id: id,
                dark_mode: v % 2 == 0,
            });
            write_change(
                &prefs_in,
                &prefs_debezium,
                key(&prefs_debezium),
                before.as_ref(),
                after.as_ref(),
            );
            match after {
                Some(row) => prefs.insert(id, row),
                None => prefs.remove(&id),
            };
        }
    }
    let left: BTreeMap<i64, Profile> = users
        .iter()
        .map(|(id, u)| (*id, (u.email.clone(), prefs.get(id).map(|p| p.dark_mode))))
        .collect();
    let inner = left
        .iter()
        .filter(|(_, (_, dark))| dark.is_some())
        .map(|(id, p)| (*id, p.clone()))
        .collect();
    (inner, left)
}

fn write_change<Row: Serialize>(
    input: &TestInputTopic<Option<Vec<u8>>, Vec<u8>>,
    debezium: &Debezium,
    key: Option<Vec<u8>>,
    before: Option<&Row>,
    after: Option<&Row>,
) {
    let send = |value: Option<Vec<u8>>| input.pipe_raw(None, key.clone(), value, 0, Vec::new()).unwrap();
    match (before, after) {
        (None, None) => {}
        (None, Some(row)) => send(Some(debezium.event(Op::Create, None, Some(row)))),
        (Some(old), Some(row)) => send(Some(debezium.event(Op::Update, Some(old), Some(row)))),
        (Some(old), None) => {
            send(Some(debezium.event(Op::Delete, Some(old), None)));
            send(None);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_join_of_cdc_tables_with_different_key_bytes_equals_the_reference(updates in join_updates()) {
        for (stores, wire) in backends().into_iter().flat_map(|stores| JOIN_WIRES.map(|wire| (stores, wire))) {
            let driver = driver(profile_topology(false, wire), stores, JOIN_PARTITIONS);
            let (inner, left) = feed_profiles(&driver, &updates, wire);
            prop_assert_eq!(compacted(&driver, "profiles"), inner, "{:?}", wire);
            prop_assert_eq!(compacted(&driver, "profiles-left"), left, "{:?}", wire);
        }
    }
}

/// The trap the re-partitioning avoids: read in place, the two topics put
/// equal ids on different partitions and the join misses rows.
#[test]
fn declaring_such_tables_co_partitioned_gives_a_wrong_join() {
    let all_present = every_user_with_preferences();
    let (users, prefs) = users_and_preferences(JSON_WITH_SCHEMA);
    let misplaced = (0..60i64)
        .filter(|id| {
            weir::partition::partition_for_key(&users.key(id), JOIN_PARTITIONS)
                != weir::partition::partition_for_key(&prefs.key(id), JOIN_PARTITIONS)
        })
        .count();
    assert!(
        misplaced > 0,
        "the key bytes must differ in partition for this test to mean anything"
    );

    let declared = driver(
        profile_topology(true, JSON_WITH_SCHEMA),
        TestStores::InMemory,
        JOIN_PARTITIONS,
    );
    let (inner, _) = feed_profiles(&declared, &all_present, JSON_WITH_SCHEMA);
    let joined = compacted(&declared, "profiles");
    assert_eq!(joined.len(), inner.len() - misplaced);

    let driver = driver(
        profile_topology(false, JSON_WITH_SCHEMA),
        TestStores::InMemory,
        JOIN_PARTITIONS,
    );
    let (inner, _) = feed_profiles(&driver, &all_present, JSON_WITH_SCHEMA);
    assert_eq!(compacted(&driver, "profiles"), inner);
}

fn every_user_with_preferences() -> Vec<JoinUpdate> {
    (0..60)
        .flat_map(|id| {
            [true, false].map(|user_side| JoinUpdate {
                user_side,
                id,
                value: Some(0),
            })
        })
        .collect()
}

/// The repartition topics of both tables get the larger count, so tables
/// of topics with different partition counts join.
#[test]
fn cdc_tables_of_topics_with_different_partition_counts_join() {
    let config = TestDriverConfig::default()
        .partitions("mysql.app.users", 6)
        .partitions("mysql.app.preferences", 4);
    let driver = TopologyTestDriver::with_config(profile_topology(false, JSON_WITH_SCHEMA), config).unwrap();
    let (inner, left) = feed_profiles(&driver, &every_user_with_preferences(), JSON_WITH_SCHEMA);
    assert_eq!(compacted(&driver, "profiles"), inner);
    assert_eq!(compacted(&driver, "profiles-left"), left);
    for table in ["users", "preferences"] {
        let topic = driver.repartition_topic(&format!("mysql.app.{table}-cdc"));
        assert_eq!(driver.partitions_of(&topic), 6, "{topic}");
    }
}
