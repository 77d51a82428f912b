//! One instance of a test workload, for end-to-end tests:
//!
//! ```text
//! weir-e2e-instance profiles <topic-prefix> [key=value ...]
//! weir-e2e-instance windows <topic-prefix> [key=value ...]
//! weir-e2e-instance timers <topic-prefix> [key=value ...]
//! weir-e2e-instance enrichment <input> <output> <dead-letter topic> <service host:port> <run> [key=value ...]
//! ```
//!
//! the entries being weir configuration. Serves its operations endpoint on
//! a free loopback port (the log names it). Runs until SIGTERM or SIGINT;
//! exits non-zero with the error if the instance stops on one.

use weir::ops::OpsServer;
use weir::runtime::{KafkaStreams, StreamsConfig};
use weir::{Topology, WeirError};
use weir_e2e::workload::Topics;

const USAGE: &str = "usage: weir-e2e-instance profiles|windows|timers <topic-prefix> [key=value ...]\n       \
                     weir-e2e-instance enrichment <input> <output> <dead-letter topic> <service host:port> <run> [key=value ...]";

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (topology, entries) = match args.first().map(String::as_str) {
        Some("profiles") if args.len() >= 2 => {
            (weir_e2e::workload::topology(&Topics::with_prefix(&args[1])), &args[2..])
        }
        Some("windows") if args.len() >= 2 => (
            weir_e2e::windows::topology(&weir_e2e::windows::Topics::with_prefix(&args[1])),
            &args[2..],
        ),
        Some("timers") if args.len() >= 2 => (
            weir_e2e::timers::topology(&weir_e2e::timers::Topics::with_prefix(&args[1])),
            &args[2..],
        ),
        Some("enrichment") if args.len() >= 6 => (
            weir_e2e::enrichment::topology(&args[1], &args[2], &args[3], &args[4], &args[5]),
            &args[6..],
        ),
        _ => exit_with(USAGE, 2),
    };
    let mut config = StreamsConfig::default();
    for entry in entries {
        let Some((key, value)) = entry.split_once('=') else {
            exit_with(&format!("expected key=value, got {entry:?}"), 2);
        };
        config = config.set(key, value);
    }
    if let Err(error) = run(topology, &config) {
        exit_with(&format!("error: {error}"), 1);
    }
}

fn run(topology: Topology, config: &StreamsConfig) -> Result<(), WeirError> {
    let streams = KafkaStreams::new(topology, config)?;
    let ops = OpsServer::start("127.0.0.1:0".parse().expect("an address"), streams.status_handle())?;
    tracing::info!(address = %ops.address(), "operations endpoint listening");
    streams.run()
}

fn exit_with(message: &str, code: i32) -> ! {
    eprintln!("{message}");
    std::process::exit(code)
}
