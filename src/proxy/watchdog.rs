//! Worker liveness for `/readyz`: each runtime worker records when it woke and when it last
//! polled a connection; a worker awake for longer than the stall limit without a poll is stuck.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One worker thread's clocks, in milliseconds since the watchdog's epoch (0: not set).
#[derive(Default)]
struct WorkerClock {
    /// When the worker last unparked; 0 while it is parked (idle).
    awake_since: AtomicU64,
    /// When the worker last began polling a tracked task.
    last_poll: AtomicU64,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();
static WORKERS: Mutex<Vec<Arc<WorkerClock>>> = Mutex::new(Vec::new());

thread_local! {
    static CLOCK: OnceLock<Arc<WorkerClock>> = const { OnceLock::new() };
}

fn now_ms() -> u64 {
    // +1 so that 0 keeps meaning "not set".
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn with_clock(f: impl FnOnce(&WorkerClock)) {
    // `try_with`: during thread teardown the slot may be gone; liveness is then moot.
    let _ = CLOCK.try_with(|slot| {
        let clock = slot.get_or_init(|| {
            let c = Arc::new(WorkerClock::default());
            // Registration happens once per thread, never under another lock.
            WORKERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c.clone());
            c
        });
        f(clock);
    });
}

/// Runtime hook: the worker woke up to run tasks.
pub fn on_unpark() {
    let now = now_ms();
    with_clock(|c| {
        c.awake_since.store(now, Ordering::Relaxed);
        c.last_poll.store(now, Ordering::Relaxed);
    });
}

/// Runtime hook: the worker ran out of work.
pub fn on_park() {
    with_clock(|c| c.awake_since.store(0, Ordering::Relaxed));
}

/// The longest time any worker has been awake without starting a poll, if over `limit`.
pub fn stuck(limit: Duration) -> Option<Duration> {
    let now = now_ms();
    let workers = WORKERS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    workers
        .iter()
        .filter_map(|w| {
            let awake = w.awake_since.load(Ordering::Relaxed);
            if awake == 0 {
                return None;
            }
            let last = w.last_poll.load(Ordering::Relaxed).max(awake);
            let quiet = Duration::from_millis(now.saturating_sub(last));
            (quiet > limit).then_some(quiet)
        })
        .max()
}

/// Wraps a connection's future so each poll marks its worker as making progress.
pub struct Tracked<F>(pub F);

impl<F: Future + Unpin> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let now = now_ms();
        with_clock(|c| {
            c.last_poll.store(now, Ordering::Relaxed);
            // A worker that has run since its thread started never unparked: polling shows it
            // is awake (only runtime workers poll tracked tasks).
            let _ = c
                .awake_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        });
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Boxes and tracks `fut` (connection tasks are not `Unpin`).
pub fn tracked<F: Future + Send + 'static>(
    fut: F,
) -> Tracked<Pin<Box<dyn Future<Output = F::Output> + Send>>> {
    Tracked(Box::pin(fut))
}

/// hyper's executor for the tasks a connection spawns (HTTP/2 streams): tracked like connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackedExecutor;

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(tracked(fut));
    }
}

/// Starts a thread that hands the runtime an empty task every half second. Tokio polls the
/// I/O driver only from a worker that parks; if the one worker awake blocks (the stuck worker
/// `/readyz` exists to report) while the others sleep, nothing would read the sockets again.
/// The empty task wakes a sleeping worker, which then parks on the driver and serves them.
pub fn keep_driver_polled(handle: tokio::runtime::Handle) {
    let spawned = std::thread::Builder::new()
        .name("pullsecret-nudge".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            drop(handle.spawn(async {}));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the runtime nudge thread; a stuck worker may hide /readyz");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_awake_without_polls_is_stuck_and_a_parked_one_is_not() {
        std::thread::spawn(|| {
            on_unpark();
            std::thread::sleep(Duration::from_millis(60));
            assert!(stuck(Duration::from_millis(30)).is_some(), "awake, no poll");
            on_park();
        })
        .join()
        .expect("worker thread");
        assert!(stuck(Duration::from_millis(30)).is_none(), "parked");
    }
}
