//! A CDC generator: Debezium change events (MySQL connector, JSON without
//! the schema wrapper) for the `users` and `preferences` tables, written to
//! Kafka as Kafka Connect writes them (murmur2 of the key bytes), with the
//! final state they imply kept for verification.
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

use crate::model::UserProfile;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir::WeirError;

/// The source table of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Users,
    Preferences,
}

/// One Kafka record of a Debezium topic: the key `{"user_id": n}` and the
/// change event, or `None` for the tombstone after a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct CdcRecord {
    pub table: Table,
    pub user_id: i64,
    pub value: Option<Value>,
}

impl CdcRecord {
    pub fn key(&self) -> Vec<u8> {
        format!(r#"{{"user_id":{}}}"#, self.user_id).into_bytes()
    }

    pub fn payload(&self) -> Option<Vec<u8>> {
        self.value
            .as_ref()
            .map(|v| serde_json::to_vec(v).expect("JSON values serialize"))
    }
}

/// The rows of both tables, changed at random, and the events that say so.
pub struct Generator {
    users: BTreeMap<i64, User>,
    next_user_id: i64,
    /// The binlog position, so that every event has its own.
    position: u64,
    rng: fastrand::Rng,
}

#[derive(Debug, Clone)]
struct User {
    email: String,
    name: String,
    dark_mode: Option<bool>,
    language: &'static str,
}

const LANGUAGES: [&str; 4] = ["en", "de", "fr", "pt"];
const DOMAINS: [&str; 4] = ["example.com", "mail.test", "corp.example", "inbox.test"];

impl Generator {
    /// A generator of `users` initial users, reproducible from `seed`.
    pub fn new(seed: u64, users: usize) -> Self {
        let mut generator = Generator {
            users: BTreeMap::new(),
            next_user_id: 1,
            position: 4,
            rng: fastrand::Rng::with_seed(seed),
        };
        for _ in 0..users {
            generator.add_user();
        }
        generator
    }

    /// `r` events for every current row: users first, then preferences.
    pub fn snapshot(&mut self) -> Vec<CdcRecord> {
        let users: Vec<(i64, User)> = self.users.iter().map(|(id, u)| (*id, u.clone())).collect();
        let mut records = Vec::with_capacity(users.len() * 2);
        for (id, user) in &users {
            let row = user_row(*id, user);
            records.push(self.event(Table::Users, *id, "r", None, Some(row)));
        }
        for (id, user) in &users {
            if let Some(row) = preferences_row(*id, user) {
                records.push(self.event(Table::Preferences, *id, "r", None, Some(row)));
            }
        }
        if let Some(last) = records.last_mut() {
            last.value.as_mut().expect("a snapshot event")["source"]["snapshot"] = json!("last");
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
                    let user = self.users[&id].clone();
                    records.push(self.event(Table::Users, id, "c", None, Some(user_row(id, &user))));
                    if let Some(row) = preferences_row(id, &user) {
                        records.push(self.event(Table::Preferences, id, "c", None, Some(row)));
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
        // Ids are dense enough that a random pick near a live one is cheap.
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
        let after = user.clone();
        let (op, before_row) = match preferences_row(id, &before) {
            Some(row) => ("u", Some(row)),
            None => ("c", None),
        };
        let event = self.event(Table::Preferences, id, op, before_row, preferences_row(id, &after));
        records.push(event);
    }

    fn change_email(&mut self, id: i64, records: &mut Vec<CdcRecord>) {
        let before = self.users[&id].clone();
        let domain = DOMAINS[self.rng.usize(0..DOMAINS.len())];
        let tag = self.rng.u16(..);
        let user = self.users.get_mut(&id).expect("a live user");
        user.email = format!("user{id}.{tag}@{domain}");
        let after = user.clone();
        let event = self.event(
            Table::Users,
            id,
            "u",
            Some(user_row(id, &before)),
            Some(user_row(id, &after)),
        );
        records.push(event);
    }

    fn delete_user(&mut self, id: i64, records: &mut Vec<CdcRecord>) {
        let user = self.users.remove(&id).expect("a live user");
        if let Some(row) = preferences_row(id, &user) {
            let event = self.event(Table::Preferences, id, "d", Some(row), None);
            records.push(event);
            records.push(tombstone(Table::Preferences, id));
        }
        let event = self.event(Table::Users, id, "d", Some(user_row(id, &user)), None);
        records.push(event);
        records.push(tombstone(Table::Users, id));
    }

    /// A change event as Debezium's MySQL connector writes it.
    fn event(
        &mut self,
        table: Table,
        user_id: i64,
        op: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> CdcRecord {
        self.position += 1;
        let now = now_ms();
        let value = json!({
            "before": before,
            "after": after,
            "source": {
                "version": "2.7.3.Final",
                "connector": "mysql",
                "name": "mysql",
                "ts_ms": now,
                "snapshot": if op == "r" { "true" } else { "false" },
                "db": "app",
                "table": table.name(),
                "server_id": 223344,
                "gtid": null,
                "file": "mysql-bin.000003",
                "pos": self.position * 180,
                "row": 0,
                "thread": 7,
            },
            "op": op,
            "ts_ms": now,
            "transaction": null,
        });
        CdcRecord {
            table,
            user_id,
            value: Some(value),
        }
    }
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Preferences => "preferences",
        }
    }
}

fn tombstone(table: Table, user_id: i64) -> CdcRecord {
    CdcRecord {
        table,
        user_id,
        value: None,
    }
}

fn user_row(id: i64, user: &User) -> Value {
    json!({
        "user_id": id,
        "email": user.email,
        "full_name": user.name,
        "created_at": 1_700_000_000_000i64 + id * 1000,
    })
}

/// `dark_mode` as MySQL's `TINYINT(1)` comes out of Debezium: `0` or `1`.
fn preferences_row(id: i64, user: &User) -> Option<Value> {
    let dark_mode = user.dark_mode?;
    Some(json!({
        "user_id": id,
        "dark_mode": i32::from(dark_mode),
        "language": user.language,
    }))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes CDC records to Kafka as Kafka Connect does, at most `rate`
/// records per second when one is given.
pub struct CdcWriter {
    producer: BaseProducer,
    users_topic: String,
    preferences_topic: String,
    written: u64,
}

impl CdcWriter {
    pub fn new(bootstrap_servers: &str, users_topic: &str, preferences_topic: &str) -> Result<Self, WeirError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            // Kafka Connect's Java producer: murmur2 of the key bytes.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "500000")
            .set("compression.type", "lz4")
            .create()
            .map_err(|e| WeirError::Kafka(format!("cannot create the CDC producer: {e}")))?;
        Ok(CdcWriter {
            producer,
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
            let key = record.key();
            let payload = record.payload();
            let mut pending = BaseRecord::<[u8], [u8]>::to(topic).key(&key);
            if let Some(payload) = &payload {
                pending = pending.payload(payload);
            }
            loop {
                match self.producer.send(pending) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        returned,
                    )) => {
                        self.producer.poll(Duration::from_millis(10));
                        pending = returned;
                    }
                    Err((error, _)) => return Err(WeirError::Kafka(format!("cannot write a CDC event: {error}"))),
                }
            }
            self.written += 1;
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits until every queued record is written.
    pub fn flush(&self) -> Result<(), WeirError> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| WeirError::Kafka(format!("cannot flush the CDC events: {e}")))
    }
}
