//! The circuit breaker of an enrichment: after enough failures in a row it
//! stops calls for a while, then lets one probe through to see whether the
//! service is back.

use super::BreakerPolicy;
use std::time::{Duration, Instant};

/// Where a circuit breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// No calls until the wait is over.
    Open,
    /// One probe call is out; the others wait for its answer.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `weir_enrich_breaker_state` gauge.
    pub fn as_gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// What the breaker allows a caller right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Call as usual.
    Call,
    /// Call as the probe: its outcome closes or reopens the breaker.
    Probe,
    /// Ask again after this long.
    Wait(Duration),
}

#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    policy: BreakerPolicy,
    state: BreakerState,
    failures_in_a_row: u32,
    open_until: Instant,
}

/// How often a caller waiting on a probe asks again.
const PROBE_POLL: Duration = Duration::from_millis(20);

impl CircuitBreaker {
    pub(crate) fn new(policy: BreakerPolicy) -> Self {
        CircuitBreaker {
            policy,
            state: BreakerState::Closed,
            failures_in_a_row: 0,
            open_until: Instant::now(),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    pub(crate) fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            BreakerState::Closed => Permit::Call,
            BreakerState::Open if now >= self.open_until => {
                self.state = BreakerState::HalfOpen;
                Permit::Probe
            }
            BreakerState::Open => Permit::Wait(self.open_until - now),
            BreakerState::HalfOpen => Permit::Wait(PROBE_POLL),
        }
    }

    /// The service answered (an answer, or a permanent failure).
    pub(crate) fn on_answer(&mut self) {
        self.state = BreakerState::Closed;
        self.failures_in_a_row = 0;
    }

    /// A call failed in a way that may pass. Returns whether the failure
    /// counts against the record's attempts: not when it was the probe or
    /// when the breaker was already open, as during an outage records wait
    /// instead of running out of attempts.
    pub(crate) fn on_failure(&mut self, permit: Permit, now: Instant) -> bool {
        match (permit, self.state) {
            (Permit::Probe, _) => {
                self.open(now);
                false
            }
            (_, BreakerState::Closed) => {
                self.failures_in_a_row += 1;
                if self.failures_in_a_row >= self.policy.failure_threshold.max(1) {
                    self.open(now);
                }
                true
            }
            _ => false,
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.open_until = now + self.policy.open_for;
        self.failures_in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerPolicy {
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
        })
    }

    #[test]
    fn opens_after_failures_in_a_row_and_probes_after_the_wait() {
        let mut b = breaker();
        let t0 = Instant::now();
        assert!(b.on_failure(Permit::Call, t0));
        b.on_answer();
        assert!(b.on_failure(Permit::Call, t0));
        assert!(b.on_failure(Permit::Call, t0));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(
            b.on_failure(Permit::Call, t0),
            "the failure that opens the breaker counts"
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permit(t0), Permit::Wait(Duration::from_secs(1)));
        assert!(
            !b.on_failure(Permit::Call, t0),
            "a call that was out when it opened does not count"
        );

        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.permit(later), Permit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.permit(later), Permit::Wait(PROBE_POLL), "one probe at a time");
        assert!(!b.on_failure(Permit::Probe, later));
        assert_eq!(b.state(), BreakerState::Open);

        let much_later = later + Duration::from_secs(1);
        assert_eq!(b.permit(much_later), Permit::Probe);
        b.on_answer();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.permit(much_later), Permit::Call);
    }
}
