//! An operations endpoint for a running instance: `/health`, `/ready` and
//! Prometheus `/metrics` over HTTP.
//!
//! - `/health`: `200` while the instance is alive (starting, rebalancing,
//!   running or shutting down), `503` once it stopped on an error — what a
//!   liveness probe restarts on.
//! - `/ready`: `200` while it processes its assigned partitions, `503`
//!   while it starts, rebalances (restores) or stops — what a readiness
//!   probe and a load balancer in front of queries look at.
//! - `/metrics`: every metric weir records (see [`crate::metrics`]) in
//!   Prometheus' text format.
//!
//! An application adds its own routes through [`OpsListener`], for
//! instance interactive queries of a store with [`store_route`].
//!
//! ```no_run
//! use weir::ops::OpsServer;
//! # use weir::runtime::{KafkaStreams, StreamsConfig};
//! # fn app(streams: &KafkaStreams) -> weir::Result<()> {
//! let ops = OpsServer::start("0.0.0.0:9464".parse().unwrap(), streams.status_handle())?;
//! println!("metrics at http://{}/metrics", ops.address());
//! # Ok(()) }
//! ```

use crate::error::WeirError;
use crate::http_server::{BoundListener, HttpServer};
use crate::runtime::{KeyLocation, ReadOnlyStore, StatusHandle, StreamsState};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::OnceLock;

/// The process's Prometheus recorder: `metrics` has one global recorder,
/// installed by the first server.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// A running operations endpoint; it stops when dropped.
pub struct OpsServer(HttpServer);

#[derive(Clone)]
struct Endpoint {
    status: StatusHandle,
    prometheus: PrometheusHandle,
}

impl OpsServer {
    /// Serves the endpoints of the instance behind `status` on `address`
    /// (port 0 picks a free port), and installs the Prometheus recorder for
    /// this process if none is installed yet.
    pub fn start(address: SocketAddr, status: StatusHandle) -> Result<OpsServer, WeirError> {
        OpsListener::bind(address)?.serve(status, Router::new())
    }

    /// Where the endpoint listens.
    pub fn address(&self) -> SocketAddr {
        self.0.address()
    }
}

/// An operations endpoint that listens but does not answer yet: its address
/// is known before the instance is built (to advertise it as
/// `application.server`), and [`OpsListener::serve`] adds the application's
/// own routes.
///
/// ```no_run
/// use weir::ops::{store_route, OpsListener};
/// use weir::runtime::{KafkaStreams, StreamsConfig};
/// use weir::serde::{Json, Utf8};
/// # fn app(topology: weir::Topology) -> weir::Result<()> {
/// let listener = OpsListener::bind("10.0.0.7:9464".parse().unwrap())?;
/// let config = StreamsConfig::new("profiles", "localhost:9092")
///     .set("application.server", listener.address().to_string());
/// let streams = KafkaStreams::new(topology, &config)?;
/// let profiles = streams.store("profiles", Utf8, Json::<serde_json::Value>::new())?;
/// let _ops = listener.serve(streams.status_handle(), store_route("/profiles/{id}", profiles))?;
/// streams.run()
/// # }
/// ```
pub struct OpsListener(BoundListener);

impl OpsListener {
    /// Listens on `address` (port 0 picks a free port).
    pub fn bind(address: SocketAddr) -> Result<OpsListener, WeirError> {
        BoundListener::bind(address, "the operations endpoint", "weir-ops").map(OpsListener)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.0.address()
    }

    /// Answers `/health`, `/ready` and `/metrics` for the instance behind
    /// `status`, and `routes`; installs the Prometheus recorder for this
    /// process if none is installed yet.
    pub fn serve(self, status: StatusHandle, routes: Router) -> Result<OpsServer, WeirError> {
        let prometheus = RECORDER
            .get_or_init(|| {
                PrometheusBuilder::new()
                    .install_recorder()
                    .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))
            })
            .clone()
            .map_err(WeirError::Other)?;
        let router = Router::new()
            .route("/health", get(health))
            .route("/ready", get(ready))
            .route("/metrics", get(render_metrics))
            .with_state(Endpoint { status, prometheus })
            .merge(routes);
        Ok(OpsServer(self.0.serve(router)))
    }
}

async fn health(State(endpoint): State<Endpoint>) -> (StatusCode, String) {
    match endpoint.status.state() {
        StreamsState::Error => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "failed: {}\n",
                endpoint.status.failure().as_deref().unwrap_or("unknown error")
            ),
        ),
        state => (StatusCode::OK, format!("{state:?}\n")),
    }
}

async fn ready(State(endpoint): State<Endpoint>) -> (StatusCode, String) {
    match (endpoint.status.state(), endpoint.status.problem()) {
        (StreamsState::Running, None) => (StatusCode::OK, "Running\n".into()),
        (StreamsState::Running, Some(problem)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("Running, but {problem}\n"))
        }
        (state, _) => (StatusCode::SERVICE_UNAVAILABLE, format!("{state:?}\n")),
    }
}

async fn render_metrics(State(endpoint): State<Endpoint>) -> String {
    endpoint.prometheus.render()
}

/// A route that answers `GET <path>` (`path` with one `{..}` parameter, the
/// key) from `store`:
/// - `200` and the value as JSON when this instance holds the key;
/// - `404` when it holds the key's partition but not the key;
/// - `307` to the same path on the owner (its `application.server`) when
///   another instance holds it, with `{"partition", "owner"}` as the body;
/// - `503` while the partition is restored or moves, or when its owner is
///   not known yet; `400` for a key that does not parse.
///
/// See [`OpsListener`] for an example.
pub fn store_route<K, V>(path: &str, store: ReadOnlyStore<K, V>) -> Router
where
    K: FromStr + Send + 'static,
    V: Serialize + Send + 'static,
{
    Router::new().route(
        path,
        get(
            move |Path(key): Path<String>, OriginalUri(uri): OriginalUri| async move {
                let Ok(parsed) = key.parse::<K>() else {
                    return error_response(StatusCode::BAD_REQUEST, format!("'{key}' is not a key of this store"));
                };
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.get(&parsed)).await {
                    Ok(Ok(location)) => location_response(location, &uri.to_string()),
                    Ok(Err(error @ WeirError::Unavailable(_))) => {
                        error_response(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
                    }
                    Ok(Err(error)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
                    Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
                }
            },
        ),
    )
}

fn location_response<V: Serialize>(location: KeyLocation<V>, path: &str) -> Response {
    match location {
        KeyLocation::Local(Some(value)) => Json(value).into_response(),
        KeyLocation::Local(None) => error_response(StatusCode::NOT_FOUND, "no such key".into()),
        KeyLocation::Elsewhere {
            partition,
            owner: Some(owner),
        } => {
            let body = serde_json::json!({ "partition": partition, "owner": owner });
            let location = format!("http://{owner}{path}");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                Json(body),
            )
                .into_response()
        }
        KeyLocation::Elsewhere { partition, owner: None } => {
            let body = serde_json::json!({
                "partition": partition,
                "owner": null,
                "error": "another instance holds the key's partition and has not announced its address yet",
            });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{KafkaStreams, StreamsConfig};
    use crate::serde::Utf8;
    use crate::{Consumed, Produced, StreamsBuilder};
    use std::io::{Read, Write};

    fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn a_created_instance_is_alive_but_not_ready_and_metrics_render() {
        let builder = StreamsBuilder::new();
        builder
            .stream("in", Consumed::with(Utf8, Utf8))
            .to("out", Produced::with(Utf8, Utf8));
        let streams = KafkaStreams::new(builder.build().unwrap(), &StreamsConfig::new("ops", "localhost:9")).unwrap();
        let ops = OpsServer::start("127.0.0.1:0".parse().unwrap(), streams.status_handle()).unwrap();
        metrics::counter!(crate::metrics::COMMITS).increment(1);

        assert!(get(ops.address(), "/health").starts_with("HTTP/1.1 200"));
        let ready = get(ops.address(), "/ready");
        assert!(
            ready.starts_with("HTTP/1.1 503") && ready.ends_with("Created\n"),
            "{ready}"
        );
        let metrics = get(ops.address(), "/metrics");
        assert!(metrics.contains("weir_commits_total"), "{metrics}");
    }
}
