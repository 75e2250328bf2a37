//! Exponential backoff: the one formula behind the daemon's per-node
//! backoff, the converge's retries of one operation and the Redfish client's
//! retries of one request.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The wait before attempt `failures + 1` without jitter: base ×
    /// 2^failures, capped.
    pub fn ceiling(&self, failures: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << failures.min(20))
            .min(self.cap)
    }

    /// The wait before attempt `failures + 1`: the [`ceiling`](Self::ceiling)
    /// with "full jitter" (uniform between half and all of it) so that many
    /// nodes failing together do not retry together.
    pub fn delay(&self, failures: u32) -> Duration {
        let capped = self.ceiling(failures);
        let half = capped / 2;
        half + capped.mul_f64(fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_and_stay_jittered() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        };
        for _ in 0..50 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_millis(2500) && d30 <= Duration::from_secs(5));
        }
    }

    #[test]
    fn the_ceiling_doubles_exactly_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(1),
        };
        let waits: Vec<Duration> = (0..4).map(|f| b.ceiling(f)).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 1000].map(Duration::from_millis),
            "no jitter, and the cap holds"
        );
        let uncapped = Backoff {
            cap: Duration::MAX,
            ..b
        };
        assert_eq!(uncapped.ceiling(3), Duration::from_secs(2));
        assert_eq!(uncapped.ceiling(u32::MAX), uncapped.ceiling(20));
    }
}
