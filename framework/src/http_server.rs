//! An HTTP server on a small tokio runtime of its own, so that it answers
//! beside the synchronous stream threads: what the operations endpoint and
//! the in-process test schema registry run on.

use crate::error::WeirError;
use axum::Router;
use std::net::SocketAddr;

/// A bound socket whose address is known before anything is served.
pub(crate) struct BoundListener {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    runtime: tokio::runtime::Runtime,
    /// What the server is, for thread names, errors and logs.
    what: &'static str,
}

impl BoundListener {
    /// Listens on `address` (port 0 picks a free port) for `what` (for
    /// example "the operations endpoint"), answering on a thread named `thread`.
    pub(crate) fn bind(address: SocketAddr, what: &'static str, thread: &str) -> Result<BoundListener, WeirError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread)
            .enable_all()
            .build()
            .map_err(|e| WeirError::Other(format!("cannot start {what}: {e}")))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .map_err(|e| WeirError::Other(format!("{what} cannot listen on {address}: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| WeirError::Other(format!("cannot read the address of {what}: {e}")))?;
        Ok(BoundListener {
            listener,
            address,
            runtime,
            what,
        })
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `router` until the returned server is dropped.
    pub(crate) fn serve(self, router: Router) -> HttpServer {
        let (listener, what) = (self.listener, self.what);
        self.runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "{what} stopped");
            }
        });
        HttpServer {
            address: self.address,
            _runtime: self.runtime,
        }
    }
}

/// A running server; dropping it stops it.
pub(crate) struct HttpServer {
    address: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl HttpServer {
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }
}
