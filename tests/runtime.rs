//! The Kafka runtime, in this process, against both the in-process mock
//! cluster and a broker in its own process (Tansu, or the cluster in
//! `KAFKA_BOOTSTRAP_SERVERS`): processing, restore from changelogs and
//! checkpoints, two instances sharing a group, exactly-once transactions,
//! dead letters, and start-up errors. Every scenario runs on both.

use std::collections::HashMap;
use std::time::Duration;
use weir::ops::{store_route, OpsListener};
use weir::record::Header;
use weir::runtime::{KafkaStreams, KeyLocation, ReadOnlyStore, StreamsConfig, StreamsState};
use weir::serde::{Json, Utf8, I64};
use weir::testing::kafka::{eventually, read_compacted, read_topic, TestProducer};
use weir::{Consumed, Grouped, Materialized, Produced, StreamsBuilder, Topology, WeirError};
use weir_e2e::cluster::Cluster;
use weir_e2e::http::http_get;

const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(90);

weir_e2e::on_every_cluster!(
    a_join_and_an_aggregation_run,
    a_clean_restart_replays_nothing_and_a_lost_state_dir_is_rebuilt,
    a_restore_stops_at_the_last_commit,
    two_instances_split_the_tasks_and_the_survivor_takes_over,
    interactive_queries_answer_here_or_name_the_owner,
    exactly_once_commits_in_transactions,
    undecodable_records_go_to_a_dead_letter_topic,
    start_up_errors_name_the_problem,
);

/// The topics of one scenario.
struct Topics {
    users: String,
    preferences: String,
    profiles: String,
    domain_counts: String,
}

/// users ⋈ preferences → profiles, and the number of users per email domain.
fn topology(topics: &Topics) -> Topology {
    let builder = StreamsBuilder::new();
    let users = builder.table(&topics.users, Consumed::with(Utf8, Utf8).store("users"));
    let prefs = builder.table(
        &topics.preferences,
        Consumed::with(Utf8, Json::<bool>::new()).store("preferences"),
    );
    users
        .join(&prefs, |email, dark| format!("{email}:{dark}"))
        .to(&topics.profiles, Produced::with(Utf8, Utf8));
    users
        .group_by(
            |_, email| (domain(email), 1i64),
            Grouped::with(Utf8, I64).named("users-by-domain"),
        )
        .count(Materialized::named("domain-counts"))
        .to(&topics.domain_counts, Produced::with(Utf8, I64));
    builder.build().unwrap()
}

fn domain(email: &str) -> String {
    email.split('@').nth(1).unwrap_or("").to_string()
}

/// The seeded email of user `id`: every third at other.org.
fn email(id: usize) -> String {
    if id.is_multiple_of(3) {
        format!("u{id}@other.org")
    } else {
        format!("u{id}@example.com")
    }
}

/// A scenario's cluster, topics and producer.
struct Setup<'a> {
    cluster: &'a Cluster,
    topics: Topics,
    producer: TestProducer,
}

impl<'a> Setup<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        let topics = Topics {
            users: cluster.create_topic("users", PARTITIONS),
            preferences: cluster.create_topic("preferences", PARTITIONS),
            profiles: cluster.create_topic("profiles", PARTITIONS),
            domain_counts: cluster.create_topic("domain-counts", PARTITIONS),
        };
        let producer = cluster.producer();
        Setup {
            cluster,
            topics,
            producer,
        }
    }

    fn topology(&self) -> Topology {
        topology(&self.topics)
    }

    /// Starts an instance and waits until it processes.
    fn start(&self, config: &StreamsConfig) -> KafkaStreams {
        self.cluster.start(self.topology(), config)
    }

    fn user(&self, id: usize, email: Option<&str>) {
        let email = email.map(str::to_string);
        self.producer
            .send(&self.topics.users, &Utf8, &Utf8, &format!("u{id}"), email.as_ref())
            .unwrap();
    }

    fn preference(&self, id: usize, dark: bool) {
        self.producer
            .send(
                &self.topics.preferences,
                &Utf8,
                &Json::<bool>::new(),
                &format!("u{id}"),
                Some(&dark),
            )
            .unwrap();
    }

    /// Users u0..u{n-1} with their emails and a preference each (dark mode
    /// for even ids); returns the expected profiles.
    fn seed(&self, users: usize) -> HashMap<String, String> {
        let mut expected = HashMap::new();
        for id in 0..users {
            self.user(id, Some(&email(id)));
            self.preference(id, id % 2 == 0);
            expected.insert(format!("u{id}"), format!("{}:{}", email(id), id % 2 == 0));
        }
        self.producer.flush().unwrap();
        expected
    }

    fn profiles(&self) -> HashMap<String, String> {
        read_compacted(self.cluster.bootstrap_servers(), &self.topics.profiles, &Utf8, &Utf8).unwrap()
    }

    fn domain_counts(&self) -> HashMap<String, i64> {
        read_compacted(
            self.cluster.bootstrap_servers(),
            &self.topics.domain_counts,
            &Utf8,
            &I64,
        )
        .unwrap()
    }

    /// Waits until the profiles topic holds exactly `expected`.
    fn await_profiles(&self, expected: &HashMap<String, String>) {
        let converged = eventually(WAIT, || Ok(&self.profiles() == expected)).unwrap();
        assert!(converged, "profiles {:?} never became {expected:?}", self.profiles());
    }

    /// Waits until the group `application` has committed every record of
    /// the inputs and of the repartition topic, so that a rebalance from
    /// here on hands over tasks with nothing to process again. (A task
    /// handed over before its commit is processed again from the last one,
    /// as at-least-once allows, and the repartition topic then holds the
    /// replayed records twice; the mock cluster refuses the commit of a
    /// revocation while the group rebalances.)
    fn await_committed(&self, application: &str) {
        let repartition = weir::topology::repartition_topic(application, "users-by-domain");
        let topics = [&self.topics.users, &self.topics.preferences, &repartition].map(String::as_str);
        let servers = self.cluster.bootstrap_servers();
        let uncommitted = || -> Result<Vec<(String, i32, i64, i64)>, weir::WeirError> {
            let mut ends: HashMap<(String, i32), i64> = HashMap::new();
            for topic in topics {
                for read in read_topic(servers, topic)? {
                    ends.insert((topic.to_string(), read.partition), read.offset + 1);
                }
            }
            let committed = weir::testing::kafka::committed_offsets(servers, application, &topics)?;
            Ok(committed
                .into_iter()
                .map(|(topic, partition, offset)| {
                    let end = ends.get(&(topic.clone(), partition)).copied().unwrap_or(0);
                    (topic, partition, offset.unwrap_or(0), end)
                })
                .filter(|(_, _, offset, end)| offset < end)
                .collect())
        };
        let committed = eventually(WAIT, || Ok(uncommitted()?.is_empty())).unwrap();
        assert!(
            committed,
            "uncommitted (topic, partition, committed, end): {:?}",
            uncommitted()
        );
    }

    fn await_domain_counts(&self, example: i64, other: i64) {
        self.await_domain_counts_of(&[("example.com", example), ("other.org", other)]);
    }

    fn await_domain_counts_of(&self, counts: &[(&str, i64)]) {
        let expected: HashMap<String, i64> = counts.iter().map(|(d, c)| (d.to_string(), *c)).collect();
        let converged = eventually(WAIT, || Ok(self.domain_counts() == expected)).unwrap();
        assert!(
            converged,
            "domain counts {:?} never became {expected:?}",
            self.domain_counts()
        );
    }
}

fn a_join_and_an_aggregation_run(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let state = tempfile::tempdir().unwrap();
    // Two stream threads share the instance's tasks. They join the group
    // before the data arrives, so that no task changes threads before its
    // first commit.
    let config = cluster.config("join", state.path()).set("num.stream.threads", "2");
    let mut streams = setup.start(&config);
    let mut expected = setup.seed(30);
    setup.await_profiles(&expected);

    // Updates of either side re-emit the join; a deleted user leaves a tombstone.
    setup.preference(4, false);
    setup.user(5, Some("five@other.org"));
    setup.user(6, None);
    setup.producer.flush().unwrap();
    expected.insert("u4".into(), "u4@example.com:false".into());
    expected.insert("u5".into(), "five@other.org:false".into());
    expected.remove("u6");
    setup.await_profiles(&expected);
    setup.await_domain_counts(19, 10);

    let metrics = streams.metrics();
    assert!(metrics.processed >= 63, "{metrics:?}");
    assert!(metrics.commits > 0);
    assert_eq!(metrics.active_tasks, 2 * PARTITIONS as u64);
    streams.close().unwrap();
    assert_eq!(streams.state(), StreamsState::NotRunning);
}

fn a_clean_restart_replays_nothing_and_a_lost_state_dir_is_rebuilt(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("restore", state.path());
    let mut expected = setup.seed(40);
    let mut first = setup.start(&config);
    setup.await_profiles(&expected);
    first.close().unwrap();

    // Same state directory: every store resumes from its checkpoint.
    let mut second = setup.start(&config);
    assert_eq!(second.metrics().restored_total(), 0, "{:?}", second.metrics());
    setup.preference(1, true);
    setup.producer.flush().unwrap();
    expected.insert("u1".into(), "u1@example.com:true".into());
    setup.await_profiles(&expected);
    second.close().unwrap();

    // No state directory: the stores come back from their changelogs, so a
    // preference update still finds its user and a new user is counted on
    // top of the restored counts.
    std::fs::remove_dir_all(second.settings().app_dir()).unwrap();
    let mut third = setup.start(&config);
    let restored = third.metrics().restored;
    assert!(restored["users"] >= 40 && restored["preferences"] >= 40, "{restored:?}");
    assert!(restored["domain-counts"] >= 2, "{restored:?}");
    setup.preference(2, false);
    setup.user(100, Some("new@other.org"));
    setup.preference(100, true);
    setup.producer.flush().unwrap();
    expected.insert("u2".into(), "u2@example.com:false".into());
    expected.insert("u100".into(), "new@other.org:true".into());
    setup.await_profiles(&expected);
    setup.await_domain_counts(26, 15);
    third.close().unwrap();
}

/// A changelog may hold writes the last commit does not cover: an instance
/// that crashed after they reached the broker and before it committed. The
/// records behind them are processed again, so a restore must leave them
/// out, or the replay would find its own writes as the old values. The
/// test appends such writes to the users changelog by hand (users at a
/// domain the input never had) and checks that no restore takes them in:
/// not before the group's first commit, nor after a commit from a clean
/// close's checkpoint or into an empty state directory.
fn a_restore_stops_at_the_last_commit(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("committed", state.path());
    let app = config.get("application.id").unwrap().to_string();
    let users_changelog = weir::topology::changelog_topic(&app, "users");
    // A store write that no commit covers, as an owner leaves behind when it
    // fails after writing and before committing.
    let write_uncommitted = |user: &str| {
        setup
            .producer
            .send(
                &users_changelog,
                &Utf8,
                &Utf8,
                &user.to_string(),
                Some(&format!("{user}@uncommitted.net")),
            )
            .unwrap();
        setup.producer.flush().unwrap();
    };

    // Before the group's first commit the committed state is empty: a
    // restore applies nothing.
    cluster.prepare_topics(&setup.topology(), &config);
    write_uncommitted("u99");
    let mut expected = setup.seed(30);
    let mut streams = setup.start(&config);
    setup.await_profiles(&expected);
    setup.await_domain_counts(20, 10);
    let users = streams.store("users", Utf8, Utf8).unwrap();
    assert_eq!(users.get(&"u99".to_string()).unwrap(), KeyLocation::Local(None));
    streams.close().unwrap();

    // After a commit it is the commit's: applied, u1's next update would
    // subtract u1 from uncommitted.net's count instead of example.com's.
    write_uncommitted("u1");

    let moves = [
        (
            "u1",
            "u1@moved.org",
            [("example.com", 19), ("other.org", 10), ("moved.org", 1)],
        ),
        (
            "u2",
            "u2@moved.org",
            [("example.com", 18), ("other.org", 10), ("moved.org", 2)],
        ),
    ];
    for (round, (user, email, counts)) in moves.into_iter().enumerate() {
        if round == 1 {
            std::fs::remove_dir_all(streams.settings().app_dir()).unwrap();
        }
        streams = setup.start(&config);
        let id: usize = user[1..].parse().unwrap();
        setup.user(id, Some(email));
        setup.producer.flush().unwrap();
        expected.insert(user.to_string(), format!("{email}:{}", id.is_multiple_of(2)));
        setup.await_profiles(&expected);
        setup.await_domain_counts_of(&counts);
        streams.close().unwrap();
    }
}

fn two_instances_split_the_tasks_and_the_survivor_takes_over(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut expected = setup.seed(30);
    let mut a = setup.start(&cluster.config("pair", dir_a.path()));
    setup.await_profiles(&expected);
    let mut b = setup.start(&cluster.config("pair", dir_b.path()));
    let all_tasks = 2 * PARTITIONS as u64;
    let split = eventually(WAIT, || {
        let (ta, tb) = (a.metrics().active_tasks, b.metrics().active_tasks);
        Ok(ta > 0 && tb > 0 && ta + tb == all_tasks)
    })
    .unwrap();
    assert!(
        split,
        "tasks: {} and {}",
        a.metrics().active_tasks,
        b.metrics().active_tasks
    );
    for id in 0..30 {
        setup.preference(id, id % 2 == 1);
        expected.insert(format!("u{id}"), format!("{}:{}", email(id), id % 2 == 1));
    }
    setup.producer.flush().unwrap();
    setup.await_profiles(&expected);

    a.close().unwrap();
    assert!(eventually(WAIT, || Ok(b.metrics().active_tasks == all_tasks)).unwrap());
    setup.user(7, Some("seven@example.com"));
    setup.producer.flush().unwrap();
    expected.insert("u7".into(), "seven@example.com:true".into());
    setup.await_profiles(&expected);
    b.close().unwrap();
}

fn interactive_queries_answer_here_or_name_the_owner(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let expected = setup.seed(30);
    // Each instance serves its `users` store over HTTP at the address it
    // advertises as its application.server.
    let instance = |dir: &std::path::Path| {
        let listener = OpsListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = listener.address().to_string();
        let config = cluster.config("queries", dir).set("application.server", &server);
        let streams = setup.cluster.streams(setup.topology(), &config);
        let users = streams.store("users", Utf8, Utf8).unwrap();
        let ops = listener
            .serve(streams.status_handle(), store_route("/users/{id}", users.clone()))
            .unwrap();
        (streams, users, server, ops)
    };
    let (mut a, users_on_a, server_a, _ops_a) = instance(dir_a.path());
    let error = a.store("no-such-store", Utf8, Utf8).err().unwrap().to_string();
    assert!(
        error.contains("no store 'no-such-store'") && error.contains("users"),
        "{error}"
    );
    let unstarted = users_on_a.get(&"u1".to_string()).unwrap_err();
    assert!(matches!(unstarted, weir::WeirError::Unavailable(_)), "{unstarted}");
    assert_eq!(http_get(&server_a, "/users/u1").status, 503);
    a.start().unwrap();
    assert!(a.wait_for_state(StreamsState::Running, WAIT));
    setup.await_profiles(&expected);
    setup.await_committed(a.settings().application_id.as_str());
    let (mut b, users_on_b, server_b, _ops_b) = instance(dir_b.path());
    b.start().unwrap();
    assert!(b.wait_for_state(StreamsState::Running, WAIT));
    let instances = [(&users_on_a, server_a.as_str()), (&users_on_b, server_b.as_str())];

    // Each user is answered by the instance that holds it and pointed to
    // that instance by the other (by partition alone where the brokers do
    // not return commit metadata); a key no one has is absent where its
    // partition is.
    let names_owners = cluster.returns_offset_metadata();
    let mut keys: Vec<(String, Option<String>)> = (0..30).map(|id| (format!("u{id}"), Some(email(id)))).collect();
    keys.push(("nobody".into(), None));
    let answered = |stores: &[(&ReadOnlyStore<String, String>, &str)]| {
        keys.iter().all(|(key, value)| {
            let locations: Vec<_> = stores.iter().map(|(store, _)| store.get(key).ok()).collect();
            let here: Vec<usize> = (0..stores.len())
                .filter(|i| locations[*i] == Some(KeyLocation::Local(value.clone())))
                .collect();
            here.len() == 1
                && (0..stores.len()).filter(|i| *i != here[0]).all(|i| {
                    let expected_owner = names_owners.then(|| stores[here[0]].1.to_string());
                    matches!(&locations[i], Some(KeyLocation::Elsewhere { owner, .. }) if *owner == expected_owner)
                })
        })
    };
    let settled = eventually(WAIT, || Ok(answered(&instances))).unwrap();
    let seen: Vec<_> = keys
        .iter()
        .map(|(key, _)| (key, users_on_a.get(key).ok(), users_on_b.get(key).ok()))
        .collect();
    assert!(settled, "answers (key, from a, from b): {seen:?}");

    // Over HTTP: the holder answers, the other redirects to it.
    for (key, value) in &keys {
        let path = format!("/users/{key}");
        let (on_a, on_b) = (http_get(&server_a, &path), http_get(&server_b, &path));
        let (holder, other) = if matches!(on_a.status, 200 | 404) {
            (on_a, on_b)
        } else {
            (on_b, on_a)
        };
        match value {
            Some(email) => {
                assert_eq!(holder.status, 200, "{path}: {holder:?}");
                assert_eq!(holder.body, format!("{email:?}"));
            }
            None => assert_eq!(holder.status, 404, "{path}: {holder:?}"),
        }
        if names_owners {
            assert_eq!(other.status, 307, "{path}: {other:?}");
            let location = other.location.clone().unwrap_or_default();
            assert!(
                [&server_a, &server_b]
                    .iter()
                    .any(|s| location == format!("http://{s}{path}")),
                "{path} redirected to {location}"
            );
        } else {
            assert_eq!(other.status, 503, "{path}: {other:?}");
        }
    }

    // A table aggregate is read without its member count. Its task may
    // still be restoring after the users' store answers, and a restoring
    // partition answers `Unavailable` until it is current.
    let counts_on_b = b.store("domain-counts", Utf8, I64).unwrap();
    let counts_on_a = a.store("domain-counts", Utf8, I64).unwrap();
    let mut example = Vec::new();
    let answered_count = eventually(WAIT, || {
        let answers: Result<Vec<_>, _> = [&counts_on_a, &counts_on_b]
            .iter()
            .map(|store| store.get(&"example.com".to_string()))
            .collect();
        example = match answers {
            Ok(answers) => answers
                .into_iter()
                .filter_map(|location| match location {
                    KeyLocation::Local(count) => Some(count),
                    KeyLocation::Elsewhere { .. } => None,
                })
                .collect(),
            Err(WeirError::Unavailable(_)) => return Ok(false),
            Err(other) => return Err(other),
        };
        Ok(true)
    })
    .unwrap();
    assert!(answered_count, "domain-counts stayed unavailable");
    assert_eq!(example, vec![Some(20)]);

    // When one leaves, the other answers for every key.
    a.close().unwrap();
    let took_over = eventually(WAIT, || Ok(answered(&instances[1..]))).unwrap();
    assert!(
        took_over,
        "after a left, b answered {:?}",
        users_on_b.get(&"u1".to_string())
    );
    b.close().unwrap();
}

fn exactly_once_commits_in_transactions(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let state = tempfile::tempdir().unwrap();
    // Tables' changes merged between commits: each transaction first
    // passes on what the store caches deferred.
    let config = cluster
        .config("eos", state.path())
        .set("processing.guarantee", "exactly_once_v2")
        .set("statestore.cache.merge", "true");
    let mut expected = setup.seed(20);
    if !cluster.supports_transactions() {
        // The first commit finds out, and the instance stops saying why.
        let mut streams = cluster.streams(setup.topology(), &config);
        streams.start().unwrap();
        assert!(!streams.wait_for_state(StreamsState::NotRunning, WAIT));
        assert_eq!(streams.state(), StreamsState::Error);
        let error = streams.close().unwrap_err().to_string();
        assert!(error.contains("do not support Kafka transactions"), "{error}");
        return;
    }
    let mut first = setup.start(&config);
    setup.await_profiles(&expected);
    assert!(first.metrics().commits > 0);
    first.close().unwrap();

    // A clean close leaves checkpoints under exactly-once too. Two stream
    // threads have a transactional id each.
    let mut second = setup.start(&config.clone().set("num.stream.threads", "2"));
    assert_eq!(second.metrics().restored_total(), 0);
    setup.preference(3, true);
    setup.producer.flush().unwrap();
    expected.insert("u3".into(), "u3@other.org:true".into());
    setup.await_profiles(&expected);
    second.close().unwrap();
}

fn undecodable_records_go_to_a_dead_letter_topic(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let state = tempfile::tempdir().unwrap();
    let dead_letters = cluster.name("preferences-dlq");
    let config = cluster
        .config("dlq", state.path())
        .set("default.error.handler", format!("dead_letter:{dead_letters}"));
    let mut expected = setup.seed(5);
    setup
        .producer
        .send_raw(&setup.topics.preferences, None, Some(b"u1"), Some(b"not json"))
        .unwrap();
    setup.preference(1, true);
    setup.producer.flush().unwrap();
    expected.insert("u1".into(), "u1@example.com:true".into());
    let mut streams = setup.start(&config);
    setup.await_profiles(&expected);
    let dead = read_topic(cluster.bootstrap_servers(), &dead_letters).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].record.value.as_deref(), Some(&b"not json"[..]));
    let header =
        |key: &str| Header::value_of(&dead[0].record.headers, key).map(|v| String::from_utf8_lossy(v).to_string());
    assert_eq!(header("weir.source.topic"), Some(setup.topics.preferences.clone()));
    assert!(header("weir.error.message").unwrap().contains("JSON"));
    streams.close().unwrap();
    let skipped = streams
        .metrics()
        .tasks
        .skipped_for(weir::metrics::SkipReason::DeadLettered);
    assert_eq!(skipped, 1);
}

fn start_up_errors_name_the_problem(cluster: &Cluster) {
    let setup = Setup::new(cluster);
    let state = tempfile::tempdir().unwrap();
    let config = cluster.config("errors", state.path());
    let start_error =
        |topology: Topology, config: &StreamsConfig| cluster.streams(topology, config).start().unwrap_err().to_string();

    // Joined topics with different partition counts.
    let left = cluster.create_topic("left", 3);
    let right = cluster.create_topic("right", 6);
    let builder = StreamsBuilder::new();
    let left_table = builder.table(&left, Consumed::with(Utf8, Utf8));
    let right_table = builder.table(&right, Consumed::with(Utf8, Utf8));
    left_table
        .join(&right_table, |l, r| format!("{l}{r}"))
        .to(&setup.topics.profiles, Produced::with(Utf8, Utf8));
    let error = start_error(builder.build().unwrap(), &config);
    assert!(
        error.contains(&format!("{left} (3)")) && error.contains(&format!("{right} (6)")),
        "{error}"
    );

    // A source topic that does not exist.
    let nowhere = cluster.name("nowhere");
    let builder = StreamsBuilder::new();
    builder
        .stream(&nowhere, Consumed::with(Utf8, Utf8))
        .to(&setup.topics.profiles, Produced::with(Utf8, Utf8));
    let error = start_error(builder.build().unwrap(), &config);
    assert!(error.contains(&nowhere), "{error}");

    // Unknown and invalid keys.
    let error = KafkaStreams::new(
        setup.topology(),
        &config.clone().set("processing.guarantees", "exactly_once_v2"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("'processing.guarantees'"), "{error}");

    // An internal topic left over with the wrong partition count.
    let changelog = cluster.create_topic("errors-users-changelog", 5);
    let error = start_error(setup.topology(), &config);
    assert!(error.contains(&changelog) && error.contains("5 partitions"), "{error}");

    // Two instances on one state directory.
    let good = cluster.config("lock", state.path());
    let _running = setup.start(&good);
    let error = start_error(setup.topology(), &good);
    assert!(error.contains("in use by another instance"), "{error}");
}
