//! Global tables on the Kafka runtime, against both the in-process mock
//! cluster and a broker in its own process: filled from every partition
//! before the first stream record is processed, kept current while the
//! instance runs, filled again from the topic on a fresh start; records
//! that do not decode are skipped and counted.

use std::collections::HashMap;
use std::time::Duration;
use weir::metrics::SkipReason;
use weir::runtime::KeyLocation;
use weir::serde::{Json, Utf8};
use weir::testing::kafka::{eventually, read_compacted, TestProducer};
use weir::{Consumed, Produced, StreamsBuilder, Topology};
use weir_e2e::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(90);

weir_e2e::on_every_cluster!(a_global_table_is_filled_first_kept_current_and_filled_again);

struct Topics {
    countries: String,
    users: String,
    greetings: String,
}

/// users `(name, country code)` left-joined with the countries global
/// table → `"<name> from <country>"`.
fn topology(topics: &Topics) -> Topology {
    let builder = StreamsBuilder::new();
    let countries = builder.global_table(
        &topics.countries,
        Consumed::with(Utf8, Json::<String>::new()).store("countries"),
    );
    builder
        .stream(&topics.users, Consumed::with(Utf8, Json::<(String, String)>::new()))
        .left_join_global(
            &countries,
            |_, (_, code)| Some(code.clone()),
            |(name, _), country| format!("{name} from {}", country.map_or("nowhere", String::as_str)),
        )
        .to(&topics.greetings, Produced::with(Utf8, Utf8));
    builder.build().unwrap()
}

fn country(producer: &TestProducer, topics: &Topics, code: &str, name: &str) {
    producer
        .send(
            &topics.countries,
            &Utf8,
            &Json::<String>::new(),
            &code.to_string(),
            Some(&name.to_string()),
        )
        .unwrap();
}

fn user(producer: &TestProducer, topics: &Topics, id: &str, name: &str, code: &str) {
    let row = (name.to_string(), code.to_string());
    producer
        .send(&topics.users, &Utf8, &Json::new(), &id.to_string(), Some(&row))
        .unwrap();
    producer.flush().unwrap();
}

fn greetings(cluster: &Cluster, topics: &Topics) -> HashMap<String, String> {
    read_compacted(cluster.bootstrap_servers(), &topics.greetings, &Utf8, &Utf8).unwrap()
}

fn await_greeting(cluster: &Cluster, topics: &Topics, user: &str, expected: &str) {
    let arrived = eventually(WAIT, || {
        Ok(greetings(cluster, topics).get(user).map(String::as_str) == Some(expected))
    });
    assert!(
        arrived.unwrap(),
        "{user} never got {expected:?}: {:?}",
        greetings(cluster, topics)
    );
}

fn a_global_table_is_filled_first_kept_current_and_filled_again(cluster: &Cluster) {
    let topics = Topics {
        // The global table's topic need not match the stream's partitions.
        countries: cluster.create_topic("countries", 2),
        users: cluster.create_topic("users", 3),
        greetings: cluster.create_topic("greetings", 3),
    };
    let producer = cluster.producer();
    for (code, name) in [("fr", "France"), ("de", "Germany"), ("it", "Italy")] {
        country(&producer, &topics, code, name);
    }
    // Not JSON: left out of the table, counted.
    producer
        .send_raw(&topics.countries, None, Some(b"xx"), Some(b"not json"))
        .unwrap();
    producer.flush().unwrap();
    // Written before the instance starts: processed only once every
    // country is in the table.
    user(&producer, &topics, "u1", "Ada", "fr");
    user(&producer, &topics, "u2", "Bob", "xx");

    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("global", state.path());
    let mut first = cluster.start(topology(&topics), &config);
    await_greeting(cluster, &topics, "u1", "Ada from France");
    await_greeting(cluster, &topics, "u2", "Bob from nowhere");
    assert!(
        first.metrics().tasks.skipped_for(SkipReason::DeserializationError) >= 1,
        "{:?}",
        first.metrics()
    );
    // Every instance answers a query of a global table itself.
    let store = first.store("countries", Utf8, Json::<String>::new()).unwrap();
    for (code, expected) in [("de", Some("Germany")), ("xx", None)] {
        match store.get(&code.to_string()).unwrap() {
            KeyLocation::Local(found) => assert_eq!(found.as_deref(), expected, "{code}"),
            elsewhere => panic!("{code} is not answered here: {elsewhere:?}"),
        }
    }

    // Changed while running: a later record sees the new row (the table
    // is updated apart from the stream, so the test writes until it does).
    country(&producer, &topics, "xx", "Xanadu");
    producer
        .send(
            &topics.countries,
            &Utf8,
            &Json::<String>::new(),
            &"it".to_string(),
            None,
        )
        .unwrap();
    producer.flush().unwrap();
    let current = eventually(WAIT, || {
        user(&producer, &topics, "u3", "Cy", "xx");
        user(&producer, &topics, "u4", "Di", "it");
        let greetings = greetings(cluster, &topics);
        Ok(greetings.get("u3").map(String::as_str) == Some("Cy from Xanadu")
            && greetings.get("u4").map(String::as_str) == Some("Di from nowhere"))
    });
    assert!(current.unwrap(), "{:?}", greetings(cluster, &topics));
    first.close().unwrap();

    // A fresh state directory: the table comes back from its topic alone.
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("global-again", state.path());
    let mut second = cluster.start(topology(&topics), &config);
    for (id, name, code, expected) in [
        ("u5", "Eve", "de", "Eve from Germany"),
        ("u6", "Fay", "xx", "Fay from Xanadu"),
        ("u7", "Gus", "it", "Gus from nowhere"),
    ] {
        user(&producer, &topics, id, name, code);
        await_greeting(cluster, &topics, id, expected);
    }
    second.close().unwrap();
}
