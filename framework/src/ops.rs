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
//! ```no_run
//! use weir::ops::OpsServer;
//! # use weir::runtime::{KafkaStreams, StreamsConfig};
//! # fn app(streams: &KafkaStreams) -> weir::Result<()> {
//! let ops = OpsServer::start("0.0.0.0:9464".parse().unwrap(), streams.status_handle())?;
//! println!("metrics at http://{}/metrics", ops.address());
//! # Ok(()) }
//! ```

use crate::error::WeirError;
use crate::runtime::{StatusHandle, StreamsState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// The process's Prometheus recorder: `metrics` has one global recorder,
/// installed by the first server.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// A running operations endpoint; it stops when dropped.
pub struct OpsServer {
    address: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

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
        let prometheus = RECORDER
            .get_or_init(|| {
                PrometheusBuilder::new()
                    .install_recorder()
                    .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))
            })
            .clone()
            .map_err(WeirError::Other)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-ops")
            .enable_all()
            .build()
            .map_err(|e| WeirError::Other(format!("cannot start the operations endpoint: {e}")))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .map_err(|e| WeirError::Other(format!("cannot listen on {address}: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| WeirError::Other(format!("cannot read the listening address: {e}")))?;
        let router = Router::new()
            .route("/health", get(health))
            .route("/ready", get(ready))
            .route("/metrics", get(render_metrics))
            .with_state(Endpoint { status, prometheus });
        runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the operations endpoint stopped");
            }
        });
        Ok(OpsServer {
            address,
            _runtime: runtime,
        })
    }

    /// Where the endpoint listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn health(State(endpoint): State<Endpoint>) -> (StatusCode, String) {
    match endpoint.status.state() {
        StreamsState::Error => (StatusCode::SERVICE_UNAVAILABLE, "failed\n".into()),
        state => (StatusCode::OK, format!("{state:?}\n")),
    }
}

async fn ready(State(endpoint): State<Endpoint>) -> (StatusCode, String) {
    match endpoint.status.state() {
        StreamsState::Running => (StatusCode::OK, "Running\n".into()),
        state => (StatusCode::SERVICE_UNAVAILABLE, format!("{state:?}\n")),
    }
}

async fn render_metrics(State(endpoint): State<Endpoint>) -> String {
    endpoint.prometheus.render()
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
