//! An instance against a sick cluster: requests of every kind the runtime
//! makes fail for a while (fetches, produce requests, offset commits and
//! fetches, heartbeats), and the broker goes down and comes back, while
//! input keeps arriving. The instance must keep running, and its outputs
//! must end up equal to the reference. Only the in-process cluster can be
//! made sick on demand.

use std::time::Duration;
use weir::embedded::Request;
use weir::runtime::StreamsState;
use weir_e2e::cluster::Cluster;
use weir_e2e::workload::{await_outputs, topology, Generator, Input, Reference, Topics, PARTITIONS};

const WAIT: Duration = Duration::from_secs(120);

#[test]
fn an_instance_rides_out_failing_requests_and_a_broker_outage() {
    let cluster = Cluster::embedded();
    let kafka = cluster.embedded_kafka().expect("the in-process cluster");
    let prefix = cluster.name("");
    let topics = Topics::with_prefix(&prefix);
    for topic in topics.all() {
        cluster.create_topic(topic.strip_prefix(&prefix).unwrap(), PARTITIONS);
    }
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("faults", state.path());
    let application = config.get("application.id").unwrap().to_string();
    let mut generator = Generator::new(7, 200);
    let mut input = Input::new(&cluster, &topics);
    input.write(generator.snapshot());
    let mut streams = cluster.streams(topology(&topics), &config);
    streams.start().unwrap();
    let converges = |reference: &Reference, what: &str| {
        if let Err(problem) = await_outputs(&cluster, &topics, &application, reference, WAIT) {
            panic!("after {what}: {problem}");
        }
    };
    converges(&input.reference, "the start");

    for request in [
        Request::Fetch,
        Request::Produce,
        Request::OffsetCommit,
        Request::OffsetFetch,
        Request::Heartbeat,
    ] {
        kafka.fail_requests(request, 30);
        input.write(generator.changes(300));
        converges(&input.reference, &format!("failing {request:?} requests"));
        assert_eq!(
            streams.state(),
            StreamsState::Running,
            "after failing {request:?} requests"
        );
    }

    input.write(generator.changes(300));
    kafka.set_broker_up(false).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    kafka.set_broker_up(true).unwrap();
    input.write(generator.changes(300));
    converges(&input.reference, "the broker's outage");
    assert_eq!(streams.state(), StreamsState::Running, "after the broker's outage");
    streams.close().unwrap();
}
