//! One instance of the profiles workload, for end-to-end tests:
//! `weir-e2e-instance <topic-prefix> [key=value ...]`, the entries being
//! weir configuration. Runs until SIGTERM or SIGINT; exits non-zero with the
//! error if the instance stops on one.

use weir::runtime::{KafkaStreams, StreamsConfig};
use weir_e2e::workload::{topology, Topics};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let Some(prefix) = args.next() else {
        eprintln!("usage: weir-e2e-instance <topic-prefix> [key=value ...]");
        std::process::exit(2);
    };
    let mut config = StreamsConfig::default();
    for entry in args {
        let Some((key, value)) = entry.split_once('=') else {
            eprintln!("expected key=value, got {entry:?}");
            std::process::exit(2);
        };
        config = config.set(key, value);
    }
    let result = KafkaStreams::new(topology(&Topics::with_prefix(&prefix)), &config).and_then(KafkaStreams::run);
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
