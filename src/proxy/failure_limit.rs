//! Failed attempts per key (an address, a user) within a window, and the doubling wait they
//! earn past a free allowance: shared by client logins and the admin listener's tokens.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 10_000;

pub struct FailureLimit<K> {
    /// Failures allowed in the window before waits start.
    free: u32,
    window: Duration,
    max_wait: Duration,
    map: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Eq + Hash> FailureLimit<K> {
    pub fn new(free: u32, window: Duration, max_wait: Duration) -> Self {
        Self {
            free,
            window,
            max_wait,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn fail(&self, key: K) {
        let mut m = self.lock();
        if m.len() >= MAX_KEYS {
            m.clear();
        }
        let e = m.entry(key).or_insert((0, Instant::now()));
        if e.1.elapsed() > self.window {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = Instant::now();
    }

    /// Forgets `key`'s failures (it succeeded).
    pub fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    /// How long `key` must still wait, if its failures earned a wait.
    pub fn backoff(&self, key: &K) -> Option<Duration> {
        let m = self.lock();
        let (n, last) = m.get(key)?;
        if *n < self.free || last.elapsed() > self.window {
            return None;
        }
        let wait = Duration::from_secs(1u64 << (n - self.free).min(9)).min(self.max_wait);
        wait.checked_sub(last.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (u32, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_failures_and_clear_on_success() {
        let l = FailureLimit::new(2, Duration::from_secs(60), Duration::from_secs(300));
        l.fail("a");
        assert_eq!(l.backoff(&"a"), None);
        l.fail("a");
        assert!(l.backoff(&"a").is_some_and(|w| w <= Duration::from_secs(1)));
        l.clear(&"a");
        assert_eq!(l.backoff(&"a"), None);
    }
}
