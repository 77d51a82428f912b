//! The Processor API: a stream's records handed to code of your own, with
//! named stores and punctuations on stream time or on the wall clock, for
//! what the DSL's operators do not say (expiry, timers, state machines).

use super::{Data, KStream};
use crate::error::WeirError;
use crate::processor::{Forwarder, ProcessorContext, View};
use crate::record::Record;
pub use crate::runtime::PunctuationType;
use crate::runtime::{Punctuator, TaskBuilder};
use crate::serde::{Serde, SerdeRef};
use crate::state::TypedStore;
use crate::topology::StoreLayout;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Code of your own in a topology ([`KStream::process`]): one instance per
/// task, fed the task's records one at a time, and called on the schedules
/// it asked for in [`Processor::init`].
///
/// ```
/// use std::time::Duration;
/// use weir::process::{Context, Init, Processor, PunctuationType, StoreSpec, Store};
/// use weir::record::Record;
/// use weir::serde::{Utf8, I64};
/// use weir::testing::TopologyTestDriver;
/// use weir::{Consumed, Produced, StreamsBuilder, WeirError};
///
/// /// Counts each key's records and, every minute of stream time, says
/// /// every count so far.
/// struct Counter { counts: Option<Store<String, i64>> }
///
/// impl Processor<String, String> for Counter {
///     type KeyOut = String;
///     type ValueOut = i64;
///
///     fn init(&mut self, init: &mut Init<'_, '_>) -> Result<(), WeirError> {
///         self.counts = Some(init.store("counts")?);
///         init.schedule(PunctuationType::StreamTime, Duration::from_secs(60));
///         Ok(())
///     }
///
///     fn process(&mut self, ctx: &mut Context<'_, '_, String, i64>, record: Record<String, String>) -> Result<(), WeirError> {
///         let counts = self.counts.as_ref().expect("initialized");
///         let count = counts.get(&record.key)?.unwrap_or(0) + 1;
///         counts.put(ctx, &record.key, &count)
///     }
///
///     fn punctuate(&mut self, ctx: &mut Context<'_, '_, String, i64>, _: PunctuationType, time: i64) -> Result<(), WeirError> {
///         for (key, count) in self.counts.as_ref().expect("initialized").all()? {
///             ctx.forward(Record::new(key, count, time))?;
///         }
///         Ok(())
///     }
/// }
///
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("clicks", Consumed::with(Utf8, Utf8))
///     .process(|| Counter { counts: None }, vec![StoreSpec::key_value("counts", Utf8, I64)])
///     .to("counts", Produced::with(Utf8, I64));
/// let driver = TopologyTestDriver::new(builder.build()?)?;
/// let clicks = driver.input_topic("clicks", Utf8, Utf8);
/// clicks.pipe_record(weir::testing::TestRecord::new("ada".to_string(), Some("a".to_string())).at(0))?;
/// clicks.pipe_record(weir::testing::TestRecord::new("ada".to_string(), Some("b".to_string())).at(30_000))?;
/// assert!(driver.output_topic("counts", Utf8, I64).read_key_values()?.is_empty());
/// clicks.pipe_record(weir::testing::TestRecord::new("bob".to_string(), Some("c".to_string())).at(60_000))?;
/// let said = driver.output_topic("counts", Utf8, I64).read_key_values()?;
/// assert_eq!(said, [("ada".to_string(), Some(2)), ("bob".to_string(), Some(1))]);
/// # Ok::<(), WeirError>(())
/// ```
pub trait Processor<K, V>: 'static {
    type KeyOut: Data;
    type ValueOut: Data;

    /// Called once per task before its first record: look up the stores
    /// and schedule punctuations.
    fn init(&mut self, init: &mut Init<'_, '_>) -> Result<(), WeirError> {
        let _ = init;
        Ok(())
    }

    /// Called for each record of the task.
    fn process(
        &mut self,
        ctx: &mut Context<'_, '_, Self::KeyOut, Self::ValueOut>,
        record: Record<K, V>,
    ) -> Result<(), WeirError>;

    /// Called when a punctuation scheduled in [`Processor::init`] is due:
    /// `time` is the stream time (the largest record timestamp the task has
    /// processed) or the wall clock, in milliseconds since the epoch. A
    /// stream-time punctuation runs right after the record that moved the
    /// stream time past its due point; a wall-clock one between records.
    /// Due points missed meanwhile are skipped, not caught up.
    fn punctuate(
        &mut self,
        ctx: &mut Context<'_, '_, Self::KeyOut, Self::ValueOut>,
        kind: PunctuationType,
        time: i64,
    ) -> Result<(), WeirError> {
        let _ = (ctx, kind, time);
        Ok(())
    }
}

/// A store a [`Processor`] uses: declared with [`KStream::process`], kept
/// per task like any store, with its changelog
/// (`<application.id>-<name>-changelog`), restored on a task's new owner.
pub struct StoreSpec {
    name: String,
    /// The key and value serdes, as `(SerdeRef<K>, SerdeRef<V>)`.
    serdes: Arc<dyn Any + Send + Sync>,
}

impl StoreSpec {
    /// A key-value store `name` with these serdes.
    pub fn key_value<K: 'static, V: 'static>(name: &str, key: impl Serde<K>, value: impl Serde<V>) -> Self {
        let serdes: (SerdeRef<K>, SerdeRef<V>) = (Arc::new(key), Arc::new(value));
        StoreSpec {
            name: name.to_string(),
            serdes: Arc::new(serdes),
        }
    }
}

/// What [`Processor::init`] may do.
pub struct Init<'a, 'b> {
    task: &'a mut TaskBuilder<'b>,
    stores: &'a [Arc<StoreSpec>],
    schedules: Vec<(PunctuationType, Duration)>,
}

impl Init<'_, '_> {
    /// The task's instance of store `name`, which [`KStream::process`] must
    /// have declared with these key and value types.
    pub fn store<K: 'static, V: 'static>(&mut self, name: &str) -> Result<Store<K, V>, WeirError> {
        let spec = self.stores.iter().find(|s| s.name == name).ok_or_else(|| {
            WeirError::InvalidTopology(format!("the processor's store '{name}' is not declared in process()"))
        })?;
        let (key, value) = spec
            .serdes
            .downcast_ref::<(SerdeRef<K>, SerdeRef<V>)>()
            .ok_or_else(|| {
                WeirError::InvalidTopology(format!(
                    "the processor's store '{name}' was declared with other key or value types than {} / {}",
                    std::any::type_name::<K>(),
                    std::any::type_name::<V>()
                ))
            })?;
        Ok(Store(self.task.typed_store(name, key.clone(), value.clone())?))
    }

    /// Has the task call [`Processor::punctuate`] every `interval` of
    /// `kind`'s time.
    pub fn schedule(&mut self, kind: PunctuationType, interval: Duration) {
        self.schedules.push((kind, interval));
    }
}

/// A processor's key-value store, within its task.
pub struct Store<K, V>(Rc<TypedStore<K, V>>);

impl<K: 'static, V: 'static> Store<K, V> {
    pub fn get(&self, key: &K) -> Result<Option<V>, WeirError> {
        self.0.get(key, View::Latest)
    }

    /// Writes `value` for `key` (and to the changelog).
    pub fn put<KO, VO>(&self, ctx: &mut Context<'_, '_, KO, VO>, key: &K, value: &V) -> Result<(), WeirError> {
        self.0.put(ctx.inner, key, Some(value))
    }

    pub fn delete<KO, VO>(&self, ctx: &mut Context<'_, '_, KO, VO>, key: &K) -> Result<(), WeirError> {
        self.0.put(ctx.inner, key, None)
    }

    /// Every entry, in the order of the keys' serialized bytes.
    pub fn all(&self) -> Result<Vec<(K, V)>, WeirError> {
        self.0.entries_with_prefix(&[])
    }
}

/// What a [`Processor`] may do while it processes a record or punctuates.
pub struct Context<'a, 'b, K, V> {
    inner: &'a mut ProcessorContext<'b>,
    out: &'a Forwarder<K, V>,
    stream_time: Option<i64>,
}

impl<K: Clone + 'static, V: Clone + 'static> Context<'_, '_, K, V> {
    /// Passes `record` on to the processor's children.
    pub fn forward(&mut self, record: Record<K, V>) -> Result<(), WeirError> {
        self.out.forward(self.inner, record)
    }

    /// The record's timestamp, or the punctuation's time.
    pub fn timestamp(&self) -> i64 {
        self.inner.timestamp
    }

    /// The largest record timestamp the task has processed, `None` before
    /// its first record.
    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// The task's partition.
    pub fn partition(&self) -> i32 {
        self.inner.source.partition
    }
}

/// A processor in a task, with its children.
struct ProcessorNode<P: Processor<K, V>, K, V> {
    processor: RefCell<P>,
    out: Forwarder<P::KeyOut, P::ValueOut>,
    stream_time: Rc<Cell<Option<i64>>>,
    _input: std::marker::PhantomData<fn(K, V)>,
}

impl<P: Processor<K, V>, K, V> ProcessorNode<P, K, V> {
    /// What the processor sees of `ctx`.
    fn context<'a, 'b>(&'a self, ctx: &'a mut ProcessorContext<'b>) -> Context<'a, 'b, P::KeyOut, P::ValueOut> {
        Context {
            inner: ctx,
            out: &self.out,
            stream_time: self.stream_time.get(),
        }
    }
}

/// The node as its parents hold it.
struct ProcessorRef<P: Processor<K, V>, K, V>(Rc<ProcessorNode<P, K, V>>);

impl<P: Processor<K, V>, K: 'static, V: 'static> crate::processor::Processor<K, V> for ProcessorRef<P, K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        let node = &self.0;
        node.processor.borrow_mut().process(&mut node.context(ctx), record)
    }
}

/// A punctuation of one kind of a processor.
struct Punctuation<P: Processor<K, V>, K, V> {
    node: Rc<ProcessorNode<P, K, V>>,
    kind: PunctuationType,
}

impl<P: Processor<K, V>, K: 'static, V: 'static> Punctuator for Punctuation<P, K, V> {
    fn punctuate(&self, ctx: &mut ProcessorContext<'_>, time: i64) -> Result<(), WeirError> {
        let node = &self.node;
        node.processor
            .borrow_mut()
            .punctuate(&mut node.context(ctx), self.kind, time)
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Hands every record to a [`Processor`] that `supplier` makes, one per
    /// task, with the stores in `stores`; what it forwards is the new
    /// stream. Its key may differ from the input's, so joins and
    /// aggregations by key after it need a repartition first.
    pub fn process<P: Processor<K, V>>(
        &self,
        supplier: impl Fn() -> P + Send + Sync + 'static,
        stores: Vec<StoreSpec>,
    ) -> KStream<P::KeyOut, P::ValueOut> {
        let stores: Vec<Arc<StoreSpec>> = stores.into_iter().map(Arc::new).collect();
        let mut graph = self.graph.borrow_mut();
        for store in &stores {
            graph.add_store(&store.name, StoreLayout::Plain);
        }
        let names = stores.iter().map(|s| s.name.clone()).collect();
        let node = graph.add_processor::<K, V, P::KeyOut, P::ValueOut, _, _>(
            "KSTREAM-PROCESSOR",
            &[self.node],
            names,
            move |task, out| {
                let mut processor = supplier();
                let mut init = Init {
                    task,
                    stores: &stores,
                    schedules: Vec::new(),
                };
                processor.init(&mut init)?;
                let schedules = init.schedules;
                let node = Rc::new(ProcessorNode {
                    processor: RefCell::new(processor),
                    out,
                    stream_time: task.stream_time(),
                    _input: std::marker::PhantomData,
                });
                for (kind, interval) in schedules {
                    let punctuation = Punctuation {
                        node: node.clone(),
                        kind,
                    };
                    task.schedule(Rc::new(punctuation), kind, interval);
                }
                Ok(ProcessorRef(node))
            },
        );
        drop(graph);
        KStream::new(self.graph.clone(), node, true)
    }
}
