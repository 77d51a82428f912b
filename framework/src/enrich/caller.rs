//! The asynchronous side of an enrichment: the runtime lookups run on, and
//! the [`Caller`] that makes one record's calls (in-flight limit, timeout,
//! retries, circuit breaker) and reports the outcome back to the task.

use super::breaker::{BreakerState, CircuitBreaker, Permit};
use super::{EnrichOptions, Lookup, LookupError};
use crate::error::WeirError;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

/// The number of a finished call's record, and the call's outcome.
pub(crate) struct Completion<R> {
    pub seq: u64,
    pub result: Result<R, LookupError>,
}

/// Counters of one enrichment in this process, over all its tasks.
#[derive(Debug, Default)]
pub struct EnrichStats {
    calls: AtomicU64,
    cache_hits: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicI64,
    buffered: AtomicI64,
    breaker: AtomicU8,
}

/// A snapshot of [`EnrichStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrichMetrics {
    /// Calls made, retries included.
    pub calls: u64,
    /// Records answered from the cache.
    pub cache_hits: u64,
    /// Calls that were a retry.
    pub retries: u64,
    /// Records whose enrichment failed for good.
    pub failures: u64,
    /// Calls under way now.
    pub in_flight: i64,
    /// Records waiting for enrichment now.
    pub buffered: i64,
    pub breaker: BreakerState,
}

impl EnrichStats {
    pub fn snapshot(&self) -> EnrichMetrics {
        EnrichMetrics {
            calls: self.calls.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
            breaker: match self.breaker.load(Ordering::Relaxed) {
                1 => BreakerState::Open,
                2 => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            },
        }
    }

    fn buffered(&self) -> i64 {
        self.buffered.load(Ordering::Relaxed)
    }
}

/// The exported metrics of one enrichment, labelled by `enrichment`.
struct Exported {
    calls: metrics::Counter,
    cache_hits: metrics::Counter,
    retries: metrics::Counter,
    failures: metrics::Counter,
    in_flight: metrics::Gauge,
    buffered: metrics::Gauge,
    breaker: metrics::Gauge,
    latency: metrics::Histogram,
}

impl Exported {
    fn new(name: &str) -> Self {
        use crate::metrics as m;
        let label = || ("enrichment", name.to_string());
        Exported {
            calls: metrics::counter!(m::ENRICH_CALLS, &[label()]),
            cache_hits: metrics::counter!(m::ENRICH_CACHE_HITS, &[label()]),
            retries: metrics::counter!(m::ENRICH_RETRIES, &[label()]),
            failures: metrics::counter!(m::ENRICH_FAILURES, &[label()]),
            in_flight: metrics::gauge!(m::ENRICH_IN_FLIGHT, &[label()]),
            buffered: metrics::gauge!(m::ENRICH_BUFFERED, &[label()]),
            breaker: metrics::gauge!(m::ENRICH_BREAKER_STATE, &[label()]),
            latency: metrics::histogram!(m::ENRICH_LATENCY_SECONDS, &[label()]),
        }
    }
}

/// Makes the calls of one enrichment for every task of the process: the
/// lookup, the in-flight limit, the circuit breaker and the counters are
/// shared, as they concern one external service.
pub(crate) struct Caller<Q, R> {
    lookup: Arc<dyn Lookup<Q, R>>,
    options: EnrichOptions,
    slots: tokio::sync::Semaphore,
    breaker: Mutex<CircuitBreaker>,
    stats: Arc<EnrichStats>,
    /// Set when the buffer filled up, cleared when it drained to half.
    holding_back: AtomicBool,
    name: String,
    /// Registered on first use: a topology is often built before the
    /// application installs its metrics recorder, and handles taken
    /// earlier would record nowhere.
    exported: std::sync::OnceLock<Exported>,
    /// Where calls run: the process's enrichment runtime, unless a test
    /// drives its own.
    runtime: Option<tokio::runtime::Handle>,
}

impl<Q, R> Caller<Q, R> {
    pub(crate) fn new(
        name: &str,
        lookup: Arc<dyn Lookup<Q, R>>,
        options: EnrichOptions,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        Caller {
            runtime,
            lookup,
            slots: tokio::sync::Semaphore::new(options.max_in_flight.max(1)),
            breaker: Mutex::new(CircuitBreaker::new(options.breaker.clone())),
            options,
            stats: Arc::new(EnrichStats::default()),
            holding_back: AtomicBool::new(false),
            name: name.to_string(),
            exported: std::sync::OnceLock::new(),
        }
    }

    fn exported(&self) -> &Exported {
        self.exported.get_or_init(|| Exported::new(&self.name))
    }

    pub(crate) fn stats(&self) -> &Arc<EnrichStats> {
        &self.stats
    }

    /// Whether input should stay paused for the records waiting here.
    ///
    /// Input pauses when [`EnrichOptions::max_buffered`] records wait and
    /// resumes only when half of them have left: resuming at the first free
    /// slot would pause and resume on every answer, and each pause makes
    /// librdkafka drop what it fetched ahead, so the calls would run dry
    /// while it fetches again.
    pub(crate) fn holding_back(&self) -> bool {
        let buffered = self.stats.buffered();
        let max = self.options.max_buffered as i64;
        if buffered >= max {
            self.holding_back.store(true, Ordering::Relaxed);
            true
        } else if buffered <= max / 2 {
            self.holding_back.store(false, Ordering::Relaxed);
            false
        } else {
            self.holding_back.load(Ordering::Relaxed)
        }
    }

    /// Counts records entering (`+n`) or leaving (`-n`) the wait for enrichment.
    pub(crate) fn add_buffered(&self, n: i64) {
        let now = self.stats.buffered.fetch_add(n, Ordering::Relaxed) + n;
        self.exported().buffered.set(now as f64);
    }

    pub(crate) fn record_cache_hit(&self) {
        self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        self.exported().cache_hits.increment(1);
    }

    pub(crate) fn record_failure(&self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.exported().failures.increment(1);
    }
}

impl<Q: Clone + Send + 'static, R: Send + 'static> Caller<Q, R> {
    /// Starts the calls for `query` on the enrichment runtime; `deliver`
    /// receives the final outcome. Aborting the returned handle cancels them.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        query: Q,
        deliver: impl FnOnce(Result<R, LookupError>) + Send + 'static,
    ) -> Result<AbortHandle, WeirError> {
        let caller = self.clone();
        let call = async move {
            let result = caller.call_until_final(query).await;
            deliver(result);
            notify_completion();
        };
        let task = match &self.runtime {
            Some(runtime) => runtime.spawn(call),
            None => runtime()?.spawn(call),
        };
        Ok(task.abort_handle())
    }

    /// Calls until an answer, a permanent failure, or the last attempt.
    async fn call_until_final(&self, query: Q) -> Result<R, LookupError> {
        let mut counted_failures = 0;
        loop {
            let permit = self.wait_for_permit().await;
            let result = self.call_once(query.clone()).await;
            let error = match result {
                Ok(answer) => {
                    self.breaker_do(|b| b.on_answer());
                    return Ok(answer);
                }
                Err(error) if !error.is_retryable() => {
                    self.breaker_do(|b| b.on_answer());
                    return Err(error);
                }
                Err(error) => error,
            };
            if self.breaker_do(|b| b.on_failure(permit, Instant::now())) {
                counted_failures += 1;
            }
            if counted_failures >= self.options.retry.max_attempts.max(1) {
                return Err(LookupError::retryable(format!(
                    "gave up after {counted_failures} failed attempts; the last: {}",
                    error.message()
                )));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.exported().retries.increment(1);
            if counted_failures > 0 {
                tokio::time::sleep(self.options.retry.backoff(counted_failures)).await;
            }
        }
    }

    async fn wait_for_permit(&self) -> Permit {
        loop {
            match self.breaker_do(|b| b.permit(Instant::now())) {
                Permit::Wait(wait) => tokio::time::sleep(wait).await,
                permit => return permit,
            }
        }
    }

    async fn call_once(&self, query: Q) -> Result<R, LookupError> {
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = self.slots.acquire().await;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.exported().calls.increment(1);
        let in_flight = self.stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.exported().in_flight.set(in_flight as f64);
        let started = Instant::now();
        let timeout = self.options.timeout;
        let result = match tokio::time::timeout(timeout, self.lookup.lookup(query)).await {
            Ok(result) => result,
            Err(_) => Err(LookupError::retryable(format!("no answer within {timeout:?}"))),
        };
        self.exported().latency.record(started.elapsed().as_secs_f64());
        let in_flight = self.stats.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        self.exported().in_flight.set(in_flight as f64);
        result
    }

    fn breaker_do<T>(&self, f: impl FnOnce(&mut CircuitBreaker) -> T) -> T {
        let mut breaker = self.breaker.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = f(&mut breaker);
        let state = breaker.state();
        self.stats.breaker.store(state.as_gauge() as u8, Ordering::Relaxed);
        self.exported().breaker.set(state.as_gauge());
        result
    }
}

/// The runtime every enrichment of the process runs its calls on: two
/// worker threads, as calls mostly wait on the network.
fn runtime() -> Result<&'static Runtime, WeirError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("weir-enrich")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| WeirError::Other(format!("cannot start the enrichment runtime: {e}")))
}

/// Counts finished calls, so that a thread with nothing else to do can
/// sleep until one finishes.
static COMPLETIONS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

fn notify_completion() {
    let (count, finished) = &COMPLETIONS;
    *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    finished.notify_all();
}

/// How a thread with nothing else to do waits for enrichment answers.
pub(crate) trait AnswerWait {
    /// A mark to wait from, taken before the answers so far are taken in,
    /// so that one arriving in between is not waited for in vain.
    fn mark(&self) -> u64;
    /// Blocks until an answer arrived after `mark`, at most `timeout`.
    fn wait(&self, mark: u64, timeout: Duration);
}

/// Waits for the calls of the process's enrichment runtime.
pub(crate) struct ProcessAnswers;

impl AnswerWait for ProcessAnswers {
    /// The number of calls finished so far in the process.
    fn mark(&self) -> u64 {
        *COMPLETIONS.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self, mark: u64, timeout: Duration) {
        let (count, finished) = &COMPLETIONS;
        let guard = count.lock().unwrap_or_else(|p| p.into_inner());
        let _unused = finished.wait_timeout_while(guard, timeout, |count| *count <= mark);
    }
}
