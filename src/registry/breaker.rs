//! A circuit breaker for one upstream URL: consecutive failures (connect errors, timeouts, 5xx)
//! open it for a backoff that doubles on each failed probe; the first request after the backoff
//! is the half-open probe, and its success closes the breaker.

use std::time::{Duration, Instant};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 turns it off.
    pub failures: u32,
    /// The first backoff; each failed probe doubles it.
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// The breaker's state as metrics and health reports show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// 0 closed, 1 half-open, 2 open (the gauge's value).
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// What `admit` lets a request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Pass,
    /// This request is the half-open probe: its outcome closes or reopens the breaker.
    Probe,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    consecutive: u32,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant, backoff: Duration },
    HalfOpen { backoff: Duration },
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            consecutive: 0,
            state: State::Closed,
        }
    }

    /// Whether a request may go upstream now; `Err` carries how long until it may.
    pub fn admit(&mut self, now: Instant) -> Result<Admission, Duration> {
        match self.state {
            State::Closed => Ok(Admission::Pass),
            State::Open { until, backoff } => {
                if now >= until {
                    self.state = State::HalfOpen { backoff };
                    Ok(Admission::Probe)
                } else {
                    Err(until - now)
                }
            }
            // One probe at a time; the others wait as long as a probe may take to come back.
            State::HalfOpen { .. } => Err(Duration::from_secs(1)),
        }
    }

    /// The outcome of an admitted request.
    pub fn record(&mut self, ok: bool, probe: bool, now: Instant) {
        if self.cfg.failures == 0 {
            return;
        }
        if ok {
            self.consecutive = 0;
            self.state = State::Closed;
            return;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        match self.state {
            State::HalfOpen { backoff } if probe => {
                let backoff = (backoff * 2).min(self.cfg.max);
                self.state = State::Open {
                    until: now + backoff,
                    backoff,
                };
            }
            State::Closed if self.consecutive >= self.cfg.failures => {
                let backoff = self.cfg.initial.min(self.cfg.max);
                self.state = State::Open {
                    until: now + backoff,
                    backoff,
                };
            }
            _ => {}
        }
    }

    /// A probe that never came back (its caller went away): the next request probes again.
    pub fn abandon_probe(&mut self, now: Instant) {
        if let State::HalfOpen { backoff } = self.state {
            self.state = State::Open {
                until: now,
                backoff,
            };
        }
    }

    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_doubles_on_failed_probes() {
        let mut b = Breaker::new(BreakerConfig::default());
        let t = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t), Ok(Admission::Pass));
            b.record(false, false, t);
        }
        b.record(true, false, t);
        for _ in 0..3 {
            b.record(false, false, t);
        }
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit(t), Err(Duration::from_secs(1)));
        let t1 = t + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Ok(Admission::Probe));
        assert!(b.admit(t1).is_err(), "one probe at a time");
        b.record(false, true, t1);
        assert_eq!(b.admit(t1), Err(Duration::from_secs(2)));
        let t3 = t1 + Duration::from_secs(2);
        assert_eq!(b.admit(t3), Ok(Admission::Probe));
        b.abandon_probe(t3);
        assert_eq!(b.admit(t3), Ok(Admission::Probe));
        b.record(true, true, t3);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(t3), Ok(Admission::Pass));
    }

    #[test]
    fn backoff_is_capped_and_zero_turns_it_off() {
        let mut b = Breaker::new(BreakerConfig::default());
        let mut t = Instant::now();
        for _ in 0..3 {
            b.record(false, false, t);
        }
        for _ in 0..10 {
            t += Duration::from_secs(61);
            assert_eq!(b.admit(t), Ok(Admission::Probe));
            b.record(false, true, t);
        }
        assert_eq!(b.admit(t), Err(Duration::from_secs(60)));
        let mut off = Breaker::new(BreakerConfig {
            failures: 0,
            ..Default::default()
        });
        for _ in 0..10 {
            off.record(false, false, t);
        }
        assert_eq!(off.admit(t), Ok(Admission::Pass));
    }
}
