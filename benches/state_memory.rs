//! Memory of an instance's join state: 10 million keys in RocksDB stores
//! under the default memory budget (`RocksDbConfig::default()`), laid out
//! as the users⋈preferences join keeps them — one users store and one
//! preferences store per task, six tasks — with rows of the generator's
//! shape.
//!
//! It writes the keys in the write batches the runtime uses (one per poll
//! batch of 10,000 records), then looks up three million random users as the
//! join does, and prints the process's resident memory (`VmRSS`) and its
//! peak (`VmHWM`) after each phase. The Kafka clients, the store caches in
//! front of the stores (`statestore.cache.max.bytes`, 64 MiB by default)
//! and the broker are not in this figure; the caches' budget adds to it.
//!
//! `cargo bench -p weir-benches --bench state_memory` (`-- <keys>` for
//! another count).

use std::time::Instant;
use weir::state::{KeyValueStore, RocksDbConfig, RocksDbStores, StoreSupplier};
use weir_benches::rate;

const TASKS: u64 = 6;
const BATCH: u64 = 10_000;
const LOOKUPS: u64 = 3_000_000;

/// A key and its value, waiting for the next write batch.
type Entry = (Vec<u8>, Vec<u8>);

fn main() {
    let keys: u64 = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map(|arg| arg.parse().expect("the argument is a number of keys"))
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = RocksDbConfig::default();
    println!(
        "{keys} keys in {} stores; block cache {} MiB (memtables charged to it, at most {} MiB)",
        TASKS * 2,
        config.block_cache_bytes >> 20,
        config.write_buffer_bytes >> 20
    );
    report("before", 0, None);
    let stores = RocksDbStores::new(dir.path(), config);
    let mut tasks: Vec<[Box<dyn KeyValueStore>; 2]> = (0..TASKS)
        .map(|task| {
            let id = format!("0_{task}");
            [
                stores.open(&id, "users").expect("the users store"),
                stores.open(&id, "preferences").expect("the preferences store"),
            ]
        })
        .collect();

    // Half the keys are users, half preferences, spread over the tasks.
    let started = Instant::now();
    let mut pending: Vec<[Vec<Entry>; 2]> = vec![[Vec::new(), Vec::new()]; TASKS as usize];
    for n in 0..keys {
        let (store, user) = ((n % 2) as usize, n / 2);
        let task = (user % TASKS) as usize;
        pending[task][store].push((user.to_be_bytes().to_vec(), row(store, user)));
        if (n + 1) % BATCH == 0 || n + 1 == keys {
            for (task, stores) in pending.iter_mut().enumerate() {
                for (store, writes) in stores.iter_mut().enumerate() {
                    writes.sort_unstable();
                    let mut batch = writes.iter().map(|(k, v)| (k.as_slice(), Some(v.as_slice())));
                    tasks[task][store].write_batch(&mut batch).expect("a write batch");
                    writes.clear();
                }
            }
        }
    }
    let elapsed = started.elapsed();
    report("written", keys, Some(rate(keys, elapsed)));

    let started = Instant::now();
    let users = keys.div_ceil(2).max(1);
    let mut found = 0u64;
    for _ in 0..LOOKUPS {
        let user = fastrand::u64(0..users);
        let stores = &tasks[(user % TASKS) as usize];
        for store in stores {
            found += u64::from(store.get(&user.to_be_bytes()).expect("a read").is_some());
        }
    }
    assert!(found >= LOOKUPS, "the written keys are found");
    report("looked up", LOOKUPS, Some(rate(LOOKUPS, started.elapsed())));
    drop(tasks);
}

/// A row of the shape the generator writes: users carry an email and
/// names, preferences a few flags.
fn row(store: usize, user: u64) -> Vec<u8> {
    match store {
        0 => format!(
            r#"{{"id":{user},"email":"user{user}@example.com","first_name":"First{}","last_name":"Last{}","created_at":{}}}"#,
            user % 9973,
            user % 7919,
            1_700_000_000_000 + user
        ),
        _ => format!(
            r#"{{"user_id":{user},"dark_mode":{},"language":"en","newsletter":{}}}"#,
            user.is_multiple_of(2),
            user.is_multiple_of(3)
        ),
    }
    .into_bytes()
}

fn report(phase: &str, records: u64, per_second: Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".to_string(), |kb| format!("{} MiB", kb / 1024))
    };
    let speed = per_second.map_or(String::new(), |r| format!(" ({records} at {r}/s)"));
    println!(
        "{phase:>10}: VmRSS {:>8}, VmHWM {:>8}{speed}",
        field("VmRSS:"),
        field("VmHWM:")
    );
}
