//! Foreign-key table-table joins: each row of the left table (key `K`,
//! value `V`) joined with the row of the right table (key `KO`, value `VO`)
//! whose key its value names, as Kafka Streams' KIP-213 does it.
//!
//! The two tables are partitioned by different keys, so the join crosses
//! partitions twice:
//!
//! 1. On the left, each change of a row sends *subscriptions*, keyed by
//!    foreign key, through the subscription topic (co-partitioned with the
//!    right table): subscribe to the new foreign key with a hash of the new
//!    value, unsubscribe from the old one when it changed, and, for a
//!    deleted row, unsubscribe and ask for an answer so that the result is
//!    deleted too. A row without a foreign key is answered on the left at
//!    once.
//! 2. On the right, a store keeps every subscription as `(foreign key,
//!    primary key) -> hash`. A subscription is answered with the right row
//!    of its foreign key; a change of a right row answers every subscriber
//!    of its key (a prefix scan of that store). Answers, keyed by primary
//!    key, go back through the response topic (co-partitioned with the
//!    left table).
//! 3. On the left, an answer is joined with the left row as it is now,
//!    and only if the hash it carries is the hash of that row: an answer to
//!    an older version of the row (the row changed again, or moved to
//!    another foreign key, while the answer was on its way) is stale and
//!    dropped; the answer to the newer version follows. The result is kept
//!    in a store, so it has exact old values and can be queried and joined.

use super::{Forwarder, GetterRef, Processor, ProcessorContext, TableEmitter, View};
use crate::error::{SerdeError, WeirError};
use crate::record::{Change, Record};
use crate::serde::{serialize_present, Encoded, Serde, SerdeRef};
use crate::state::TypedStore;
use std::rc::Rc;
use std::sync::Arc;

/// The foreign key a left value names, if any.
pub(crate) type ForeignKeyExtractor<V, KO> = Arc<dyn Fn(&V) -> Option<KO> + Send + Sync>;

/// Joins a left value with the right row of its foreign key, if any;
/// `None` when the join has no row for it (an inner join without a match).
pub(crate) type ForeignKeyJoiner<V, VO, R> = Arc<dyn Fn(&V, Option<&VO>) -> Option<R> + Send + Sync>;

/// A 128-bit hash of a left value's serialized form: what an answer
/// carries to say which version of the row it answers.
pub(crate) type ValueHash = u128;

/// Hashes a left value, `None` for a deleted row.
#[derive(Clone)]
pub(crate) struct ValueHasher<V> {
    pub serde: SerdeRef<V>,
    /// The name handed to the serde as the topic.
    pub topic: Arc<str>,
}

impl<V: 'static> ValueHasher<V> {
    fn hash(&self, value: Option<&V>) -> Result<Option<ValueHash>, WeirError> {
        let Some(value) = value else { return Ok(None) };
        let mut bytes = Vec::new();
        self.serde.serialize(&self.topic, value, &mut bytes)?;
        Ok(Some(xxhash_rust::xxh3::xxh3_128(&bytes)))
    }
}

/// What a left row asks of the right side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Instruction {
    /// Keep the subscription (with the row's new hash) and answer it.
    Subscribe,
    /// Drop the subscription; the row moved to another foreign key.
    Unsubscribe,
    /// Drop the subscription and answer with nothing: the row was deleted.
    UnsubscribeAndRespond,
}

/// A left row's message to the right side, keyed by foreign key.
#[derive(Debug, Clone)]
pub(crate) struct Subscription<K> {
    pub primary_key: K,
    pub instruction: Instruction,
    pub hash: Option<ValueHash>,
}

/// The right side's answer to a left row, keyed by its primary key: the
/// right row of its foreign key (if any), for the version of the left row
/// whose hash it carries.
#[derive(Debug, Clone)]
pub(crate) struct Response<VO> {
    pub hash: Option<ValueHash>,
    pub value: Option<VO>,
}

/// A left change's requests, keyed by the left row's primary key: to a
/// foreign key's side, or answered on the left because the row has none.
#[derive(Debug, Clone)]
pub(crate) enum Request<KO> {
    Foreign {
        foreign_key: KO,
        instruction: Instruction,
        hash: Option<ValueHash>,
    },
    NoForeignKey {
        hash: Option<ValueHash>,
    },
}

/// Turns each change of a left row into its requests.
pub(crate) struct SubscribeNode<V, KO> {
    pub foreign_key: ForeignKeyExtractor<V, KO>,
    pub hasher: ValueHasher<V>,
}

impl<V: 'static, KO: PartialEq> SubscribeNode<V, KO> {
    fn requests(&self, change: &Change<V>) -> Result<Vec<Request<KO>>, WeirError> {
        let new_key = change.new.as_ref().and_then(|v| (self.foreign_key)(v));
        let old_key = change.old.as_ref().and_then(|v| (self.foreign_key)(v));
        let hash = self.hasher.hash(change.new.as_ref())?;
        let mut requests = Vec::with_capacity(2);
        if change.new.is_none() {
            match old_key {
                Some(foreign_key) => requests.push(Request::Foreign {
                    foreign_key,
                    instruction: Instruction::UnsubscribeAndRespond,
                    hash: None,
                }),
                None if change.old.is_some() => requests.push(Request::NoForeignKey { hash: None }),
                None => {}
            }
            return Ok(requests);
        }
        if let Some(old_key) = old_key.filter(|old| new_key.as_ref() != Some(old)) {
            requests.push(Request::Foreign {
                foreign_key: old_key,
                instruction: Instruction::Unsubscribe,
                hash: None,
            });
        }
        requests.push(match new_key {
            Some(foreign_key) => Request::Foreign {
                foreign_key,
                instruction: Instruction::Subscribe,
                hash,
            },
            None => Request::NoForeignKey { hash },
        });
        Ok(requests)
    }
}

/// The left side's node: a change becomes requests, still keyed by primary
/// key; [`ToSubscriptionNode`] and [`NoForeignKeyNode`] take them apart.
pub(crate) struct LeftChangeNode<K, V, KO> {
    pub subscribe: SubscribeNode<V, KO>,
    pub out: Forwarder<K, Request<KO>>,
}

impl<K: Clone + 'static, V: 'static, KO: Clone + PartialEq + 'static> Processor<K, Change<V>>
    for LeftChangeNode<K, V, KO>
{
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Change<V>>) -> Result<(), WeirError> {
        for request in self.subscribe.requests(&record.value)? {
            self.out
                .forward(ctx, Record::new(record.key.clone(), request, record.timestamp))?;
        }
        Ok(())
    }
}

/// Re-keys the requests for a foreign key's side by that key.
pub(crate) struct ToSubscriptionNode<K, KO> {
    pub out: Forwarder<KO, Subscription<K>>,
}

impl<K: Clone + 'static, KO: Clone + 'static> Processor<K, Request<KO>> for ToSubscriptionNode<K, KO> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Request<KO>>) -> Result<(), WeirError> {
        let Request::Foreign {
            foreign_key,
            instruction,
            hash,
        } = record.value
        else {
            return Ok(());
        };
        let subscription = Subscription {
            primary_key: record.key,
            instruction,
            hash,
        };
        self.out
            .forward(ctx, Record::new(foreign_key, subscription, record.timestamp))
    }
}

/// Answers, on the left, the rows that name no foreign key.
pub(crate) struct NoForeignKeyNode<K, VO> {
    pub out: Forwarder<K, Response<VO>>,
}

impl<K: Clone + 'static, KO, VO: Clone + 'static> Processor<K, Request<KO>> for NoForeignKeyNode<K, VO> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Request<KO>>) -> Result<(), WeirError> {
        let Request::NoForeignKey { hash } = record.value else {
            return Ok(());
        };
        let response = Response { hash, value: None };
        self.out
            .forward(ctx, Record::new(record.key, response, record.timestamp))
    }
}

/// A subscription's key in the right side's store: the foreign key first,
/// so that one prefix scan finds every subscriber of a right row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionKey<KO, K> {
    pub foreign_key: KO,
    pub primary_key: K,
}

/// The right side's node for subscriptions: keeps them and answers them.
pub(crate) struct SubscriptionNode<K, KO, VO> {
    pub subscriptions: Rc<TypedStore<SubscriptionKey<KO, K>, ValueHash>>,
    pub right: GetterRef<KO, VO>,
    pub out: Forwarder<K, Response<VO>>,
}

impl<K: Clone + 'static, KO: Clone + 'static, VO: Clone + 'static> Processor<KO, Subscription<K>>
    for SubscriptionNode<K, KO, VO>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: Record<KO, Subscription<K>>,
    ) -> Result<(), WeirError> {
        let Record {
            key: foreign_key,
            value: subscription,
            timestamp,
        } = record;
        let key = SubscriptionKey {
            foreign_key,
            primary_key: subscription.primary_key,
        };
        let response = match (subscription.instruction, subscription.hash) {
            (Instruction::Subscribe, Some(hash)) => {
                self.subscriptions.put(ctx, &key, Some(&hash))?;
                Response {
                    hash: Some(hash),
                    // What the right row's downstream last saw: a deferred
                    // newer row answers its subscribers when it is released.
                    value: self.right.get(&key.foreign_key, View::Forwarded)?,
                }
            }
            (Instruction::Subscribe, None) => {
                return Err(WeirError::Other(
                    "a foreign-key join subscription without the row's hash".into(),
                ))
            }
            (Instruction::Unsubscribe, _) => return self.subscriptions.put(ctx, &key, None),
            (Instruction::UnsubscribeAndRespond, _) => {
                self.subscriptions.put(ctx, &key, None)?;
                Response {
                    hash: None,
                    value: None,
                }
            }
        };
        self.out.forward(ctx, Record::new(key.primary_key, response, timestamp))
    }
}

/// The right side's node for its own changes: answers every subscriber of
/// the changed row.
pub(crate) struct RightChangeNode<K, KO, VO> {
    pub subscriptions: Rc<TypedStore<SubscriptionKey<KO, K>, ValueHash>>,
    pub key_serdes: SubscriptionKeySerde<KO, K>,
    pub out: Forwarder<K, Response<VO>>,
}

impl<K: Clone + 'static, KO: Clone + 'static, VO: Clone + 'static> Processor<KO, Change<VO>>
    for RightChangeNode<K, KO, VO>
{
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<KO, Change<VO>>) -> Result<(), WeirError> {
        let mut prefix = Vec::new();
        self.key_serdes
            .write_foreign_key(self.subscriptions.serde_topic(), &record.key, &mut prefix)?;
        let subscribers = self.subscriptions.entries_with_prefix(&prefix)?;
        for (key, hash) in subscribers {
            let response = Response {
                hash: Some(hash),
                value: record.value.new.clone(),
            };
            self.out
                .forward(ctx, Record::new(key.primary_key, response, record.timestamp))?;
        }
        Ok(())
    }
}

/// The left side's node for answers: joins the ones that answer the left
/// row as it is now and keeps the result.
pub(crate) struct ResolveNode<K, V, VO, R> {
    pub left: GetterRef<K, V>,
    pub hasher: ValueHasher<V>,
    pub joiner: ForeignKeyJoiner<V, VO, R>,
    pub result: Rc<TableEmitter<K, R, R>>,
    /// Answers dropped because the left row changed since they were asked for.
    pub stale: metrics::Counter,
}

impl<K: Clone + 'static, V: 'static, VO, R: Clone + 'static> Processor<K, Response<VO>> for ResolveNode<K, V, VO, R> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, Response<VO>>) -> Result<(), WeirError> {
        let Record {
            key, value: response, ..
        } = record;
        // The row as its downstream last saw it: the version whose
        // subscription was sent.
        let row = self.left.get(&key, View::Forwarded)?;
        if self.hasher.hash(row.as_ref())? != response.hash {
            self.stale.increment(1);
            return Ok(());
        }
        let new = row.and_then(|row| (self.joiner)(&row, response.value.as_ref()));
        let old = self.result.store.get(&key, View::Latest)?;
        if new.is_none() && old.is_none() && !ctx.republishing {
            return Ok(());
        }
        self.result.emit(ctx, key, new, old)
    }
}

/// What a key inside a foreign-key join record is called in errors: it
/// must be there.
const JOIN_KEY: &str = "a key of a foreign-key join";

const NO_HASH: u8 = 0;
const HASH: u8 = 1;

fn write_hash(hash: Option<ValueHash>, out: &mut Vec<u8>) {
    match hash {
        Some(hash) => {
            out.push(HASH);
            out.extend_from_slice(&hash.to_be_bytes());
        }
        None => out.push(NO_HASH),
    }
}

fn read_hash<'a>(topic: &str, bytes: &'a [u8]) -> Result<(Option<ValueHash>, &'a [u8]), SerdeError> {
    let truncated = || SerdeError::deserialize(topic, "truncated foreign-key join record");
    match bytes.split_first().ok_or_else(truncated)? {
        (&NO_HASH, rest) => Ok((None, rest)),
        (&HASH, rest) => {
            let hash: [u8; 16] = rest.get(..16).ok_or_else(truncated)?.try_into().expect("16 bytes");
            Ok((Some(u128::from_be_bytes(hash)), &rest[16..]))
        }
        (other, _) => Err(SerdeError::deserialize(
            topic,
            format!("unknown hash marker {other} in a foreign-key join record"),
        )),
    }
}

/// [`Subscription`] on the wire: the instruction, the hash, then the
/// primary key.
pub(crate) struct SubscriptionSerde<K> {
    pub primary_key: SerdeRef<K>,
}

impl<K: 'static> Serde<Subscription<K>> for SubscriptionSerde<K> {
    fn serialize(&self, topic: &str, value: &Subscription<K>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        out.push(match value.instruction {
            Instruction::Subscribe => 0,
            Instruction::Unsubscribe => 1,
            Instruction::UnsubscribeAndRespond => 2,
        });
        write_hash(value.hash, out);
        serialize_present(&*self.primary_key, topic, &value.primary_key, out, JOIN_KEY)?;
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Subscription<K>, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::deserialize(topic, "null subscription"))?;
        let (&instruction, rest) = bytes
            .split_first()
            .ok_or_else(|| SerdeError::deserialize(topic, "empty subscription"))?;
        let instruction = match instruction {
            0 => Instruction::Subscribe,
            1 => Instruction::Unsubscribe,
            2 => Instruction::UnsubscribeAndRespond,
            other => {
                return Err(SerdeError::deserialize(
                    topic,
                    format!("unknown subscription instruction {other}"),
                ))
            }
        };
        let (hash, rest) = read_hash(topic, rest)?;
        Ok(Subscription {
            primary_key: self.primary_key.deserialize(topic, Some(rest))?,
            instruction,
            hash,
        })
    }
}

/// [`Response`] on the wire: the hash, then the right row if any.
pub(crate) struct ResponseSerde<VO> {
    pub value: SerdeRef<VO>,
}

impl<VO: 'static> Serde<Response<VO>> for ResponseSerde<VO> {
    fn serialize(&self, topic: &str, response: &Response<VO>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        write_hash(response.hash, out);
        if let Some(value) = &response.value {
            let marker = out.len();
            out.push(1);
            if self.value.serialize(topic, value, out)? == Encoded::Null {
                out[marker] = 0;
            }
        } else {
            out.push(0);
        }
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Response<VO>, SerdeError> {
        let bytes = bytes.ok_or_else(|| SerdeError::deserialize(topic, "null response"))?;
        let (hash, rest) = read_hash(topic, bytes)?;
        let value = match rest.split_first() {
            Some((0, _)) => None,
            Some((1, value)) => Some(self.value.deserialize(topic, Some(value))?),
            _ => return Err(SerdeError::deserialize(topic, "a response without its value marker")),
        };
        Ok(Response { hash, value })
    }
}

/// [`SubscriptionKey`] in the store: the foreign key's length (4 bytes, big
/// endian) and bytes, then the primary key's bytes.
pub(crate) struct SubscriptionKeySerde<KO, K> {
    pub foreign_key: SerdeRef<KO>,
    pub primary_key: SerdeRef<K>,
}

impl<KO, K> Clone for SubscriptionKeySerde<KO, K> {
    fn clone(&self) -> Self {
        SubscriptionKeySerde {
            foreign_key: self.foreign_key.clone(),
            primary_key: self.primary_key.clone(),
        }
    }
}

impl<KO: 'static, K: 'static> SubscriptionKeySerde<KO, K> {
    /// Writes the part of a key that every subscription of `foreign_key`
    /// starts with.
    pub(crate) fn write_foreign_key(&self, topic: &str, foreign_key: &KO, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        serialize_present(&*self.foreign_key, topic, foreign_key, out, JOIN_KEY)?;
        let len =
            u32::try_from(out.len() - at - 4).map_err(|_| SerdeError::serialize(topic, "key larger than 4 GiB"))?;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

impl<KO: 'static, K: 'static> Serde<SubscriptionKey<KO, K>> for SubscriptionKeySerde<KO, K> {
    fn serialize(&self, topic: &str, key: &SubscriptionKey<KO, K>, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        self.write_foreign_key(topic, &key.foreign_key, out)?;
        serialize_present(&*self.primary_key, topic, &key.primary_key, out, JOIN_KEY)?;
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<SubscriptionKey<KO, K>, SerdeError> {
        let truncated = || SerdeError::deserialize(topic, "truncated subscription key");
        let bytes = bytes.ok_or_else(truncated)?;
        let len: [u8; 4] = bytes.get(..4).ok_or_else(truncated)?.try_into().expect("4 bytes");
        let len = u32::from_be_bytes(len) as usize;
        let foreign_key = bytes.get(4..4 + len).ok_or_else(truncated)?;
        Ok(SubscriptionKey {
            foreign_key: self.foreign_key.deserialize(topic, Some(foreign_key))?,
            primary_key: self.primary_key.deserialize(topic, Some(&bytes[4 + len..]))?,
        })
    }
}

/// A subscription's hash in the store: 16 bytes, big endian.
pub(crate) struct HashSerde;

impl Serde<ValueHash> for HashSerde {
    fn serialize(&self, _: &str, hash: &ValueHash, out: &mut Vec<u8>) -> Result<Encoded, SerdeError> {
        out.extend_from_slice(&hash.to_be_bytes());
        Ok(Encoded::Bytes)
    }

    fn deserialize(&self, topic: &str, bytes: Option<&[u8]>) -> Result<ValueHash, SerdeError> {
        let bytes: [u8; 16] = bytes
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SerdeError::deserialize(topic, "a subscription hash is 16 bytes"))?;
        Ok(u128::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::{Utf8, I64};

    fn subscribe_node() -> SubscribeNode<String, String> {
        SubscribeNode {
            // A value "fk:rest" names the foreign key "fk"; one without ':' none.
            foreign_key: Arc::new(|v: &String| v.split_once(':').map(|(fk, _)| fk.to_string())),
            hasher: ValueHasher {
                serde: Arc::new(Utf8),
                topic: "t".into(),
            },
        }
    }

    fn kinds(requests: &[Request<String>]) -> Vec<String> {
        requests
            .iter()
            .map(|r| match r {
                Request::Foreign {
                    foreign_key,
                    instruction,
                    hash,
                } => format!("{instruction:?} {foreign_key} {}", hash.is_some()),
                Request::NoForeignKey { hash } => format!("none {}", hash.is_some()),
            })
            .collect()
    }

    #[test]
    fn a_change_asks_each_foreign_key_what_it_must() {
        let node = subscribe_node();
        let change = |new: Option<&str>, old: Option<&str>| {
            kinds(
                &node
                    .requests(&Change::new(new.map(str::to_string), old.map(str::to_string)))
                    .unwrap(),
            )
        };
        assert_eq!(change(Some("a:1"), None), ["Subscribe a true"]);
        assert_eq!(change(Some("a:2"), Some("a:1")), ["Subscribe a true"]);
        assert_eq!(
            change(Some("b:1"), Some("a:1")),
            ["Unsubscribe a false", "Subscribe b true"]
        );
        assert_eq!(change(None, Some("a:1")), ["UnsubscribeAndRespond a false"]);
        assert_eq!(change(Some("plain"), Some("a:1")), ["Unsubscribe a false", "none true"]);
        assert_eq!(change(Some("a:1"), Some("plain")), ["Subscribe a true"]);
        assert_eq!(change(None, Some("plain")), ["none false"]);
        assert_eq!(change(None, None), Vec::<String>::new());
    }

    #[test]
    fn wire_records_read_back_as_written() {
        let subscriptions = SubscriptionSerde {
            primary_key: Arc::new(I64) as SerdeRef<i64>,
        };
        for (instruction, hash) in [
            (Instruction::Subscribe, Some(u128::MAX - 7)),
            (Instruction::Unsubscribe, None),
            (Instruction::UnsubscribeAndRespond, None),
        ] {
            let written = Subscription {
                primary_key: -42i64,
                instruction,
                hash,
            };
            let bytes = subscriptions.to_bytes("t", &written).unwrap();
            let read = subscriptions.deserialize("t", bytes.as_deref()).unwrap();
            assert_eq!(
                (read.primary_key, read.instruction, read.hash),
                (-42, instruction, hash)
            );
        }
        let responses = ResponseSerde {
            value: Arc::new(Utf8) as SerdeRef<String>,
        };
        for (hash, value) in [
            (Some(1u128), Some("row".to_string())),
            (None, None),
            (Some(2), Some(String::new())),
        ] {
            let bytes = responses
                .to_bytes(
                    "t",
                    &Response {
                        hash,
                        value: value.clone(),
                    },
                )
                .unwrap();
            let read = responses.deserialize("t", bytes.as_deref()).unwrap();
            assert_eq!((read.hash, read.value), (hash, value));
        }
        assert!(responses.deserialize("t", Some(&[7])).is_err());
    }

    #[test]
    fn a_foreign_keys_subscriptions_share_a_prefix_no_other_key_has() {
        let keys = SubscriptionKeySerde {
            foreign_key: Arc::new(Utf8) as SerdeRef<String>,
            primary_key: Arc::new(Utf8) as SerdeRef<String>,
        };
        let key = |fk: &str, pk: &str| {
            keys.to_bytes(
                "t",
                &SubscriptionKey {
                    foreign_key: fk.to_string(),
                    primary_key: pk.to_string(),
                },
            )
            .unwrap()
            .unwrap()
        };
        let mut prefix = Vec::new();
        keys.write_foreign_key("t", &"ab".to_string(), &mut prefix).unwrap();
        assert!(key("ab", "x").starts_with(&prefix));
        assert!(key("ab", "").starts_with(&prefix));
        // "a" + "bx" and "abx" + "" concatenate alike; the length keeps them apart.
        assert!(!key("a", "bx").starts_with(&prefix));
        assert!(!key("abx", "").starts_with(&prefix));
        let read = keys.deserialize("t", Some(&key("ab", "x"))).unwrap();
        assert_eq!((read.foreign_key.as_str(), read.primary_key.as_str()), ("ab", "x"));
    }
}
