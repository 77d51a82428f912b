//! The enrichment workload: a stream of user ids and sequence numbers
//! enriched with the reference ID-mapping service's new id, with retries,
//! a circuit breaker and a dead-letter topic for ids the service does not
//! know.

use id_mapping_service::Mapping;
use std::time::Duration;
use weir::enrich::{BreakerPolicy, Enrichment, HttpJsonLookup, RetryPolicy};
use weir::serde::{Utf8, I64};
use weir::{Consumed, Produced, StreamsBuilder, Topology};

/// Input: user id → sequence number. Output: user id →
/// `<new_user_id>:<seq>:<run>`, where `run` names the instance that wrote
/// it. `service` is the reference service's `host:port`.
pub fn topology(input: &str, output: &str, dead_letters: &str, service: &str, run: &str) -> Topology {
    let url = format!("http://{service}/users/{{}}");
    let lookup = HttpJsonLookup::<i64, Mapping>::new(url).expect("a valid URL template");
    let enrichment = Enrichment::new("id-mapping", |user: &i64, _seq: &i64| *user, lookup)
        .max_in_flight(16)
        .timeout(Duration::from_millis(300))
        .retry(RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            multiplier: 2.0,
        })
        .breaker(BreakerPolicy {
            failure_threshold: 8,
            open_for: Duration::from_millis(300),
        })
        .dead_letter(dead_letters, I64, I64);
    let run = run.to_string();
    let builder = StreamsBuilder::new();
    builder
        .stream(input, Consumed::with(I64, I64))
        .enrich_async(enrichment, move |_, seq, mapping: Mapping| {
            format!("{}:{seq}:{run}", mapping.new_user_id)
        })
        .to(output, Produced::with(I64, Utf8));
    builder.build().expect("the enrichment topology is valid")
}
