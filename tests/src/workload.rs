//! The profiles workload: users and preferences tables, their join, an
//! aggregation through a repartition topic, and each user's email domain
//! joined by foreign key with a domains table (its region); a generator of
//! changes to the three tables and a reference model of what the outputs
//! must end up holding.
//!
//! The aggregation (the set of users ever seen per email domain) is a
//! union, so processing a record twice leaves it unchanged: at-least-once
//! replays after a crash cannot make it wrong, while a lost store would
//! (the replay starts at the last commit, not at the beginning).

use crate::cluster::Cluster;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use weir::serde::{Json, Utf8};
use weir::testing::kafka::TestProducer;
use weir::testing::kafka::{eventually, read_compacted};
use weir::{Consumed, ForeignKeyJoined, Grouped, Materialized, Produced, StreamsBuilder, Topology};

pub const PARTITIONS: i32 = 6;

/// Topic names of one run (all with the cluster's prefix).
#[derive(Debug, Clone)]
pub struct Topics {
    pub users: String,
    pub preferences: String,
    pub domains: String,
    pub profiles: String,
    pub domain_members: String,
    pub user_regions: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Topics {
        Topics {
            users: format!("{prefix}users"),
            preferences: format!("{prefix}preferences"),
            domains: format!("{prefix}domains"),
            profiles: format!("{prefix}profiles"),
            domain_members: format!("{prefix}domain-members"),
            user_regions: format!("{prefix}user-regions"),
        }
    }

    pub fn all(&self) -> [&str; 6] {
        [
            &self.users,
            &self.preferences,
            &self.domains,
            &self.profiles,
            &self.domain_members,
            &self.user_regions,
        ]
    }
}

/// users ⋈ preferences → profiles `email:dark_mode`; users re-keyed by
/// email domain → the set of user ids ever seen per domain; users ⟕
/// domains by the email's domain → user-regions `email:region` (`-` for a
/// domain without a row).
pub fn topology(topics: &Topics) -> Topology {
    let builder = StreamsBuilder::new();
    let users = builder.table(&topics.users, Consumed::with(Utf8, Utf8).store("users"));
    let preferences = builder.table(
        &topics.preferences,
        Consumed::with(Utf8, Json::<bool>::new()).store("preferences"),
    );
    users
        .join(&preferences, |email, dark| format!("{email}:{dark}"))
        .to(&topics.profiles, Produced::with(Utf8, Utf8));
    users
        .to_stream()
        .flat_map_values(|email: Option<String>| email)
        .group_by(
            |_, email| domain(email),
            Grouped::with(Utf8, Utf8).named("users-by-domain"),
        )
        .aggregate(
            BTreeSet::new,
            |_, email: String, mut members: BTreeSet<String>| {
                members.insert(user_of(&email));
                members
            },
            Materialized::with(Json::<BTreeSet<String>>::new()).with_name("domain-members"),
        )
        .to(&topics.domain_members, Produced::with(Utf8, Json::new()));
    let domains = builder.table(&topics.domains, Consumed::with(Utf8, Utf8).store("domains"));
    users
        .left_join_on_foreign_key(
            &domains,
            |email| Some(domain(email)),
            |email, region| format!("{email}:{}", region.map_or("-", String::as_str)),
            ForeignKeyJoined::with(Utf8, Utf8, Utf8, Utf8, Utf8).named("user-regions"),
        )
        .to(&topics.user_regions, Produced::with(Utf8, Utf8));
    builder.build().expect("the workload topology is valid")
}

fn domain(email: &str) -> String {
    email.rsplit('@').next().unwrap_or_default().to_string()
}

/// Emails are `<user>.<version>@<domain>`, so the aggregation can name the user.
fn user_of(email: &str) -> String {
    email.split('.').next().unwrap_or_default().to_string()
}

/// One input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A user's email, or `None` to delete the user.
    User(String, Option<String>),
    /// A user's dark mode, or `None` to delete the preference.
    Preference(String, Option<bool>),
    /// A domain's region, or `None` to delete the domain.
    Domain(String, Option<String>),
}

/// A deterministic generator (xorshift), so that a failing run can be replayed.
pub struct Generator {
    state: u64,
    users: usize,
    versions: HashMap<usize, u32>,
}

const DOMAINS: [&str; 4] = ["example.com", "other.org", "mail.net", "corp.io"];

impl Generator {
    pub fn new(seed: u64, users: usize) -> Self {
        Generator {
            state: seed.max(1),
            users,
            versions: HashMap::new(),
        }
    }

    fn next(&mut self, bound: usize) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % bound as u64) as usize
    }

    fn email(&mut self, user: usize) -> String {
        let version = self.versions.entry(user).or_default();
        *version += 1;
        let version = *version;
        format!("u{user}.{version}@{}", DOMAINS[self.next(DOMAINS.len())])
    }

    fn region(&mut self) -> String {
        format!("r{}", self.next(3))
    }

    /// Every domain but the last, user and preference once, as a snapshot
    /// would.
    pub fn snapshot(&mut self) -> Vec<Change> {
        let domains: Vec<Change> = DOMAINS[..DOMAINS.len() - 1]
            .iter()
            .map(|domain| Change::Domain(domain.to_string(), Some(self.region())))
            .collect();
        let users = (0..self.users)
            .flat_map(|user| {
                let email = self.email(user);
                let dark = self.next(2) == 0;
                [
                    Change::User(format!("u{user}"), Some(email)),
                    Change::Preference(format!("u{user}"), Some(dark)),
                ]
            })
            .collect::<Vec<_>>();
        domains.into_iter().chain(users).collect()
    }

    /// `count` changes: dark mode flips most, emails change rarely, domains
    /// change region now and then, and a few rows are deleted (and may come
    /// back).
    pub fn changes(&mut self, count: usize) -> Vec<Change> {
        (0..count)
            .map(|_| {
                let user = self.next(self.users);
                let key = format!("u{user}");
                match self.next(100) {
                    0..=76 => Change::Preference(key, Some(self.next(2) == 0)),
                    77..=88 => Change::User(key, Some(self.email(user))),
                    89..=92 => Change::User(key, None),
                    93..=95 => {
                        let domain = DOMAINS[self.next(DOMAINS.len())].to_string();
                        match self.next(4) {
                            0 => Change::Domain(domain, None),
                            _ => Change::Domain(domain, Some(self.region())),
                        }
                    }
                    _ => Change::Preference(key, None),
                }
            })
            .collect()
    }
}

/// What the outputs must hold after every change was processed.
#[derive(Debug, Default)]
pub struct Reference {
    users: BTreeMap<String, String>,
    preferences: BTreeMap<String, bool>,
    domains: BTreeMap<String, String>,
    domain_members: BTreeMap<String, BTreeSet<String>>,
}

impl Reference {
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::User(user, Some(email)) => {
                self.users.insert(user.clone(), email.clone());
                self.domain_members
                    .entry(domain(email))
                    .or_default()
                    .insert(user.clone());
            }
            Change::User(user, None) => {
                self.users.remove(user);
            }
            Change::Preference(user, Some(dark)) => {
                self.preferences.insert(user.clone(), *dark);
            }
            Change::Preference(user, None) => {
                self.preferences.remove(user);
            }
            Change::Domain(domain, Some(region)) => {
                self.domains.insert(domain.clone(), region.clone());
            }
            Change::Domain(domain, None) => {
                self.domains.remove(domain);
            }
        }
    }

    /// Every current user with the region of its email's domain.
    pub fn user_regions(&self) -> HashMap<String, String> {
        self.users
            .iter()
            .map(|(user, email)| {
                let region = self.domains.get(&domain(email)).map_or("-", String::as_str);
                (user.clone(), format!("{email}:{region}"))
            })
            .collect()
    }

    /// The inner join of the current users and preferences.
    pub fn profiles(&self) -> HashMap<String, String> {
        self.users
            .iter()
            .filter_map(|(user, email)| {
                let dark = self.preferences.get(user)?;
                Some((user.clone(), format!("{email}:{dark}")))
            })
            .collect()
    }

    pub fn domain_members(&self) -> HashMap<String, BTreeSet<String>> {
        self.domain_members.clone().into_iter().collect()
    }
}

/// The records of one user in one domain's aggregation: the repartition
/// records that add the user to the domain, and whether each changelog
/// record and output of the domain holds the user.
fn member_history(cluster: &Cluster, topics: &Topics, application: &str, domain: &str, user: &str) -> String {
    let by_domain = weir::topology::repartition_topic(application, "users-by-domain");
    let changelog = weir::topology::changelog_topic(application, "domain-members");
    let mut history = format!("history of {user} in {domain}:\n");
    for topic in [by_domain.as_str(), changelog.as_str(), topics.domain_members.as_str()] {
        let records = weir::testing::kafka::read_topic(cluster.bootstrap_servers(), topic).unwrap_or_default();
        for read in records
            .iter()
            .filter(|r| r.record.key.as_deref() == Some(domain.as_bytes()))
        {
            let value = read
                .record
                .value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let line = if topic == by_domain {
                value.starts_with(&format!("{user}.")).then(|| value.to_string())
            } else {
                Some(format!("holds {user}: {}", value.contains(&format!("\"{user}\""))))
            };
            if let Some(line) = line {
                history.push_str(&format!("  {topic}[{}]@{}: {line}\n", read.partition, read.offset));
            }
        }
    }
    history
}

/// Waits until the compacted outputs equal the reference: every key's last
/// record (the whole topic is read) holds the reference's value. On a
/// timeout, the wrong keys with their histories and the group's committed
/// offsets.
pub fn await_outputs(
    cluster: &Cluster,
    topics: &Topics,
    application: &str,
    reference: &Reference,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let servers = cluster.bootstrap_servers();
    let members_serde = Json::<BTreeSet<String>>::new();
    let expected_profiles = reference.profiles();
    let expected_members = reference.domain_members();
    let expected_regions = reference.user_regions();
    let read = || -> Result<_, weir::WeirError> {
        let profiles = read_compacted(servers, &topics.profiles, &Utf8, &Utf8)?;
        let members = read_compacted(servers, &topics.domain_members, &Utf8, &members_serde)?;
        let regions = read_compacted(servers, &topics.user_regions, &Utf8, &Utf8)?;
        Ok((profiles, members, regions))
    };
    let converged = eventually(timeout, || {
        let (profiles, members, regions) = read()?;
        Ok(profiles == expected_profiles && members == expected_members && regions == expected_regions)
    })
    .map_err(|e| e.to_string())?;
    if converged {
        return Ok(());
    }
    let (profiles, members, regions) = read().map_err(|e| e.to_string())?;
    let wrong_regions: Vec<(&String, Option<&String>, Option<&String>)> = expected_regions
        .keys()
        .chain(regions.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| expected_regions.get(*k) != regions.get(*k))
        .map(|k| (k, expected_regions.get(k), regions.get(k)))
        .take(10)
        .collect();
    let wrong: Vec<(&String, Option<&String>, Option<&String>)> = expected_profiles
        .keys()
        .chain(profiles.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| expected_profiles.get(*k) != profiles.get(*k))
        .map(|k| (k, expected_profiles.get(k), profiles.get(k)))
        .collect();
    let wrong_members: Vec<(&String, Vec<&String>)> = expected_members
        .iter()
        .filter(|(k, v)| members.get(*k) != Some(*v))
        .map(|(k, v)| {
            (
                k,
                members
                    .get(k)
                    .map(|m| m.symmetric_difference(v).take(5).collect())
                    .unwrap_or_default(),
            )
        })
        .take(10)
        .collect();
    let suspects: Vec<&String> = wrong.iter().map(|(k, _, _)| *k).take(3).collect();
    let members_history = wrong_members
        .first()
        .and_then(|(domain, users)| Some(member_history(cluster, topics, application, domain, users.first()?)))
        .unwrap_or_default();
    Err(format!(
        "the outputs did not converge: {} wrong profiles, first (key, expected, found) {:?}; wrong domain members \
         (domain, first differences) {wrong_members:?}; wrong user regions, first (key, expected, found) \
         {wrong_regions:?}\n{}{members_history}",
        wrong.len(),
        &wrong[..wrong.len().min(10)],
        histories(cluster, topics, application, &suspects)
    ))
}

/// Writes changes to the workload's input topics and applies them to the
/// reference the outputs are checked against.
pub struct Input<'a> {
    producer: TestProducer,
    topics: &'a Topics,
    pub reference: Reference,
}

impl<'a> Input<'a> {
    pub fn new(cluster: &Cluster, topics: &'a Topics) -> Self {
        Input {
            producer: cluster.producer(),
            topics,
            reference: Reference::default(),
        }
    }

    /// Sends every change and waits until the brokers have them.
    pub fn write(&mut self, changes: Vec<Change>) {
        for change in &changes {
            send(&self.producer, self.topics, change);
            self.reference.apply(change);
        }
        self.producer.flush().expect("the input is flushed");
    }
}

/// Writes a change to its topic.
pub fn send(producer: &TestProducer, topics: &Topics, change: &Change) {
    let sent = match change {
        Change::User(user, email) => producer.send(&topics.users, &Utf8, &Utf8, user, email.as_ref()),
        Change::Preference(user, dark) => {
            producer.send(&topics.preferences, &Utf8, &Json::<bool>::new(), user, dark.as_ref())
        }
        Change::Domain(domain, region) => producer.send(&topics.domains, &Utf8, &Utf8, domain, region.as_ref()),
    };
    sent.expect("the change is sent");
}

/// Every record of each of `keys` in the inputs, the join's store
/// changelogs and the profiles, with partitions and offsets, and the
/// application's committed offsets, to diagnose a failed run.
pub fn histories(cluster: &Cluster, topics: &Topics, application: &str, keys: &[&String]) -> String {
    let changelogs =
        ["users", "preferences", "domain-members"].map(|store| weir::topology::changelog_topic(application, store));
    let by_domain = weir::topology::repartition_topic(application, "users-by-domain");
    let topics = [
        topics.users.as_str(),
        topics.preferences.as_str(),
        &changelogs[0],
        &changelogs[1],
        &by_domain,
        &changelogs[2],
        topics.profiles.as_str(),
        topics.domain_members.as_str(),
    ];
    let records: Vec<_> = topics
        .iter()
        .map(|topic| weir::testing::kafka::read_topic(cluster.bootstrap_servers(), topic).unwrap_or_default())
        .collect();
    let mut history = String::new();
    for key in keys {
        history.push_str(&format!("history of {key}:\n"));
        for (topic, records) in topics.iter().zip(&records) {
            for read in records
                .iter()
                .filter(|r| r.record.key.as_deref() == Some(key.as_bytes()))
            {
                let value = read.record.value.as_deref().map(String::from_utf8_lossy);
                history.push_str(&format!("  {topic}[{}]@{}: {value:?}\n", read.partition, read.offset));
            }
        }
    }
    history.push_str("committed offsets (and the number of records read) of\n");
    match weir::testing::kafka::committed_offsets(cluster.bootstrap_servers(), application, &topics[..6]) {
        Ok(committed) => {
            for (topic, partition, offset) in committed {
                let index = topics.iter().position(|t| *t == topic).unwrap();
                let read = records[index].iter().filter(|r| r.partition == partition).count();
                history.push_str(&format!("  {topic}[{partition}]: {offset:?} ({read})\n"));
            }
        }
        Err(error) => history.push_str(&format!("  (cannot read them: {error})\n")),
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_joins_current_rows_and_unions_domains() {
        let mut reference = Reference::default();
        for change in [
            Change::User("u1".into(), Some("u1.1@a.com".into())),
            Change::Preference("u1".into(), Some(true)),
            Change::User("u2".into(), Some("u2.1@a.com".into())),
            Change::User("u1".into(), Some("u1.2@b.com".into())),
            Change::User("u2".into(), None),
            Change::Domain("b.com".into(), Some("r1".into())),
            Change::User("u3".into(), Some("u3.1@c.com".into())),
        ] {
            reference.apply(&change);
        }
        assert_eq!(
            reference.profiles(),
            HashMap::from([("u1".into(), "u1.2@b.com:true".into())])
        );
        assert_eq!(
            reference.user_regions(),
            HashMap::from([
                ("u1".into(), "u1.2@b.com:r1".into()),
                ("u3".into(), "u3.1@c.com:-".into())
            ])
        );
        assert_eq!(
            reference.domain_members()["a.com"],
            BTreeSet::from(["u1".to_string(), "u2".to_string()])
        );
        assert_eq!(user_of("u17.3@corp.io"), "u17");
    }

    #[test]
    fn the_generator_is_deterministic() {
        let run = || {
            let mut generator = Generator::new(7, 10);
            let mut changes = generator.snapshot();
            changes.extend(generator.changes(100));
            changes
        };
        assert_eq!(run(), run());
    }
}
