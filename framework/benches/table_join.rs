//! Throughput of a users ⋈ preferences table-table join inside one task:
//! deserialize, upsert the side's store, look up the other side, join,
//! serialize, log to the changelog. No broker; this measures the engine.
//!
//! Run: `cargo bench -p weir --bench table_join`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use weir::record::RawRecord;
use weir::runtime::{Task, TaskId, TaskSettings};
use weir::serde::{Json, Utf8};
use weir::state::{InMemoryStores, RocksDbConfig, RocksDbStores, StoreSupplier};
use weir::{Consumed, ErrorHandler, Produced, StreamsBuilder, Topology};

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

fn topology() -> Topology {
    let builder = StreamsBuilder::new();
    let users = builder.table("users", Consumed::with(Utf8, Json::<User>::new()));
    let prefs = builder.table("preferences", Consumed::with(Utf8, Json::<Preferences>::new()));
    users
        .join(&prefs, |u, p| Profile {
            user_id: u.user_id,
            email: u.email.clone(),
            dark_mode: p.dark_mode,
        })
        .to("user-profile", Produced::with(Utf8, Json::new()));
    builder.build().unwrap()
}

/// A snapshot of both tables, then updates where dark_mode changes often
/// and email rarely, as in the motivating pipeline.
fn events() -> Vec<(&'static str, RawRecord)> {
    let raw = |key: u64, value: Vec<u8>| RawRecord {
        key: Some(key.to_string().into_bytes()),
        value: Some(value),
        timestamp: 0,
        headers: Vec::new(),
    };
    let user = |id: u64, n: usize| {
        serde_json::to_vec(&User {
            user_id: id,
            email: format!("user{id}.{n}@example.com"),
        })
        .unwrap()
    };
    let prefs = |id: u64, dark: bool| {
        serde_json::to_vec(&Preferences {
            user_id: id,
            dark_mode: dark,
        })
        .unwrap()
    };
    let mut out = Vec::with_capacity(EVENTS);
    for id in 0..USERS {
        out.push(("users", raw(id, user(id, 0))));
        out.push(("preferences", raw(id, prefs(id, false))));
    }
    let mut n = 0;
    while out.len() < EVENTS {
        n += 1;
        let id = (n as u64 * 7919) % USERS;
        if n % 10 == 0 {
            out.push(("users", raw(id, user(id, n))));
        } else {
            out.push(("preferences", raw(id, prefs(id, n % 2 == 0))));
        }
    }
    out
}

fn run(task: &mut Task, events: &[(&'static str, RawRecord)]) -> usize {
    let mut produced = 0;
    for (offset, (topic, record)) in events.iter().enumerate() {
        task.process(topic, offset as i64, record).unwrap();
        if offset % 1000 == 0 {
            produced += task.drain_output().len();
        }
    }
    produced + task.drain_output().len()
}

fn bench(c: &mut Criterion) {
    let topology = topology();
    let events = events();
    let mut group = c.benchmark_group("users_join_preferences");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let backends: [(&str, Box<dyn StoreSupplier>); 2] = [
        ("in_memory", Box::new(InMemoryStores)),
        (
            "rocksdb",
            Box::new(RocksDbStores::new(dir.path(), RocksDbConfig::default())),
        ),
    ];
    for (name, stores) in &backends {
        let mut round = 0;
        group.bench_function(*name, |b| {
            b.iter_batched(
                || {
                    round += 1;
                    let settings = TaskSettings {
                        application_id: "bench",
                        stores: stores.as_ref(),
                        default_error_handler: &ErrorHandler::Fail,
                    };
                    let id = TaskId {
                        subtopology: 0,
                        partition: round,
                    };
                    Task::new(&topology, id, &settings).unwrap()
                },
                |mut task| run(&mut task, &events),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
