//! Debezium change events in the formats Debezium's documentation shows for
//! MySQL and PostgreSQL, through `cdc_table` and `cdc_stream`.

mod common;

use common::{backends, driver as test_driver};
use serde::{Deserialize, Serialize};
use weir::avro::SchemaRegistry;
use weir::cdc::{
    Cdc, ChangeEvent, Date, Decimal, JsonEvents, JsonText, MicroTimestamp, Op, Snapshot, TruncatePolicy, ZonedTimestamp,
};
use weir::error_handler::*;
use weir::metrics::SkipReason;
use weir::metrics::TaskMetrics;
use weir::record::Header;
use weir::serde::{Bytes, Json, Nullable};
use weir::testing::debezium::{connect_json_as_avro, Column, ColumnType, Debezium, EventFormat};
use weir::testing::schema_registry::TestSchemaRegistry;
use weir::testing::{TestInputTopic, TestStores, TopologyTestDriver};
use weir::{ErrorHandler, Produced, StreamsBuilder, Topology};

const CUSTOMERS: &str = "mysql-server-1.inventory.customers";
const ACCOUNTS: &str = "PostgreSQL_server.public.accounts";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Customer {
    id: i32,
    first_name: String,
    last_name: String,
    email: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Active,
    Suspended,
}

/// Every column but the key is nullable, as PostgreSQL deletes under the
/// default `REPLICA IDENTITY` carry only the key in `before`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Account {
    id: i32,
    balance: Option<Decimal>,
    opened: Option<Date>,
    updated_at: Option<MicroTimestamp>,
    created_at: Option<ZonedTimestamp>,
    settings: Option<JsonText>,
    status: Option<Status>,
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/debezium/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A raw-bytes input, keys nullable.
fn raw_input(driver: &TopologyTestDriver, topic: &str) -> TestInputTopic<Option<Vec<u8>>, Vec<u8>> {
    driver.input_topic(topic, Nullable(Bytes), Bytes)
}

fn pipe(input: &TestInputTopic<Option<Vec<u8>>, Vec<u8>>, key: Option<&[u8]>, value: Option<Vec<u8>>) {
    input
        .pipe_raw(None, key.map(<[u8]>::to_vec), value, 0, Vec::new())
        .expect("the record is processed");
}

/// A CDC table of `topic` named `store`, written to `<topic>-out`.
fn table_topology<K, Row>(topic: &str, cdc: Cdc<K, Row>) -> Topology
where
    K: weir::Data + Serialize + serde::de::DeserializeOwned,
    Row: weir::Data + Serialize + serde::de::DeserializeOwned,
{
    let builder = StreamsBuilder::new();
    builder
        .cdc_table::<K, Row>(topic, cdc.store("table"))
        .to(&format!("{topic}-out"), Produced::with(Json::new(), Json::new()));
    builder.build().unwrap()
}

/// Change events as a `cdc_stream` forwards them, with their keys.
type Events<K, Row> = Vec<(Option<K>, ChangeEvent<Row>)>;

/// Runs `cdc_stream` of `topic` over the records (key, value) and returns
/// the events it forwards, with the driver's metrics.
fn stream_events<K, Row>(
    topic: &str,
    cdc: Cdc<K, Row>,
    records: Vec<(Option<&[u8]>, Vec<u8>)>,
) -> (Events<K, Row>, TaskMetrics)
where
    K: weir::Data + Serialize + serde::de::DeserializeOwned,
    Row: weir::Data + Serialize + serde::de::DeserializeOwned,
{
    let builder = StreamsBuilder::new();
    builder
        .cdc_stream::<K, Row>(topic, cdc)
        .to("events", Produced::with(Json::new(), Json::new()));
    let driver = test_driver(builder.build().unwrap(), TestStores::InMemory, 3);
    let input = raw_input(&driver, topic);
    for (key, value) in records {
        pipe(&input, key, Some(value));
    }
    let events = driver
        .output_topic("events", Json::<Option<K>>::new(), Json::<ChangeEvent<Row>>::new())
        .read_key_values()
        .unwrap()
        .into_iter()
        .map(|(key, event)| (key, event.expect("events are never null")))
        .collect();
    (events, driver.metrics())
}

#[test]
fn mysql_create_update_delete_and_tombstone_give_one_downstream_deletion() {
    for stores in backends() {
        let driver = test_driver(table_topology::<i32, Customer>(CUSTOMERS, Cdc::json()), stores, 3);
        let input = raw_input(&driver, CUSTOMERS);
        let out = driver.output_topic(&format!("{CUSTOMERS}-out"), Json::<i32>::new(), Json::<Customer>::new());
        // The documented create carries the schema wrapper on key and value;
        // the update and delete are written without it.
        pipe(
            &input,
            Some(&fixture("mysql_customers_key.json")),
            Some(fixture("mysql_customers_create.json")),
        );
        let plain_key = br#"{"id":1004}"#.as_slice();
        pipe(&input, Some(plain_key), Some(fixture("mysql_customers_update.json")));
        pipe(&input, Some(plain_key), Some(fixture("mysql_customers_delete.json")));
        pipe(&input, Some(plain_key), None);

        let anne = |first: &str| Customer {
            id: 1004,
            first_name: first.into(),
            last_name: "Kretchmar".into(),
            email: "annek@noanswer.org".into(),
        };
        assert_eq!(
            out.read_key_values().unwrap(),
            vec![
                (1004, Some(anne("Anne"))),
                (1004, Some(anne("Anne Marie"))),
                (1004, None)
            ]
        );
        assert!(driver
            .store_contents("table", Json::<i32>::new(), Json::<Customer>::new())
            .unwrap()
            .is_empty());
        let metrics = driver.metrics();
        for (op, n) in [("c", 1), ("u", 1), ("d", 1), ("tombstone", 1), ("r", 0)] {
            assert_eq!(metrics.cdc_events_for(op), n, "{op}");
        }
    }
}

#[test]
fn snapshot_reads_upsert_and_the_stream_shows_the_snapshot_marker() {
    let (events, _) = stream_events::<i32, Customer>(
        CUSTOMERS,
        Cdc::json(),
        vec![(Some(br#"{"id":1001}"#), fixture("mysql_customers_snapshot_read.json"))],
    );
    let (key, event) = &events[0];
    assert_eq!(*key, Some(1001));
    assert_eq!(event.op, Op::Read);
    assert_eq!(event.source.snapshot, Snapshot::First);
    assert!(event.source.snapshot.is_snapshot());
    assert_eq!(event.source.file.as_deref(), Some("mysql-bin.000003"));
    assert_eq!(event.source.pos, Some(154));
    assert_eq!(event.after.as_ref().unwrap().first_name, "Sally");

    for stores in backends() {
        let driver = test_driver(table_topology::<i32, Customer>(CUSTOMERS, Cdc::json()), stores, 2);
        pipe(
            &raw_input(&driver, CUSTOMERS),
            Some(br#"{"id":1001}"#),
            Some(fixture("mysql_customers_snapshot_read.json")),
        );
        let table = driver
            .store_contents("table", Json::<i32>::new(), Json::<Customer>::new())
            .unwrap();
        assert_eq!(table[&1001].email, "sally.thomas@acme.com");
    }
}

#[test]
fn postgres_semantic_types_are_read_with_the_scale_from_the_schema() {
    // REPLICA IDENTITY DEFAULT: the delete's `before` holds the key column only.
    let (events, _) = stream_events::<i32, Account>(
        ACCOUNTS,
        Cdc::json(),
        vec![
            (Some(br#"{"id":1}"#), fixture("postgres_accounts_create.json")),
            (Some(br#"{"id":1}"#), fixture("postgres_accounts_delete.json")),
        ],
    );
    let events: Vec<ChangeEvent<Account>> = events.into_iter().map(|(_, event)| event).collect();
    let created = &events[0];
    let row = created.after.as_ref().unwrap();
    assert_eq!(row.balance, Some(Decimal::new(123450, 2).unwrap()));
    assert_eq!(row.opened.unwrap().to_string(), "2024-03-01");
    assert_eq!(row.updated_at.unwrap().to_string(), "2024-03-01 12:34:56.123456");
    assert_eq!(row.created_at.unwrap().0.timestamp_micros(), 1_709_296_496_123_456);
    assert_eq!(row.settings.as_ref().unwrap().0["theme"], "dark");
    assert_eq!(row.status, Some(Status::Active));
    assert_eq!(created.ts_us, Some(1_709_296_496_200_456));
    assert_eq!(created.ts_ns, Some(1_709_296_496_200_456_000));
    assert_eq!(created.source.lsn, Some(24_023_128));
    assert_eq!(created.source.tx_id, Some(555));
    assert_eq!(created.source.schema.as_deref(), Some("public"));
    assert_eq!(created.source.ts_us, Some(1_709_296_496_130_123));

    let deleted = &events[1];
    assert_eq!(deleted.op, Op::Delete);
    assert_eq!(deleted.before.as_ref().unwrap().id, 1);
    assert_eq!(deleted.before.as_ref().unwrap().balance, None);

    for stores in backends() {
        let driver = test_driver(table_topology::<i32, Account>(ACCOUNTS, Cdc::json()), stores, 3);
        let input = raw_input(&driver, ACCOUNTS);
        pipe(
            &input,
            Some(br#"{"id":1}"#),
            Some(fixture("postgres_accounts_create.json")),
        );
        let table = driver
            .store_contents("table", Json::<i32>::new(), Json::<Account>::new())
            .unwrap();
        assert_eq!(table[&1].balance.as_ref().unwrap().to_string(), "1234.50");
        pipe(
            &input,
            Some(br#"{"id":1}"#),
            Some(fixture("postgres_accounts_delete.json")),
        );
        assert!(driver
            .store_contents("table", Json::<i32>::new(), Json::<Account>::new())
            .unwrap()
            .is_empty());
    }
}

/// The JSON fixture's payload as Confluent's `AvroConverter` writes it,
/// with the value schema it derives from the connector's Connect schema.
fn avro_accounts_fixture(registry: &SchemaRegistry, name: &str) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
    let mut payload = json.get("payload").cloned().unwrap_or(json);
    // This connector version writes the snapshot marker as a bool in JSON;
    // the Avro schema has Debezium's newer enum text.
    if let Some(snapshot) = payload["source"].get_mut("snapshot") {
        if let Some(flag) = snapshot.as_bool() {
            *snapshot = serde_json::json!(flag.to_string());
        }
    }
    let schema: serde_json::Value = serde_json::from_slice(&fixture("postgres_accounts_value.avsc")).unwrap();
    connect_json_as_avro(registry, &format!("{ACCOUNTS}-value"), &schema, &payload)
}

fn avro_accounts_key(registry: &SchemaRegistry, id: i32) -> Vec<u8> {
    let schema = serde_json::json!({"type": "record", "name": "Key", "namespace": "PostgreSQL_server.public.accounts",
        "fields": [{"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0}],
        "connect.name": "PostgreSQL_server.public.accounts.Key"});
    connect_json_as_avro(
        registry,
        &format!("{ACCOUNTS}-key"),
        &schema,
        &serde_json::json!({ "id": id }),
    )
}

/// The same events as the JSON test above, in Avro: unions with null on
/// either side, `connect.name`d semantic types, a decimal logical type.
#[test]
fn avro_events_read_as_their_json_twins() {
    let server = TestSchemaRegistry::start().unwrap();
    let registry = SchemaRegistry::new(server.url()).unwrap();
    let key = avro_accounts_key(&registry, 1);
    let created = avro_accounts_fixture(&registry, "postgres_accounts_create.json");
    let deleted = avro_accounts_fixture(&registry, "postgres_accounts_delete.json");
    let records = || {
        vec![
            (Some(key.as_slice()), created.clone()),
            (Some(key.as_slice()), deleted.clone()),
        ]
    };
    let (avro, _) = stream_events::<i32, Account>(ACCOUNTS, Cdc::avro(&registry), records());
    let json_records = vec![
        (
            Some(br#"{"id":1}"#.as_slice()),
            fixture("postgres_accounts_create.json"),
        ),
        (
            Some(br#"{"id":1}"#.as_slice()),
            fixture("postgres_accounts_delete.json"),
        ),
    ];
    let (json, _) = stream_events::<i32, Account>(ACCOUNTS, Cdc::json(), json_records);
    assert_eq!(avro, json);
    assert_eq!(avro[0].0, Some(1));
    let row = avro[0].1.after.as_ref().unwrap();
    assert_eq!(row.balance, Some(Decimal::new(123450, 2).unwrap()));
    assert_eq!(row.status, Some(Status::Active));
    assert_eq!(avro[1].1.op, Op::Delete);

    for stores in backends() {
        let driver = test_driver(
            table_topology::<i32, Account>(ACCOUNTS, Cdc::avro(&registry)),
            stores,
            3,
        );
        let input = raw_input(&driver, ACCOUNTS);
        pipe(&input, Some(&key), Some(created.clone()));
        let table = driver
            .store_contents("table", Json::<i32>::new(), Json::<Account>::new())
            .unwrap();
        assert_eq!(table[&1].balance.as_ref().unwrap().to_string(), "1234.50");
        pipe(&input, Some(&key), Some(deleted.clone()));
        pipe(&input, Some(&key), None);
        assert!(driver
            .store_contents("table", Json::<i32>::new(), Json::<Account>::new())
            .unwrap()
            .is_empty());
        let output = driver
            .output_topic(&format!("{ACCOUNTS}-out"), Json::<i32>::new(), Json::<Account>::new())
            .read_key_values()
            .unwrap();
        assert_eq!(output.len(), 2, "an upsert and one tombstone: {output:?}");
    }

    // Not Avro, and an id the registry does not know: dead letters, with the reason.
    let driver = test_driver(
        table_topology::<i32, Account>(ACCOUNTS, Cdc::avro(&registry)),
        TestStores::InMemory,
        1,
    );
    let input = raw_input(&driver, ACCOUNTS);
    pipe(&input, Some(&key), Some(fixture("postgres_accounts_create.json")));
    pipe(&input, Some(&key), Some(vec![0, 0, 0, 0, 0x7f, 2]));
    let dead = driver
        .output_topic(&weir::cdc::default_dead_letter_topic(ACCOUNTS), Nullable(Bytes), Bytes)
        .read_records()
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert!(header_text(&dead[0].headers, "weir.error.message").contains("Confluent Avro wire format"));
    let unknown = header_text(&dead[1].headers, "weir.error.message");
    assert!(unknown.contains("127"), "{unknown}");
}

#[test]
fn truncate_events_are_surfaced_on_the_stream_and_counted_by_the_table() {
    let (events, metrics) = stream_events::<i32, Account>(
        ACCOUNTS,
        Cdc::json(),
        vec![(None, fixture("postgres_accounts_truncate.json"))],
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, None);
    assert_eq!(events[0].1.op, Op::Truncate);
    assert_eq!(metrics.cdc_events_for("t"), 1);

    for stores in backends() {
        let driver = test_driver(table_topology::<i32, Account>(ACCOUNTS, Cdc::json()), stores, 3);
        let input = raw_input(&driver, ACCOUNTS);
        pipe(
            &input,
            Some(br#"{"id":1}"#),
            Some(fixture("postgres_accounts_create.json")),
        );
        pipe(&input, None, Some(fixture("postgres_accounts_truncate.json")));
        let table = driver
            .store_contents("table", Json::<i32>::new(), Json::<Account>::new())
            .unwrap();
        assert_eq!(table.len(), 1, "the default policy keeps the rows");
        assert_eq!(driver.metrics().skipped_for(SkipReason::CdcTruncate), 1);

        let strict = test_driver(
            table_topology::<i32, Account>(ACCOUNTS, Cdc::json().on_truncate(TruncatePolicy::Fail)),
            stores,
            3,
        );
        let error = raw_input(&strict, ACCOUNTS)
            .pipe_raw(
                None,
                None,
                Some(fixture("postgres_accounts_truncate.json")),
                0,
                Vec::new(),
            )
            .unwrap_err();
        assert!(error.to_string().contains("truncated"), "{error}");
    }
}

#[test]
fn logical_messages_reach_the_stream_and_are_skipped_by_tables() {
    let (events, _) = stream_events::<String, Account>(
        ACCOUNTS,
        Cdc::json(),
        vec![(Some(br#"{"prefix":"audit"}"#), fixture("postgres_message.json"))],
    );
    let event = &events[0].1;
    assert_eq!(events[0].0.as_deref(), Some("audit"));
    assert_eq!(event.op, Op::Message);
    assert_eq!(event.message.as_ref().unwrap().prefix, "audit");

    let driver = test_driver(
        table_topology::<i32, Account>(ACCOUNTS, Cdc::json()),
        TestStores::InMemory,
        1,
    );
    pipe(
        &raw_input(&driver, ACCOUNTS),
        Some(br#"{"id":1}"#),
        Some(fixture("postgres_message.json")),
    );
    assert_eq!(driver.metrics().skipped_for(SkipReason::CdcMessage), 1);
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct User {
    user_id: i64,
    email: String,
}

fn users_table(format: EventFormat) -> Debezium {
    Debezium::mysql("app", "users")
        .key_column(Column::new("user_id", ColumnType::Int64))
        .column(Column::new("email", ColumnType::String))
        .format(format)
}

fn header(key: &str, value: &[u8]) -> Header {
    Header {
        key: key.into(),
        value: value.to_vec(),
    }
}

#[test]
fn a_primary_key_change_leaves_the_row_under_its_new_key_only() {
    for schemas in [false, true] {
        for stores in backends() {
            let debezium = users_table(EventFormat::Envelope { schemas });
            let topic = debezium.topic();
            let driver = test_driver(table_topology::<i64, User>(&topic, Cdc::json()), stores, 4);
            let input = raw_input(&driver, &topic);
            let out = driver.output_topic(&format!("{topic}-out"), Json::<i64>::new(), Json::<User>::new());
            let old = User {
                user_id: 1,
                email: "a@example.com".into(),
            };
            let new = User {
                user_id: 2,
                ..old.clone()
            };
            let (old_key, new_key) = (debezium.key(&1i64), debezium.key(&2i64));
            pipe(
                &input,
                Some(&old_key),
                Some(debezium.event(Op::Create, None, Some(&old))),
            );
            // UPDATE users SET user_id = 2 WHERE user_id = 1: Debezium emits a
            // delete and a tombstone under the old key, then a create under
            // the new key, with headers naming the other key.
            let moved_to = vec![header("__debezium.newkey", &new_key)];
            let moved_from = vec![header("__debezium.oldkey", &old_key)];
            for (key, value, headers) in [
                (
                    &old_key,
                    Some(debezium.event(Op::Delete, Some(&old), None)),
                    moved_to.clone(),
                ),
                (&old_key, None, moved_to),
                (&new_key, Some(debezium.event(Op::Create, None, Some(&new))), moved_from),
            ] {
                input.pipe_raw(None, Some(key.clone()), value, 0, headers).unwrap();
            }
            let table = driver
                .store_contents("table", Json::<i64>::new(), Json::<User>::new())
                .unwrap();
            assert_eq!(table.into_iter().collect::<Vec<_>>(), vec![(2, new.clone())]);
            let output = out.read_key_values().unwrap();
            assert_eq!(output.iter().filter(|(_, v)| v.is_none()).count(), 1, "{output:?}");
        }
    }
}

#[test]
fn flattened_rows_with_rewritten_deletes_and_plain_tombstones() {
    for schemas in [false, true] {
        for stores in backends() {
            let debezium = users_table(EventFormat::Flattened { schemas });
            let topic = debezium.topic();
            let driver = test_driver(table_topology::<i64, User>(&topic, Cdc::flattened()), stores, 2);
            let input = raw_input(&driver, &topic);
            let user = |id: i64, email: &str| User {
                user_id: id,
                email: email.into(),
            };
            pipe(
                &input,
                Some(&debezium.key(&1i64)),
                Some(debezium.event(Op::Read, None, Some(&user(1, "a@x")))),
            );
            pipe(
                &input,
                Some(&debezium.key(&2i64)),
                Some(debezium.event(Op::Create, None, Some(&user(2, "b@x")))),
            );
            pipe(
                &input,
                Some(&debezium.key(&3i64)),
                Some(debezium.event(Op::Create, None, Some(&user(3, "c@x")))),
            );
            let update = debezium.event(Op::Update, Some(&user(1, "a@x")), Some(&user(1, "new@x")));
            pipe(&input, Some(&debezium.key(&1i64)), Some(update));
            // delete.handling.mode=rewrite: the last row state with __deleted=true.
            let deletion = debezium.event(Op::Delete, Some(&user(2, "b@x")), None);
            assert!(String::from_utf8_lossy(&deletion).contains(r#""__deleted":"true""#));
            pipe(&input, Some(&debezium.key(&2i64)), Some(deletion));
            // delete.handling.mode=drop: only the tombstone arrives.
            pipe(&input, Some(&debezium.key(&3i64)), None);
            let table = driver
                .store_contents("table", Json::<i64>::new(), Json::<User>::new())
                .unwrap();
            assert_eq!(table.into_iter().collect::<Vec<_>>(), vec![(1, user(1, "new@x"))]);
        }
    }
    // The documented flattened form, written by hand.
    let driver = test_driver(
        table_topology::<i32, Customer>(CUSTOMERS, Cdc::flattened()),
        TestStores::InMemory,
        1,
    );
    let input = raw_input(&driver, CUSTOMERS);
    let row = br#"{"id":1004,"first_name":"Anne Marie","last_name":"Kretchmar","email":"annek@noanswer.org","__op":"u","__table":"customers","__source_ts_ms":1465581029100,"__deleted":"false"}"#;
    pipe(&input, Some(br#"{"id":1004}"#), Some(row.to_vec()));
    assert_eq!(
        driver
            .store_contents("table", Json::<i32>::new(), Json::<Customer>::new())
            .unwrap()
            .len(),
        1
    );
    let deleted = br#"{"id":1004,"first_name":"Anne Marie","last_name":"Kretchmar","email":"annek@noanswer.org","__op":"d","__table":"customers","__source_ts_ms":1465581902300,"__deleted":"true"}"#;
    pipe(&input, Some(br#"{"id":1004}"#), Some(deleted.to_vec()));
    assert!(driver
        .store_contents("table", Json::<i32>::new(), Json::<Customer>::new())
        .unwrap()
        .is_empty());
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Item {
    id: i64,
    price: Decimal,
}

#[test]
fn decimals_without_the_schema_need_a_configured_scale() {
    let row = br#"{"op":"c","before":null,"after":{"id":1,"price":"AeI6"},"source":{"snapshot":"false"}}"#;
    let configured = Cdc::json().events(JsonEvents::new().decimal_scale("price", 2));
    let driver = test_driver(
        table_topology::<i64, Item>("items", configured),
        TestStores::InMemory,
        1,
    );
    pipe(&raw_input(&driver, "items"), Some(b"1"), Some(row.to_vec()));
    let table = driver
        .store_contents("table", Json::<i64>::new(), Json::<Item>::new())
        .unwrap();
    assert_eq!(table[&1].price.to_string(), "1234.50");

    let driver = test_driver(
        table_topology::<i64, Item>("items", Cdc::json()),
        TestStores::InMemory,
        1,
    );
    pipe(&raw_input(&driver, "items"), Some(b"1"), Some(row.to_vec()));
    let dead = driver.output_topic("items-dlq", Bytes, Bytes).read_records().unwrap();
    let message = header_text(&dead[0].headers, DLQ_ERROR_MESSAGE);
    assert!(message.contains("decimal_scale"), "{message}");
}

fn header_text(headers: &[Header], key: &str) -> String {
    let value = Header::value_of(headers, key).unwrap_or_else(|| panic!("no header {key}"));
    String::from_utf8(value.to_vec()).unwrap()
}

/// A record no decoder can read: key, value, and what the error must mention.
type Malformed = (Option<Vec<u8>>, Option<Vec<u8>>, &'static str);

fn malformed() -> Vec<Malformed> {
    let key = Some(br#"{"id":1004}"#.to_vec());
    let event = |json: &str| Some(json.as_bytes().to_vec());
    vec![
        (key.clone(), event("{not json"), "not a Debezium change event"),
        (
            key.clone(),
            event(r#"{"before":null,"after":null}"#),
            "missing field `op`",
        ),
        (key.clone(), event(r#"{"op":"x","after":null}"#), "unknown variant `x`"),
        (
            key.clone(),
            event(r#"{"op":"c","after":null}"#),
            "without an 'after' row",
        ),
        (
            key.clone(),
            event(r#"{"op":"u","after":{"id":1004,"first_name":5,"last_name":"K","email":"e"}}"#),
            "invalid type",
        ),
        (key.clone(), Some(vec![0xff, 0xfe]), "invalid UTF-8"),
        (
            None,
            event(r#"{"op":"c","after":{"id":1,"first_name":"A","last_name":"K","email":"e"}}"#),
            "null key",
        ),
        (
            Some(b"{\"id\":\"x\"}".to_vec()),
            event(r#"{"op":"d","before":null}"#),
            "key",
        ),
        (
            key,
            event(
                r#"{"schema":{"type":"struct","fields":[{"field":"after","fields":[{"field":"p","name":"org.apache.kafka.connect.data.Decimal"}]}]},"payload":{"op":"d"}}"#,
            ),
            "has no scale",
        ),
    ]
}

#[test]
fn undecodable_records_go_to_the_dead_letter_topic_by_default() {
    for stores in backends() {
        let driver = test_driver(table_topology::<i32, Customer>(CUSTOMERS, Cdc::json()), stores, 3);
        let input = raw_input(&driver, CUSTOMERS);
        let cases = malformed();
        for (key, value, _) in &cases {
            input
                .pipe_raw(None, key.clone(), value.clone(), 0, vec![header("trace", b"t1")])
                .unwrap();
        }
        // A good record after the bad ones is processed.
        pipe(
            &input,
            Some(br#"{"id":1004}"#),
            Some(fixture("mysql_customers_update.json")),
        );
        assert_eq!(
            driver
                .store_contents("table", Json::<i32>::new(), Json::<Customer>::new())
                .unwrap()
                .len(),
            1
        );

        let dead = driver
            .output_topic(&format!("{CUSTOMERS}-dlq"), Nullable(Bytes), Bytes)
            .read_records()
            .unwrap();
        assert_eq!(dead.len(), cases.len());
        for (record, (key, value, expected)) in dead.iter().zip(&cases) {
            assert_eq!(&record.key, key);
            assert_eq!(&record.value, value);
            let message = header_text(&record.headers, DLQ_ERROR_MESSAGE);
            assert!(message.contains(expected), "expected '{expected}' in: {message}");
            assert_eq!(header_text(&record.headers, DLQ_SOURCE_TOPIC), CUSTOMERS);
            assert_eq!(header_text(&record.headers, DLQ_ERROR_CLASS), "deserialization");
            assert_eq!(header_text(&record.headers, "trace"), "t1");
            header_text(&record.headers, DLQ_SOURCE_PARTITION)
                .parse::<i32>()
                .unwrap();
            header_text(&record.headers, DLQ_SOURCE_OFFSET).parse::<i64>().unwrap();
        }
        assert_eq!(
            driver.metrics().skipped_for(SkipReason::DeadLettered),
            cases.len() as u64
        );
    }
}

#[test]
fn the_error_handler_can_log_and_continue_or_fail() {
    let cases = malformed();
    let lenient = test_driver(
        table_topology::<i32, Customer>(CUSTOMERS, Cdc::json().on_error(ErrorHandler::LogAndContinue)),
        TestStores::InMemory,
        1,
    );
    let input = raw_input(&lenient, CUSTOMERS);
    for (key, value, _) in &cases {
        input.pipe_raw(None, key.clone(), value.clone(), 0, Vec::new()).unwrap();
    }
    assert_eq!(
        lenient.metrics().skipped_for(SkipReason::DeserializationError),
        cases.len() as u64
    );
    assert!(lenient
        .output_topic(&format!("{CUSTOMERS}-dlq"), Nullable(Bytes), Nullable(Bytes))
        .is_empty());

    let strict = test_driver(
        table_topology::<i32, Customer>(CUSTOMERS, Cdc::json().on_error(ErrorHandler::Fail)),
        TestStores::InMemory,
        1,
    );
    for (key, value, expected) in cases {
        let error = raw_input(&strict, CUSTOMERS)
            .pipe_raw(None, key, value, 0, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected) && error.contains(CUSTOMERS), "{error}");
    }
}

#[test]
fn describe_shows_whether_a_cdc_table_is_repartitioned() {
    let repartitioned = table_topology::<i32, Customer>(CUSTOMERS, Cdc::json());
    let text = repartitioned.describe().to_string();
    assert!(
        text.contains("re-partitioned by weir's key serialization through <application.id>-mysql-server-1.inventory.customers-cdc-repartition"),
        "{text}"
    );
    assert_eq!(repartitioned.subtopologies().len(), 2);

    let in_place = table_topology::<i32, Customer>(CUSTOMERS, Cdc::json().co_partitioned());
    let text = in_place.describe().to_string();
    assert!(text.contains("declared co-partitioned"), "{text}");
    assert!(!text.contains("repartition"), "{text}");
    assert_eq!(in_place.subtopologies().len(), 1);
}
