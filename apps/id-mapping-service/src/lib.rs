//! The reference ID-mapping service: the external service weir's user
//! profile pipeline enriches from, as a library (for tests and demos, which
//! start it in process on a loopback port) and a binary.
//!
//! `GET /users/{user_id}` answers `{"user_id": 7, "new_user_id": "u2-7"}`:
//! the new id is the mapping's prefix followed by the user id, so a test
//! can compute every answer and a change of prefix models a changed
//! mapping. [`Behaviour`] adds latency, `503` errors, answers slower than
//! any client waits (timeouts) and outages, all changeable while it runs
//! (in process through [`Controls`], or with `PUT /admin/behaviour`).
//! Unknown ids (negative ones) get `404`.
//!
//! ```
//! use id_mapping_service::{Behaviour, MappingService};
//! let service = MappingService::start(Behaviour::default()).unwrap();
//! let url = format!("http://{}/users/{{}}", service.address());
//! service.controls().set_outage(true);
//! # let _ = url;
//! ```

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the service answers; every field can change while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Prefix of every `new_user_id`.
    pub prefix: String,
    /// Latency of every answer: `latency_ms` plus up to `jitter_ms`.
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Share of requests answered `503 Service Unavailable`.
    pub error_rate: f64,
    /// Share of requests answered only after `hang_ms` (a client times out).
    pub hang_rate: f64,
    pub hang_ms: u64,
    /// Every request answered `503` while set.
    pub outage: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            prefix: "u2-".to_string(),
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            hang_rate: 0.0,
            hang_ms: 30_000,
            outage: false,
        }
    }
}

/// The answer of `GET /users/{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub user_id: i64,
    pub new_user_id: String,
}

/// The behaviour of a running service, and its request counters.
#[derive(Debug, Default)]
pub struct Controls {
    behaviour: Mutex<Behaviour>,
    requests: AtomicU64,
    failed: AtomicU64,
}

impl Controls {
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap_or_else(|p| p.into_inner()) = behaviour;
    }

    pub fn set_outage(&self, outage: bool) {
        self.behaviour.lock().unwrap_or_else(|p| p.into_inner()).outage = outage;
    }

    pub fn set_prefix(&self, prefix: &str) {
        self.behaviour.lock().unwrap_or_else(|p| p.into_inner()).prefix = prefix.to_string();
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with an error (outage or injected `503`).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// The service's routes over `controls`.
pub fn router(controls: Arc<Controls>) -> Router {
    Router::new()
        .route("/users/{user_id}", get(lookup))
        .route("/admin/behaviour", put(set_behaviour).get(get_behaviour))
        .with_state(controls)
}

async fn lookup(State(controls): State<Arc<Controls>>, Path(user_id): Path<String>) -> Response {
    controls.requests.fetch_add(1, Ordering::Relaxed);
    let behaviour = controls.behaviour();
    let mut delay = behaviour.latency_ms + fastrand::u64(0..=behaviour.jitter_ms);
    if fastrand::f64() < behaviour.hang_rate {
        delay = behaviour.hang_ms;
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if behaviour.outage || fastrand::f64() < behaviour.error_rate {
        controls.failed.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response();
    }
    match user_id.parse::<i64>() {
        Ok(user_id) if user_id >= 0 => Json(Mapping {
            user_id,
            new_user_id: format!("{}{user_id}", behaviour.prefix),
        })
        .into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, "unknown user").into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "user ids are integers").into_response(),
    }
}

async fn set_behaviour(State(controls): State<Arc<Controls>>, Json(behaviour): Json<Behaviour>) -> StatusCode {
    controls.set_behaviour(behaviour);
    StatusCode::NO_CONTENT
}

async fn get_behaviour(State(controls): State<Arc<Controls>>) -> Json<Behaviour> {
    Json(controls.behaviour())
}

/// A service running in this process on a loopback port; it stops when dropped.
pub struct MappingService {
    address: SocketAddr,
    controls: Arc<Controls>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl MappingService {
    /// Starts the service on a free loopback port, on its own runtime.
    pub fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("a socket address"), behaviour)
    }

    /// Starts the service on `address`.
    pub fn start_on(address: SocketAddr, behaviour: Behaviour) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("id-mapping-service")
            .enable_all()
            .build()?;
        let controls = Arc::new(Controls::default());
        controls.set_behaviour(behaviour);
        let listener = runtime.block_on(tokio::net::TcpListener::bind(address))?;
        let address = listener.local_addr()?;
        let app = router(controls.clone());
        runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the ID-mapping service stopped");
            }
        });
        Ok(MappingService {
            address,
            controls,
            runtime: Some(runtime),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn controls(&self) -> &Arc<Controls> {
        &self.controls
    }
}

impl Drop for MappingService {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
