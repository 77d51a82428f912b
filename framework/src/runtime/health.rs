//! What the operations endpoint's readiness says besides the instance's
//! state: client errors that keep a running instance from doing its work
//! (the brokers refuse its authorization, a topic is gone, no broker can be
//! reached) and that librdkafka would otherwise only log while it retries
//! for ever. Also counts offset resets, which librdkafka only logs.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reported problem keeps the instance not ready: librdkafka
/// reports a persistent one again on each retry, well within this.
const PROBLEM_WINDOW: Duration = Duration::from_secs(10);

/// The last problem a client of the instance reported, and when.
#[derive(Debug, Default)]
pub(crate) struct Problems(Mutex<Option<(Instant, String)>>);

impl Problems {
    /// Records `error` if it is one that keeps the instance from working.
    pub(crate) fn client_error(&self, client: &str, error: &KafkaError) {
        if let Some(code) = error.rdkafka_error_code() {
            if keeps_from_working(code) {
                *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), format!("{client}: {error}")));
            }
        }
    }

    /// The problem reported within the last [`PROBLEM_WINDOW`], if any.
    pub(crate) fn current(&self) -> Option<String> {
        let problem = self.0.lock().unwrap_or_else(|p| p.into_inner());
        problem
            .as_ref()
            .filter(|(at, _)| at.elapsed() < PROBLEM_WINDOW)
            .map(|(_, reason)| reason.clone())
    }
}

/// Errors that do not go away by themselves.
fn keeps_from_working(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::AllBrokersDown
    )
}

/// Counts and logs an offset reset that librdkafka reports (facility
/// `OFFSET`: `[thrd:…]: <topic> [<partition>]: offset reset (at offset
/// <n>, …) to … offset <m> …`): the partition was read from elsewhere than
/// where it stood, which skips or repeats records. Returns whether the
/// message was one.
pub(crate) fn count_offset_reset(facility: &str, message: &str) -> bool {
    if facility != "OFFSET" || !message.contains("offset reset") {
        return false;
    }
    let text = match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(rest, |(_, text)| text),
        None => message,
    };
    let Some((topic, rest)) = text.split_once(" [") else {
        return false;
    };
    let partition = rest.split(']').next().unwrap_or_default();
    tracing::warn!(topic, partition, "{text}");
    metrics::counter!(
        crate::metrics::OFFSET_RESETS,
        "topic" => topic.to_string(),
        "partition" => partition.to_string()
    )
    .increment(1);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_failures_make_a_problem_and_transient_errors_do_not() {
        let problems = Problems::default();
        problems.client_error(
            "consumer",
            &KafkaError::MessageConsumption(RDKafkaErrorCode::NotLeaderForPartition),
        );
        assert_eq!(problems.current(), None);
        problems.client_error(
            "consumer",
            &KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        let problem = problems.current().unwrap();
        assert!(
            problem.starts_with("consumer: ") && problem.contains("authorization"),
            "{problem}"
        );
    }

    #[test]
    fn an_offset_reset_is_read_from_librdkafka_s_line() {
        let line = "[thrd:main]: orders [3]: offset reset (at offset 1000 (leader epoch -1), broker 1) to cached \
                    BEGINNING offset offset 0 (leader epoch -1): fetch failed due to requested offset not available";
        assert!(count_offset_reset("OFFSET", line));
        assert!(!count_offset_reset(
            "OFFSET",
            "[thrd:main]: orders [3]: offset 12 committed"
        ));
        assert!(!count_offset_reset("FETCH", line));
    }
}
