//! [`KafkaStreams`]: runs a topology against a Kafka cluster.

use super::changelog_reader::KafkaChangelogReader;
use super::config::{Settings, StoreBackend, StreamsConfig};
use super::global::{GlobalStores, GlobalThread};
use super::health::Problems;
use super::producer::RecordSender;
use super::query::{LocalStores, ReadOnlyStore};
use super::state_dir_lock::try_lock_file;
use super::stream_thread;
use super::task_manager::{TaskManager, ThreadIo, ThreadStores};
use super::topics::{prepare_topics, KafkaTopicAdmin, TopicAdmin};
use crate::enrich::ProcessAnswers;
use crate::error::WeirError;
use crate::metrics::{RuntimeMetrics, RuntimeSnapshot};
use crate::serde::Serde;
use crate::state::{InMemoryStores, RocksDbStores, StoreSupplier};
use crate::topology::{changelog_topic, PartitionPlan, Topology};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamsState {
    /// Built, not started.
    Created,
    /// Joining the group, or moving tasks after a change of members.
    Rebalancing,
    /// Processing its assigned partitions.
    Running,
    /// Committing and closing its tasks.
    PendingShutdown,
    /// Stopped cleanly.
    NotRunning,
    /// Stopped on an error; [`KafkaStreams::close`] returns it.
    Error,
}

/// The state of one stream thread, shared with the handle.
pub(crate) struct StateCell(AtomicU8);

const STATES: [StreamsState; 6] = [
    StreamsState::Created,
    StreamsState::Rebalancing,
    StreamsState::Running,
    StreamsState::PendingShutdown,
    StreamsState::NotRunning,
    StreamsState::Error,
];

impl StateCell {
    fn new() -> Self {
        StateCell(AtomicU8::new(0))
    }

    /// The state of an instance whose stream threads are in `threads`: it
    /// runs when all of them run and has failed when one has.
    fn of_instance(threads: &[Arc<StateCell>]) -> StreamsState {
        let states: Vec<StreamsState> = threads.iter().map(|t| t.get()).collect();
        let all = |state: StreamsState| states.iter().all(|s| *s == state);
        let any = |state: StreamsState| states.contains(&state);
        if any(StreamsState::Error) {
            StreamsState::Error
        } else if all(StreamsState::Created) || all(StreamsState::NotRunning) || all(StreamsState::Running) {
            states[0]
        } else if any(StreamsState::PendingShutdown) || any(StreamsState::NotRunning) {
            StreamsState::PendingShutdown
        } else {
            StreamsState::Rebalancing
        }
    }

    pub(crate) fn set(&self, state: StreamsState) {
        let index = STATES.iter().position(|s| *s == state).unwrap_or(0);
        self.0.store(index as u8, Ordering::SeqCst);
    }

    pub(crate) fn get(&self) -> StreamsState {
        STATES[self.0.load(Ordering::SeqCst) as usize]
    }
}

/// Where a [`KafkaStreams`] is in its life and what it counted, readable
/// from any thread (health checks, monitoring).
#[derive(Clone)]
pub struct StatusHandle {
    threads: Arc<[Arc<StateCell>]>,
    metrics: Arc<RuntimeMetrics>,
    failure: Arc<Failure>,
    problems: Arc<Problems>,
}

impl StatusHandle {
    pub fn state(&self) -> StreamsState {
        StateCell::of_instance(&self.threads)
    }

    /// The error that stopped the instance, once one did.
    pub fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    /// A client error that keeps the running instance from doing its work
    /// (authorization refused, a topic gone, no broker reachable), reported
    /// within the last seconds.
    pub fn problem(&self) -> Option<String> {
        self.problems.current()
    }

    pub fn metrics(&self) -> RuntimeSnapshot {
        self.metrics.snapshot()
    }
}

/// The first error that stopped a stream thread.
#[derive(Default)]
struct Failure(std::sync::OnceLock<String>);

impl Failure {
    fn record(&self, error: &WeirError) {
        let _ = self.0.set(error.to_string());
    }

    fn get(&self) -> Option<String> {
        self.0.get().cloned()
    }
}

/// The message a panic was raised with.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Sets the shutdown flag of a running [`KafkaStreams`] from anywhere.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    /// Asks the instance to commit, close its tasks and stop.
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One instance of an application: `num.stream.threads` stream threads,
/// each a consumer in the group `application.id` with the tasks of its
/// assigned partitions, their stores (restored from changelogs) and a
/// producer for outputs and changelogs. Start more instances with the same
/// `application.id` to scale out.
///
/// ```no_run
/// use weir::{StreamsBuilder, Consumed, Produced, serde::Utf8};
/// use weir::runtime::{KafkaStreams, StreamsConfig};
///
/// let builder = StreamsBuilder::new();
/// builder.stream("in", Consumed::with(Utf8, Utf8))
///     .map_values(|v: String| v.to_uppercase())
///     .to("out", Produced::with(Utf8, Utf8));
/// let config = StreamsConfig::from_toml_file("app.toml")?.merge(StreamsConfig::from_env());
/// // Processes until SIGTERM or SIGINT, then commits and stops.
/// KafkaStreams::new(builder.build()?, &config)?.run()?;
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct KafkaStreams {
    topology: Topology,
    settings: Arc<Settings>,
    admin: Option<Arc<dyn TopicAdmin>>,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<RuntimeMetrics>,
    /// One per stream thread.
    states: Arc<[Arc<StateCell>]>,
    /// The tasks' stores, for interactive queries.
    local_stores: Arc<LocalStores>,
    /// Why the instance stopped, once a thread failed.
    failure: Arc<Failure>,
    /// Client errors that keep it from working while it runs.
    problems: Arc<Problems>,
    threads: Vec<JoinHandle<Result<(), WeirError>>>,
    /// Fills the global tables and keeps them current, while running.
    global: Option<GlobalThread>,
    /// Held while running, so that two instances never share a state directory.
    _lock: Option<File>,
}

impl KafkaStreams {
    /// Checks the configuration; nothing connects to Kafka yet.
    pub fn new(topology: Topology, config: &StreamsConfig) -> Result<Self, WeirError> {
        let settings = Arc::new(config.settings()?);
        Ok(KafkaStreams {
            topology,
            local_stores: Arc::new(LocalStores::new(settings.clone())),
            admin: None,
            shutdown: Arc::new(AtomicBool::new(false)),
            metrics: Arc::default(),
            states: (0..settings.stream_threads)
                .map(|_| Arc::new(StateCell::new()))
                .collect(),
            failure: Arc::default(),
            problems: Arc::default(),
            threads: Vec::new(),
            global: None,
            settings,
            _lock: None,
        })
    }

    /// Manages topics through `admin` instead of Kafka's admin API (an
    /// [`EmbeddedKafka`](crate::embedded::EmbeddedKafka), for instance).
    pub fn with_topic_admin(mut self, admin: Arc<dyn TopicAdmin>) -> Self {
        self.admin = Some(admin);
        self
    }

    /// The checked settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Checks and creates topics, then starts processing on the stream
    /// threads. Errors found before processing starts (missing source
    /// topics, topics that are not co-partitioned, a locked state directory)
    /// are returned here.
    pub fn start(&mut self) -> Result<(), WeirError> {
        if !self.threads.is_empty() {
            return Err(WeirError::Other("the instance is already started".into()));
        }
        let admin: Arc<dyn TopicAdmin> = match &self.admin {
            Some(admin) => admin.clone(),
            None => Arc::new(KafkaTopicAdmin::new(&self.settings)?),
        };
        let plan = prepare_topics(&self.topology, &self.settings, admin.as_ref())?;
        log_plan(&self.settings, &plan);
        self.local_stores.place(&self.topology, &plan);
        let app_dir = self.settings.app_dir();
        std::fs::create_dir_all(&app_dir)
            .map_err(|e| WeirError::StateDir(format!("cannot create {}: {e}", app_dir.display())))?;
        self._lock = Some(lock_state_dir(&self.settings)?);
        let process_id = process_id(&self.settings)?;
        // One supplier for all threads: RocksDB stores share one memory budget.
        let stores: Arc<dyn StoreSupplier> = match self.settings.store_backend {
            StoreBackend::RocksDb => Arc::new(RocksDbStores::new(&app_dir, self.settings.rocksdb)),
            StoreBackend::InMemory => Arc::new(InMemoryStores),
        };
        // The stream threads start once every global table is filled.
        let (global_stores, global) =
            GlobalThread::start(&self.topology, &self.settings, stores.clone(), self.metrics.clone())?;
        self.global = global;
        self.local_stores.set_globals(global_stores.clone());
        let (started, ready) = std::sync::mpsc::channel();
        for index in 0..self.settings.stream_threads {
            match self.spawn_stream_thread(
                index,
                &process_id,
                stores.clone(),
                global_stores.clone(),
                started.clone(),
            ) {
                Ok(thread) => self.threads.push(thread),
                Err(error) => {
                    self.stop_threads();
                    return Err(error);
                }
            }
        }
        for _ in 0..self.threads.len() {
            let outcome = ready
                .recv()
                .unwrap_or_else(|_| Err(WeirError::Other("a stream thread ended while starting".into())));
            if let Err(error) = outcome {
                self.stop_threads();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Starts stream thread `index`; it reports on `started` once it has
    /// created its producer and task manager, or failed to.
    fn spawn_stream_thread(
        &self,
        index: usize,
        process_id: &str,
        stores: Arc<dyn StoreSupplier>,
        global_stores: GlobalStores,
        started: std::sync::mpsc::Sender<Result<(), WeirError>>,
    ) -> Result<JoinHandle<Result<(), WeirError>>, WeirError> {
        let (topology, settings) = (self.topology.clone(), self.settings.clone());
        let (shutdown, metrics) = (self.shutdown.clone(), self.metrics.clone());
        let (state, local_stores) = (self.states[index].clone(), self.local_stores.clone());
        let (failure, problems) = (self.failure.clone(), self.problems.clone());
        let transactional_id = format!("{}-{process_id}-{index}", settings.application_id);
        std::thread::Builder::new()
            .name(format!("{}-stream-{index}", settings.application_id))
            .spawn(move || {
                // The thread creates what it owns: tasks are not `Send`.
                let prepared = RecordSender::new(&settings, &transactional_id, metrics.clone(), problems.clone())
                    .and_then(|sender| {
                        let reader = KafkaChangelogReader::new(&settings)?;
                        Ok(TaskManager::new(
                            index,
                            topology,
                            settings.clone(),
                            ThreadStores {
                                supplier: stores,
                                local: local_stores,
                                global: global_stores,
                            },
                            ThreadIo {
                                output: Box::new(sender),
                                changelogs: Box::new(reader),
                                answers: Box::new(ProcessAnswers),
                            },
                            metrics.clone(),
                        ))
                    });
                let manager = match prepared {
                    Ok(manager) => {
                        let _ = started.send(Ok(()));
                        manager
                    }
                    Err(error) => {
                        let message = error.to_string();
                        failure.record(&error);
                        let _ = started.send(Err(error));
                        state.set(StreamsState::Error);
                        return Err(WeirError::Other(message));
                    }
                };
                // The stream thread turns panics of its processing into
                // errors; one here (closing, say) stops the instance too.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    stream_thread::run(manager, &settings, &shutdown, &metrics, state.clone(), problems)
                }))
                .unwrap_or_else(|panic| {
                    Err(WeirError::Other(format!(
                        "stream thread {index} panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                });
                if let Err(error) = &result {
                    // One failed thread stops the instance: its partitions
                    // would otherwise wait for a thread that is gone.
                    failure.record(error);
                    shutdown.store(true, Ordering::SeqCst);
                }
                state.set(if result.is_ok() {
                    StreamsState::NotRunning
                } else {
                    StreamsState::Error
                });
                result
            })
            .map_err(|e| WeirError::Other(format!("cannot start a stream thread: {e}")))
    }

    /// Stops and joins the threads started so far, after a failed start.
    fn stop_threads(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(global) = self.global.take() {
            let _ = global.stop();
        }
        self._lock = None;
    }

    /// Where the instance is in its life.
    pub fn state(&self) -> StreamsState {
        StateCell::of_instance(&self.states)
    }

    /// Waits until the instance reaches `state` (or stops); returns whether it did.
    pub fn wait_for_state(&self, state: StreamsState, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let now = self.state();
            if now == state {
                return true;
            }
            if matches!(now, StreamsState::NotRunning | StreamsState::Error) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The instance's counters now.
    pub fn metrics(&self) -> RuntimeSnapshot {
        self.metrics.snapshot()
    }

    /// A handle that reads the instance's state and counters from another thread.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle {
            threads: self.states.clone(),
            metrics: self.metrics.clone(),
            failure: self.failure.clone(),
            problems: self.problems.clone(),
        }
    }

    /// Reads store `name` of this instance's tasks from any thread, with
    /// the key and value serdes the topology gave the store: the values of
    /// keys whose partition is here, the owner of the others (see
    /// [`ReadOnlyStore`]). A global table's store answers every key here.
    /// Take it before [`KafkaStreams::run`], which consumes the instance.
    pub fn store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: impl Serde<K> + 'static,
        value_serde: impl Serde<V> + 'static,
    ) -> Result<ReadOnlyStore<K, V>, WeirError> {
        let global = self.topology.globals().iter().find(|g| g.store == name);
        let (serde_topic, value_offset) = match (global, self.topology.store_layout(name)) {
            (Some(global), _) => (global.topic.clone(), 0),
            (None, Some(layout)) => (
                changelog_topic(&self.settings.application_id, name),
                layout.value_offset(),
            ),
            (None, None) => {
                let known: Vec<&str> = self
                    .topology
                    .stores()
                    .chain(self.topology.globals().iter().map(|g| g.store.as_str()))
                    .collect();
                return Err(WeirError::Other(format!(
                    "the topology has no store '{name}' (its stores: {})",
                    known.join(", ")
                )));
            }
        };
        Ok(ReadOnlyStore::new(
            name,
            serde_topic,
            value_offset,
            key_serde,
            value_serde,
            self.local_stores.clone(),
        ))
    }

    /// A handle that stops the instance from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Commits, closes every task (writing checkpoints), leaves the group
    /// and stops; returns the error that stopped the instance, if any.
    pub fn close(&mut self) -> Result<(), WeirError> {
        self.shutdown.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        for thread in self.threads.drain(..) {
            let outcome = thread
                .join()
                .unwrap_or_else(|_| Err(WeirError::Other("a stream thread panicked".into())));
            // The first error is the one that stopped the instance.
            if result.is_ok() {
                result = outcome;
            }
        }
        if let Some(global) = self.global.take() {
            let outcome = global.stop();
            if result.is_ok() {
                result = outcome;
            }
        }
        self._lock = None;
        result
    }

    /// Starts, processes until SIGTERM or SIGINT (a second signal exits at
    /// once), then closes. An error that stops the instance is returned.
    pub fn run(mut self) -> Result<(), WeirError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for signal in [SIGTERM, SIGINT] {
            // The first registration exits on a second signal, the second
            // sets the flag on the first.
            signal_hook::flag::register_conditional_shutdown(signal, 1, self.shutdown.clone())
                .and_then(|_| signal_hook::flag::register(signal, self.shutdown.clone()))
                .map_err(|e| WeirError::Other(format!("cannot handle signal {signal}: {e}")))?;
        }
        self.start()?;
        let running =
            |s: &Self| s.threads.iter().all(|t| !t.is_finished()) && s.global.as_ref().is_none_or(|g| !g.is_finished());
        while !self.shutdown.load(Ordering::SeqCst) && running(&self) {
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::info!("shutting down");
        self.close()
    }
}

impl Drop for KafkaStreams {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.global.is_some() {
            if let Err(error) = self.close() {
                tracing::error!(%error, "the instance stopped on an error");
            }
        }
    }
}

fn log_plan(settings: &Settings, plan: &PartitionPlan) {
    tracing::info!(
        application = %settings.application_id,
        tasks = ?plan.tasks,
        internal_topics = ?plan.internal_topics.iter().map(|t| format!("{} ({})", t.name, t.partitions)).collect::<Vec<_>>(),
        guarantee = ?settings.guarantee,
        "starting"
    );
}

/// Locks `<state.dir>/<application.id>/.lock` for the life of the instance.
fn lock_state_dir(settings: &Settings) -> Result<File, WeirError> {
    try_lock_file(&settings.app_dir().join(".lock"))?.ok_or_else(|| {
        WeirError::StateDir(format!(
            "{} is in use by another instance of '{}'; give each instance its own state.dir",
            settings.app_dir().display(),
            settings.application_id
        ))
    })
}

/// A random id kept in the state directory, so that an instance restarted on
/// the same state directory reuses its transactional id and fences the
/// transactions its previous run left open.
fn process_id(settings: &Settings) -> Result<String, WeirError> {
    let path = settings.app_dir().join("process-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id).map_err(|e| WeirError::StateDir(format!("cannot write {}: {e}", path.display())))?;
    Ok(id)
}
