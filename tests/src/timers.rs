//! The timers workload: leases that a processor of the Processor API
//! expires on the wall clock, and carts in a table whose rows expire
//! (`Consumed::ttl`): time kept in state, restored on a task's next owner.

use std::time::Duration;
use weir::process::{Context, Init, Processor, PunctuationType, Store, StoreSpec};
use weir::record::Record;
use weir::serde::{Nullable, Utf8, I64};
use weir::{Consumed, Produced, StreamsBuilder, Topology, WeirError};

/// How long a cart lives without a write.
pub const CART_TTL: Duration = Duration::from_secs(20);

/// Topic names of one run (all with the cluster's prefix).
#[derive(Debug, Clone)]
pub struct Topics {
    pub leases: String,
    pub live_leases: String,
    pub carts: String,
    pub live_carts: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Topics {
        Topics {
            leases: format!("{prefix}leases"),
            live_leases: format!("{prefix}live-leases"),
            carts: format!("{prefix}carts"),
            live_carts: format!("{prefix}live-carts"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.leases, &self.live_leases, &self.carts, &self.live_carts]
    }
}

/// Each record's value is how long its key lives, in milliseconds from
/// the record's timestamp; a wall-clock punctuation every 100 ms deletes
/// the keys past their deadline and forwards a tombstone for each.
pub struct Expiry {
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

/// leases → the live leases (the processor's store: `deadlines`).
pub fn leases(builder: &StreamsBuilder, input: &str, output: &str) {
    builder
        .stream(input, Consumed::with(Utf8, Utf8))
        .process(
            || Expiry { deadlines: None },
            vec![StoreSpec::key_value("deadlines", Utf8, I64)],
        )
        .to(output, Produced::with(Utf8, Nullable(Utf8)));
}

/// carts, a table whose rows expire after [`CART_TTL`] → the live carts
/// (store `carts`, its deadlines in `carts-ttl`).
pub fn carts(builder: &StreamsBuilder, input: &str, output: &str) {
    builder
        .table(input, Consumed::with(Utf8, Utf8).store("carts").ttl(CART_TTL))
        .to(output, Produced::with(Utf8, Utf8));
}

/// Both, as the instances of the kill test run them.
pub fn topology(topics: &Topics) -> Topology {
    let builder = StreamsBuilder::new();
    leases(&builder, &topics.leases, &topics.live_leases);
    carts(&builder, &topics.carts, &topics.live_carts);
    builder.build().expect("the timers topology is valid")
}
