//! `order-details`: run the application on a Kafka cluster, or print its
//! topology.

use clap::{Parser, Subcommand};
use order_details::{topology, Topics};
use std::process::ExitCode;
use weir::runtime::{KafkaStreams, StreamsConfig};

#[derive(Parser)]
#[command(
    version,
    about = "orders ⟕ users (by user_id) ⟕ countries, from Debezium, as one order object"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs until SIGTERM or SIGINT.
    Run {
        #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
        bootstrap_servers: String,
        #[arg(long, default_value = "order-details")]
        application_id: String,
        /// A weir setting (`key=value`), e.g. `state.dir=/var/lib/order-details`;
        /// may be repeated.
        #[arg(long = "set", value_parser = key_value)]
        settings: Vec<(String, String)>,
    },
    /// Prints the topology (sub-topologies, stores, topics).
    Describe {
        /// Draws it as a Mermaid flowchart instead.
        #[arg(long)]
        mermaid: bool,
    },
}

fn key_value(entry: &str) -> Result<(String, String), String> {
    entry
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {entry:?}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let result = match Cli::parse().command {
        Command::Run {
            bootstrap_servers,
            application_id,
            settings,
        } => topology(&Topics::default()).and_then(|topology| {
            let config = settings
                .iter()
                .fold(StreamsConfig::new(&application_id, &bootstrap_servers), |c, (k, v)| {
                    c.set(k, v)
                });
            KafkaStreams::new(topology, &config)?.run()
        }),
        Command::Describe { mermaid } => topology(&Topics::default()).map(|topology| match mermaid {
            true => println!("{}", topology.describe_mermaid()),
            false => println!("{}", topology.describe()),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
