//! How long to wait before the next attempt of a failed call.

use std::time::Duration;

/// Retries of retryable failures: up to `max_attempts` calls per record,
/// waiting `initial_backoff × multiplierⁿ` (at most `max_backoff`) between
/// them, each wait drawn at random from its upper half so that records that
/// failed together do not retry together.
///
/// ```
/// use std::time::Duration;
/// use weir::enrich::RetryPolicy;
/// let policy = RetryPolicy::default();
/// let wait = policy.backoff(3);
/// assert!(wait >= Duration::from_millis(200) && wait <= Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Calls per record before its failure is final (default 5; 1 means no retry).
    pub max_attempts: u32,
    /// The wait after the first failure (default 100 ms).
    pub initial_backoff: Duration,
    /// The longest wait (default 10 s).
    pub max_backoff: Duration,
    /// The growth of the wait per failure (default 2).
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure (counting from 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let ceiling = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let ceiling = ceiling.min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(ceiling * (0.5 + 0.5 * fastrand::f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_stay_in_the_upper_half() {
        let policy = RetryPolicy::default();
        for failures in 1..40 {
            let ceiling = (0.1 * 2f64.powi(failures as i32 - 1)).min(10.0);
            for _ in 0..20 {
                let wait = policy.backoff(failures).as_secs_f64();
                assert!(
                    wait >= ceiling / 2.0 - 1e-9 && wait <= ceiling + 1e-9,
                    "{failures}: {wait}"
                );
            }
        }
    }
}
