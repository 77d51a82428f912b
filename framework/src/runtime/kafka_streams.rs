//! [`KafkaStreams`]: runs a topology against a Kafka cluster.

use super::config::{Settings, StoreBackend, StreamsConfig};
use super::producer::RecordSender;
use super::query::{LocalStores, ReadOnlyStore};
use super::stream_thread;
use super::task_manager::TaskManager;
use super::topics::{prepare_topics, KafkaTopicAdmin, TopicAdmin};
use crate::error::WeirError;
use crate::metrics::{RuntimeMetrics, RuntimeSnapshot};
use crate::serde::Serde;
use crate::state::{InMemoryStores, RocksDbStores, StoreSupplier};
use crate::topology::{PartitionPlan, Topology};
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

/// The state shared by the stream thread and the handle.
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
    state: Arc<StateCell>,
    metrics: Arc<RuntimeMetrics>,
}

impl StatusHandle {
    pub fn state(&self) -> StreamsState {
        self.state.get()
    }

    pub fn metrics(&self) -> RuntimeSnapshot {
        self.metrics.snapshot()
    }
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

/// One instance of an application: a consumer in the group
/// `application.id`, the tasks of its assigned partitions, their stores
/// (restored from changelogs) and a producer for outputs and changelogs.
/// Start more instances with the same `application.id` to scale out.
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
    state: Arc<StateCell>,
    /// The tasks' stores, for interactive queries.
    local_stores: Arc<LocalStores>,
    thread: Option<JoinHandle<Result<(), WeirError>>>,
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
            settings,
            admin: None,
            shutdown: Arc::new(AtomicBool::new(false)),
            metrics: Arc::default(),
            state: Arc::new(StateCell::new()),
            thread: None,
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

    /// Checks and creates topics, then starts processing on a stream thread.
    /// Errors found before processing starts (missing source topics, topics
    /// that are not co-partitioned, a locked state directory) are returned
    /// here.
    pub fn start(&mut self) -> Result<(), WeirError> {
        if self.thread.is_some() {
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
        let stores: Box<dyn StoreSupplier> = match self.settings.store_backend {
            StoreBackend::RocksDb => Box::new(RocksDbStores::new(&app_dir, self.settings.rocksdb)),
            StoreBackend::InMemory => Box::new(InMemoryStores),
        };
        let (topology, settings) = (self.topology.clone(), self.settings.clone());
        let (shutdown, metrics, state) = (self.shutdown.clone(), self.metrics.clone(), self.state.clone());
        let local_stores = self.local_stores.clone();
        let transactional_id = format!("{}-{process_id}-0", settings.application_id);
        let (started, ready) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{}-stream-0", settings.application_id))
            .spawn(move || {
                // The thread creates what it owns: tasks are not `Send`.
                let prepared = RecordSender::new(&settings, &transactional_id).and_then(|sender| {
                    TaskManager::new(
                        topology,
                        settings.clone(),
                        stores,
                        local_stores,
                        sender,
                        metrics.clone(),
                    )
                });
                let manager = match prepared {
                    Ok(manager) => {
                        let _ = started.send(Ok(()));
                        manager
                    }
                    Err(error) => {
                        let message = error.to_string();
                        let _ = started.send(Err(error));
                        state.set(StreamsState::Error);
                        return Err(WeirError::Other(message));
                    }
                };
                let result = stream_thread::run(manager, &settings, &shutdown, &metrics, state.clone());
                state.set(if result.is_ok() {
                    StreamsState::NotRunning
                } else {
                    StreamsState::Error
                });
                result
            })
            .map_err(|e| WeirError::Other(format!("cannot start the stream thread: {e}")))?;
        let outcome = ready
            .recv()
            .unwrap_or_else(|_| Err(WeirError::Other("the stream thread ended while starting".into())));
        if let Err(error) = outcome {
            let _ = thread.join();
            self._lock = None;
            return Err(error);
        }
        self.thread = Some(thread);
        Ok(())
    }

    /// Where the instance is in its life.
    pub fn state(&self) -> StreamsState {
        self.state.get()
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
            state: self.state.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Reads store `name` of this instance's tasks from any thread, with
    /// the key and value serdes the topology gave the store: the values of
    /// keys whose partition is here, the owner of the others (see
    /// [`ReadOnlyStore`]). Take it before [`KafkaStreams::run`], which
    /// consumes the instance.
    pub fn store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: impl Serde<K> + 'static,
        value_serde: impl Serde<V> + 'static,
    ) -> Result<ReadOnlyStore<K, V>, WeirError> {
        let layout = self.topology.store_layout(name).ok_or_else(|| {
            let known: Vec<&str> = self.topology.stores().collect();
            WeirError::Other(format!(
                "the topology has no store '{name}' (its stores: {})",
                known.join(", ")
            ))
        })?;
        Ok(ReadOnlyStore::new(
            name,
            &self.settings.application_id,
            layout.value_offset(),
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
        let result = match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(WeirError::Other("the stream thread panicked".into()))),
            None => Ok(()),
        };
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
        while !self.shutdown.load(Ordering::SeqCst) && self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::info!("shutting down");
        self.close()
    }
}

impl Drop for KafkaStreams {
    fn drop(&mut self) {
        if self.thread.is_some() {
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
    let path = settings.app_dir().join(".lock");
    let file =
        File::create(&path).map_err(|e| WeirError::StateDir(format!("cannot create {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(WeirError::StateDir(format!(
            "{} is in use by another instance of '{}'; give each instance its own state.dir",
            settings.app_dir().display(),
            settings.application_id
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(WeirError::StateDir(format!("cannot lock {}: {e}", path.display())))
        }
    }
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
