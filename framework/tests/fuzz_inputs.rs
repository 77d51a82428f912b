//! Fuzz-style property tests of the decoders that read bytes from outside
//! weir: Debezium JSON (envelope and flattened, with and without the
//! schema wrapper, keys) and Avro (Confluent wire format) through CDC
//! tables and streams, the Avro serde, and answers of HTTP lookups. Inputs
//! are arbitrary bytes, byte-level mutations of real records and
//! structure-aware mutations of their JSON (see `common::mutate`).
//!
//! The property: nothing panics, and every record either counts as a
//! change event or goes to the dead-letter topic with headers that name
//! its topic, partition and offset and say why. `WEIR_FUZZ_CASES=n` runs n
//! cases per target (each case pipes a batch of records).
//!
//! Checkpoint files, the change serde of repartitioned tables and
//! configuration files have theirs beside their code (crate-private).

mod common;

use common::mutate::{cases, hostile};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use weir::avro::{Avro, SchemaRegistry};
use weir::cdc::{Cdc, ChangeEvent, Date, Decimal, JsonText, MicroTimestamp, Op, ZonedTimestamp};
use weir::error_handler::*;
use weir::metrics::SkipReason;
use weir::record::Header;
use weir::serde::{Bytes, Json, Nullable, Serde};
use weir::testing::debezium::{Column, ColumnType, Debezium, EventFormat};
use weir::testing::schema_registry::TestSchemaRegistry;
use weir::testing::{TestDriverConfig, TestStores, TopologyTestDriver};
use weir::{Produced, StreamsBuilder, Topology};

const TABLE_TOPIC: &str = "pg.public.accounts";
const STREAM_TOPIC: &str = "pg.public.accounts-events";
const BATCH: usize = 12;

/// A row with every Debezium semantic type weir maps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Account {
    id: i64,
    balance: Option<Decimal>,
    opened: Option<Date>,
    updated_at: Option<MicroTimestamp>,
    created_at: Option<ZonedTimestamp>,
    settings: Option<JsonText>,
    status: Option<String>,
    score: Option<f64>,
    active: Option<bool>,
}

fn writer(format: EventFormat) -> Debezium {
    Debezium::postgres("pg", "public", "accounts")
        .key_column(Column::new("id", ColumnType::Int64))
        .column(Column::nullable("balance", ColumnType::Decimal { scale: 2 }))
        .column(Column::nullable("opened", ColumnType::Date))
        .column(Column::nullable("updated_at", ColumnType::MicroTimestamp))
        .column(Column::nullable("created_at", ColumnType::ZonedTimestamp))
        .column(Column::nullable("settings", ColumnType::Json))
        .column(Column::nullable(
            "status",
            ColumnType::Enum(vec!["active".into(), "closed".into()]),
        ))
        .column(Column::nullable("score", ColumnType::Float64))
        .column(Column::nullable("active", ColumnType::Boolean))
        .format(format)
}

fn account(id: i64) -> Account {
    Account {
        id,
        balance: Some("-1234.50".parse().unwrap()),
        opened: serde_json::from_value(serde_json::json!(19_000)).ok(),
        updated_at: serde_json::from_value(serde_json::json!(1_700_000_000_123_456i64)).ok(),
        created_at: serde_json::from_value(serde_json::json!("2023-11-14T22:13:20.5+02:00")).ok(),
        settings: Some(JsonText(serde_json::json!({"theme": "dark"}))),
        status: Some("active".into()),
        score: Some(0.25),
        active: Some(true),
    }
}

/// Real keys and events of every operation, written by `debezium`.
fn seeds(debezium: &Debezium) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let keys = vec![debezium.key(&7i64), debezium.key(&-1i64)];
    let (old, new) = (
        account(7),
        Account {
            balance: None,
            ..account(7)
        },
    );
    let values = vec![
        debezium.event(Op::Create, None, Some(&new)),
        debezium.event(Op::Update, Some(&old), Some(&new)),
        debezium.event(Op::Delete, Some(&old), None::<&Account>),
        debezium.event(Op::Read, None, Some(&old)),
    ];
    (keys, values)
}

/// A table and a stream of the same events, each dead-lettering to its
/// default topic.
fn topology(table: Cdc<i64, Account>, stream: Cdc<i64, Account>) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .cdc_table::<i64, Account>(TABLE_TOPIC, table.co_partitioned().store("accounts"))
        .to("accounts-out", Produced::with(Json::new(), Json::new()));
    builder
        .cdc_stream::<i64, Account>(STREAM_TOPIC, stream)
        .map_values(|event: ChangeEvent<Account>| event.op.code().to_string())
        .to("ops-out", Produced::with(Json::new(), Json::new()));
    builder.build().unwrap()
}

/// One record as piped: key and value, each possibly null.
type RawPair = (Option<Vec<u8>>, Option<Vec<u8>>);

fn records(keys: Vec<Vec<u8>>, values: Vec<Vec<u8>>, json: bool) -> impl Strategy<Value = Vec<RawPair>> {
    let key = prop_oneof![1 => Just(None), 8 => hostile(keys, json).prop_map(Some)];
    let value = prop_oneof![1 => Just(None), 12 => hostile(values, json).prop_map(Some)];
    prop::collection::vec((key, value), 1..BATCH)
}

fn header<'a>(headers: &'a [Header], key: &str) -> Option<&'a str> {
    Header::value_of(headers, key).and_then(|v| std::str::from_utf8(v).ok())
}

/// Pipes `records` into both CDC topics and checks the property: the
/// driver keeps going, and each record is a counted change event or a dead
/// letter naming its topic, partition and offset and the reason.
fn check_every_record_is_accounted_for(driver: &TopologyTestDriver, records: &[RawPair]) -> Result<(), TestCaseError> {
    for topic in [TABLE_TOPIC, STREAM_TOPIC] {
        let input = driver.input_topic(topic, Nullable(Bytes), Nullable(Bytes));
        for (key, value) in records {
            let piped = input.pipe_raw(Some(0), key.clone(), value.clone(), 0, Vec::new());
            prop_assert!(piped.is_ok(), "a record stopped the driver: {piped:?}");
        }
        let dead = driver
            .output_topic(
                &weir::cdc::default_dead_letter_topic(topic),
                Nullable(Bytes),
                Nullable(Bytes),
            )
            .read_records()
            .unwrap();
        let mut offsets = BTreeSet::new();
        for letter in &dead {
            prop_assert_eq!(header(&letter.headers, DLQ_SOURCE_TOPIC), Some(topic));
            prop_assert_eq!(header(&letter.headers, DLQ_SOURCE_PARTITION), Some("0"));
            let offset: usize = header(&letter.headers, DLQ_SOURCE_OFFSET)
                .and_then(|o| o.parse().ok())
                .expect("an offset header");
            prop_assert!(offsets.insert(offset), "offset {offset} dead-lettered twice");
            prop_assert!(offset < records.len(), "offset {offset} was never piped");
            let (key, value) = &records[offset];
            prop_assert_eq!(&letter.key, key);
            prop_assert_eq!(&letter.value.clone().flatten(), value);
            let message = header(&letter.headers, DLQ_ERROR_MESSAGE).unwrap_or_default();
            prop_assert!(message.contains(topic), "the reason names the topic: {message}");
        }
        let metrics = driver.metrics();
        let events: u64 = metrics.cdc_events.get(topic).map_or(0, |counts| counts.iter().sum());
        let dead = metrics
            .skipped
            .get(&(SkipReason::DeadLettered, topic.into()))
            .copied()
            .unwrap_or(0);
        prop_assert_eq!(
            events + dead,
            records.len() as u64,
            "{}: every record is a change event ({}) or a dead letter ({})",
            topic,
            events,
            dead
        );
    }
    Ok(())
}

fn driver(topology: Topology) -> TopologyTestDriver {
    TopologyTestDriver::with_config(
        topology,
        TestDriverConfig::default()
            .default_partitions(1)
            .stores(TestStores::InMemory),
    )
    .unwrap()
}

/// Seeds of all four JSON layouts.
fn json_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for format in [
        EventFormat::Envelope { schemas: true },
        EventFormat::Envelope { schemas: false },
        EventFormat::Flattened { schemas: true },
        EventFormat::Flattened { schemas: false },
    ] {
        let (k, v) = seeds(&writer(format));
        keys.extend(k);
        values.extend(v);
    }
    (keys, values)
}

#[test]
fn debezium_json_of_any_shape_is_decoded_or_dead_lettered() {
    let (keys, values) = json_seeds();
    let config = ProptestConfig::with_cases(cases(3_000));
    proptest!(config, |(batch in records(keys.clone(), values.clone(), true))| {
        check_every_record_is_accounted_for(&driver(topology(Cdc::json(), Cdc::json())), &batch)?;
        check_every_record_is_accounted_for(&driver(topology(Cdc::flattened(), Cdc::flattened())), &batch)?;
    });
}

#[test]
fn debezium_avro_of_any_shape_is_decoded_or_dead_lettered() {
    let server = TestSchemaRegistry::start().unwrap();
    let registry = SchemaRegistry::new(server.url()).unwrap();
    let (mut keys, mut values) = seeds(&writer(EventFormat::Envelope { schemas: true }).avro(&registry));
    // Another server name, so that the flattened schemas have subjects of their own.
    let (flat_keys, flat_values) = seeds(
        &writer(EventFormat::Flattened { schemas: true })
            .server("flat")
            .avro(&registry),
    );
    keys.extend(flat_keys);
    values.extend(flat_values);
    let config = ProptestConfig::with_cases(cases(5_000));
    proptest!(config, |(batch in records(keys.clone(), values.clone(), false))| {
        check_every_record_is_accounted_for(
            &driver(topology(Cdc::avro(&registry), Cdc::avro(&registry))),
            &batch,
        )?;
    });
}

/// Pipes one record into the CDC table's topic; the reason of its one
/// dead letter.
fn dead_letter_of(driver: &TopologyTestDriver, key: Vec<u8>, value: Vec<u8>) -> String {
    driver
        .input_topic(TABLE_TOPIC, Nullable(Bytes), Nullable(Bytes))
        .pipe_raw(Some(0), Some(key), Some(value), 0, Vec::new())
        .unwrap();
    let dead = driver
        .output_topic(
            &weir::cdc::default_dead_letter_topic(TABLE_TOPIC),
            Nullable(Bytes),
            Nullable(Bytes),
        )
        .read_records()
        .unwrap();
    assert_eq!(dead.len(), 1, "one dead letter");
    header(&dead[0].headers, DLQ_ERROR_MESSAGE).unwrap().to_string()
}

/// Debezium's writer schema is data too: a scale no decimal can have, in
/// the JSON schema wrapper and in an Avro writer schema, dead-letters the
/// record instead of panicking.
#[test]
fn a_decimal_scale_from_the_data_beyond_any_database_is_a_dead_letter() {
    let json = writer(EventFormat::Envelope { schemas: true });
    let event = json.event(Op::Create, None, Some(&account(7)));
    let text = String::from_utf8(event).unwrap();
    assert!(text.contains(r#""scale":"2""#), "{text}");
    let huge = text.replace(r#""scale":"2""#, r#""scale":"100000""#);

    let message = dead_letter_of(
        &driver(topology(Cdc::json(), Cdc::json())),
        json.key(&7i64),
        huge.into_bytes(),
    );
    assert!(message.contains("scale 100000"), "{message}");

    let server = TestSchemaRegistry::start().unwrap();
    let registry = SchemaRegistry::new(server.url()).unwrap();
    // As Confluent's AvroConverter writes a Connect Decimal.
    let schema = serde_json::json!({
        "type": "record", "name": "Envelope", "namespace": "pg.public.accounts",
        "fields": [
            {"name": "before", "type": ["null", {
                "type": "record", "name": "Value",
                "fields": [
                    {"name": "id", "type": "long"},
                    {"name": "balance", "type": ["null", {
                        "type": "bytes", "logicalType": "decimal", "precision": 100_001, "scale": 100_000,
                        "connect.name": "org.apache.kafka.connect.data.Decimal",
                        "connect.parameters": {"scale": "100000"}
                    }], "default": null}
                ]
            }], "default": null},
            {"name": "after", "type": ["null", "Value"], "default": null},
            {"name": "op", "type": "string"}
        ]
    });
    let payload = serde_json::json!({"before": null, "after": {"id": 7, "balance": "AQ=="}, "op": "c"});
    let avro = weir::testing::debezium::connect_json_as_avro(&registry, "huge-scale-value", &schema, &payload);
    let avro_key = writer(EventFormat::Envelope { schemas: true })
        .avro(&registry)
        .key(&7i64);
    let message = dead_letter_of(
        &driver(topology(Cdc::avro(&registry), Cdc::avro(&registry))),
        avro_key,
        avro,
    );
    assert!(message.contains("scale 100000"), "{message}");
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, apache_avro::AvroSchema)]
struct Profile {
    user_id: i64,
    email: String,
    dark_mode: Option<bool>,
    tags: Vec<String>,
}

/// The Avro serde reads anything a topic may hold, the Confluent header
/// included, into a value or an error naming the topic.
#[test]
fn the_avro_serde_reads_any_bytes_into_a_value_or_an_error() {
    let server = TestSchemaRegistry::start().unwrap();
    let registry = SchemaRegistry::new(server.url()).unwrap();
    let serde = Avro::<Profile>::value(&registry);
    let mut seed = Vec::new();
    let profile = Profile {
        user_id: 7,
        email: "ada@example.com".into(),
        dark_mode: Some(true),
        tags: vec!["a".into(), "b".into()],
    };
    serde.serialize("profiles", &profile, &mut seed).unwrap();
    let config = ProptestConfig::with_cases(cases(20_000));
    proptest!(config, |(bytes in hostile(vec![seed.clone()], false))| {
        match serde.deserialize("profiles", Some(&bytes)) {
            Ok(_) => {}
            Err(error) => prop_assert!(error.to_string().contains("profiles"), "{error}"),
        }
    });
}

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
struct Mapping {
    user_id: i64,
    new_user_id: String,
}

/// A service that answers every request with the bytes last given to it,
/// then closes the connection.
struct RawHttpService {
    address: std::net::SocketAddr,
    answer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RawHttpService {
    fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let answer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = answer.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = shared.lock().unwrap().clone();
                let _ = stream.write_all(&answer);
            }
        });
        RawHttpService { address, answer }
    }
}

/// An HTTP lookup reads any answer a service or a proxy may send — bad
/// status lines, headers, lengths, encodings, bodies — into a result or an
/// error naming the request.
#[test]
fn an_http_lookup_reads_any_answer_into_a_result_or_an_error() {
    use weir::enrich::{HttpJsonLookup, Lookup};
    let service = RawHttpService::start();
    let lookup = HttpJsonLookup::<i64, Mapping>::new(format!("http://{}/users/{{}}", service.address))
        .unwrap()
        .timeout(std::time::Duration::from_millis(500))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = br#"{"user_id":7,"new_user_id":"u-7"}"#;
    let seeds = vec![
        [
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat(),
        [
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
                body.len()
            )
            .as_bytes(),
            body,
            b"\r\n0\r\n\r\n",
        ]
        .concat(),
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 4\r\n\r\nbusy".to_vec(),
        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/users/7\r\ncontent-length: 0\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 3\r\n\r\nabc".to_vec(),
    ];
    let config = ProptestConfig::with_cases(cases(5_000));
    proptest!(config, |(answer in hostile(seeds.clone(), false))| {
        *service.answer.lock().unwrap() = answer;
        match runtime.block_on(lookup.lookup(7)) {
            Ok(_) => {}
            Err(error) => prop_assert!(error.to_string().contains("/users/7"), "{}", error),
        }
    });
}
