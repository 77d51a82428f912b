//! Windows on the Kafka runtime, against both brokers, with instances in
//! their own processes: a windowed count suppressed until each window
//! closes and a left join of two streams (the windows workload) go on
//! across a clean stop, a restore on a fresh state directory and a
//! SIGKILL mid-stream. Windows span the phases, so a store that was not
//! restored would lose counts; each phase starts with records late for
//! windows the last instance closed, so a stream time that was not
//! restored would reopen them and say a second, wrong final count.

use std::path::Path;
use std::time::Duration;
use weir::serde::Serde;
use weir::serde::{Nullable, Utf8, I64};
use weir::testing::kafka::{eventually, read_topic};
use weir::window::{Windowed, WindowedSerde};
use weir_e2e::cluster::Cluster;
use weir_e2e::instance::{Instance, SESSION_EXPIRY};
use weir_e2e::windows::{closing_round, expected, rounds, topology, write, Event, Topics, PARTITIONS};

const BINARY: &str = env!("CARGO_BIN_EXE_weir-e2e-instance");
const WAIT: Duration = Duration::from_secs(120);

weir_e2e::on_every_cluster!(windows_go_on_across_a_restore_and_a_kill);

/// Every final count said so far, in the order said.
fn finals_said(cluster: &Cluster, topics: &Topics) -> Vec<(Windowed<String>, Option<i64>)> {
    let records = read_topic(cluster.bootstrap_servers(), &topics.finals).unwrap();
    let keys = WindowedSerde::new(Utf8);
    records
        .iter()
        .map(|read| {
            let key = keys.deserialize(&topics.finals, read.record.key.as_deref()).unwrap();
            let value = Nullable(I64)
                .deserialize(&topics.finals, read.record.value.as_deref())
                .unwrap();
            (key, value)
        })
        .collect()
}

fn view_clicks_said(cluster: &Cluster, topics: &Topics) -> std::collections::BTreeSet<(String, String)> {
    read_topic(cluster.bootstrap_servers(), &topics.view_clicks)
        .unwrap()
        .into_iter()
        .map(|read| {
            let text = |bytes: Option<Vec<u8>>| String::from_utf8(bytes.unwrap_or_default()).unwrap();
            (text(read.record.key), text(read.record.value))
        })
        .collect()
}

fn windows_go_on_across_a_restore_and_a_kill(cluster: &Cluster) {
    let prefix = cluster.name("");
    let application = format!("{prefix}windows");
    let topics = Topics::with_prefix(&prefix);
    for topic in topics.all() {
        cluster.create_topic(topic.strip_prefix(&prefix).unwrap(), PARTITIONS);
    }
    let logs = tempfile::tempdir().unwrap();
    let states = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let instance = |name: &str, state: &Path| {
        let config = cluster.instance_settings(&application, "at_least_once", state);
        Instance::spawn(Path::new(BINARY), name, &["windows", &prefix], &config, logs.path())
    };
    let settings = cluster.instance_settings(&application, "at_least_once", states[0].path());
    let config = settings
        .iter()
        .fold(weir::runtime::StreamsConfig::default(), |c, (k, v)| c.set(k, v));
    cluster.prepare_topics(&topology(&topics), &config);
    let producer = cluster.producer();
    let mut events: Vec<Event> = Vec::new();
    let mut send = |batch: Vec<Event>| {
        write(&producer, &topics, &batch);
        events.extend(batch);
    };
    let await_final = |window: Windowed<String>, instance: &Instance| {
        let said = eventually(WAIT, || {
            Ok(finals_said(cluster, &topics).iter().any(|(w, _)| *w == window))
        })
        .unwrap();
        assert!(said, "no final count for {window:?}:\n{}", instance.log_tail());
    };

    // A clean stop: the next instance restores from the changelogs onto a
    // fresh state directory.
    let mut first = instance("first", states[0].path());
    send(rounds(0, 25));
    await_final(Windowed::new("u0".into(), 0, 10_000), &first);
    let status = first.terminate(WAIT);
    assert!(status.success(), "{}", first.log_tail());

    // A kill while records are being processed.
    let mut second = instance("second", states[1].path());
    send(rounds(25, 45));
    await_final(Windowed::new("u0".into(), 20_000, 30_000), &second);
    send(rounds(45, 60));
    second.kill();
    if !cluster.reassigns_after_a_member_dies() {
        std::thread::sleep(SESSION_EXPIRY);
    }

    let third = instance("third", states[2].path());
    send(rounds(60, 70));
    send(closing_round(160));
    let expected = expected(&events);
    let converged = eventually(WAIT, || {
        let said = finals_said(cluster, &topics);
        let closed: std::collections::BTreeMap<_, _> = said
            .iter()
            .map(|(window, count)| (window.clone(), count.unwrap_or(-1)))
            .collect();
        Ok(closed == expected.finals && view_clicks_said(cluster, &topics) == expected.view_clicks)
    })
    .unwrap();
    let said = finals_said(cluster, &topics);
    if !converged {
        for (window, count) in &said {
            if expected.finals.get(window) != count.as_ref() {
                eprintln!(
                    "said {window:?} = {count:?}, expected {:?}",
                    expected.finals.get(window)
                );
                eprintln!("{}", history(cluster, &topics, &application, &window.key));
            }
        }
    }
    assert!(
        converged,
        "the outputs did not converge; finals said: {said:?}\nexpected: {:?}\nview-clicks missing: {:?}, \
         unexpected: {:?}\nthe instances' logs are kept in {}\n{}",
        expected.finals,
        expected
            .view_clicks
            .difference(&view_clicks_said(cluster, &topics))
            .take(10)
            .collect::<Vec<_>>(),
        view_clicks_said(cluster, &topics)
            .difference(&expected.view_clicks)
            .take(10)
            .collect::<Vec<_>>(),
        logs.keep().display(),
        third.log_tail()
    );
    // A final count may be said again (the killed instance's last
    // uncommitted records are processed again), never with another value.
    for (window, count) in &said {
        assert_eq!(
            count.as_ref(),
            expected.finals.get(window),
            "{window:?} was said as {count:?}"
        );
    }
}

/// Every record of `key` in the clicks, the count's changelogs and the
/// finals, with partitions, offsets and timestamps, to diagnose a failure.
fn history(cluster: &Cluster, topics: &Topics, application: &str, key: &str) -> String {
    let changelog = |store: &str| weir::topology::changelog_topic(application, store);
    let mut history = format!("history of {key}:\n");
    for topic in [
        topics.clicks.clone(),
        changelog("clicks-per-window"),
        changelog("click-finals"),
        topics.finals.clone(),
    ] {
        for read in read_topic(cluster.bootstrap_servers(), &topic).unwrap_or_default() {
            let record_key = read.record.key.clone().unwrap_or_default();
            if !String::from_utf8_lossy(&record_key).contains(key) {
                continue;
            }
            history.push_str(&format!(
                "  {topic}[{}]@{} t={}: {:?} = {:?}\n",
                read.partition,
                read.offset,
                read.record.timestamp,
                String::from_utf8_lossy(&record_key),
                read.record.value.as_deref().map(|v| format!("{v:?}")),
            ));
        }
    }
    history
}
