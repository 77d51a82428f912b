//! The stream thread's group consumer as the task manager sees it: the
//! rdkafka implementation of [`Group`], and the headers of consumed records.

use super::broker::{CommitRefused, Group, GroupIdentity, PartitionOffset};
use crate::error::WeirError;
use crate::record::{Header, InputHeaders};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

const CONSUMER_TIMEOUT: Duration = Duration::from_secs(30);

/// A group consumer, borrowed for one call of the task manager.
pub(crate) struct KafkaGroup<'a, C: ConsumerContext>(pub &'a BaseConsumer<C>);

impl<C: ConsumerContext> Group for KafkaGroup<'_, C> {
    fn committed(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Option<i64>>, WeirError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        let committed = self
            .0
            .committed_offsets(list, CONSUMER_TIMEOUT)
            .map_err(|e| WeirError::Kafka(format!("cannot read the committed offsets: {e}")))?;
        partitions
            .iter()
            .map(|(topic, partition)| {
                let element = committed.find_partition(topic, *partition).ok_or_else(|| {
                    WeirError::Kafka(format!(
                        "the committed offset of {topic}[{partition}] is missing from the answer"
                    ))
                })?;
                element.error().map_err(|e| {
                    WeirError::Kafka(format!("cannot read the committed offset of {topic}[{partition}]: {e}"))
                })?;
                match element.offset() {
                    Offset::Offset(offset) => Ok(Some(offset)),
                    Offset::Invalid => Ok(None),
                    other => Err(WeirError::Kafka(format!(
                        "the committed offset of {topic}[{partition}] is {other:?}, not an offset"
                    ))),
                }
            })
            .collect()
    }

    fn commit(&self, offsets: &[PartitionOffset], metadata: Option<&str>) -> Result<(), CommitRefused> {
        let list = partition_list(offsets, metadata).map_err(CommitRefused::Failed)?;
        match self.0.commit(&list, CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(KafkaError::ConsumerCommit(
                code @ (RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown),
            )) => Err(CommitRefused::NotNow(format!("{code:?}"))),
            Err(error) => Err(CommitRefused::Failed(WeirError::Kafka(format!(
                "cannot commit offsets: {error}"
            )))),
        }
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        !self.0.assignment_lost()
            && self
                .0
                .assignment()
                .is_ok_and(|assignment| assignment.find_partition(topic, partition).is_some())
    }

    fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), WeirError> {
        self.0
            .seek(topic, partition, Offset::Offset(offset), CONSUMER_TIMEOUT)
            .map_err(|e| {
                WeirError::Kafka(format!(
                    "cannot move the consumer to {topic}[{partition}]@{offset}: {e}"
                ))
            })
    }

    fn transaction_identity(&self) -> Result<GroupIdentity, WeirError> {
        let metadata = self
            .0
            .group_metadata()
            .ok_or_else(|| WeirError::Kafka("the consumer has no group metadata".into()))?;
        Ok(GroupIdentity(Box::new(metadata)))
    }

    fn fetched_end(&self, topic: &str, partition: i32) -> Option<i64> {
        let topic = std::ffi::CString::new(topic).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client handle lives as long as the consumer, the topic
        // is a NUL-terminated string that outlives the call, and librdkafka
        // only writes the two offsets. (rdkafka only offers the variant
        // that asks the broker.)
        let error = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.0.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    fn has_unread(&self, topic: &str, partition: i32, next: i64) -> bool {
        let Some(end) = self.fetched_end(topic, partition) else {
            return false;
        };
        let mut list = TopicPartitionList::with_capacity(1);
        list.add_partition(topic, partition);
        // SAFETY: the client handle lives as long as the consumer and the
        // list is a valid one that librdkafka fills in. (rdkafka's
        // `position` asks for every assigned partition.)
        let error = unsafe { rdkafka::bindings::rd_kafka_position(self.0.client().native_ptr(), list.ptr()) };
        if error != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return false;
        }
        // librdkafka's position moves past transaction markers, which are
        // never handed out; it has none before the first record.
        let position = list
            .find_partition(topic, partition)
            .and_then(|element| element.offset().to_raw())
            .filter(|position| *position >= 0)
            .unwrap_or(next);
        position < end
    }
}

/// `offsets` as an rdkafka list, each with `metadata`.
pub(crate) fn partition_list(
    offsets: &[PartitionOffset],
    metadata: Option<&str>,
) -> Result<TopicPartitionList, WeirError> {
    let mut list = TopicPartitionList::new();
    for offset in offsets {
        let mut element = list.add_partition(&offset.topic, offset.partition);
        element
            .set_offset(Offset::Offset(offset.offset))
            .map_err(|e| WeirError::Kafka(e.to_string()))?;
        if let Some(metadata) = metadata {
            element.set_metadata(metadata);
        }
    }
    Ok(list)
}

/// The partitions of an rdkafka list.
pub(crate) fn partitions_of(list: &TopicPartitionList) -> Vec<(Arc<str>, i32)> {
    list.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

/// The headers of a consumed record, parsed and copied only for a dead
/// letter (or by the test readers, which keep every record): librdkafka
/// parses headers on first access, a cost most records never need.
pub(crate) struct KafkaHeaders<'a>(pub &'a BorrowedMessage<'a>);

impl InputHeaders for KafkaHeaders<'_> {
    fn to_headers(&self) -> Vec<Header> {
        self.0
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| Header {
                        key: h.key.to_string(),
                        value: h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
