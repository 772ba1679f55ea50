//! A cap on requests or bytes per second to one upstream: a token bucket holding one second's
//! worth, shared by every request to that upstream. Callers take what they use and wait out
//! any debt, so the average never exceeds the rate however many tasks take at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateCap {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateCap {
    /// `None` for a rate that is not a positive number (no cap).
    pub fn new(per_second: f64) -> Option<Self> {
        (per_second.is_finite() && per_second > 0.0).then(|| {
            let burst = per_second.max(1.0);
            Self {
                rate: per_second,
                burst,
                state: Mutex::new((burst, Instant::now())),
            }
        })
    }

    /// How long the caller must wait before `n` units pass (taking them now).
    pub fn reserve(&self, n: f64) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst) - n;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }

    /// Waits until `n` units may pass.
    pub async fn take(&self, n: f64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateCap;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let cap = RateCap::new(2.0).expect("cap");
        assert!(cap.reserve(1.0).is_zero());
        assert!(cap.reserve(1.0).is_zero());
        let third = cap.reserve(1.0).as_secs_f64();
        assert!((0.45..=0.5).contains(&third), "{third}");
        let fourth = cap.reserve(1.0).as_secs_f64();
        assert!((0.95..=1.0).contains(&fourth), "{fourth}");
        assert!(RateCap::new(0.0).is_none());
        assert!(RateCap::new(f64::NAN).is_none());
    }
}
