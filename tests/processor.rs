//! Time on the Kafka runtime, against both brokers: a processor's store is
//! restored from its changelog on a fresh state directory and its
//! wall-clock punctuations run between records; a table's rows expire
//! (`Consumed::ttl`) on the instance that restored them.

use std::collections::HashMap;
use std::time::Duration;
use weir::process::{Context, Init, Processor, PunctuationType, Store, StoreSpec};
use weir::record::Record;
use weir::serde::{Nullable, Utf8, I64};
use weir::testing::kafka::{eventually, read_compacted};
use weir::{Consumed, Produced, StreamsBuilder, Topology, WeirError};
use weir_e2e::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(90);

weir_e2e::on_every_cluster!(
    a_processor_expires_keys_on_the_wall_clock_across_a_restore,
    a_tables_rows_expire_on_the_instance_that_restored_them,
);

/// Each record's value is how long its key lives, in milliseconds from
/// the record's timestamp; a wall-clock punctuation every 100 ms deletes
/// the keys past their deadline and forwards a tombstone for each.
struct Expiry {
    deadlines: Option<Store<String, i64>>,
}

impl Processor<String, String> for Expiry {
    type KeyOut = String;
    type ValueOut = Option<String>;

    fn init(&mut self, init: &mut Init<'_, '_>) -> Result<(), WeirError> {
        self.deadlines = Some(init.store("deadlines")?);
        init.schedule(PunctuationType::WallClockTime, Duration::from_millis(100));
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut Context<'_, '_, String, Option<String>>,
        record: Record<String, String>,
    ) -> Result<(), WeirError> {
        let lives: i64 = record
            .value
            .parse()
            .map_err(|_| WeirError::Other(format!("not a lifetime: {}", record.value)))?;
        let deadlines = self.deadlines.as_ref().expect("initialized");
        deadlines.put(ctx, &record.key, &(record.timestamp + lives))?;
        ctx.forward(Record::new(record.key, Some(record.value), record.timestamp))
    }

    fn punctuate(
        &mut self,
        ctx: &mut Context<'_, '_, String, Option<String>>,
        _: PunctuationType,
        now: i64,
    ) -> Result<(), WeirError> {
        let deadlines = self.deadlines.as_ref().expect("initialized");
        for (key, deadline) in deadlines.all()? {
            if deadline <= now {
                deadlines.delete(ctx, &key)?;
                ctx.forward(Record::new(key, None, now))?;
            }
        }
        Ok(())
    }
}

fn topology(input: &str, output: &str) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream(input, Consumed::with(Utf8, Utf8))
        .process(
            || Expiry { deadlines: None },
            vec![StoreSpec::key_value("deadlines", Utf8, I64)],
        )
        .to(output, Produced::with(Utf8, Nullable(Utf8)));
    builder.build().unwrap()
}

fn a_processor_expires_keys_on_the_wall_clock_across_a_restore(cluster: &Cluster) {
    let input = cluster.create_topic("leases", 2);
    let output = cluster.create_topic("live-leases", 2);
    let producer = cluster.producer();
    let live = || read_compacted(cluster.bootstrap_servers(), &output, &Utf8, &Utf8).unwrap();
    let lease = |key: &str, millis: u64| {
        producer
            .send(&input, &Utf8, &Utf8, &key.to_string(), Some(&millis.to_string()))
            .unwrap();
        producer.flush().unwrap();
    };
    let await_live = |expected: &[(&str, &str)]| {
        let expected: HashMap<String, String> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let converged = eventually(WAIT, || Ok(live() == expected)).unwrap();
        assert!(converged, "live leases {:?} never became {expected:?}", live());
    };

    let state = tempfile::tempdir().unwrap();
    let mut first = cluster.start(topology(&input, &output), &cluster.config("leases", state.path()));
    lease("short", 300);
    lease("long", 600_000);
    await_live(&[("long", "600000")]);
    // Lives 20 s: still held when the first instance closes.
    lease("restored", 20_000);
    await_live(&[("long", "600000"), ("restored", "20000")]);
    first.close().unwrap();

    // A fresh state directory under the same application: the deadlines
    // come back from the changelog, and this instance's punctuation
    // expires the lease the first one took.
    let state = tempfile::tempdir().unwrap();
    let mut second = cluster.start(topology(&input, &output), &cluster.config("leases", state.path()));
    assert!(second.metrics().restored_total() >= 2, "{:?}", second.metrics());
    await_live(&[("long", "600000")]);
    second.close().unwrap();
}

fn a_tables_rows_expire_on_the_instance_that_restored_them(cluster: &Cluster) {
    let input = cluster.create_topic("carts", 2);
    let output = cluster.create_topic("live-carts", 2);
    let topology = || {
        let builder = StreamsBuilder::new();
        builder
            .table(
                &input,
                Consumed::with(Utf8, Utf8).store("carts").ttl(Duration::from_secs(20)),
            )
            .to(&output, Produced::with(Utf8, Utf8));
        builder.build().unwrap()
    };
    let producer = cluster.producer();
    let live = || read_compacted(cluster.bootstrap_servers(), &output, &Utf8, &Utf8).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut first = cluster.start(topology(), &cluster.config("carts", state.path()));
    producer
        .send(&input, &Utf8, &Utf8, &"c1".to_string(), Some(&"2 items".to_string()))
        .unwrap();
    producer.flush().unwrap();
    let arrived = eventually(WAIT, || Ok(live().contains_key("c1"))).unwrap();
    assert!(arrived, "{:?}", live());
    first.close().unwrap();

    // The row and its deadline come back from their changelogs; the row
    // leaves 20 s after it was written, on this instance.
    let state = tempfile::tempdir().unwrap();
    let mut second = cluster.start(topology(), &cluster.config("carts", state.path()));
    let restored = second.metrics().restored;
    assert!(restored["carts"] >= 1 && restored["carts-ttl"] >= 2, "{restored:?}");
    let expired = eventually(WAIT, || Ok(live().is_empty())).unwrap();
    assert!(expired, "{:?}", live());
    second.close().unwrap();
}
