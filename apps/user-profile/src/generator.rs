//! A CDC generator: Debezium change events (MySQL connector, JSON without
//! the schema wrapper or Avro, written by [`weir::testing::debezium`]) for the
//! `users` and `preferences` tables, written to Kafka as Kafka Connect
//! writes them (murmur2 of the key bytes), with the final state they imply
//! kept for verification.
//!
//! A run is a snapshot (`r` events for every row; one user in ten has no
//! preferences row) followed by a stream of changes: `dark_mode` toggles
//! often, e-mails change rarely, users come and go (a deletion is a `d`
//! event and a tombstone for the user and for their preferences, as a
//! cascading delete produces).
//!
//! ```
//! use user_profile::generator::{Generator, Table};
//! let mut generator = Generator::new(7, 100);
//! let snapshot = generator.snapshot();
//! assert_eq!(snapshot.iter().filter(|e| e.table == Table::Users).count(), 100);
//! let changes = generator.changes(1_000);
//! assert!(changes.len() >= 1_000);
//! let expected = generator.expected_profiles();
//! assert!(expected.len() > 50);
//! ```

use crate::model::{GodObject, IdMapping, UserProfile};
use crate::pipeline::Format;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weir::cdc::Op;
use weir::testing::debezium::{Column, ColumnType, Debezium};
use weir::testing::kafka::TestProducer;
use weir::WeirError;

/// The source table of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Users,
    Preferences,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Preferences => "preferences",
        }
    }
}

/// One Kafka record of a Debezium topic: the key `{"user_id": n}` and the
/// change event, or `None` for the tombstone after a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcRecord {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The rows of both tables, changed at random, and the events that say so.
pub struct Generator {
    users: BTreeMap<i64, User>,
    next_user_id: i64,
    rng: fastrand::Rng,
    users_table: Debezium,
    preferences_table: Debezium,
}

/// A user as the generator keeps it: both rows in one.
#[derive(Debug, Clone)]
struct User {
    email: String,
    name: String,
    /// `None`: no preferences row.
    dark_mode: Option<bool>,
    language: &'static str,
}

/// A `users` row as the connector reads it.
#[derive(Serialize)]
struct UserColumns<'a> {
    user_id: i64,
    email: &'a str,
    full_name: &'a str,
}

impl<'a> UserColumns<'a> {
    fn of(user_id: i64, user: &'a User) -> Self {
        UserColumns {
            user_id,
            email: &user.email,
            full_name: &user.name,
        }
    }
}

/// A `preferences` row: `dark_mode` is a `TINYINT(1)`, so `0` or `1`.
#[derive(Serialize)]
struct PreferencesColumns {
    user_id: i64,
    dark_mode: i32,
    language: &'static str,
}

const LANGUAGES: [&str; 4] = ["en", "de", "fr", "pt"];
const DOMAINS: [&str; 4] = ["example.com", "mail.test", "corp.example", "inbox.test"];

impl Generator {
    /// A generator of `users` initial users, reproducible from `seed`,
    /// writing JSON.
    pub fn new(seed: u64, users: usize) -> Self {
        Self::with_format(seed, users, &Format::Json)
    }

    /// A generator whose events are in `format` (for Avro, as Confluent's
    /// `AvroConverter` writes them, their schemas registered).
    pub fn with_format(seed: u64, users: usize, format: &Format) -> Self {
        let in_format = |table: Debezium| match format {
            Format::Json => table,
            Format::Avro(registry) => table.avro(registry),
        };
        let mut generator = Generator {
            users: BTreeMap::new(),
            next_user_id: 1,
            rng: fastrand::Rng::with_seed(seed),
            users_table: in_format(
                Debezium::mysql("app", "users")
                    .key_column(Column::new("user_id", ColumnType::Int64))
                    .column(Column::new("email", ColumnType::String))
                    .column(Column::new("full_name", ColumnType::String)),
            ),
            preferences_table: in_format(
                Debezium::mysql("app", "preferences")
                    .key_column(Column::new("user_id", ColumnType::Int64))
                    .column(Column::new("dark_mode", ColumnType::Int32))
                    .column(Column::new("language", ColumnType::String)),
            ),
        };
        for _ in 0..users {
            generator.add_user();
        }
        generator
    }

    /// `r` events for every current row: users first, then preferences.
    pub fn snapshot(&mut self) -> Vec<CdcRecord> {
        let mut records = Vec::with_capacity(self.users.len() * 2);
        for (id, user) in &self.users {
            records.push(self.user_event(Op::Read, *id, None, Some(user)));
        }
        for (id, user) in &self.users {
            if user.dark_mode.is_some() {
                records.push(self.preferences_event(Op::Read, *id, None, Some(user)));
            }
        }
        records
    }

    /// At least `count` records of changes (a deletion brings its tombstones
    /// and its preferences' events along).
    pub fn changes(&mut self, count: usize) -> Vec<CdcRecord> {
        let mut records = Vec::with_capacity(count + 8);
        while records.len() < count {
            let roll = self.rng.u32(0..100);
            match self.random_user() {
                Some(id) if roll < 60 => self.toggle_dark_mode(id, &mut records),
                Some(id) if roll < 80 => self.change_email(id, &mut records),
                Some(id) if roll < 90 => self.delete_user(id, &mut records),
                _ => {
                    let id = self.add_user();
                    let user = &self.users[&id];
                    records.push(self.user_event(Op::Create, id, None, Some(user)));
                    if user.dark_mode.is_some() {
                        records.push(self.preferences_event(Op::Create, id, None, Some(user)));
                    }
                }
            }
        }
        records
    }

    /// The `user-profile` topic's compacted view that the events imply.
    pub fn expected_profiles(&self) -> BTreeMap<i64, UserProfile> {
        self.users
            .iter()
            .map(|(id, user)| {
                let profile = UserProfile {
                    user_id: *id,
                    email: user.email.clone(),
                    dark_mode: user.dark_mode,
                };
                (*id, profile)
            })
            .collect()
    }

    /// The `user-god-object` topic's compacted view that the events imply,
    /// with `new_user_id(user_id)` as the ID-mapping service's answer.
    pub fn expected_god_objects(&self, new_user_id: impl Fn(i64) -> String) -> BTreeMap<i64, GodObject> {
        self.expected_profiles()
            .into_iter()
            .map(|(id, profile)| {
                let mapping = IdMapping {
                    user_id: id,
                    new_user_id: new_user_id(id),
                };
                (id, GodObject::new(profile, mapping))
            })
            .collect()
    }

    fn add_user(&mut self) -> i64 {
        let id = self.next_user_id;
        self.next_user_id += 1;
        let user = User {
            email: format!("user{id}@{}", DOMAINS[self.rng.usize(0..DOMAINS.len())]),
            name: format!("User {id}"),
            dark_mode: (self.rng.u32(0..10) != 0).then(|| self.rng.bool()),
            language: LANGUAGES[self.rng.usize(0..LANGUAGES.len())],
        };
        self.users.insert(id, user);
        id
    }

    fn random_user(&mut self) -> Option<i64> {
        if self.users.is_empty() {
            return None;
        }
        // Ids are dense enough that the next live one after a random id is
        // close to a uniform pick.
        let probe = self.rng.i64(1..self.next_user_id);
        self.users
            .range(probe..)
            .next()
            .or_else(|| self.users.iter().next())
            .map(|(id, _)| *id)
    }

    fn toggle_dark_mode(&mut self, id: i64, records: &mut Vec<CdcRecord>) {
        let before = self.users[&id].clone();
        let user = self.users.get_mut(&id).expect("a live user");
        user.dark_mode = Some(!user.dark_mode.unwrap_or(true));
        let (op, before) = match before.dark_mode {
            Some(_) => (Op::Update, Some(&before)),
            None => (Op::Create, None),
        };
        records.push(self.preferences_event(op, id, before, Some(&self.users[&id])));
    }

    fn change_email(&mut self, id: i64, records: &mut Vec<CdcRecord>) {
        let before = self.users[&id].clone();
        let domain = DOMAINS[self.rng.usize(0..DOMAINS.len())];
        let tag = self.rng.u16(..);
        self.users.get_mut(&id).expect("a live user").email = format!("user{id}.{tag}@{domain}");
        records.push(self.user_event(Op::Update, id, Some(&before), Some(&self.users[&id])));
    }

    fn delete_user(&mut self, id: i64, records: &mut Vec<CdcRecord>) {
        let user = self.users.remove(&id).expect("a live user");
        if user.dark_mode.is_some() {
            records.push(self.preferences_event(Op::Delete, id, Some(&user), None));
            records.push(tombstone(&self.preferences_table, Table::Preferences, id));
        }
        records.push(self.user_event(Op::Delete, id, Some(&user), None));
        records.push(tombstone(&self.users_table, Table::Users, id));
    }

    fn user_event(&self, op: Op, id: i64, before: Option<&User>, after: Option<&User>) -> CdcRecord {
        let columns = |user| UserColumns::of(id, user);
        let (before, after) = (before.map(columns), after.map(columns));
        CdcRecord {
            table: Table::Users,
            key: self.users_table.key(&id),
            value: Some(self.users_table.event(op, before.as_ref(), after.as_ref())),
        }
    }

    /// An event of the user's preferences row (`before` and `after`, when
    /// given, have one).
    fn preferences_event(&self, op: Op, id: i64, before: Option<&User>, after: Option<&User>) -> CdcRecord {
        let columns = |user: &User| PreferencesColumns {
            user_id: id,
            dark_mode: i32::from(user.dark_mode.unwrap_or_default()),
            language: user.language,
        };
        let (before, after) = (before.map(columns), after.map(columns));
        CdcRecord {
            table: Table::Preferences,
            key: self.preferences_table.key(&id),
            value: Some(self.preferences_table.event(op, before.as_ref(), after.as_ref())),
        }
    }
}

fn tombstone(writer: &Debezium, table: Table, id: i64) -> CdcRecord {
    CdcRecord {
        table,
        key: writer.key(&id),
        value: None,
    }
}

/// Writes CDC records to Kafka as Kafka Connect does (murmur2 of the key
/// bytes, through [`TestProducer`]), at most `rate` records per second when
/// one is given.
pub struct CdcWriter {
    producer: TestProducer,
    users_topic: String,
    preferences_topic: String,
    written: u64,
}

/// Change records generated per chunk, so that a large run never holds all
/// its events in memory.
const CHUNK: usize = 50_000;

/// How often, in records written, a writer reports its progress.
pub const PROGRESS_EVERY: u64 = 1_000;

impl CdcWriter {
    pub fn new(bootstrap_servers: &str, users_topic: &str, preferences_topic: &str) -> Result<Self, WeirError> {
        Self::with_settings(bootstrap_servers, users_topic, preferences_topic, &[])
    }

    /// A writer whose producer has further librdkafka `settings`.
    pub fn with_settings(
        bootstrap_servers: &str,
        users_topic: &str,
        preferences_topic: &str,
        settings: &[(&str, &str)],
    ) -> Result<Self, WeirError> {
        let mut all = vec![("queue.buffering.max.messages", "500000"), ("compression.type", "lz4")];
        all.extend_from_slice(settings);
        Ok(CdcWriter {
            producer: TestProducer::with_settings(bootstrap_servers, &all)?,
            users_topic: users_topic.to_string(),
            preferences_topic: preferences_topic.to_string(),
            written: 0,
        })
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Queues `records`, pacing them to `rate` records per second if given.
    pub fn write(&mut self, records: &[CdcRecord], rate: Option<u64>) -> Result<(), WeirError> {
        self.write_reporting(records, rate, &mut |_| {})
    }

    /// [`CdcWriter::write`], telling `progress` the count written so far
    /// every [`PROGRESS_EVERY`] records.
    fn write_reporting(
        &mut self,
        records: &[CdcRecord],
        rate: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), WeirError> {
        let started = Instant::now();
        for (sent, record) in records.iter().enumerate() {
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let topic = match record.table {
                Table::Users => &self.users_topic,
                Table::Preferences => &self.preferences_topic,
            };
            self.producer
                .send_raw(topic, None, Some(&record.key), record.value.as_deref())?;
            self.written += 1;
            if self.written.is_multiple_of(PROGRESS_EVERY) {
                progress(self.written);
            }
        }
        Ok(())
    }

    /// Writes `generator`'s snapshot, then its changes until `events` records
    /// in all, a chunk at a time; `progress` gets the count written so far
    /// every [`PROGRESS_EVERY`] records.
    pub fn write_history(
        &mut self,
        generator: &mut Generator,
        events: usize,
        rate: Option<u64>,
        mut progress: impl FnMut(u64),
    ) -> Result<(), WeirError> {
        let snapshot = generator.snapshot();
        self.write_reporting(&snapshot, rate, &mut progress)?;
        let mut remaining = events.saturating_sub(snapshot.len());
        drop(snapshot);
        while remaining > 0 {
            let chunk = generator.changes(remaining.min(CHUNK));
            remaining = remaining.saturating_sub(chunk.len());
            self.write_reporting(&chunk, rate, &mut progress)?;
        }
        Ok(())
    }

    /// Waits until every queued record is written.
    pub fn flush(&self) -> Result<(), WeirError> {
        self.producer.flush()
    }
}
