//! The enrichment node: it hands each record's query to the enrichment's
//! [`Caller`], holds the record until the answer arrives, and then passes
//! it on, combined with the answer.
//!
//! Records of one key are looked up one after the other (the next one
//! starts when the previous one has its answer, usually from the cache), so
//! that they leave in the order they came. Answers arrive on a channel that
//! the task drains through [`AsyncNode::complete`] between input records.

use super::{send_dead_letter, Forwarder, Processor, ProcessorContext, RecordCollector, View};
use crate::enrich::{Caller, Completion, DeadLetters, LookupError};
use crate::error::WeirError;
use crate::metrics::{SkipReason, TaskMetrics};
use crate::record::{now_ms, RawRecord, Record, SourceMetadata};
use crate::serde::{Encoded, Serde, SerdeRef};
use crate::state::TypedStore;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;

/// A node whose outputs may come after the input that caused them; the task
/// drives it between input records.
pub(crate) trait AsyncNode {
    /// Takes the answers that arrived and passes on the records that are
    /// ready; returns how many it passed on (or dead-lettered).
    fn complete(&self, collector: &mut RecordCollector, metrics: &mut TaskMetrics) -> Result<u64, WeirError>;
    /// Records held, waiting for an answer or for an earlier record.
    fn held(&self) -> usize;
    /// Whether the instance holds as many records as the node allows.
    fn backpressured(&self) -> bool;
}

/// A record's query, or `None` when it needs no lookup.
pub(crate) type MaybeQuery<K, VI, Q> = Arc<dyn Fn(&K, &VI) -> Option<Q> + Send + Sync>;
/// A record's output given its answer; `None` emits nothing.
pub(crate) type Combine<K, VI, R, VO> = Arc<dyn Fn(&K, VI, Option<R>) -> Option<VO> + Send + Sync>;

/// How the records of one enrichment become queries and outputs; shared by
/// the node's instances in every task.
pub(crate) struct EnrichSpec<K, VI, Q, R, VO> {
    pub name: String,
    /// `None` when the record needs no lookup (a deletion passing through).
    pub query: MaybeQuery<K, VI, Q>,
    /// The output for a record and its answer (`None` when it needed no
    /// lookup); `None` emits nothing.
    pub combine: Combine<K, VI, R, VO>,
    pub dead_letters: Option<DeadLetters<K, VI>>,
    pub caller: Arc<Caller<Q, R>>,
}

/// A cached answer and when it was fetched.
pub(crate) struct Cached<R> {
    fetched_at_ms: i64,
    answer: R,
}

impl<R: Clone> Clone for Cached<R> {
    fn clone(&self) -> Self {
        Cached {
            fetched_at_ms: self.fetched_at_ms,
            answer: self.answer.clone(),
        }
    }
}

/// Writes a [`Cached`] as 8 bytes of fetch time (big-endian milliseconds)
/// followed by the answer in its own serde.
pub(crate) struct CachedSerde<R>(pub SerdeRef<R>);

impl<R: 'static> Serde<Cached<R>> for CachedSerde<R> {
    fn serialize(
        &self,
        topic: &str,
        value: &Cached<R>,
        out: &mut Vec<u8>,
    ) -> Result<Encoded, crate::error::SerdeError> {
        out.extend_from_slice(&value.fetched_at_ms.to_be_bytes());
        self.0.serialize(topic, &value.answer, out).map(|_| Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Cached<R>, crate::error::SerdeError> {
        let bytes = bytes.ok_or_else(|| crate::error::SerdeError::deserialize(topic, "a null cache entry"))?;
        if bytes.len() < 8 {
            return Err(crate::error::SerdeError::deserialize(
                topic,
                "a cache entry shorter than its timestamp",
            ));
        }
        let (at, answer) = bytes.split_at(8);
        Ok(Cached {
            fetched_at_ms: i64::from_be_bytes(at.try_into().expect("8 bytes")),
            answer: self.0.deserialize(topic, Some(answer))?,
        })
    }
}

/// The node's cache store and how long its answers stay fresh.
pub(crate) struct Cache<Q, R> {
    pub store: Rc<TypedStore<Q, Cached<R>>>,
    pub ttl: Option<Duration>,
}

impl<Q: 'static, R: Clone + 'static> Cache<Q, R> {
    fn fresh(&self, query: &Q) -> Result<Option<R>, WeirError> {
        Ok(self.store.get(query, View::Latest)?.and_then(|cached| match self.ttl {
            Some(ttl) if !fresh_at(cached.fetched_at_ms, now_ms(), ttl) => None,
            _ => Some(cached.answer),
        }))
    }
}

/// Whether an answer fetched at `fetched_at_ms` is still fresh at
/// `now_ms`. The fetch time comes from changelog bytes, so it may be
/// anything: the age saturates instead of overflowing, and an entry from
/// the future (another instance's clock) counts as fresh.
fn fresh_at(fetched_at_ms: i64, now_ms: i64, ttl: Duration) -> bool {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(fetched_at_ms) <= ttl_ms
}

enum Stage<R> {
    /// Behind an earlier record of its key.
    Queued,
    InFlight(AbortHandle),
    /// Answered (`None` when no lookup was needed), or failed for good.
    Done(Result<Option<R>, LookupError>),
}

struct Held<K, VI, Q, R> {
    record: Record<K, VI>,
    source: SourceMetadata,
    query: Option<Q>,
    stage: Stage<R>,
}

/// One task's instance of an enrichment node.
pub(crate) struct EnrichNode<K, VI, Q, R, VO> {
    spec: Arc<EnrichSpec<K, VI, Q, R, VO>>,
    cache: Option<Cache<Q, R>>,
    out: Forwarder<K, VO>,
    held: BTreeMap<u64, Held<K, VI, Q, R>>,
    /// Records answered but not yet passed on.
    done: BTreeSet<u64>,
    /// Each key with a held record, and its records queued behind that one.
    busy_keys: HashMap<K, VecDeque<u64>>,
    answers: Receiver<Completion<R>>,
    answers_sender: Sender<Completion<R>>,
    next_seq: u64,
}

/// The processor the task's graph holds; the task drives the same state
/// through [`AsyncNode`].
pub(crate) struct EnrichProcessor<K, VI, Q, R, VO>(pub SharedNode<K, VI, Q, R, VO>);

/// An enrichment node as both its processor and its task hold it.
pub(crate) type SharedNode<K, VI, Q, R, VO> = Rc<RefCell<EnrichNode<K, VI, Q, R, VO>>>;

impl<K, VI, Q, R, VO> EnrichNode<K, VI, Q, R, VO>
where
    K: Clone + Eq + Hash + 'static,
    VI: 'static,
    Q: Clone + Send + 'static,
    R: Clone + Send + 'static,
    VO: Clone + 'static,
{
    pub(crate) fn new(
        spec: Arc<EnrichSpec<K, VI, Q, R, VO>>,
        cache: Option<Cache<Q, R>>,
        out: Forwarder<K, VO>,
    ) -> Self {
        let (answers_sender, answers) = channel();
        EnrichNode {
            spec,
            cache,
            out,
            held: BTreeMap::new(),
            done: BTreeSet::new(),
            busy_keys: HashMap::new(),
            answers,
            answers_sender,
            next_seq: 0,
        }
    }

    fn accept(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, VI>) -> Result<(), WeirError> {
        let query = (self.spec.query)(&record.key, &record.value);
        let nothing_before = !self.busy_keys.contains_key(&record.key);
        if nothing_before {
            // The common cases — no lookup needed, or a fresh cached answer —
            // pass on at once, without being held.
            if let Some(answer) = self.answer_at_hand(query.as_ref())? {
                return self.pass_on(ctx, record, Ok(answer));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = record.key.clone();
        self.held.insert(
            seq,
            Held {
                record,
                source: ctx.source.clone(),
                query,
                stage: Stage::Queued,
            },
        );
        self.spec.caller.add_buffered(1);
        match self.busy_keys.get_mut(&key) {
            Some(queue) => queue.push_back(seq),
            None => {
                self.busy_keys.insert(key, VecDeque::new());
                // When nothing came before, the answer was looked for above.
                self.start(seq, nothing_before)?;
            }
        }
        self.release(ctx.collector, ctx.metrics).map(|_| ())
    }

    /// The answer for a query without a call: `Some(None)` when there is no
    /// query, `Some(Some(answer))` on a fresh cache entry.
    fn answer_at_hand(&self, query: Option<&Q>) -> Result<Option<Option<R>>, WeirError> {
        let Some(query) = query else {
            return Ok(Some(None));
        };
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let answer = cache.fresh(query)?;
        if answer.is_some() {
            self.spec.caller.record_cache_hit();
        }
        Ok(answer.map(Some))
    }

    /// Starts the lookup of a held record whose turn has come, and the
    /// lookups of the records of its key queued behind it that need none.
    /// `known_miss`: the first record's answer is known not to be at hand.
    fn start(&mut self, mut seq: u64, mut known_miss: bool) -> Result<(), WeirError> {
        loop {
            let held = self.held.get(&seq).expect("a started record is held");
            let at_hand = if known_miss {
                None
            } else {
                self.answer_at_hand(held.query.as_ref())?
            };
            known_miss = false;
            if let Some(answer) = at_hand {
                self.finish(seq, Ok(answer));
                match self.next_of_key(seq) {
                    Some(next) => seq = next,
                    None => return Ok(()),
                }
                continue;
            }
            let query = held
                .query
                .clone()
                .expect("a record without a query has its answer at hand");
            let sender = self.answers_sender.clone();
            let handle = self.spec.caller.spawn(query, move |result| {
                // The task may have closed meanwhile; its records will be
                // read again by the partition's next owner.
                let _ = sender.send(Completion { seq, result });
            })?;
            self.held.get_mut(&seq).expect("held").stage = Stage::InFlight(handle);
            return Ok(());
        }
    }

    fn finish(&mut self, seq: u64, outcome: Result<Option<R>, LookupError>) {
        if let Some(held) = self.held.get_mut(&seq) {
            held.stage = Stage::Done(outcome);
            self.done.insert(seq);
        }
    }

    /// The next record of `seq`'s key, or `None` (and the key is free).
    fn next_of_key(&mut self, seq: u64) -> Option<u64> {
        let key = &self.held.get(&seq)?.record.key;
        let queue = self.busy_keys.get_mut(key)?;
        match queue.pop_front() {
            Some(next) => Some(next),
            None => {
                let key = key.clone();
                self.busy_keys.remove(&key);
                None
            }
        }
    }

    /// Takes the answers that arrived, caches them and starts the next
    /// record of each answered key.
    fn take_answers(&mut self, collector: &mut RecordCollector, metrics: &mut TaskMetrics) -> Result<(), WeirError> {
        while let Ok(Completion { seq, result }) = self.answers.try_recv() {
            let Some(held) = self.held.get(&seq) else { continue };
            if !matches!(held.stage, Stage::InFlight(_)) {
                continue;
            }
            if let (Ok(answer), Some(cache), Some(query)) = (&result, &self.cache, &held.query) {
                let entry = Cached {
                    fetched_at_ms: now_ms(),
                    answer: answer.clone(),
                };
                // The cache write is logged as if by the answered record.
                let mut ctx = ProcessorContext {
                    timestamp: held.record.timestamp,
                    source: &held.source,
                    collector,
                    metrics,
                    republishing: false,
                };
                cache.store.put(&mut ctx, query, Some(&entry))?;
            }
            self.finish(seq, result.map(Some));
            if let Some(next) = self.next_of_key(seq) {
                self.start(next, false)?;
            }
        }
        Ok(())
    }

    /// Passes on the answered records whose turn it is.
    fn release(&mut self, collector: &mut RecordCollector, metrics: &mut TaskMetrics) -> Result<u64, WeirError> {
        let mut released = 0;
        while let Some(seq) = self.done.pop_first() {
            let Some(held) = self.held.remove(&seq) else { continue };
            self.spec.caller.add_buffered(-1);
            let Stage::Done(outcome) = held.stage else {
                unreachable!("only answered records are in `done`")
            };
            let mut ctx = ProcessorContext {
                timestamp: held.record.timestamp,
                source: &held.source,
                collector,
                metrics,
                republishing: false,
            };
            self.pass_on(&mut ctx, held.record, outcome)?;
            released += 1;
        }
        Ok(released)
    }

    fn pass_on(
        &self,
        ctx: &mut ProcessorContext<'_>,
        record: Record<K, VI>,
        outcome: Result<Option<R>, LookupError>,
    ) -> Result<(), WeirError> {
        match outcome {
            Ok(answer) => {
                let Record { key, value, timestamp } = record;
                match (self.spec.combine)(&key, value, answer) {
                    Some(value) => self
                        .out
                        .forward(ctx, Record::new(key, value, timestamp))
                        .map_err(|e| ctx.failed_at_source(e)),
                    None => Ok(()),
                }
            }
            Err(error) => {
                self.spec.caller.record_failure();
                self.dead_letter(ctx, record, error)
            }
        }
    }

    fn dead_letter(
        &self,
        ctx: &mut ProcessorContext<'_>,
        record: Record<K, VI>,
        error: LookupError,
    ) -> Result<(), WeirError> {
        let name = &self.spec.name;
        let Some(dead_letters) = &self.spec.dead_letters else {
            return Err(ctx.failed_at_source(WeirError::Other(format!("enrichment '{name}' failed: {error}"))));
        };
        let topic = &dead_letters.topic;
        let key = dead_letters.key_serde.to_bytes(topic, &record.key)?;
        let value = dead_letters.value_serde.to_bytes(topic, &record.value)?;
        let source = ctx.source;
        tracing::warn!(
            enrichment = %name, topic = %source.topic, partition = source.partition, offset = source.offset,
            %error, "dead-lettering a record whose enrichment failed"
        );
        let source_topic = source.topic.clone();
        let original = RawRecord {
            key,
            value,
            timestamp: record.timestamp,
            headers: Vec::new(),
        };
        send_dead_letter(
            ctx,
            topic,
            ("enrichment", format!("enrichment '{name}': {error}")),
            None,
            original,
        );
        ctx.metrics
            .record_skip(SkipReason::EnrichmentDeadLettered, &source_topic);
        Ok(())
    }
}

impl<K, VI, Q, R, VO> Drop for EnrichNode<K, VI, Q, R, VO> {
    fn drop(&mut self) {
        // A closing task drops what it holds; the partition's next owner
        // reads those records again, as their offsets were not committed.
        for held in self.held.values() {
            if let Stage::InFlight(handle) = &held.stage {
                handle.abort();
            }
        }
        self.spec.caller.add_buffered(-(self.held.len() as i64));
    }
}

impl<K, VI, Q, R, VO> Processor<K, VI> for EnrichProcessor<K, VI, Q, R, VO>
where
    K: Clone + Eq + Hash + 'static,
    VI: 'static,
    Q: Clone + Send + 'static,
    R: Clone + Send + 'static,
    VO: Clone + 'static,
{
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, VI>) -> Result<(), WeirError> {
        self.0.borrow_mut().accept(ctx, record)
    }
}

impl<K, VI, Q, R, VO> AsyncNode for RefCell<EnrichNode<K, VI, Q, R, VO>>
where
    K: Clone + Eq + Hash + 'static,
    VI: 'static,
    Q: Clone + Send + 'static,
    R: Clone + Send + 'static,
    VO: Clone + 'static,
{
    fn complete(&self, collector: &mut RecordCollector, metrics: &mut TaskMetrics) -> Result<u64, WeirError> {
        let mut node = self.borrow_mut();
        if node.held.is_empty() {
            return Ok(0);
        }
        node.take_answers(collector, metrics)?;
        node.release(collector, metrics)
    }

    fn held(&self) -> usize {
        self.borrow().held.len()
    }

    fn backpressured(&self) -> bool {
        self.borrow().spec.caller.holding_back()
    }
}

#[cfg(test)]
mod tests {
    use super::fresh_at;
    use std::time::Duration;

    #[test]
    fn a_cache_entry_of_any_age_is_judged_without_overflow() {
        let day = Duration::from_secs(86_400);
        let now = 1_700_000_000_000;
        assert!(fresh_at(now - 1_000, now, day));
        assert!(!fresh_at(now - 86_400_001, now, day));
        // Fetch times read from changelog bytes may be anything.
        assert!(!fresh_at(i64::MIN, now, day));
        assert!(fresh_at(i64::MAX, now, day));
        assert!(!fresh_at(i64::MIN, i64::MAX, day));
        assert!(fresh_at(i64::MIN, i64::MAX, Duration::MAX));
    }
}
