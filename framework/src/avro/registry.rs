//! The Schema Registry client: registers and looks up schemas through the
//! Confluent REST API, caches schemas by id (and, for a while, the ids it
//! does not know), and retries while the registry is unreachable or
//! refuses to serve. (Each serde caches the ids it registered.)
//!
//! A registry that cannot be reached, answers `5xx`, `408` or `429`
//! (overloaded) or `401`/`403` (credentials expired or revoked) is
//! *unavailable*: the records that need it may be fine, so a source stops
//! on them instead of dead-lettering them. A `404` for a schema id means
//! the record names a schema that does not exist: a bad record.

use crate::error::WeirError;
use apache_avro::types::Value;
use apache_avro::{AvroResult, GenericSingleObjectReader, Schema};
use schema_registry_converter::blocking::schema_registry::{get_schema_by_id, post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long an id the registry does not know is answered from the cache.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(60);

/// A failed registry call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistryError {
    pub message: String,
    /// The registry was unavailable on every attempt (see the module
    /// documentation), as opposed to refusing the request.
    pub unavailable: bool,
}

/// A Confluent-compatible Schema Registry, shared by every serde that uses
/// it (clones share the schema cache).
///
/// ```no_run
/// use std::time::Duration;
/// use weir::avro::SchemaRegistry;
/// let registry = SchemaRegistry::builder("http://schema-registry:8081")
///     .basic_auth("user", "secret")
///     .timeout(Duration::from_secs(5))
///     .attempts(5)
///     .build()?;
/// # Ok::<(), weir::WeirError>(())
/// ```
#[derive(Clone)]
pub struct SchemaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SrSettings,
    attempts: u32,
    backoff: Duration,
    /// Writer schemas by id.
    schemas: RwLock<HashMap<u32, Arc<WriterSchema>>>,
    /// Ids the registry said it does not know, with when and its answer.
    unknown: RwLock<HashMap<u32, (Instant, RegistryError)>>,
}

/// A schema from the registry with its names resolved, ready to decode the
/// records written with it.
pub(crate) struct WriterSchema {
    pub id: u32,
    pub schema: Schema,
    /// The schema's JSON as registered, with the attributes apache-avro
    /// drops (`connect.name`, `connect.parameters`, a bytes type's `scale`).
    pub json: String,
    /// Built with an empty header, so it reads bare Avro datums; it owns the
    /// resolved names, which a record would otherwise resolve again.
    decoder: GenericSingleObjectReader,
}

impl WriterSchema {
    /// A record as an Avro value.
    pub fn read_value(&self, body: &mut &[u8]) -> AvroResult<Value> {
        self.decoder.read_value(body)
    }

    /// A record straight into `T`, without an intermediate value; only for
    /// a `T` whose schema is this one.
    pub fn read<T: DeserializeOwned>(&self, body: &mut &[u8]) -> AvroResult<T> {
        self.decoder.read_deser(body)
    }
}

/// Settings of a [`SchemaRegistry`]; made by [`SchemaRegistry::builder`].
pub struct SchemaRegistryBuilder {
    urls: Vec<String>,
    basic_auth: Option<(String, Option<String>)>,
    bearer: Option<String>,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
}

impl SchemaRegistryBuilder {
    /// Another URL of the same registry, tried when the ones before fail.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// HTTP basic authentication (Confluent Cloud: the API key and secret).
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), Some(password.into())));
        self
    }

    /// A bearer token.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// How long one request may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a call is made while the registry is unreachable
    /// before it fails (default 5), doubling the wait between attempts from
    /// `backoff` (default 200 ms).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn build(self) -> Result<SchemaRegistry, WeirError> {
        let mut urls = self.urls.into_iter();
        let first = urls
            .next()
            .ok_or_else(|| WeirError::Config("a schema registry needs a URL".into()))?;
        let mut builder = SrSettings::new_builder(first.trim_end_matches('/').to_string());
        for url in urls {
            builder.add_url(url.trim_end_matches('/').to_string());
        }
        if let Some((user, password)) = &self.basic_auth {
            builder.set_basic_authorization(user, password.as_deref());
        }
        if let Some(token) = &self.bearer {
            builder.set_token_authorization(token);
        }
        builder.set_timeout(self.timeout);
        let settings = builder
            .build()
            .map_err(|e| WeirError::Config(format!("invalid schema registry settings: {e}")))?;
        Ok(SchemaRegistry {
            inner: Arc::new(Inner {
                settings,
                attempts: self.attempts,
                backoff: self.backoff,
                schemas: RwLock::default(),
                unknown: RwLock::default(),
            }),
        })
    }
}

impl SchemaRegistry {
    /// A registry at `url` with the default settings.
    pub fn new(url: impl Into<String>) -> Result<SchemaRegistry, WeirError> {
        SchemaRegistry::builder(url).build()
    }

    pub fn builder(url: impl Into<String>) -> SchemaRegistryBuilder {
        SchemaRegistryBuilder {
            urls: vec![url.into()],
            basic_auth: None,
            bearer: None,
            timeout: Duration::from_secs(10),
            attempts: 5,
            backoff: Duration::from_millis(200),
        }
    }

    /// The schema registered with `id`.
    pub(crate) fn schema(&self, id: u32) -> Result<Arc<WriterSchema>, RegistryError> {
        if let Some(schema) = self.inner.schemas.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(schema.clone());
        }
        if let Some((at, error)) = self.inner.unknown.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            if at.elapsed() < UNKNOWN_ID_TTL {
                return Err(error.clone());
            }
        }
        let registered = self
            .call(|| get_schema_by_id(id, &self.inner.settings))
            .map_err(|e| RegistryError {
                message: format!("cannot fetch schema {id}: {}", e.message),
                ..e
            });
        let registered = match registered {
            Ok(registered) => registered,
            Err(error) => {
                if !error.unavailable {
                    self.inner
                        .unknown
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, (Instant::now(), error.clone()));
                }
                return Err(error);
            }
        };
        let invalid = |e: apache_avro::Error| RegistryError {
            message: format!("the registry's schema {id} is not a valid Avro schema: {e}"),
            unavailable: false,
        };
        let schema = Schema::parse_str(&registered.schema).map_err(invalid)?;
        let decoder = GenericSingleObjectReader::builder()
            .schema(schema.clone())
            .header(Vec::new())
            .build()
            .map_err(invalid)?;
        let schema = Arc::new(WriterSchema {
            id,
            schema,
            json: registered.schema,
            decoder,
        });
        self.inner
            .schemas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// The id of `schema` (its JSON) under `subject`, registering it if the
    /// subject does not have it yet (the registry checks compatibility).
    pub(crate) fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        let registered = self
            .call(|| post_schema(&self.inner.settings, subject.to_string(), supplied.clone()))
            .map_err(|e| RegistryError {
                message: format!("cannot register the schema under subject '{subject}': {}", e.message),
                ..e
            })?;
        Ok(registered.id)
    }

    /// Runs `call`, again after a growing wait while the registry is
    /// unavailable (see the module documentation).
    fn call<T>(&self, call: impl Fn() -> Result<T, SRCError>) -> Result<T, RegistryError> {
        let mut wait = self.inner.backoff;
        let mut attempt = 1;
        loop {
            match call() {
                Ok(value) => return Ok(value),
                Err(error) if unavailable(&error) && attempt < self.inner.attempts => {
                    tracing::warn!(%error, attempt, "schema registry call failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(error) => {
                    let message = match &error.cause {
                        Some(cause) => format!("{} ({cause})", error.error),
                        None => error.error.clone(),
                    };
                    let unavailable = unavailable(&error);
                    return Err(RegistryError {
                        message: if unavailable {
                            format!("the schema registry is unavailable after {attempt} attempts: {message}")
                        } else {
                            message
                        },
                        unavailable,
                    });
                }
            }
        }
    }
}

/// Whether a failed call says the registry cannot serve now (see the module
/// documentation), rather than that the request is wrong.
fn unavailable(error: &SRCError) -> bool {
    // The client reports an HTTP answer as "... failed with status <code> ...".
    let status = error
        .error
        .split("with status ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(status) => matches!(status, 401 | 403 | 408 | 429 | 500..=599),
        None => error.retriable,
    }
}
