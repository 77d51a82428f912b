//! Asynchronous enrichment: calling an external service from a topology
//! without blocking the stream thread.
//!
//! [`KStream::enrich_async`](crate::KStream::enrich_async) and
//! [`KTable::enrich_async`](crate::KTable::enrich_async) hand each record's
//! query to a [`Lookup`] (any async function, or the ready
//! [`HttpJsonLookup`]) and pass the record on, combined with the answer,
//! when the answer arrives. Meanwhile the stream thread goes on with other
//! records.
//!
//! What the operator guarantees:
//! - **Per-key order**: a record waits until every earlier record of its
//!   key has been passed on; records of different keys are looked up
//!   concurrently, up to [`EnrichOptions::max_in_flight`] calls at a time.
//! - **Bounded memory**: when [`EnrichOptions::max_buffered`] records wait
//!   in an instance, it stops reading input until half of them have left.
//! - **Failures**: a call that times out or fails with a retryable error is
//!   retried with exponential backoff and jitter ([`RetryPolicy`]); after
//!   [`BreakerPolicy::failure_threshold`] failures in a row the circuit
//!   breaker opens: no calls for [`BreakerPolicy::open_for`], then one probe.
//!   Records wait while it is open, without using up their attempts, so an
//!   outage delays records but loses none. A permanent failure, or a record
//!   out of attempts, stops the instance or goes to a dead-letter topic
//!   ([`Enrichment::dead_letter`]).
//! - **No loss on crash**: the offset a task commits never passes a record
//!   that has not finished enrichment, so a restart reads it again.
//!   Under exactly-once, results are also passed on in input order, so that
//!   a transaction holds the outputs of exactly the records whose offsets it
//!   commits.
//! - **Cache** ([`Enrichment::cache`]): answers kept in a changelog-backed
//!   store, optionally for a limited time, so re-processing a query does
//!   not call the service again.
//!
//! ```
//! use weir::{StreamsBuilder, Consumed, Produced, serde::{Json, Utf8}};
//! use weir::enrich::{Enrichment, LookupError};
//!
//! let builder = StreamsBuilder::new();
//! let lookup = |user: String| async move {
//!     if user.is_empty() {
//!         Err(LookupError::permanent("no user"))
//!     } else {
//!         Ok(format!("{user}@example.com"))
//!     }
//! };
//! builder
//!     .stream("logins", Consumed::with(Utf8, Json::<String>::new()))
//!     .enrich_async(
//!         Enrichment::new("email", |_key: &String, user: &String| user.clone(), lookup).cache(None),
//!         |_key, user, email: String| format!("{user} <{email}>"),
//!     )
//!     .to("logins-with-email", Produced::with(Utf8, Utf8));
//! assert!(builder.build().is_ok());
//! ```

mod breaker;
mod caller;
mod http;
mod retry;

pub use breaker::BreakerState;
pub(crate) use caller::{AnswerWait, Caller, Completion, ProcessAnswers};
pub use caller::{EnrichMetrics, EnrichStats};
pub use http::HttpJsonLookup;
pub use retry::RetryPolicy;

use crate::serde::SerdeRef;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Why a lookup failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    retryable: bool,
    message: String,
}

impl LookupError {
    /// A failure that may pass: a timeout, a 5xx answer, a refused connection.
    pub fn retryable(message: impl Into<String>) -> Self {
        LookupError {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that another attempt would repeat: an unknown id, a bad request.
    pub fn permanent(message: impl Into<String>) -> Self {
        LookupError {
            retryable: false,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.retryable { "retryable" } else { "permanent" };
        write!(f, "{kind} lookup failure: {}", self.message)
    }
}

impl std::error::Error for LookupError {}

/// What a lookup returns: a future that runs on weir's enrichment runtime.
pub type LookupFuture<R> = Pin<Box<dyn Future<Output = Result<R, LookupError>> + Send>>;

/// Answers a query, asynchronously. Any `Fn(Q) -> impl Future<Output =
/// Result<R, LookupError>>` is a lookup; [`HttpJsonLookup`] is one for
/// JSON-over-HTTP services.
///
/// ```
/// use weir::enrich::{Lookup, LookupError};
/// let double = |n: i64| async move { Ok::<_, LookupError>(n * 2) };
/// let answer = futures_executor::block_on(double.lookup(21));
/// assert_eq!(answer, Ok(42));
/// ```
pub trait Lookup<Q, R>: Send + Sync + 'static {
    fn lookup(&self, query: Q) -> LookupFuture<R>;
}

impl<Q, R, F, Fut> Lookup<Q, R> for F
where
    F: Fn(Q) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, LookupError>> + Send + 'static,
{
    fn lookup(&self, query: Q) -> LookupFuture<R> {
        Box::pin(self(query))
    }
}

/// When the circuit breaker opens and how long it stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Retryable failures in a row that open the breaker (default 5).
    pub failure_threshold: u32,
    /// How long no call is made once it is open, before one probe (default 5 s).
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// Limits and policies of an enrichment; the defaults suit a service that
/// answers in tens of milliseconds.
#[derive(Debug, Clone)]
pub struct EnrichOptions {
    /// Calls in flight at once, over every task of the instance (default 64).
    pub max_in_flight: usize,
    /// Records waiting for enrichment in the instance before it stops
    /// reading input, until half of them have left (default 10,000).
    pub max_buffered: usize,
    /// The longest one call may take; a slower call is a retryable failure
    /// (default 5 s).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
}

impl Default for EnrichOptions {
    fn default() -> Self {
        EnrichOptions {
            max_in_flight: 64,
            max_buffered: 10_000,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
        }
    }
}

/// Where records go whose enrichment failed for good.
pub(crate) struct DeadLetters<K, V> {
    pub topic: String,
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
}

/// How an enrichment caches answers.
pub(crate) struct CacheSpec<Q, R> {
    /// How long an answer stays fresh; `None` for ever.
    pub ttl: Option<Duration>,
    pub query_serde: SerdeRef<Q>,
    pub answer_serde: SerdeRef<R>,
}

/// The query function of an enrichment.
pub(crate) type QueryFn<K, V, Q> = Arc<dyn Fn(&K, &V) -> Q + Send + Sync>;

/// Describes an enrichment of records with keys `K` and values `V` by a
/// lookup from queries `Q` to answers `R`: its name, how a record becomes a
/// query, the lookup, its limits, its cache and its failure policy.
///
/// ```
/// use std::time::Duration;
/// use weir::enrich::{Enrichment, HttpJsonLookup};
/// use weir::serde::{I64, Json};
///
/// #[derive(serde::Deserialize, serde::Serialize, Clone)]
/// struct Mapping { new_user_id: String }
///
/// let lookup = HttpJsonLookup::<i64, Mapping>::new("http://localhost:8080/users/{}").unwrap();
/// let enrichment = Enrichment::new("id-mapping", |user_id: &i64, _email: &String| *user_id, lookup)
///     .max_in_flight(128)
///     .timeout(Duration::from_millis(500))
///     .cache(Some(Duration::from_secs(3600)))
///     .dead_letter("emails-dlq", I64, Json::<String>::new());
/// # let _ = enrichment;
/// ```
pub struct Enrichment<K, V, Q, R> {
    pub(crate) name: String,
    pub(crate) query: QueryFn<K, V, Q>,
    pub(crate) lookup: Arc<dyn Lookup<Q, R>>,
    pub(crate) options: EnrichOptions,
    pub(crate) cache: Option<CacheSpec<Q, R>>,
    pub(crate) dead_letters: Option<DeadLetters<K, V>>,
    /// Where the calls run, when not on the process's enrichment runtime.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

impl<K, V, Q, R> Enrichment<K, V, Q, R> {
    /// An enrichment named `name` (it names the node, its cache store and
    /// its metrics) that asks `lookup` for `query(key, value)`.
    pub fn new(
        name: impl Into<String>,
        query: impl Fn(&K, &V) -> Q + Send + Sync + 'static,
        lookup: impl Lookup<Q, R>,
    ) -> Self {
        Enrichment {
            name: name.into(),
            query: Arc::new(query),
            lookup: Arc::new(lookup),
            options: EnrichOptions::default(),
            cache: None,
            dead_letters: None,
            runtime: None,
        }
    }

    /// Runs the calls on `runtime` instead of the process's enrichment
    /// runtime: a test that drives a current-thread runtime decides when
    /// answers arrive.
    #[cfg(test)]
    pub(crate) fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Replaces every limit and policy at once.
    pub fn options(mut self, options: EnrichOptions) -> Self {
        self.options = options;
        self
    }

    /// See [`EnrichOptions::max_in_flight`].
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.options.max_in_flight = calls.max(1);
        self
    }

    /// See [`EnrichOptions::max_buffered`].
    pub fn max_buffered(mut self, records: usize) -> Self {
        self.options.max_buffered = records.max(1);
        self
    }

    /// See [`EnrichOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.options.retry = retry;
        self
    }

    pub fn breaker(mut self, breaker: BreakerPolicy) -> Self {
        self.options.breaker = breaker;
        self
    }

    /// Keeps answers in the store `<name>-cache` (as JSON, logged to its
    /// changelog, so the cache survives restarts and moves with its task),
    /// for `ttl`, or for ever with `None`. A record whose query has a fresh
    /// answer is passed on without a call.
    pub fn cache(mut self, ttl: Option<Duration>) -> Self
    where
        Q: serde::Serialize + serde::de::DeserializeOwned + 'static,
        R: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        self.cache = Some(CacheSpec {
            ttl,
            query_serde: Arc::new(crate::serde::Json::<Q>::new()),
            answer_serde: Arc::new(crate::serde::Json::<R>::new()),
        });
        self
    }

    /// Sends records whose enrichment failed for good to `topic` (key and
    /// value written with these serdes, the reason and source in headers)
    /// instead of stopping the instance.
    pub fn dead_letter(
        mut self,
        topic: impl Into<String>,
        key_serde: impl crate::serde::Serde<K>,
        value_serde: impl crate::serde::Serde<V>,
    ) -> Self {
        self.dead_letters = Some(DeadLetters {
            topic: topic.into(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
        });
        self
    }
}
