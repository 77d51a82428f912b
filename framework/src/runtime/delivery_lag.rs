//! Back-pressure from the producer: whether a stream thread should stop
//! processing until the brokers have acknowledged more of what it sent.
//!
//! A thread processes as fast as it reads, and every record it processes
//! queues outputs. Against brokers slower than the processing the queue
//! would grow until a record waits longer than `message.timeout.ms` and its
//! delivery fails, which stops the thread. So the thread holds back while
//! its unacknowledged records would take more than a quarter of that
//! timeout to drain at the rate the brokers have been acknowledging, or the
//! oldest of them has waited that long already.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Records that may always be outstanding, so that a thread whose rate is
/// not measured yet (or was measured while little was sent) can start.
const MIN_OUTSTANDING: u64 = 100;
/// How long the acknowledgement rate is measured over.
const RATE_WINDOW: Duration = Duration::from_millis(50);

/// What a producer sent and had acknowledged, seen over time.
#[derive(Debug)]
pub(crate) struct DeliveryLag {
    /// The longest an outstanding record should wait, and the longest the
    /// outstanding records should take to drain.
    limit: Duration,
    /// `(when, records sent by then)`, from the first mark not wholly
    /// acknowledged yet: the front's time bounds the oldest outstanding
    /// record's send time from above.
    marks: VecDeque<(Instant, u64)>,
    /// Acknowledgements per second the brokers can take: the rate measured
    /// over a window in which the thread held back, else the highest
    /// measured (a thread that sends little says little of the brokers).
    rate: f64,
    /// Where the current measurement of the rate started: `(when,
    /// acknowledged by then)`.
    window: Option<(Instant, u64)>,
    /// Whether the thread was held back in the current window.
    held: bool,
}

impl DeliveryLag {
    /// A producer whose records time out after `delivery_timeout`.
    pub(crate) fn new(delivery_timeout: Duration) -> Self {
        DeliveryLag {
            limit: delivery_timeout / 4,
            marks: VecDeque::new(),
            rate: 0.0,
            window: None,
            held: false,
        }
    }

    /// Whether the thread should hold back at `now`, with `sent` records
    /// sent and `acknowledged` of them settled (delivered or failed) so far.
    pub(crate) fn behind(&mut self, now: Instant, sent: u64, acknowledged: u64) -> bool {
        if self.marks.back().is_none_or(|&(_, marked)| marked < sent) {
            self.marks.push_back((now, sent));
        }
        while self.marks.front().is_some_and(|&(_, marked)| marked <= acknowledged) {
            self.marks.pop_front();
        }
        match self.window {
            None => self.window = Some((now, acknowledged)),
            Some((start, acknowledged_then)) => {
                let elapsed = now.saturating_duration_since(start);
                if elapsed >= RATE_WINDOW {
                    let measured = acknowledged.saturating_sub(acknowledged_then) as f64 / elapsed.as_secs_f64();
                    self.rate = if self.held { measured } else { self.rate.max(measured) };
                    self.window = Some((now, acknowledged));
                    self.held = false;
                }
            }
        }
        let outstanding = sent.saturating_sub(acknowledged);
        let oldest_wait = self
            .marks
            .front()
            .map_or(Duration::ZERO, |&(sent_by, _)| now.saturating_duration_since(sent_by));
        let drainable = (self.rate * self.limit.as_secs_f64()) as u64;
        let behind = oldest_wait > self.limit || outstanding > drainable.max(MIN_OUTSTANDING);
        self.held |= behind;
        behind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(4);

    #[test]
    fn a_few_records_in_flight_are_never_behind() {
        let mut lag = DeliveryLag::new(TIMEOUT);
        let start = Instant::now();
        assert!(!lag.behind(start, 0, 0));
        assert!(!lag.behind(start, MIN_OUTSTANDING, 0));
        assert!(lag.behind(start, MIN_OUTSTANDING + 1, 0), "no rate measured yet");
        assert!(!lag.behind(start + Duration::from_millis(10), MIN_OUTSTANDING + 1, 1));
    }

    #[test]
    fn the_backlog_may_be_what_the_measured_rate_drains_in_a_quarter_of_the_timeout() {
        let mut lag = DeliveryLag::new(TIMEOUT);
        let start = Instant::now();
        // 10,000 acknowledgements a second, with a small backlog all along.
        let per_window = per_window(10_000.0);
        for step in 0..=10u32 {
            let acknowledged = per_window * u64::from(step);
            lag.behind(start + RATE_WINDOW * step, acknowledged + 50, acknowledged);
        }
        let (now, acknowledged) = (start + RATE_WINDOW * 10, per_window * 10);
        assert!(!lag.behind(now, acknowledged + 10_000, acknowledged), "drains in 1 s");
        assert!(
            lag.behind(now, acknowledged + 10_001, acknowledged),
            "drains in more than 1 s"
        );
    }

    #[test]
    fn a_record_waiting_a_quarter_of_the_timeout_holds_the_thread_back() {
        let mut lag = DeliveryLag::new(TIMEOUT);
        let start = Instant::now();
        assert!(!lag.behind(start, 10, 0));
        assert!(!lag.behind(start + Duration::from_millis(999), 10, 0));
        assert!(lag.behind(start + Duration::from_millis(1001), 10, 0));
        assert!(!lag.behind(start + Duration::from_millis(1002), 10, 10), "acknowledged");
    }

    #[test]
    fn a_thread_that_holds_back_learns_the_brokers_rate_within_a_window_or_two() {
        let mut lag = DeliveryLag::new(TIMEOUT);
        let start = Instant::now();
        // Brokers that acknowledge 100 records every 10 ms, 10,000 a second.
        let (mut sent, mut acknowledged) = (0, 0);
        for tick in 0..=40u32 {
            let now = start + Duration::from_millis(10) * tick;
            acknowledged = sent.min(acknowledged + 100);
            while !lag.behind(now, sent, acknowledged) {
                sent += 100;
            }
        }
        let drainable = sent - acknowledged;
        assert!((9_000..=11_000).contains(&drainable), "{drainable} may be outstanding");
    }

    #[test]
    fn a_rate_measured_while_holding_back_falls_when_the_brokers_slow_down() {
        let mut lag = DeliveryLag::new(TIMEOUT);
        let start = Instant::now();
        let fast = per_window(100_000.0);
        assert!(lag.behind(start, 50_000, 0));
        lag.behind(start + RATE_WINDOW, 50_000, fast);
        assert!(
            !lag.behind(start + RATE_WINDOW, 100_000, fast),
            "100,000 a second drain the backlog in a second"
        );
        // Then 1,000 a second: the oldest record waits, the thread holds back
        // and the next window measures the slower rate.
        let slow = start + Duration::from_millis(1_500);
        assert!(
            lag.behind(slow, 100_000, fast + 1_000),
            "the oldest waited over a second"
        );
        assert!(lag.behind(slow + RATE_WINDOW, 100_000, fast + 1_000 + per_window(1_000.0)));
        assert_eq!(lag.rate.round(), 1_000.0, "measured while holding back");
    }

    #[test]
    fn an_idle_producer_keeps_the_rate_it_measured_under_load() {
        let mut lag = DeliveryLag::new(TIMEOUT);
        let start = Instant::now();
        assert!(lag.behind(start, 5_000, 0));
        lag.behind(start + RATE_WINDOW, 5_000, 5_000);
        let measured = lag.rate;
        assert!(measured > 0.0);
        let later = start + Duration::from_secs(10);
        assert!(!lag.behind(later, 5_000, 5_000));
        assert_eq!(lag.rate, measured, "ten idle seconds say nothing of the brokers");
        let drainable = (measured * (TIMEOUT / 4).as_secs_f64()) as u64;
        assert!(
            !lag.behind(later, 5_000 + drainable, 5_000),
            "a burst may use what the brokers took before"
        );
    }

    /// Acknowledgements in one window of the rate's measurement.
    fn per_window(per_second: f64) -> u64 {
        (per_second * RATE_WINDOW.as_secs_f64()).round() as u64
    }
}
