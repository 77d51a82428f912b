//! The profiles workload: users and preferences tables, their join, and an
//! aggregation through a repartition topic; a generator of changes to both
//! tables and a reference model of what the outputs must end up holding.
//!
//! The aggregation (the set of users ever seen per email domain) is a
//! union, so processing a record twice leaves it unchanged: at-least-once
//! replays after a crash cannot make it wrong, while a lost store would
//! (the replay starts at the last commit, not at the beginning).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use weir::serde::{Json, Utf8};
use weir::testing::kafka::TestProducer;
use weir::{Consumed, Grouped, Materialized, Produced, StreamsBuilder, Topology};

pub const PARTITIONS: i32 = 6;

/// Topic names of one run (all with the cluster's prefix).
#[derive(Debug, Clone)]
pub struct Topics {
    pub users: String,
    pub preferences: String,
    pub profiles: String,
    pub domain_members: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Topics {
        Topics {
            users: format!("{prefix}users"),
            preferences: format!("{prefix}preferences"),
            profiles: format!("{prefix}profiles"),
            domain_members: format!("{prefix}domain-members"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.users, &self.preferences, &self.profiles, &self.domain_members]
    }
}

/// users ⋈ preferences → profiles `email:dark_mode`; users re-keyed by
/// email domain → the set of user ids ever seen per domain.
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

    /// Every user and preference once, as a snapshot would.
    pub fn snapshot(&mut self) -> Vec<Change> {
        (0..self.users)
            .flat_map(|user| {
                let email = self.email(user);
                let dark = self.next(2) == 0;
                [
                    Change::User(format!("u{user}"), Some(email)),
                    Change::Preference(format!("u{user}"), Some(dark)),
                ]
            })
            .collect()
    }

    /// `count` changes: dark mode flips most, emails change rarely, and a few
    /// rows are deleted (and may come back).
    pub fn changes(&mut self, count: usize) -> Vec<Change> {
        (0..count)
            .map(|_| {
                let user = self.next(self.users);
                let key = format!("u{user}");
                match self.next(100) {
                    0..=79 => Change::Preference(key, Some(self.next(2) == 0)),
                    80..=91 => Change::User(key, Some(self.email(user))),
                    92..=95 => Change::User(key, None),
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
        }
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

/// Writes a change to its topic.
pub fn send(producer: &TestProducer, topics: &Topics, change: &Change) {
    let sent = match change {
        Change::User(user, email) => producer.send(&topics.users, &Utf8, &Utf8, user, email.as_ref()),
        Change::Preference(user, dark) => {
            producer.send(&topics.preferences, &Utf8, &Json::<bool>::new(), user, dark.as_ref())
        }
    };
    sent.expect("the change is sent");
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
        ] {
            reference.apply(&change);
        }
        assert_eq!(
            reference.profiles(),
            HashMap::from([("u1".into(), "u1.2@b.com:true".into())])
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
