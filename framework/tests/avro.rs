//! Avro serdes against the in-process Schema Registry: the wire format,
//! round trips of every type the serde mapping covers, schema evolution in
//! both directions, incompatible changes, caching, subject names, and what
//! happens when the registry is down.

use apache_avro::{AvroSchema, Schema};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use weir::avro::{Avro, SchemaRegistry, SubjectStrategy};
use weir::error::SerdeErrorKind;
use weir::serde::{Bytes, Serde, Utf8};
use weir::testing::schema_registry::TestSchemaRegistry;
use weir::testing::TopologyTestDriver;
use weir::{Consumed, ErrorHandler, Produced, StreamsBuilder};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "weir.test")]
enum Plan {
    Free,
    Pro,
    Enterprise,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "weir.test")]
struct Address {
    city: String,
    zip: Option<String>,
}

/// Every kind of field the serde mapping writes: primitives, optional
/// values (`["null", T]` unions), enums, arrays, maps, bytes and nested
/// records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "weir.test")]
struct Everything {
    id: i64,
    count: i32,
    ratio: f64,
    share: f32,
    active: bool,
    name: String,
    nickname: Option<String>,
    age: Option<i32>,
    plan: Plan,
    tags: Vec<String>,
    scores: HashMap<String, i64>,
    #[avro(with)]
    #[serde(with = "apache_avro::serde::bytes")]
    payload: Vec<u8>,
    address: Address,
    previous: Option<Address>,
}

/// A client of `server` with a cache of its own.
fn registry_at(server: &TestSchemaRegistry) -> SchemaRegistry {
    SchemaRegistry::builder(server.url())
        .attempts(3)
        .backoff(Duration::from_millis(10))
        .build()
        .unwrap()
}

fn registry() -> (TestSchemaRegistry, SchemaRegistry) {
    let server = TestSchemaRegistry::start().unwrap();
    let client = registry_at(&server);
    (server, client)
}

fn address() -> impl Strategy<Value = Address> {
    (any::<String>(), proptest::option::of(any::<String>())).prop_map(|(city, zip)| Address { city, zip })
}

fn everything() -> impl Strategy<Value = Everything> {
    (
        (
            any::<i64>(),
            any::<i32>(),
            -1e300f64..1e300,
            -1e30f32..1e30,
            any::<bool>(),
            any::<String>(),
        ),
        (
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<i32>()),
            prop_oneof![Just(Plan::Free), Just(Plan::Pro), Just(Plan::Enterprise)],
            proptest::collection::vec(any::<String>(), 0..4),
            proptest::collection::hash_map(any::<String>(), any::<i64>(), 0..4),
            proptest::collection::vec(any::<u8>(), 0..16),
        ),
        address(),
        proptest::option::of(address()),
    )
        .prop_map(
            |(
                (id, count, ratio, share, active, name),
                (nickname, age, plan, tags, scores, payload),
                address,
                previous,
            )| {
                Everything {
                    id,
                    count,
                    ratio,
                    share,
                    active,
                    name,
                    nickname,
                    age,
                    plan,
                    tags,
                    scores,
                    payload,
                    address,
                    previous,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_mapped_type_round_trips(value in everything()) {
        let (_server, client) = registry();
        let serde = Avro::<Everything>::value(&client);
        let bytes = serde.to_bytes("everything", &value).unwrap().unwrap();
        prop_assert_eq!(serde.deserialize("everything", Some(&bytes)).unwrap(), value);
    }
}

/// A type read and written with a schema of another name, as with a
/// schema file shared between teams.
#[test]
fn a_type_round_trips_under_a_schema_of_another_name() {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Location {
        city: String,
        zip: Option<String>,
    }
    let (_server, client) = registry();
    let serde = Avro::<Location>::with_schema(&client, Address::get_schema(), false);
    for zip in [None, Some("10115".to_string())] {
        let location = Location {
            city: "Berlin".into(),
            zip,
        };
        let bytes = serde.to_bytes("locations", &location).unwrap().unwrap();
        assert_eq!(serde.deserialize("locations", Some(&bytes)).unwrap(), location);
    }
}

#[test]
fn records_carry_the_magic_byte_and_the_registered_schema_id() {
    let (server, client) = registry();
    // Another schema first, so that ours does not get id 1 by chance.
    let other = server.register("other-value", r#""string""#).unwrap();
    let serde = Avro::<Address>::value(&client);
    let bytes = serde
        .to_bytes(
            "addresses",
            &Address {
                city: "Oslo".into(),
                zip: None,
            },
        )
        .unwrap()
        .unwrap();
    let id = server
        .register(
            "addresses-value",
            &serde_json::to_string(&Address::get_schema()).unwrap(),
        )
        .unwrap();
    assert_ne!(id, other);
    assert_eq!(bytes[0], 0);
    assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), id);
}

#[test]
fn schemas_and_ids_are_fetched_once() {
    let (server, client) = registry();
    let serde = Avro::<Address>::value(&client);
    let value = Address {
        city: "Lima".into(),
        zip: Some("15001".into()),
    };
    let bytes = serde.to_bytes("addresses", &value).unwrap().unwrap();
    serde.deserialize("addresses", Some(&bytes)).unwrap();
    let after_first = server.requests();
    for _ in 0..100 {
        let bytes = serde.to_bytes("addresses", &value).unwrap().unwrap();
        assert_eq!(serde.deserialize("addresses", Some(&bytes)).unwrap(), value);
    }
    assert_eq!(server.requests(), after_first);
}

#[test]
fn subjects_are_named_by_the_chosen_strategy() {
    let (_server, client) = registry();
    let value = Avro::<Address>::value(&client);
    let key = Avro::<Address>::key(&client);
    assert_eq!(value.subject("t"), "t-value");
    assert_eq!(key.subject("t"), "t-key");
    let record = Avro::<Address>::value(&client).subject_strategy(SubjectStrategy::RecordName);
    assert_eq!(record.subject("t"), "weir.test.Address");
    let topic_record = Avro::<Address>::value(&client).subject_strategy(SubjectStrategy::TopicRecordName);
    assert_eq!(topic_record.subject("t"), "t-weir.test.Address");
    // Each writes under its own subject; all read each other's records.
    let address = Address {
        city: "Kyiv".into(),
        zip: None,
    };
    for writer in [&value, &key, &record, &topic_record] {
        let bytes = writer.to_bytes("t", &address).unwrap().unwrap();
        assert_eq!(value.deserialize("t", Some(&bytes)).unwrap(), address);
    }
}

/// The user row as first published, and after two changes: a field added
/// with a default, and the same field without one.
const USER_V1: &str = r#"{"type":"record","name":"User","namespace":"weir.test","fields":[
    {"name":"user_id","type":"long"},{"name":"email","type":"string"},{"name":"legacy","type":"string","default":""}]}"#;
const USER_V2: &str = r#"{"type":"record","name":"User","namespace":"weir.test","fields":[
    {"name":"user_id","type":"long"},{"name":"email","type":"string"},
    {"name":"dark_mode","type":"boolean","default":false}]}"#;
const USER_NO_DEFAULT: &str = r#"{"type":"record","name":"User","namespace":"weir.test","fields":[
    {"name":"user_id","type":"long"},{"name":"email","type":"string"},{"name":"age","type":"int"}]}"#;
const USER_EMAIL_AS_LONG: &str = r#"{"type":"record","name":"User","namespace":"weir.test","fields":[
    {"name":"user_id","type":"long"},{"name":"email","type":"long"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserV1 {
    user_id: i64,
    email: String,
    legacy: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserV2 {
    user_id: i64,
    email: String,
    dark_mode: bool,
}

fn serde_of<T>(client: &SchemaRegistry, schema: &str) -> Avro<T> {
    Avro::with_schema(client, Schema::parse_str(schema).unwrap(), false)
}

#[test]
fn compatible_evolution_is_read_in_both_directions() {
    let (_server, client) = registry();
    let v1 = serde_of::<UserV1>(&client, USER_V1);
    let v2 = serde_of::<UserV2>(&client, USER_V2);
    let old = UserV1 {
        user_id: 7,
        email: "ada@example.com".into(),
        legacy: "x".into(),
    };
    let new = UserV2 {
        user_id: 8,
        email: "bob@example.com".into(),
        dark_mode: true,
    };

    // Old writer, new reader: the added field takes its default and the
    // removed one is skipped.
    let old_bytes = v1.to_bytes("users", &old).unwrap().unwrap();
    assert_eq!(
        v2.deserialize("users", Some(&old_bytes)).unwrap(),
        UserV2 {
            user_id: 7,
            email: "ada@example.com".into(),
            dark_mode: false
        }
    );
    // New writer (registered as version 2: backward compatible), old
    // reader: the new field is skipped and the removed one takes its default.
    let new_bytes = v2.to_bytes("users", &new).unwrap().unwrap();
    assert_eq!(
        v1.deserialize("users", Some(&new_bytes)).unwrap(),
        UserV1 {
            user_id: 8,
            email: "bob@example.com".into(),
            legacy: String::new()
        }
    );
    assert_ne!(old_bytes[1..5], new_bytes[1..5], "two schema ids");
}

#[test]
fn an_incompatible_change_is_refused_when_registered_and_when_read() {
    let (_server, client) = registry();
    let v1 = serde_of::<UserV1>(&client, USER_V1);
    let old = UserV1 {
        user_id: 7,
        email: "ada@example.com".into(),
        legacy: String::new(),
    };
    let old_bytes = v1.to_bytes("users", &old).unwrap().unwrap();

    // A field added without a default cannot read old data: the registry
    // refuses the schema, naming the subject.
    #[derive(Debug, Serialize, Deserialize)]
    struct WithAge {
        user_id: i64,
        email: String,
        age: i32,
    }
    let with_age = serde_of::<WithAge>(&client, USER_NO_DEFAULT);
    let refused = with_age
        .to_bytes(
            "users",
            &WithAge {
                user_id: 1,
                email: "e".into(),
                age: 3,
            },
        )
        .unwrap_err();
    assert_eq!(refused.kind, SerdeErrorKind::Serialize);
    assert!(
        refused.message.contains("users-value") && refused.message.contains("incompatible"),
        "{refused}"
    );

    // Reading old data with it fails with the ids, the subject and Avro's
    // reason (the field without a default).
    let unreadable = with_age.deserialize("users", Some(&old_bytes)).unwrap_err();
    assert_eq!(unreadable.kind, SerdeErrorKind::Deserialize);
    for expected in ["schema 1", "weir.test.User", "users-value", "age"] {
        assert!(
            unreadable.message.contains(expected),
            "no {expected:?} in: {unreadable}"
        );
    }

    // A field whose type changed incompatibly is named too.
    #[derive(Debug, Serialize, Deserialize)]
    struct EmailAsLong {
        user_id: i64,
        email: i64,
    }
    let email_as_long = serde_of::<EmailAsLong>(&client, USER_EMAIL_AS_LONG);
    let unreadable = email_as_long.deserialize("users", Some(&old_bytes)).unwrap_err();
    assert!(unreadable.message.contains("schema 1"), "{unreadable}");
}

#[test]
fn bad_bytes_and_unknown_ids_are_deserialization_errors() {
    let (server, client) = registry();
    let serde = Avro::<Address>::value(&client);
    let json = serde.deserialize("t", Some(br#"{"city":"Oslo"}"#)).unwrap_err();
    assert_eq!(json.kind, SerdeErrorKind::Deserialize);
    assert!(json.message.contains("Confluent Avro wire format"), "{json}");
    let unknown = serde.deserialize("t", Some(&[0, 0, 0, 3, 231, 2])).unwrap_err();
    assert_eq!(unknown.kind, SerdeErrorKind::Deserialize);
    assert!(unknown.message.contains("40403"), "{unknown}");
    // The registry said so once; the next records naming that id are
    // answered from the cache, without a request each.
    let before = server.requests();
    for _ in 0..10 {
        let again = serde.deserialize("t", Some(&[0, 0, 0, 3, 231, 2])).unwrap_err();
        assert_eq!(again, unknown);
    }
    assert_eq!(server.requests(), before);
    let null = serde.deserialize("t", None).unwrap_err();
    assert!(null.message.contains("null"), "{null}");
}

/// A registry in a brownout, throttling, or refusing expired credentials
/// cannot say whether a record is good: reading or writing through it is
/// `Unavailable` (a source stops; it never dead-letters), after retries.
#[test]
fn a_registry_that_refuses_to_serve_is_unavailable_whatever_its_status() {
    let (server, client) = registry();
    let value = Address {
        city: "Pune".into(),
        zip: None,
    };
    let bytes = Avro::<Address>::value(&client).to_bytes("t", &value).unwrap().unwrap();
    for status in [500, 502, 503, 504, 408, 429, 401, 403] {
        server.fail_requests(Some(status));
        // A serde that has not read this schema yet.
        let cold = Avro::<Address>::value(&registry_at(&server));
        let before = server.requests();
        let error = cold.deserialize("t", Some(&bytes)).unwrap_err();
        assert_eq!(error.kind, SerdeErrorKind::Unavailable, "{status}: {error}");
        assert_eq!(server.requests() - before, 3, "{status}: retried");
    }
    server.fail_requests(None);
    let cold = Avro::<Address>::value(&registry_at(&server));
    assert_eq!(cold.deserialize("t", Some(&bytes)).unwrap(), value);
}

#[test]
fn an_unreachable_registry_is_retried_then_reported_as_unavailable() {
    let (server, client) = registry();
    let serde = Avro::<Address>::value(&client);
    let value = Address {
        city: "Pune".into(),
        zip: None,
    };
    server.fail_requests(Some(503));
    let before = server.requests();
    let error = serde.to_bytes("t", &value).unwrap_err();
    assert_eq!(error.kind, SerdeErrorKind::Unavailable);
    assert!(error.message.contains("unavailable after 3 attempts"), "{error}");
    assert_eq!(server.requests() - before, 3);
    server.fail_requests(None);
    let bytes = serde.to_bytes("t", &value).unwrap().unwrap();
    assert_eq!(serde.deserialize("t", Some(&bytes)).unwrap(), value);
}

/// A topology reading and writing Avro: records map through; a record that
/// is not Avro is dead-lettered; an unreachable registry stops processing
/// instead of dead-lettering good records.
#[test]
fn a_topology_reads_and_writes_avro_and_stops_when_the_registry_is_down() {
    let (server, client) = registry();
    let builder = StreamsBuilder::new();
    builder
        .stream(
            "addresses",
            Consumed::with(Utf8, Avro::<Address>::value(&client)).on_error(ErrorHandler::dead_letter("addresses-dlq")),
        )
        .map_values(|a: Address| Address {
            city: a.city.to_uppercase(),
            zip: a.zip,
        })
        .to("shouted", Produced::with(Utf8, Avro::<Address>::value(&client)));
    let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let input = driver.input_topic("addresses", Utf8, Avro::<Address>::value(&client));
    let output = driver.output_topic("shouted", Utf8, Avro::<Address>::value(&client));
    input
        .pipe(
            "a".into(),
            Address {
                city: "Quito".into(),
                zip: None,
            },
        )
        .unwrap();
    assert_eq!(
        output.read_key_values().unwrap(),
        vec![(
            "a".to_string(),
            Some(Address {
                city: "QUITO".into(),
                zip: None
            })
        )]
    );

    let raw = driver.input_topic("addresses", Utf8, Utf8);
    raw.pipe("b".into(), "not avro".into()).unwrap();
    let dead = driver
        .output_topic("addresses-dlq", Utf8, Utf8)
        .read_key_values()
        .unwrap();
    assert_eq!(dead, vec![("b".to_string(), Some("not avro".to_string()))]);

    // Another application, whose serde has not fetched the writer schema
    // yet, meets the registry down: processing stops with the reason, and
    // the good record is not dead-lettered.
    let cold = SchemaRegistry::builder(server.url())
        .attempts(2)
        .backoff(Duration::from_millis(5))
        .build()
        .unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream(
            "addresses",
            Consumed::with(Utf8, Avro::<Address>::value(&cold)).on_error(ErrorHandler::dead_letter("addresses-dlq")),
        )
        .to("copies", Produced::with(Utf8, Avro::<Address>::value(&cold)));
    let stopped = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    let bytes = Avro::<Address>::value(&client)
        .to_bytes(
            "addresses",
            &Address {
                city: "Lagos".into(),
                zip: Some("1".into()),
            },
        )
        .unwrap()
        .unwrap();
    server.fail_requests(Some(503));
    let error = stopped
        .input_topic("addresses", Utf8, Bytes)
        .pipe("c".into(), bytes)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unavailable after 2 attempts") && error.contains("addresses"),
        "{error}"
    );
    assert!(stopped
        .output_topic("addresses-dlq", Utf8, Utf8)
        .read_key_values()
        .unwrap()
        .is_empty());
}
