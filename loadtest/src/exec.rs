//! Rate control and workers: when each request is due, and the pool of workers that sends them.
//!
//! **Open loop** (a target rate): request *i* is due at `start + i / rate`, whatever happened to the
//! requests before it. Workers take the next index from one shared counter, wait for its due time and
//! send it; its latency is measured *from the due time*. When every worker is busy because the server
//! is slow, the next request is sent late and the lateness is part of its latency: queueing in the
//! server (or in the generator) cannot hide (no "coordinated omission"). The number of workers is the
//! bound on requests in flight.
//!
//! **Closed loop** (rate 0): each worker sends its next request as soon as its last one finished, and
//! latency is measured from the send. This finds the ceiling, but it hides queueing: while the server
//! stalls, no new requests are issued, so the stall touches at most one request per worker.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::{merge_histogram, nanos, new_histogram, record};

/// tokio's timers fire on millisecond ticks, rounding a deadline *up* to the next tick, and the
/// driver's `epoll_wait` timeout rounds up to a millisecond again: a sleep can end up to ~2 ms after
/// its deadline. Charged to the server, that would add a millisecond of latency that is the
/// generator's own. A worker therefore sleeps until this much before the due time and sends as soon
/// as it wakes: a request may leave up to this much early (its latency is then measured from the
/// actual send, so nothing is flattered), and the timer does not make it late.
pub(crate) const TIMER_SLACK: Duration = Duration::from_millis(2);

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pace {
    /// Constant arrival rate, in requests per second (finite, > 0).
    Open { rate: f64 },
    /// Each worker sends as soon as its previous request finished.
    Closed,
}

impl Pace {
    /// `rate` as given on the command line: 0 means closed loop.
    pub fn from_rate(rate: f64) -> Self {
        if rate > 0.0 {
            Pace::Open { rate }
        } else {
            Pace::Closed
        }
    }
}

/// When request `i` is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Open loop: at this instant.
    At(Instant),
    /// Closed loop: as soon as a worker is free.
    Now,
    /// Past the end of the schedule.
    Never,
}

/// The request schedule of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    start: Instant,
    end: Instant,
    pace: Pace,
}

impl Schedule {
    pub fn new(start: Instant, duration: Duration, pace: Pace) -> Self {
        Self {
            start,
            end: start + duration,
            pace,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn end(&self) -> Instant {
        self.end
    }

    /// When request `index` is due: `start + index / rate` in open loop, as long as that is before the
    /// end of the run.
    pub fn due(&self, index: u64) -> Due {
        match self.pace {
            Pace::Closed => Due::Now,
            Pace::Open { rate } => match self.start.checked_add(offset(index, rate)) {
                Some(due) if due < self.end => Due::At(due),
                _ => Due::Never,
            },
        }
    }

    /// How many requests are due strictly before `t` (open loop); `None` in closed loop, which has no
    /// schedule to fall behind.
    pub fn due_before(&self, t: Instant) -> Option<u64> {
        match self.pace {
            Pace::Closed => None,
            Pace::Open { rate } => {
                let t = t.min(self.end).saturating_duration_since(self.start);
                // Requests 0 .. k with k / rate < t: about ceil(t * rate) of them. Floating point can
                // be one off either way (0.3 * 100 = 30.000000000000004), so settle it with the very
                // function that computes due times.
                let mut count = (t.as_secs_f64() * rate).ceil() as u64;
                while count > 0 && offset(count - 1, rate) >= t {
                    count -= 1;
                }
                while offset(count, rate) < t {
                    count += 1;
                }
                Some(count)
            }
        }
    }
}

/// How long after the start request `index` is due at `rate` requests per second.
fn offset(index: u64, rate: f64) -> Duration {
    // Out of range only for absurd rates (validated away earlier): treat as "never".
    Duration::try_from_secs_f64(index as f64 / rate).unwrap_or(Duration::MAX)
}

/// One worker's side of a run: performs request number `index`, whose latency is measured from
/// `origin`. It records its own statistics; the executor only paces.
pub(crate) trait Worker: Send + 'static {
    fn call(&mut self, index: u64, origin: Instant) -> impl Future<Output = ()> + Send;
}

/// What the executor observed.
#[derive(Debug)]
pub(crate) struct Executed<W> {
    /// The workers, handed back with their statistics.
    pub workers: Vec<W>,
    /// How late requests were sent relative to their due time (open loop; empty in closed loop).
    pub lag: Histogram<u64>,
    /// Requests due before the run ended (open loop) or sent (closed loop).
    pub scheduled: u64,
    /// Requests actually sent (all of them were also answered or timed out: in-flight requests are
    /// drained before this returns).
    pub sent: u64,
    /// From the start of the schedule until the last request finished.
    pub elapsed: Duration,
    /// The run was stopped by `stop` before its duration was up.
    pub stopped_early: bool,
}

/// Runs `workers` (one task each: the number of workers is the bound on requests in flight) for
/// `duration` at `pace`, or until `stop` turns true. Requests in flight when the run ends are awaited,
/// not abandoned.
///
/// # Errors
/// A worker task panicked (its figures are lost, so the run's are not trustworthy).
pub(crate) async fn execute<W: Worker>(
    workers: Vec<W>,
    pace: Pace,
    duration: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Executed<W>> {
    let schedule = Schedule::new(Instant::now(), duration, pace);
    // The one counter all workers take request indices from: index order is due-time order.
    let next = Arc::new(AtomicU64::new(0));
    // Flipped once, at the end of the duration or on `stop`; wakes workers waiting for a due time.
    let (halt_tx, halt_rx) = watch::channel(false);

    let mut tasks = JoinSet::new();
    for worker in workers {
        tasks.spawn(work(worker, schedule, Arc::clone(&next), halt_rx.clone()));
    }
    drop(halt_rx);

    let controller = tokio::spawn(async move {
        let stopped = async {
            if stop.wait_for(|stop| *stop).await.is_err() {
                // The stop sender is gone without asking to stop: nobody can stop us now.
                std::future::pending::<()>().await;
            }
        };
        let stopped_early = tokio::select! {
            () = tokio::time::sleep_until(schedule.end()) => false,
            () = stopped => true,
        };
        let halted_at = Instant::now();
        // Nobody listening just means every worker already finished its schedule.
        let _ = halt_tx.send(true);
        (stopped_early, halted_at)
    });

    let mut executed = Executed {
        workers: Vec::with_capacity(tasks.len()),
        lag: new_histogram(),
        scheduled: 0,
        sent: 0,
        elapsed: Duration::ZERO,
        stopped_early: false,
    };
    while let Some(joined) = tasks.join_next().await {
        let (worker, lag, sent) =
            joined.map_err(|e| anyhow::anyhow!("a load generator worker failed: {e}"))?;
        executed.workers.push(worker);
        merge_histogram(&mut executed.lag, &lag);
        executed.sent += sent;
    }
    executed.elapsed = schedule.start().elapsed();

    // In open loop the workers finish on their own once the schedule is exhausted, possibly before
    // the controller's deadline; then the whole schedule was due.
    let halted_at = if controller.is_finished() {
        let (stopped_early, halted_at) = controller
            .await
            .map_err(|e| anyhow::anyhow!("run controller failed: {e}"))?;
        executed.stopped_early = stopped_early;
        halted_at
    } else {
        controller.abort();
        schedule.end()
    };
    executed.scheduled = schedule.due_before(halted_at).unwrap_or(executed.sent);
    Ok(executed)
}

/// One worker's loop. Returns the worker, its send-lag histogram and how many requests it sent.
async fn work<W: Worker>(
    mut worker: W,
    schedule: Schedule,
    next: Arc<AtomicU64>,
    mut halt: watch::Receiver<bool>,
) -> (W, Histogram<u64>, u64) {
    let mut lag = new_histogram();
    let mut sent = 0;
    loop {
        if *halt.borrow() {
            break;
        }
        let index = next.fetch_add(1, Ordering::Relaxed);
        let origin = match schedule.due(index) {
            Due::Never => break,
            Due::Now => Instant::now(),
            Due::At(due) => {
                if due > Instant::now() + TIMER_SLACK {
                    tokio::select! {
                        () = tokio::time::sleep_until(due - TIMER_SLACK) => {}
                        // Either the run halted or the executor is gone: stop.
                        _ = halt.changed() => break,
                    }
                }
                let now = Instant::now();
                record(&mut lag, nanos(now.saturating_duration_since(due)));
                // Late: latency counts from the due time, so the wait is part of it.
                // Early (by at most TIMER_SLACK): from the moment it actually leaves.
                due.min(now)
            }
        };
        worker.call(index, origin).await;
        sent += 1;
    }
    (worker, lag, sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_due_times_are_start_plus_i_over_rate() {
        let start = Instant::now();
        let schedule = Schedule::new(start, Duration::from_secs(2), Pace::Open { rate: 250.0 });
        assert_eq!(schedule.due(0), Due::At(start));
        assert_eq!(schedule.due(1), Due::At(start + Duration::from_millis(4)));
        assert_eq!(schedule.due(250), Due::At(start + Duration::from_secs(1)));
        assert_eq!(
            schedule.due(499),
            Due::At(start + Duration::from_millis(1996))
        );
        // Request 500 would be due exactly at the end: not part of a 2-second run.
        assert_eq!(schedule.due(500), Due::Never);
        assert_eq!(
            schedule.due_before(start + Duration::from_secs(10)),
            Some(500)
        );
        assert_eq!(
            schedule.due_before(start + Duration::from_millis(10)),
            Some(3)
        );
        assert_eq!(schedule.due_before(start), Some(0));
    }

    #[test]
    fn fractional_rates_keep_their_average() {
        let start = Instant::now();
        let schedule = Schedule::new(start, Duration::from_secs(10), Pace::Open { rate: 0.5 });
        assert_eq!(schedule.due(3), Due::At(start + Duration::from_secs(6)));
        assert_eq!(
            schedule.due_before(start + Duration::from_secs(10)),
            Some(5)
        );
    }

    #[test]
    fn closed_loop_has_no_due_times() {
        let schedule = Schedule::new(Instant::now(), Duration::from_secs(1), Pace::from_rate(0.0));
        assert_eq!(schedule.due(12345), Due::Now);
        assert_eq!(schedule.due_before(Instant::now()), None);
    }

    /// A worker that "takes" a fixed time per request and remembers each request's latency origin.
    struct Sleeper {
        service: Duration,
        origins: Vec<(u64, Instant)>,
    }

    impl Worker for Sleeper {
        async fn call(&mut self, index: u64, origin: Instant) {
            self.origins.push((index, origin));
            tokio::time::sleep(self.service).await;
        }
    }

    fn sleepers(n: usize, service: Duration) -> Vec<Sleeper> {
        (0..n)
            .map(|_| Sleeper {
                service,
                origins: Vec::new(),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_sends_the_whole_schedule_when_workers_keep_up() {
        let (_stop_tx, stop) = watch::channel(false);
        let start = Instant::now();
        let run = execute(
            sleepers(4, Duration::from_millis(5)),
            Pace::Open { rate: 100.0 },
            Duration::from_secs(1),
            stop,
        )
        .await
        .expect("run");
        assert_eq!((run.scheduled, run.sent), (100, 100));
        assert!(!run.stopped_early);
        let mut origins: Vec<(u64, Instant)> =
            run.workers.iter().flat_map(|w| w.origins.clone()).collect();
        origins.sort_unstable_by_key(|&(i, _)| i);
        for (i, origin) in origins {
            let due = start + Duration::from_millis(10 * i);
            assert!(
                origin <= due && due - origin <= TIMER_SLACK,
                "request {i} left at {origin:?}, due {due:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_counts_waiting_for_a_worker_as_latency() {
        // One worker, 10 ms per request, but a request due every 5 ms: the generator falls behind.
        let (_stop_tx, stop) = watch::channel(false);
        let start = Instant::now();
        let run = execute(
            sleepers(1, Duration::from_millis(10)),
            Pace::Open { rate: 200.0 },
            Duration::from_secs(1),
            stop,
        )
        .await
        .expect("run");
        assert_eq!(run.scheduled, 200);
        // About half the schedule was sent; none was skipped in between: indices are consecutive.
        assert!((95..=105).contains(&run.sent), "sent {}", run.sent);
        let origins = &run.workers[0].origins;
        assert!(origins.iter().enumerate().all(|(k, &(i, _))| i == k as u64));
        // Each request's latency origin is its due time, not the moment a worker became free.
        for &(i, origin) in origins {
            assert_eq!(origin, start + Duration::from_millis(5 * i));
        }
        // The send lag grows by 5 ms per request: the last one was sent ~0.5 s late.
        assert!(
            run.lag.max() >= nanos(Duration::from_millis(450)),
            "max lag {}",
            run.lag.max()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_runs_until_the_duration_and_stop_ends_it_early() {
        let (_stop_tx, stop) = watch::channel(false);
        let run = execute(
            sleepers(2, Duration::from_millis(10)),
            Pace::Closed,
            Duration::from_secs(1),
            stop,
        )
        .await
        .expect("run");
        assert!((199..=202).contains(&run.sent), "sent {}", run.sent);
        assert_eq!(run.scheduled, run.sent);

        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = stop_tx.send(true);
        });
        let run = execute(
            sleepers(1, Duration::from_millis(10)),
            Pace::Open { rate: 100.0 },
            Duration::from_secs(10),
            stop,
        )
        .await
        .expect("run");
        assert!(run.stopped_early);
        assert_eq!(
            run.scheduled, 30,
            "only what was due before the stop counts as scheduled"
        );
        assert!((29..=31).contains(&run.sent), "sent {}", run.sent);
    }
}
