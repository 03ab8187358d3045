//! Capped exponential backoff with jitter, shared by every reconnecting client.
//!
//! The delay before attempt `n` (after `n` consecutive failures) is drawn uniformly from
//! `[d/2, d]` where `d = min(max, initial × 2^(n-1))`: the cap bounds the wait, and the jitter keeps
//! fifty gateways that lost the same PLC or broker from retrying in lockstep.

use std::time::Duration;

pub use firmware_config::Backoff;

/// Delay after `failures` consecutive failures (1 = first failure). `unit` is a uniform draw from
/// [0, 1) supplied by the caller, so that the function stays pure.
pub fn delay(policy: &Backoff, failures: u32, unit: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    let ceiling = policy
        .initial
        .checked_mul(1u32 << exponent)
        .unwrap_or(policy.max)
        .min(policy.max);
    ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_capped_with_jitter_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        assert_eq!(delay(&b, 1, 1.0), Duration::from_secs(1));
        assert_eq!(delay(&b, 1, 0.0), Duration::from_millis(500));
        assert_eq!(delay(&b, 3, 1.0), Duration::from_secs(4));
        assert_eq!(
            delay(&b, 6, 1.0),
            Duration::from_secs(30),
            "32 s capped at 30 s"
        );
        assert_eq!(delay(&b, 1000, 0.0), Duration::from_secs(15), "no overflow");
    }
}
