//! The `run` topology through the test driver, against the reference
//! ID-mapping service over real HTTP (with errors that are retried), in
//! JSON and in Avro.

use id_mapping_service::{Behaviour, MappingService as ReferenceService};
use std::collections::HashMap;
use std::time::Duration;
use user_profile::generator::{CdcRecord, Generator, Table};
use user_profile::model::{GodObject, UserProfile};
use user_profile::pipeline::{run_topology, Format, MappingService, Topics};
use weir::avro::SchemaRegistry;
use weir::serde::{Bytes, Json, SerdeRef};
use weir::testing::schema_registry::TestSchemaRegistry;
use weir::testing::{TestRecord, TopologyTestDriver};

fn driver(service: &ReferenceService, format: &Format) -> TopologyTestDriver {
    let settings = MappingService {
        timeout: Duration::from_secs(2),
        ..MappingService::at(format!("http://{}", service.address()))
    };
    TopologyTestDriver::new(run_topology(&Topics::default(), &settings, format).unwrap()).unwrap()
}

/// Pipes records in order, each run of one table's records at once.
fn pipe(driver: &TopologyTestDriver, records: &[CdcRecord]) {
    let topics = Topics::default();
    let users = driver.input_topic(&topics.users, Bytes, Bytes);
    let preferences = driver.input_topic(&topics.preferences, Bytes, Bytes);
    for run in records.chunk_by(|a, b| a.table == b.table) {
        let batch = run.iter().map(|r| TestRecord::new(r.key.clone(), r.value.clone()));
        match run[0].table {
            Table::Users => users.pipe_all(batch).unwrap(),
            Table::Preferences => preferences.pipe_all(batch).unwrap(),
        }
    }
}

/// The compacted view of an output topic of the driver.
fn view<V>(driver: &TopologyTestDriver, topic: &str, format: &Format, values: SerdeRef<V>) -> HashMap<i64, V>
where
    V: Clone + Send + Sync + 'static,
{
    let topic = driver.output_topic(topic, format.key_serde(), values);
    topic.read_key_values_to_map().unwrap()
}

#[test]
fn the_outputs_hold_exactly_the_users_the_generated_changes_imply() {
    let service = ReferenceService::start(Behaviour {
        error_rate: 0.05,
        ..Behaviour::default()
    })
    .unwrap();
    let registry_server = TestSchemaRegistry::start().unwrap();
    let registry = SchemaRegistry::new(registry_server.url()).unwrap();
    for format in [Format::Json, Format::Avro(registry)] {
        let driver = driver(&service, &format);
        let mut generator = Generator::with_format(11, 300, &format);
        let mut records = generator.snapshot();
        records.extend(generator.changes(3_000));
        pipe(&driver, &records);

        let topics = Topics::default();
        let expected_profiles: HashMap<i64, UserProfile> = generator.expected_profiles().into_iter().collect();
        assert_eq!(
            view(&driver, &topics.profiles, &format, format.profile_serde()),
            expected_profiles
        );
        let expected_god_objects: HashMap<i64, GodObject> = generator
            .expected_god_objects(|id| format!("u2-{id}"))
            .into_iter()
            .collect();
        assert_eq!(
            view(&driver, &topics.god_objects, &format, format.god_object_serde()),
            expected_god_objects
        );
        assert!(
            expected_god_objects.values().any(|g| g.dark_mode.is_none()),
            "some users have no preferences"
        );
        let raw = driver
            .output_topic(&topics.god_objects, Bytes, Bytes)
            .read_records()
            .unwrap();
        let in_avro = raw.iter().filter_map(|r| r.value.as_ref()).all(|v| v[0] == 0);
        assert_eq!(in_avro, matches!(format, Format::Avro(_)), "the outputs' encoding");
    }
    assert!(registry_server
        .subjects()
        .contains(&"user-god-object-value".to_string()));
}

#[test]
fn a_user_without_preferences_is_published_with_dark_mode_null_and_a_deletion_is_a_tombstone() {
    let service = ReferenceService::start(Behaviour::default()).unwrap();
    let driver = driver(&service, &Format::Json);
    let topics = Topics::default();
    let users = driver.input_topic(&topics.users, Bytes, Bytes);
    let preferences = driver.input_topic(&topics.preferences, Bytes, Bytes);
    let key = br#"{"user_id":7}"#.to_vec();
    let event = |op: &str, before: &str, after: &str| {
        format!(
            r#"{{"before":{before},"after":{after},"source":{{"connector":"mysql","snapshot":"false"}},"op":"{op}"}}"#
        )
        .into_bytes()
    };
    let user = r#"{"user_id":7,"email":"ada@example.com"}"#;
    let dark = r#"{"user_id":7,"dark_mode":1}"#;

    users.pipe(key.clone(), event("c", "null", user)).unwrap();
    preferences.pipe(key.clone(), event("c", "null", dark)).unwrap();
    preferences.pipe(key.clone(), event("d", dark, "null")).unwrap();
    preferences.pipe_tombstone(key.clone()).unwrap();
    users.pipe(key.clone(), event("d", user, "null")).unwrap();
    users.pipe_tombstone(key).unwrap();

    let outputs = driver
        .output_topic(&topics.god_objects, Json::<i64>::new(), Json::<GodObject>::new())
        .read_key_values()
        .unwrap();
    let dark_modes: Vec<Option<Option<bool>>> = outputs.iter().map(|(_, v)| v.as_ref().map(|g| g.dark_mode)).collect();
    // Without preferences, with dark mode, without again, then deleted: one tombstone.
    assert_eq!(dark_modes, vec![Some(None), Some(Some(true)), Some(None), None]);
    assert!(outputs.iter().all(|(k, _)| *k == 7));
    assert_eq!(outputs[0].1.as_ref().unwrap().new_user_id, "u2-7");
}
