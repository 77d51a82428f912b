//! End-to-end harness for weir: clusters to run against (in process, or a
//! broker in its own process), application instances as child processes
//! that can be stopped or killed, and the workload whose outputs the tests
//! check against a reference model.

pub mod cluster;
pub mod instance;
pub mod workload;
