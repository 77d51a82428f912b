//! A Confluent-compatible Schema Registry in process, for tests: the REST
//! endpoints Avro serdes and operators use, with the registry's status and
//! error codes, Avro schemas only, kept in memory.
//!
//! | endpoint | answer |
//! |---|---|
//! | `POST /subjects/{s}/versions` | `{"id"}`; the same schema again gets the same id; `409` when incompatible, `422` (`42201`) when not a valid schema |
//! | `POST /subjects/{s}` | the version of a schema under the subject; `404` (`40401` subject, `40403` schema) |
//! | `GET /schemas/ids/{id}` | `{"schema"}`; `404` (`40403`) |
//! | `GET /subjects`, `GET /subjects/{s}/versions` | the names, the versions; `404` (`40401`) |
//! | `GET /subjects/{s}/versions/{v or latest}` | `{"subject","id","version","schema"}`; `404` (`40401`, `40402`), `422` (`42202`) |
//! | `POST /compatibility/subjects/{s}/versions[/{v or latest}]` | `{"is_compatible"}` against the latest version |
//! | `GET`/`PUT /config[/{s}]` | `{"compatibilityLevel"}` / `{"compatibility"}`: `BACKWARD` (default), `FORWARD`, `FULL`, `NONE` |
//!
//! Compatibility follows Avro's resolution rules (`BACKWARD`: the new
//! schema reads data of the latest; `FORWARD`: the latest reads data of the
//! new one; `FULL`: both). Schema references are not supported.
//!
//! ```
//! use weir::testing::schema_registry::TestSchemaRegistry;
//! let registry = TestSchemaRegistry::start().unwrap();
//! println!("registry at {}", registry.url());
//! ```

use crate::error::WeirError;
use crate::http_server::{BoundListener, HttpServer};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A running test registry; it stops when dropped.
pub struct TestSchemaRegistry {
    server: HttpServer,
    state: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    /// Schema id `n` is `schemas[n - 1]`, as registered (normalized JSON).
    schemas: Vec<(String, Schema)>,
    /// Each subject's versions: version `v` is schema id `subjects[s][v - 1]`.
    subjects: BTreeMap<String, Vec<u32>>,
    levels: BTreeMap<String, Level>,
    default_level: Level,
    /// Set: every request is answered with this status.
    failing: Option<StatusCode>,
    requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Level {
    #[default]
    Backward,
    Forward,
    Full,
    None,
}

impl Level {
    fn parse(text: &str) -> Option<Level> {
        match text {
            "BACKWARD" => Some(Level::Backward),
            "FORWARD" => Some(Level::Forward),
            "FULL" => Some(Level::Full),
            "NONE" => Some(Level::None),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Backward => "BACKWARD",
            Level::Forward => "FORWARD",
            Level::Full => "FULL",
            Level::None => "NONE",
        }
    }

    /// Why `new` may not follow `latest` under this level, if it may not.
    fn check(self, latest: &Schema, new: &Schema) -> Result<(), String> {
        let backward = || {
            SchemaCompatibility::can_read(latest, new)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let forward = || {
            SchemaCompatibility::can_read(new, latest)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match self {
            Level::Backward => backward(),
            Level::Forward => forward(),
            Level::Full => backward().and_then(|_| forward()),
            Level::None => Ok(()),
        }
    }
}

impl TestSchemaRegistry {
    /// Serves on a free loopback port.
    pub fn start() -> Result<TestSchemaRegistry, WeirError> {
        let listener = BoundListener::bind(
            ([127, 0, 0, 1], 0).into(),
            "the test schema registry",
            "test-schema-registry",
        )?;
        let state = Arc::new(Mutex::new(Registry::default()));
        let router = Router::new()
            .route("/subjects", get(subjects))
            .route("/subjects/{subject}", post(lookup))
            .route("/subjects/{subject}/versions", get(versions).post(register))
            .route("/subjects/{subject}/versions/{version}", get(version))
            .route("/schemas/ids/{id}", get(schema_by_id))
            .route("/compatibility/subjects/{subject}/versions", post(compatibility))
            .route(
                "/compatibility/subjects/{subject}/versions/{version}",
                post(compatibility_of_version),
            )
            .route("/config", get(default_config).put(set_default_config))
            .route("/config/{subject}", get(config).put(set_config))
            .layer(axum::middleware::from_fn_with_state(state.clone(), availability))
            .with_state(state.clone());
        Ok(TestSchemaRegistry {
            server: listener.serve(router),
            state,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.address())
    }

    /// While `Some(status)`, every request is answered with `status`: `503`
    /// as by a registry down behind its load balancer, `500` or `504` in a
    /// brownout, `429` when throttled, `401` or `403` when credentials
    /// expired; `None` serves again.
    pub fn fail_requests(&self, status: Option<u16>) {
        self.registry().failing = status.map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE));
    }

    /// Requests served so far (to check what clients cache).
    pub fn requests(&self) -> u64 {
        self.registry().requests
    }

    /// The subjects with at least one schema, in order.
    pub fn subjects(&self) -> Vec<String> {
        self.registry().subjects.keys().cloned().collect()
    }

    /// Registers `schema` under `subject` as a producer elsewhere would;
    /// returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        let mut registry = self.registry();
        match registry.register(subject, schema) {
            Ok(id) => Ok(id),
            Err((_, body)) => Err(body.to_string()),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Shared = State<Arc<Mutex<Registry>>>;
type Failure = (StatusCode, Value);

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Failure {
    (status, json!({ "error_code": code, "message": message.into() }))
}

fn subject_not_found(subject: &str) -> Failure {
    error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."))
}

fn answer(result: Result<Value, Failure>) -> Response {
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(failure) => failure,
    };
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn lock(state: &Arc<Mutex<Registry>>) -> std::sync::MutexGuard<'_, Registry> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

async fn availability(State(state): Shared, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let failing = {
        let mut registry = lock(&state);
        registry.requests += 1;
        registry.failing
    };
    if let Some(status) = failing {
        let code = u32::from(status.as_u16()) * 100 + 3;
        return answer(Err(error(status, code, format!("The registry answers {status}."))));
    }
    next.run(request).await
}

/// A schema as clients send it.
#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaRequest {
    fn parse(&self) -> Result<(String, Schema), Failure> {
        if self.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                "Invalid schema: this registry keeps Avro schemas only",
            ));
        }
        if !self.references.is_empty() {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                "Invalid schema: references are not supported by this registry",
            ));
        }
        parse_schema(&self.schema)
    }
}

/// The schema and its normalized JSON, which identifies it.
fn parse_schema(text: &str) -> Result<(String, Schema), Failure> {
    let schema = Schema::parse_str(text)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema: {e}")))?;
    let normalized = serde_json::to_string(&schema)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema: {e}")))?;
    Ok((normalized, schema))
}

impl Registry {
    fn register(&mut self, subject: &str, text: &str) -> Result<u32, Failure> {
        let (normalized, schema) = parse_schema(text)?;
        self.register_parsed(subject, normalized, schema)
    }

    fn register_parsed(&mut self, subject: &str, normalized: String, schema: Schema) -> Result<u32, Failure> {
        let versions = self.subjects.get(subject).cloned().unwrap_or_default();
        if let Some(id) = versions
            .iter()
            .find(|id| self.schemas[**id as usize - 1].0 == normalized)
        {
            return Ok(*id);
        }
        if let Some(latest) = versions.last() {
            let level = self.level(subject);
            level
                .check(&self.schemas[*latest as usize - 1].1, &schema)
                .map_err(|reason| {
                    error(
                        StatusCode::CONFLICT,
                        409,
                        format!(
                            "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" \
                         ({} against version {}): {reason}",
                            level.name(),
                            versions.len()
                        ),
                    )
                })?;
        }
        let id = match self.schemas.iter().position(|(n, _)| *n == normalized) {
            Some(index) => index as u32 + 1,
            None => {
                self.schemas.push((normalized, schema));
                self.schemas.len() as u32
            }
        };
        self.subjects.entry(subject.to_string()).or_default().push(id);
        Ok(id)
    }

    fn level(&self, subject: &str) -> Level {
        self.levels.get(subject).copied().unwrap_or(self.default_level)
    }

    /// Version `version` (a number or `latest`) of `subject`: (version, id).
    fn version(&self, subject: &str, version: &str) -> Result<(usize, u32), Failure> {
        let versions = self.subjects.get(subject).ok_or_else(|| subject_not_found(subject))?;
        let number = match version {
            "latest" | "-1" => versions.len(),
            other => other.parse::<usize>().ok().filter(|v| *v > 0).ok_or_else(|| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42202,
                    format!("The specified version '{other}' is not a valid version id."),
                )
            })?,
        };
        let id = versions
            .get(number - 1)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, 40402, format!("Version {number} not found.")))?;
        Ok((number, *id))
    }

    fn described(&self, subject: &str, version: usize, id: u32) -> Value {
        json!({
            "subject": subject,
            "version": version,
            "id": id,
            "schema": self.schemas[id as usize - 1].0,
        })
    }
}

async fn register(State(state): Shared, Path(subject): Path<String>, Json(request): Json<SchemaRequest>) -> Response {
    answer(request.parse().and_then(|(normalized, schema)| {
        let id = lock(&state).register_parsed(&subject, normalized, schema)?;
        Ok(json!({ "id": id }))
    }))
}

async fn lookup(State(state): Shared, Path(subject): Path<String>, Json(request): Json<SchemaRequest>) -> Response {
    answer(request.parse().and_then(|(normalized, _)| {
        let registry = lock(&state);
        let versions = registry
            .subjects
            .get(&subject)
            .ok_or_else(|| subject_not_found(&subject))?;
        let (index, id) = versions
            .iter()
            .enumerate()
            .find(|(_, id)| registry.schemas[**id as usize - 1].0 == normalized)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, 40403, "Schema not found"))?;
        Ok(registry.described(&subject, index + 1, *id))
    }))
}

async fn schema_by_id(State(state): Shared, Path(id): Path<u32>) -> Response {
    let registry = lock(&state);
    answer(
        registry
            .schemas
            .get((id as usize).wrapping_sub(1))
            .map(|(normalized, _)| json!({ "schema": normalized }))
            .ok_or_else(|| error(StatusCode::NOT_FOUND, 40403, "Schema not found")),
    )
}

async fn subjects(State(state): Shared) -> Response {
    answer(Ok(json!(lock(&state).subjects.keys().collect::<Vec<_>>())))
}

async fn versions(State(state): Shared, Path(subject): Path<String>) -> Response {
    let registry = lock(&state);
    answer(
        registry
            .subjects
            .get(&subject)
            .map(|versions| json!((1..=versions.len()).collect::<Vec<_>>()))
            .ok_or_else(|| subject_not_found(&subject)),
    )
}

async fn version(State(state): Shared, Path((subject, version)): Path<(String, String)>) -> Response {
    let registry = lock(&state);
    answer(
        registry
            .version(&subject, &version)
            .map(|(number, id)| registry.described(&subject, number, id)),
    )
}

async fn compatibility(state: Shared, Path(subject): Path<String>, request: Json<SchemaRequest>) -> Response {
    compatibility_of_version(state, Path((subject, "latest".to_string())), request).await
}

async fn compatibility_of_version(
    State(state): Shared,
    Path((subject, version)): Path<(String, String)>,
    Json(request): Json<SchemaRequest>,
) -> Response {
    answer(request.parse().and_then(|(_, schema)| {
        let registry = lock(&state);
        if !registry.subjects.contains_key(&subject) {
            return Ok(json!({ "is_compatible": true }));
        }
        let (_, id) = registry.version(&subject, &version)?;
        let compatible = registry
            .level(&subject)
            .check(&registry.schemas[id as usize - 1].1, &schema)
            .is_ok();
        Ok(json!({ "is_compatible": compatible }))
    }))
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn parse_level(request: &ConfigRequest) -> Result<Level, Failure> {
    Level::parse(&request.compatibility).ok_or_else(|| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("Invalid compatibility level '{}'.", request.compatibility),
        )
    })
}

async fn default_config(State(state): Shared) -> Response {
    answer(Ok(json!({ "compatibilityLevel": lock(&state).default_level.name() })))
}

async fn set_default_config(State(state): Shared, Json(request): Json<ConfigRequest>) -> Response {
    answer(parse_level(&request).map(|level| {
        lock(&state).default_level = level;
        json!({ "compatibility": level.name() })
    }))
}

async fn config(State(state): Shared, Path(subject): Path<String>) -> Response {
    let registry = lock(&state);
    answer(
        registry
            .levels
            .get(&subject)
            .map(|level| json!({ "compatibilityLevel": level.name() }))
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    40408,
                    format!("Subject '{subject}' does not have subject-level compatibility configured"),
                )
            }),
    )
}

async fn set_config(State(state): Shared, Path(subject): Path<String>, Json(request): Json<ConfigRequest>) -> Response {
    answer(parse_level(&request).map(|level| {
        lock(&state).levels.insert(subject, level);
        json!({ "compatibility": level.name() })
    }))
}
