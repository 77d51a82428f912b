//! The simulation's application: two tables joined, the join enriched
//! asynchronously into a table and a topic, an aggregation through a
//! repartition topic, users joined by foreign key (their email's domain)
//! with a third table, and each user's emails counted per window with the
//! final counts suppressed until the windows close; a generator of
//! changes to the tables and the reference of what every output must end
//! up holding.

use super::rng::Rng;
use crate::enrich::{Enrichment, LookupError};
use crate::serde::{Json, Nullable, Utf8, I64};
use crate::window::{Suppressed, TimeWindows, WindowedSerde};
use crate::{Consumed, ForeignKeyJoined, Grouped, Materialized, Produced, Serdes, StreamsBuilder, Topology};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub(super) const USERS: &str = "users";
/// Every email a user takes, as a stream (the simulation writes each
/// email to `users` and here).
pub(super) const EMAILS: &str = "emails";
pub(super) const PREFERENCES: &str = "preferences";
pub(super) const PROFILES: &str = "profiles";
pub(super) const TAGGED: &str = "tagged";
pub(super) const DOMAIN_MEMBERS: &str = "domain-members";
/// Each domain's region.
pub(super) const REGIONS: &str = "regions";
pub(super) const USER_REGIONS: &str = "user-regions";
/// Each user's final email count per window, keyed `user@start`.
pub(super) const EMAIL_COUNTS: &str = "email-counts";
/// The windows of email counts, in the simulation's time: its records'
/// timestamps count the records written before them.
const WINDOW_TICKS: i64 = 10;
pub(super) const PARTITIONS: i32 = 3;

/// users ⋈ preferences → `profiles` (`email:dark`); users ⟕ regions by
/// the email's domain → `user-regions` (`email:region`, `-` for none);
/// each profile enriched
/// by a lookup (cached) → the table `tagged` and the topic `tagged`
/// (`email:dark#tag`); the stream of emails re-keyed by domain → the set
/// of users ever seen per domain → `domain-members`. The set is read from
/// a stream, not from the users table's changes: a table's consecutive
/// changes may reach downstream merged (see the store cache), so a user's
/// passing email need not. Lookups run on `runtime`, which
/// the simulation drives.
pub(super) fn topology(runtime: tokio::runtime::Handle) -> Topology {
    let builder = StreamsBuilder::new();
    let users = builder.table(USERS, Consumed::with(Utf8, Utf8).store("users"));
    let preferences = builder.table(
        PREFERENCES,
        Consumed::with(Utf8, Json::<bool>::new()).store("preferences"),
    );
    let profiles = users.join(&preferences, |email, dark| format!("{email}:{dark}"));
    profiles.to(PROFILES, Produced::with(Utf8, Utf8));
    let tag = |user: String| async move { Ok::<_, LookupError>(tag_of(&user)) };
    let tagged = profiles.enrich_async(
        Enrichment::new("tag", |user: &String, _: &String| user.clone(), tag)
            .cache(None)
            .on_runtime(runtime),
        |_, profile, tag| format!("{profile}#{tag}"),
    );
    tagged.to(TAGGED, Produced::with(Utf8, Nullable(Utf8)));
    tagged.to_table(TAGGED, Serdes::with(Utf8, Utf8));
    let emails = builder.stream(EMAILS, Consumed::with(Utf8, Utf8));
    emails
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::of(Duration::from_millis(WINDOW_TICKS as u64)))
        .count(Materialized::named("email-windows"))
        .suppress(
            Suppressed::UntilWindowCloses,
            Serdes::with(WindowedSerde::new(Utf8), I64).named("email-finals"),
        )
        .to_stream()
        .map(|window, count| {
            let key = format!("{}@{}", window.key, window.window.start);
            (key, count.map(|count| count.to_string()))
        })
        .to(EMAIL_COUNTS, Produced::with(Utf8, Nullable(Utf8)));
    emails
        .group_by(|_, email| domain(email), Grouped::with(Utf8, Utf8).named("by-domain"))
        .aggregate(
            BTreeSet::new,
            |_, email: String, mut members: BTreeSet<String>| {
                members.insert(user_of(&email));
                members
            },
            Materialized::with(Json::<BTreeSet<String>>::new()).with_name(DOMAIN_MEMBERS),
        )
        .to(DOMAIN_MEMBERS, Produced::with(Utf8, Json::new()));
    let regions = builder.table(REGIONS, Consumed::with(Utf8, Utf8).store("regions"));
    users
        .left_join_on_foreign_key(
            &regions,
            |email| Some(domain(email)),
            |email, region| format!("{email}:{}", region.map_or("-", String::as_str)),
            ForeignKeyJoined::with(Utf8, Utf8, Utf8, Utf8, Utf8).named(USER_REGIONS),
        )
        .to(USER_REGIONS, Produced::with(Utf8, Utf8));
    builder.build().expect("the simulation's topology is valid")
}

/// The lookup's answer for a user.
fn tag_of(user: &str) -> String {
    format!("t{}", user.len() * 7 % 10)
}

fn domain(email: &str) -> String {
    email.rsplit('@').next().unwrap_or_default().to_string()
}

/// Emails are `<user>.<version>@<domain>`.
fn user_of(email: &str) -> String {
    email.split('.').next().unwrap_or_default().to_string()
}

/// One input record: a topic, a key and a value (`None` deletes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub topic: &'static str,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Random changes: dark mode flips most, emails change less, domains move
/// between regions, and rows are deleted and come back.
pub(super) struct Generator {
    users: usize,
    versions: BTreeMap<usize, u32>,
}

const DOMAINS: [&str; 3] = ["a.com", "b.org", "c.net"];

impl Generator {
    pub fn new(users: usize) -> Self {
        Generator {
            users,
            versions: BTreeMap::new(),
        }
    }

    pub fn next(&mut self, rng: &mut Rng) -> Change {
        let user = rng.below(self.users);
        let key = format!("u{user}");
        match rng.below(10) {
            0 if rng.chance(0.5) => Change {
                topic: REGIONS,
                key: DOMAINS[rng.below(DOMAINS.len())].to_string(),
                value: (!rng.chance(0.25)).then(|| format!("r{}", rng.below(3)).into_bytes()),
            },
            0..=4 => Change {
                topic: PREFERENCES,
                key,
                value: Some((if rng.chance(0.5) { "true" } else { "false" }).as_bytes().to_vec()),
            },
            5..=7 => {
                let version = self.versions.entry(user).or_default();
                *version += 1;
                let email = format!("u{user}.{version}@{}", DOMAINS[rng.below(DOMAINS.len())]);
                Change {
                    topic: USERS,
                    key,
                    value: Some(email.into_bytes()),
                }
            }
            8 => Change {
                topic: USERS,
                key,
                value: None,
            },
            _ => Change {
                topic: PREFERENCES,
                key,
                value: None,
            },
        }
    }
}

/// What the outputs and stores must hold once every change is processed.
#[derive(Debug, Default)]
pub(super) struct Reference {
    pub users: BTreeMap<String, String>,
    pub preferences: BTreeMap<String, bool>,
    regions: BTreeMap<String, String>,
    domain_members: BTreeMap<String, BTreeSet<String>>,
    /// Emails per user and window start, and each partition's latest
    /// email time.
    email_counts: BTreeMap<(String, i64), i64>,
    email_time: BTreeMap<i32, i64>,
}

impl Reference {
    pub fn apply(&mut self, change: &Change) {
        let text = change
            .value
            .as_ref()
            .map(|v| String::from_utf8(v.clone()).expect("UTF-8"));
        match (change.topic, text) {
            (USERS, Some(email)) => {
                self.domain_members
                    .entry(domain(&email))
                    .or_default()
                    .insert(change.key.clone());
                self.users.insert(change.key.clone(), email);
            }
            (USERS, None) => {
                self.users.remove(&change.key);
            }
            (REGIONS, Some(region)) => {
                self.regions.insert(change.key.clone(), region);
            }
            (REGIONS, None) => {
                self.regions.remove(&change.key);
            }
            (_, Some(dark)) => {
                self.preferences.insert(change.key.clone(), dark == "true");
            }
            (_, None) => {
                self.preferences.remove(&change.key);
            }
        }
    }

    pub fn profiles(&self) -> BTreeMap<String, String> {
        self.users
            .iter()
            .filter_map(|(user, email)| Some((user.clone(), format!("{email}:{}", self.preferences.get(user)?))))
            .collect()
    }

    pub fn user_regions(&self) -> BTreeMap<String, String> {
        self.users
            .iter()
            .map(|(user, email)| {
                let region = self.regions.get(&domain(email)).map_or("-", String::as_str);
                (user.clone(), format!("{email}:{region}"))
            })
            .collect()
    }

    pub fn tagged(&self) -> BTreeMap<String, String> {
        self.profiles()
            .into_iter()
            .map(|(user, profile)| {
                let tag = tag_of(&user);
                (user, format!("{profile}#{tag}"))
            })
            .collect()
    }

    /// An email of `user` written at `timestamp`.
    pub fn email_at(&mut self, user: &str, timestamp: i64) {
        let start = timestamp - timestamp % WINDOW_TICKS;
        *self.email_counts.entry((user.to_string(), start)).or_default() += 1;
        let partition = crate::partition::partition_for_key(user.as_bytes(), PARTITIONS);
        let time = self.email_time.entry(partition).or_insert(timestamp);
        *time = (*time).max(timestamp);
    }

    /// The count of every window closed by its partition's stream time.
    pub fn email_counts(&self) -> BTreeMap<String, String> {
        self.email_counts
            .iter()
            .filter(|((user, start), _)| {
                let partition = crate::partition::partition_for_key(user.as_bytes(), PARTITIONS);
                self.email_time
                    .get(&partition)
                    .is_some_and(|time| start + WINDOW_TICKS <= *time)
            })
            .map(|((user, start), count)| (format!("{user}@{start}"), count.to_string()))
            .collect()
    }

    pub fn domain_members(&self) -> BTreeMap<String, String> {
        self.domain_members
            .iter()
            .map(|(domain, members)| (domain.clone(), serde_json::to_string(members).expect("JSON")))
            .collect()
    }
}
