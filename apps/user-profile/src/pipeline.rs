//! The topologies: `run` (CDC tables → join → `user-profile` → enrichment
//! → `user-god-object`) and `reprocess` (the enrichment stage alone, from
//! the compacted `user-profile` topic).
//!
//! ```text
//! mysql.app.users ──────► users table ───┐
//!                                         ├─ left join ─► user-profile ─► ID mapping ─► user-god-object
//! mysql.app.preferences ► preferences table ┘   (topic)       (HTTP, async)      (topic)
//!                                                                            └─► god-objects store
//! ```
//!
//! `run` also keeps the god objects in the store [`GOD_OBJECT_STORE`], which
//! each instance serves at `GET /users/{user_id}` (interactive queries).
//!
//! Every topic and store is in one [`Format`]: JSON, or Avro through a
//! Schema Registry.

use crate::model::{GodObject, IdMapping, PreferencesRow, UserProfile, UserRow};
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use weir::avro::{Avro, SchemaRegistry};
use weir::cdc::Cdc;
use weir::enrich::{Enrichment, HttpJsonLookup};
use weir::serde::{Json, Nullable, SerdeRef};
use weir::{Consumed, KStream, KTable, Produced, Serdes, StreamsBuilder, Topology, WeirError};

/// The store of `run` that holds each user's current god object.
pub const GOD_OBJECT_STORE: &str = "god-objects";

/// The topics the pipeline reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Debezium's topic of the MySQL `users` table.
    pub users: String,
    /// Debezium's topic of the MySQL `preferences` table.
    pub preferences: String,
    /// Compacted: user id → [`UserProfile`].
    pub profiles: String,
    /// Compacted: user id → [`GodObject`].
    pub god_objects: String,
    /// Profiles whose enrichment failed for good, with the reason in headers.
    pub enrichment_dead_letters: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::with_prefix("")
    }
}

impl Topics {
    /// The default names, each after `prefix` (to share a cluster).
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            users: format!("{prefix}mysql.app.users"),
            preferences: format!("{prefix}mysql.app.preferences"),
            profiles: format!("{prefix}user-profile"),
            god_objects: format!("{prefix}user-god-object"),
            enrichment_dead_letters: format!("{prefix}user-god-object-dlq"),
        }
    }
}

/// How the pipeline's topics and stores are encoded.
#[derive(Clone, Default)]
pub enum Format {
    /// Debezium's `JsonConverter` on the inputs; JSON outputs and stores.
    #[default]
    Json,
    /// Debezium's `AvroConverter` on the inputs; outputs, dead letters and
    /// the god-object store in Avro with the schemas of `schemas/`,
    /// registered under `<topic>-key` and `<topic>-value`.
    Avro(SchemaRegistry),
}

const USER_KEY_SCHEMA: &str = include_str!("../../../schemas/user-profile-key.avsc");
const USER_PROFILE_SCHEMA: &str = include_str!("../../../schemas/user-profile-value.avsc");
const GOD_OBJECT_SCHEMA: &str = include_str!("../../../schemas/user-god-object-value.avsc");

impl Format {
    fn cdc<Row: DeserializeOwned + 'static>(&self) -> Cdc<i64, Row> {
        match self {
            Format::Json => Cdc::json(),
            Format::Avro(registry) => Cdc::avro(registry),
        }
    }

    /// The user id, the key of every output.
    pub fn key_serde(&self) -> SerdeRef<i64> {
        self.serde(USER_KEY_SCHEMA, true)
    }

    pub fn profile_serde(&self) -> SerdeRef<UserProfile> {
        self.serde(USER_PROFILE_SCHEMA, false)
    }

    pub fn god_object_serde(&self) -> SerdeRef<GodObject> {
        self.serde(GOD_OBJECT_SCHEMA, false)
    }

    fn serde<T>(&self, avro_schema: &str, is_key: bool) -> SerdeRef<T>
    where
        T: serde::Serialize + DeserializeOwned + 'static,
    {
        match self {
            Format::Json => Arc::new(Json::<T>::new()),
            Format::Avro(registry) => {
                let schema = Schema::parse_str(avro_schema).expect("the schemas in schemas/ are valid Avro");
                Arc::new(Avro::<T>::with_schema(registry, schema, is_key))
            }
        }
    }
}

/// How the pipeline calls the ID-mapping service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingService {
    /// The service's base URL; the lookup is `GET <url>/users/<user_id>`.
    pub url: String,
    pub max_in_flight: usize,
    pub timeout: Duration,
    /// How long a looked-up mapping is reused, from a changelog-backed
    /// store, before it is looked up again (`None`: no cache).
    pub cache_ttl: Option<Duration>,
}

impl MappingService {
    pub fn at(url: impl Into<String>) -> Self {
        MappingService {
            url: url.into(),
            max_in_flight: 256,
            timeout: Duration::from_secs(5),
            cache_ttl: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// The whole pipeline, as `run` starts it.
///
/// ```
/// use user_profile::pipeline::{run_topology, Format, MappingService, Topics};
/// let service = MappingService::at("http://localhost:8080");
/// let topology = run_topology(&Topics::default(), &service, &Format::Json).unwrap();
/// assert!(topology.describe().to_string().contains("user-god-object"));
/// ```
pub fn run_topology(topics: &Topics, service: &MappingService, format: &Format) -> Result<Topology, WeirError> {
    let builder = StreamsBuilder::new();
    let profiles = join(&builder, topics, format);
    enrich(&profiles, topics, service, service.cache_ttl, format)?.to_table(
        GOD_OBJECT_STORE,
        Serdes::with(format.key_serde(), format.god_object_serde()),
    );
    builder.build()
}

/// The join stage alone (CDC tables → left join → `user-profile`), without
/// the enrichment: what the throughput benchmark of the join runs.
///
/// ```
/// use user_profile::pipeline::{join_topology, Format, Topics};
/// let topology = join_topology(&Topics::default(), &Format::Json).unwrap();
/// assert!(!topology.describe().to_string().contains("user-god-object"));
/// ```
pub fn join_topology(topics: &Topics, format: &Format) -> Result<Topology, WeirError> {
    let builder = StreamsBuilder::new();
    join(&builder, topics, format);
    builder.build()
}

/// users ⟕ preferences → `user-profile`; returns the profiles table.
fn join(builder: &StreamsBuilder, topics: &Topics, format: &Format) -> KTable<i64, UserProfile> {
    let users = builder.cdc_table::<i64, UserRow>(&topics.users, format.cdc().store("users"));
    let preferences = builder.cdc_table::<i64, PreferencesRow>(&topics.preferences, format.cdc().store("preferences"));
    let profiles = users.left_join(&preferences, UserProfile::new);
    profiles.to(
        &topics.profiles,
        Produced::with(format.key_serde(), format.profile_serde()),
    );
    profiles
}

/// The enrichment stage alone, reading the compacted `user-profile` topic
/// from its beginning: what `reprocess` runs when the mappings changed. It
/// keeps no cache, so every profile is looked up again.
pub fn reprocess_topology(topics: &Topics, service: &MappingService, format: &Format) -> Result<Topology, WeirError> {
    let builder = StreamsBuilder::new();
    let profiles = builder.table(
        &topics.profiles,
        Consumed::with(format.key_serde(), format.profile_serde()).store("profiles"),
    );
    enrich(&profiles, topics, service, None, format)?;
    builder.build()
}

/// profiles → the ID-mapping service → `user-god-object`; a deleted profile
/// passes on as a tombstone without a call. Mappings are cached for
/// `cache_ttl`, if given. Returns the god objects' changes.
fn enrich(
    profiles: &KTable<i64, UserProfile>,
    topics: &Topics,
    service: &MappingService,
    cache_ttl: Option<Duration>,
    format: &Format,
) -> Result<KStream<i64, Option<GodObject>>, WeirError> {
    let url = format!("{}/users/{{}}", service.url.trim_end_matches('/'));
    let lookup = HttpJsonLookup::<i64, IdMapping>::new(url)?.timeout(service.timeout)?;
    let mut enrichment = Enrichment::new("id-mapping", |user_id: &i64, _: &UserProfile| *user_id, lookup)
        .max_in_flight(service.max_in_flight)
        .timeout(service.timeout)
        .dead_letter(
            &topics.enrichment_dead_letters,
            format.key_serde(),
            format.profile_serde(),
        );
    if cache_ttl.is_some() {
        enrichment = enrichment.cache(cache_ttl);
    }
    let god_objects = profiles.enrich_async(enrichment, |_, profile, mapping| GodObject::new(profile, mapping));
    god_objects.to(
        &topics.god_objects,
        Produced::with(format.key_serde(), Nullable(format.god_object_serde())),
    );
    Ok(god_objects)
}
