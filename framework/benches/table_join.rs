//! Throughput of users ⋈ preferences, the motivating pipeline's join, with
//! no broker: this measures the engine's hot path on one thread.
//!
//! The same changes (a snapshot of 10,000 users and their preferences, then
//! updates where `dark_mode` changes nine times as often as `email`) are
//! read three ways:
//! - `plain`: tables of plain JSON topics (key = id as text, value = row);
//! - `cdc`: Debezium envelopes (JSON, no schema wrapper) through
//!   `cdc_table`, re-partitioned by weir's key serialization as by default:
//!   two decoding tasks feed the join task through the repartition topics,
//!   whose records are routed in process in batches of 1,000;
//! - `cdc_co_partitioned`: the same events, tables declared co-partitioned,
//!   so one task decodes and joins.
//!
//! Every iteration keeps its changelog records (as a producer's queue would
//! until they are sent) and checks the counts: one output per change that
//! finds both sides, one changelog record per change.
//!
//! Run: `cargo bench -p weir --bench table_join`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use weir::cdc::{Cdc, Op};
use weir::record::{OutputRecord, RawRecord};
use weir::runtime::{GlobalStores, Task, TaskId, TaskSettings};
use weir::serde::Json;
use weir::state::{CacheBudget, InMemoryStores, RocksDbConfig, RocksDbStores, StoreSupplier};
use weir::testing::debezium::{Column, ColumnType, Debezium, EventFormat};
use weir::{Consumed, ErrorHandler, KTable, Produced, StreamsBuilder, Topology};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    user_id: u64,
    email: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct Preferences {
    user_id: u64,
    dark_mode: bool,
}

#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    user_id: u64,
    email: String,
    dark_mode: bool,
}

const USERS: u64 = 10_000;
const EVENTS: usize = 50_000;
const BATCH: usize = 1_000;
const OUTPUT: &str = "user-profile";

#[derive(Clone, Copy, PartialEq)]
enum Input {
    Plain,
    Cdc { co_partitioned: bool },
}

fn topology(input: Input) -> Topology {
    let builder = StreamsBuilder::new();
    let (users, prefs): (KTable<u64, User>, KTable<u64, Preferences>) = match input {
        Input::Plain => (
            builder.table("users", Consumed::with(Json::new(), Json::new())),
            builder.table("preferences", Consumed::with(Json::new(), Json::new())),
        ),
        Input::Cdc { co_partitioned: false } => (
            builder.cdc_table("mysql.app.users", Cdc::json()),
            builder.cdc_table("mysql.app.preferences", Cdc::json()),
        ),
        Input::Cdc { co_partitioned: true } => (
            builder.cdc_table("mysql.app.users", Cdc::json().co_partitioned()),
            builder.cdc_table("mysql.app.preferences", Cdc::json().co_partitioned()),
        ),
    };
    users
        .join(&prefs, |u, p| Profile {
            user_id: u.user_id,
            email: u.email.clone(),
            dark_mode: p.dark_mode,
        })
        .to(OUTPUT, Produced::with(Json::new(), Json::new()));
    builder.build().unwrap()
}

/// One row change of the generated history.
enum Change {
    User(User),
    Preferences(Preferences),
}

/// A snapshot of both tables, then updates where dark_mode changes often
/// and email rarely.
fn changes() -> Vec<Change> {
    let user = |id: u64, n: usize| User {
        user_id: id,
        email: format!("user{id}.{n}@example.com"),
    };
    let prefs = |id: u64, dark_mode: bool| Preferences { user_id: id, dark_mode };
    let mut out = Vec::with_capacity(EVENTS);
    for id in 0..USERS {
        out.push(Change::User(user(id, 0)));
        out.push(Change::Preferences(prefs(id, false)));
    }
    let mut n = 0;
    while out.len() < EVENTS {
        n += 1;
        let id = (n as u64 * 7919) % USERS;
        out.push(if n % 10 == 0 {
            Change::User(user(id, n))
        } else {
            Change::Preferences(prefs(id, n % 2 == 0))
        });
    }
    out
}

/// The changes as records of the input topics.
fn encode(input: Input, changes: &[Change]) -> Vec<(&'static str, RawRecord)> {
    let raw = |key: Vec<u8>, value: Vec<u8>| RawRecord {
        key: Some(key),
        value: Some(value),
        timestamp: 0,
        headers: Vec::new(),
    };
    match input {
        Input::Plain => changes
            .iter()
            .map(|change| match change {
                Change::User(u) => (
                    "users",
                    raw(u.user_id.to_string().into_bytes(), serde_json::to_vec(u).unwrap()),
                ),
                Change::Preferences(p) => (
                    "preferences",
                    raw(p.user_id.to_string().into_bytes(), serde_json::to_vec(p).unwrap()),
                ),
            })
            .collect(),
        Input::Cdc { .. } => {
            let plain = EventFormat::Envelope { schemas: false };
            let users = Debezium::mysql("app", "users")
                .key_column(Column::new("user_id", ColumnType::Int64))
                .column(Column::new("email", ColumnType::String))
                .format(plain);
            let prefs = Debezium::mysql("app", "preferences")
                .key_column(Column::new("user_id", ColumnType::Int64))
                .column(Column::new("dark_mode", ColumnType::Boolean))
                .format(plain);
            let mut last_user: HashMap<u64, User> = HashMap::new();
            let mut last_prefs: HashMap<u64, Preferences> = HashMap::new();
            changes
                .iter()
                .map(|change| match change {
                    Change::User(u) => {
                        let before = last_user.insert(u.user_id, u.clone());
                        let op = if before.is_some() { Op::Update } else { Op::Read };
                        let value = users.event(op, before.as_ref(), Some(u));
                        ("mysql.app.users", raw(users.key(&u.user_id), value))
                    }
                    Change::Preferences(p) => {
                        let before = last_prefs.insert(p.user_id, p.clone());
                        let op = if before.is_some() { Op::Update } else { Op::Read };
                        let value = prefs.event(op, before.as_ref(), Some(p));
                        ("mysql.app.preferences", raw(prefs.key(&p.user_id), value))
                    }
                })
                .collect()
        }
    }
}

/// Partition `partition` of every sub-topology, with records written to a
/// topic that another task reads routed to it, batch by batch.
struct Pipeline {
    tasks: Vec<Task>,
    readers: HashMap<String, usize>,
}

impl Pipeline {
    fn new(topology: &Topology, stores: &dyn StoreSupplier, partition: i32) -> Self {
        let cache = CacheBudget::new(64 << 20, false);
        let settings = TaskSettings {
            application_id: "bench",
            stores,
            default_error_handler: &ErrorHandler::Fail,
            production_error_handler: &ErrorHandler::Fail,
            cache: &cache,
            global_stores: &GlobalStores::default(),
        };
        let mut tasks = Vec::new();
        let mut readers = HashMap::new();
        for sub in topology.subtopologies() {
            let id = TaskId {
                subtopology: sub.id,
                partition,
            };
            let task = Task::new(topology, id, &settings).unwrap();
            for topic in task.source_topics() {
                readers.insert(topic.to_string(), tasks.len());
            }
            tasks.push(task);
        }
        Pipeline { tasks, readers }
    }

    /// Processes the records; returns how many reached the output topic,
    /// and the changelog records, kept as a producer's queue keeps them.
    fn run(&mut self, records: &[(&str, RawRecord)]) -> (usize, Vec<OutputRecord>) {
        let mut produced = 0;
        let mut changelog = Vec::new();
        let mut offset = 0;
        for batch in records.chunks(BATCH) {
            for (topic, record) in batch {
                self.tasks[self.readers[*topic]]
                    .process(topic, offset, &record.as_input())
                    .unwrap();
                offset += 1;
            }
            loop {
                let outputs: Vec<_> = self.tasks.iter_mut().flat_map(|t| t.drain_output()).collect();
                let mut routed = false;
                for output in outputs {
                    if let Some(&reader) = self.readers.get(&*output.topic) {
                        self.tasks[reader]
                            .process(&output.topic, offset, &output.record.as_input())
                            .unwrap();
                        offset += 1;
                        routed = true;
                    } else if &*output.topic == OUTPUT {
                        produced += 1;
                    } else if output.topic.ends_with("-changelog") {
                        changelog.push(output);
                    }
                }
                if !routed {
                    break;
                }
            }
            for task in &mut self.tasks {
                task.write_back().unwrap();
            }
        }
        (produced, changelog)
    }
}

fn bench(c: &mut Criterion) {
    let changes = changes();
    let mut group = c.benchmark_group("users_join_preferences");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let backends: [(&str, Box<dyn StoreSupplier>); 2] = [
        ("in_memory", Box::new(InMemoryStores)),
        (
            "rocksdb",
            Box::new(RocksDbStores::new(dir.path(), RocksDbConfig::default())),
        ),
    ];
    let inputs = [
        ("plain", Input::Plain),
        ("cdc", Input::Cdc { co_partitioned: false }),
        ("cdc_co_partitioned", Input::Cdc { co_partitioned: true }),
    ];
    let mut partition = 0;
    for (input_name, input) in inputs {
        let topology = topology(input);
        let records = encode(input, &changes);
        for (store_name, stores) in &backends {
            group.bench_function(format!("{input_name}/{store_name}"), |b| {
                b.iter_batched(
                    || {
                        // A fresh partition each time: empty stores.
                        partition += 1;
                        Pipeline::new(&topology, stores.as_ref(), partition)
                    },
                    |mut pipeline| {
                        let (produced, changelog) = pipeline.run(&records);
                        // Each snapshot user waits for its preferences (an
                        // inner join); every later change joins. Every
                        // change is logged by the store it updates.
                        assert_eq!(produced, EVENTS - USERS as usize);
                        assert_eq!(changelog.len(), EVENTS);
                        changelog
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
