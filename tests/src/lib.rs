//! End-to-end harness for weir: clusters to run against (in process, or a
//! broker in its own process), application instances as child processes
//! that can be stopped or killed, the workload whose outputs the tests
//! check against a reference model (and the windows workload), and an HTTP
//! client for their endpoints.

pub mod chaos;
pub mod cluster;
pub mod enrichment;
pub mod http;
pub mod instance;
pub mod timers;
pub mod windows;
pub mod workload;

/// Runs each scenario — a function taking a [`cluster::Cluster`] — as two
/// tests, `<scenario>::embedded` and `<scenario>::broker`.
#[macro_export]
macro_rules! on_every_cluster {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn embedded() {
                super::$scenario(&$crate::cluster::Cluster::embedded());
            }
            #[test]
            fn broker() {
                super::$scenario(&$crate::cluster::Cluster::broker());
            }
        }
    )*};
}
