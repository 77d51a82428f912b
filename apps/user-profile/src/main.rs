//! `user-profile`: run the pipeline, re-run its enrichment, print its
//! topology, generate CDC events, or run it all in one process (`demo`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use user_profile::demo::{run_demo, DemoOptions};
use user_profile::generator::{CdcWriter, Generator};
use user_profile::pipeline::{reprocess_topology, run_topology, Format, MappingService, Topics, GOD_OBJECT_STORE};
use weir::avro::SchemaRegistry;
use weir::ops::{store_route, OpsListener};
use weir::runtime::{KafkaStreams, StreamsConfig};
use weir::{Topology, WeirError};

const DEFAULT_APPLICATION_ID: &str = "user-profile";
/// The pipeline's weir settings where the configuration has none: its
/// outputs are compacted topics, so a user's consecutive changes may reach
/// them merged, each commit passing on one change per user; a commit every
/// second keeps that fresh.
const APP_DEFAULTS: [(&str, &str); 3] = [
    ("application.id", DEFAULT_APPLICATION_ID),
    ("statestore.cache.merge", "true"),
    ("commit.interval.ms", "1000"),
];

/// weir allocates per record (decoded rows, output records); mimalloc
/// does that at a fraction of glibc's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "users ⋈ preferences from Debezium, enriched with new ids, as one user object"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct DescribeArgs {
    /// `text` in Kafka Streams' layout, or `mermaid`: Markdown with a
    /// Mermaid flowchart of each topology, to paste into a README or wiki.
    #[arg(long, value_enum, default_value = "text")]
    format: DescriptionFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum DescriptionFormat {
    Text,
    Mermaid,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the pipeline until SIGTERM or SIGINT.
    Run(PipelineArgs),
    /// Re-runs only the enrichment, from the beginning of `user-profile`,
    /// under an application id of its own (for when the mappings changed).
    Reprocess(ReprocessArgs),
    /// Prints the topology of `run` (and of `reprocess`).
    Describe(DescribeArgs),
    /// Runs everything in this process: Kafka, the ID-mapping service, the
    /// CDC generator and the pipeline; prints a verified summary.
    Demo(DemoArgs),
    /// Writes Debezium change events for `users` and `preferences`.
    Generate(GenerateArgs),
}

#[derive(Args)]
struct PipelineArgs {
    /// weir's configuration (TOML); `WEIR_*` environment variables override it.
    #[arg(long, env = "USER_PROFILE_CONFIG")]
    config: Option<PathBuf>,
    /// Base URL of the ID-mapping service.
    #[arg(long, env = "ID_MAPPING_URL")]
    mapping_url: String,
    /// Lookups in flight at most.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Seconds a mapping is reused before it is looked up again (0: no cache).
    #[arg(long, default_value_t = 86_400)]
    cache_ttl_secs: u64,
    /// A prefix of every topic name.
    #[arg(long, env = "USER_PROFILE_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Where `/health`, `/ready`, `/metrics` and (for `run`) `/users/{user_id}`
    /// listen (port 0: any free port). Other instances name this address as
    /// a key's owner unless `application.server` is configured; with an
    /// unspecified IP (0.0.0.0) it has to be.
    #[arg(long, env = "USER_PROFILE_OPS_ADDRESS", default_value = "0.0.0.0:9464")]
    ops_address: SocketAddr,
    #[command(flatten)]
    format: FormatArgs,
}

/// The encoding of every topic and store.
#[derive(Args)]
struct FormatArgs {
    /// `json`, or `avro`: Debezium's AvroConverter on the inputs, the
    /// schemas of `schemas/` on the outputs, through a Schema Registry.
    #[arg(long, value_enum, default_value_t = FormatName::Json)]
    format: FormatName,
    /// The Schema Registry, for `--format avro`.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatName {
    Json,
    Avro,
}

impl FormatArgs {
    fn format(&self) -> Result<Format, WeirError> {
        match (self.format, &self.schema_registry_url) {
            (FormatName::Json, _) => Ok(Format::Json),
            (FormatName::Avro, Some(url)) => Ok(Format::Avro(SchemaRegistry::new(url)?)),
            (FormatName::Avro, None) => Err(WeirError::Config(
                "--format avro needs --schema-registry-url (or SCHEMA_REGISTRY_URL)".into(),
            )),
        }
    }
}

#[derive(Args)]
struct ReprocessArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Names this re-run: its application id is `<application.id>-reprocess-<run id>`
    /// (default: the current Unix time, so each re-run starts from the beginning).
    #[arg(long)]
    run_id: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// CDC records in all (snapshot, then changes).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Users in the snapshot.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// CDC records per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Latency of the ID-mapping service, in milliseconds.
    #[arg(long, default_value_t = 5)]
    service_latency_ms: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The pipeline's stream threads.
    #[arg(long, default_value_t = 2)]
    stream_threads: usize,
    /// `avro` runs an in-process Schema Registry and puts every topic in Avro.
    #[arg(long, value_enum, default_value_t = FormatName::Json)]
    format: FormatName,
    /// A Kafka cluster to run on instead of the in-process one; the run's
    /// topics and application id are named `demo-<start time>-…`.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// A librdkafka setting (`key=value`) of every producer of the run, the
    /// pipeline's and the generator's; may be repeated.
    #[arg(long = "producer", value_parser = key_value)]
    producer_settings: Vec<(String, String)>,
    /// A weir setting (`key=value`, e.g. `statestore.cache.max.bytes=0`)
    /// of the pipeline, over the demo's own; may be repeated.
    #[arg(long = "set", value_parser = key_value)]
    settings: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
        _ => Err(format!("expected key=value, not {text:?}")),
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long, env = "WEIR_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,
    /// CDC records in all (snapshot, then changes).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// CDC records per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Writes the `user-profile` view the events imply here, one JSON object a line.
    #[arg(long)]
    expected: Option<PathBuf>,
    #[command(flatten)]
    format: FormatArgs,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,user_profile=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("user-profile: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode, WeirError> {
    match command {
        Command::Run(args) => {
            let format = args.format.format()?;
            let topology = run_topology(&args.topics(), &args.service(), &format)?;
            args.run(topology, args.streams_config()?, Queries::GodObjects(format))?;
        }
        Command::Reprocess(ReprocessArgs { pipeline, run_id }) => {
            let topology = reprocess_topology(&pipeline.topics(), &pipeline.service(), &pipeline.format.format()?)?;
            let config = pipeline.streams_config()?;
            // An application id of its own: its own consumer offsets (from
            // the beginning) and stores, apart from those of `run`.
            let base = config
                .get("application.id")
                .unwrap_or(DEFAULT_APPLICATION_ID)
                .to_string();
            let run_id = run_id.unwrap_or_else(|| unix_seconds().to_string());
            let config = config.set("application.id", format!("{base}-reprocess-{run_id}"));
            pipeline.run(topology, config, Queries::None)?;
        }
        Command::Describe(DescribeArgs { format }) => {
            let topics = Topics::default();
            let service = MappingService::at("http://id-mapping");
            let topologies = [
                ("run", run_topology(&topics, &service, &Format::Json)?),
                ("reprocess", reprocess_topology(&topics, &service, &Format::Json)?),
            ];
            for (name, topology) in topologies {
                match format {
                    DescriptionFormat::Text => println!("{name}:\n{}", topology.describe()),
                    DescriptionFormat::Mermaid => {
                        println!("### {name}\n\n```mermaid\n{}```\n", topology.describe_mermaid())
                    }
                }
            }
        }
        Command::Demo(args) => {
            let report = run_demo(&DemoOptions {
                events: args.events,
                users: args.users,
                rate: args.rate,
                service_latency: Duration::from_millis(args.service_latency_ms),
                seed: args.seed,
                stream_threads: args.stream_threads,
                avro: args.format == FormatName::Avro,
                bootstrap_servers: args.bootstrap_servers,
                producer_settings: args.producer_settings,
                settings: args.settings,
                ..DemoOptions::default()
            })?;
            if report.verified.is_err() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Generate(args) => generate(&Topics::default(), &args)?,
    }
    Ok(ExitCode::SUCCESS)
}

impl PipelineArgs {
    fn service(&self) -> MappingService {
        MappingService {
            max_in_flight: self.max_in_flight,
            cache_ttl: (self.cache_ttl_secs > 0).then(|| Duration::from_secs(self.cache_ttl_secs)),
            ..MappingService::at(&self.mapping_url)
        }
    }

    /// Runs `topology` until SIGTERM or SIGINT, with its operations endpoint
    /// and, when asked, the god-object queries.
    fn run(&self, topology: Topology, config: StreamsConfig, queries: Queries) -> Result<(), WeirError> {
        let listener = OpsListener::bind(self.ops_address)?;
        let config = match config.get("application.server") {
            Some(_) => config,
            None if listener.address().ip().is_unspecified() => {
                tracing::warn!(
                    "application.server is not set and the operations endpoint listens on every address: queries \
                     of keys held elsewhere cannot name their owner"
                );
                config
            }
            None => config.set("application.server", listener.address().to_string()),
        };
        let streams = KafkaStreams::new(topology, &config)?;
        let routes = match queries {
            Queries::GodObjects(format) => {
                let store = streams.store(GOD_OBJECT_STORE, format.key_serde(), format.god_object_serde())?;
                store_route("/users/{user_id}", store)
            }
            Queries::None => Default::default(),
        };
        let ops = listener.serve(streams.status_handle(), routes)?;
        tracing::info!(address = %ops.address(), "operations endpoint (/health, /ready, /metrics) listening");
        streams.run()
    }

    fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    /// The TOML file (if any) under the environment, over [`APP_DEFAULTS`].
    fn streams_config(&self) -> Result<StreamsConfig, WeirError> {
        let file = match &self.config {
            Some(path) => StreamsConfig::from_toml_file(path)?,
            None => StreamsConfig::default(),
        };
        let mut config = file.merge(StreamsConfig::from_env());
        for (key, default) in APP_DEFAULTS {
            if config.get(key).is_none() {
                config = config.set(key, default);
            }
        }
        Ok(config)
    }
}

/// The interactive queries an instance answers.
enum Queries {
    /// `GET /users/{user_id}`: the user's god object from the local store,
    /// which is in this format.
    GodObjects(Format),
    None,
}

fn generate(topics: &Topics, args: &GenerateArgs) -> Result<(), WeirError> {
    let mut generator = Generator::with_format(args.seed, args.users, &args.format.format()?);
    let mut writer = CdcWriter::new(&args.bootstrap_servers, &topics.users, &topics.preferences)?;
    let mut reported = Instant::now();
    writer.write_history(&mut generator, args.events, args.rate, |written| {
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            println!("wrote {written} of {} CDC records", args.events);
        }
    })?;
    writer.flush()?;
    println!("wrote {} CDC records", writer.written());
    if let Some(path) = &args.expected {
        let lines: Vec<String> = generator
            .expected_profiles()
            .values()
            .map(|p| serde_json::to_string(p).expect("profiles serialize"))
            .collect();
        std::fs::write(path, lines.join("\n") + "\n")
            .map_err(|e| WeirError::Other(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
