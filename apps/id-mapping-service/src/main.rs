//! Runs the reference ID-mapping service until interrupted.
//!
//! `id-mapping-service [ADDRESS] [BEHAVIOUR-JSON]`, for example
//! `id-mapping-service 127.0.0.1:8080 '{"latency_ms": 20, "error_rate": 0.01}'`.

use id_mapping_service::{Behaviour, MappingService};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let behaviour = match args.next() {
        Some(json) => match serde_json::from_str::<Behaviour>(&json) {
            Ok(behaviour) => behaviour,
            Err(error) => {
                eprintln!("invalid behaviour {json:?}: {error}");
                std::process::exit(2);
            }
        },
        None => Behaviour::default(),
    };
    let address = match address.parse() {
        Ok(address) => address,
        Err(error) => {
            eprintln!("invalid address {address:?}: {error}");
            std::process::exit(2);
        }
    };
    match MappingService::start_on(address, behaviour) {
        Ok(service) => {
            println!("the ID-mapping service listens on http://{}", service.address());
            loop {
                std::thread::park();
            }
        }
        Err(error) => {
            eprintln!("cannot start the ID-mapping service on {address}: {error}");
            std::process::exit(1);
        }
    }
}
