//! Live progress: a bar when a person is watching a terminal, plain lines for logs, or snapshots on a
//! `watch` channel for a caller (the demo) that draws its own console.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::{LiveCounters, LiveWindow, new_histogram};

/// A snapshot of a run in progress, published once per live interval.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LiveStats {
    /// `true` while the `--baseline` healthz phase runs, `false` during the workload itself.
    pub baseline: bool,
    /// Time since the phase started.
    pub elapsed: Duration,
    /// Requests answered (or failed) so far.
    pub requests: u64,
    /// Doses acknowledged so far (single and batch).
    pub doses_acked: u64,
    /// Check-ins answered with 200 so far.
    pub checkins: u64,
    /// Certificate images fetched so far.
    pub certificates: u64,
    /// Failed requests so far (HTTP errors, transport errors, timeouts).
    pub errors: u64,
    /// Requests per second over the last interval.
    pub rate_now: f64,
    /// Doses acknowledged per second over the last interval.
    pub doses_rate_now: f64,
    /// Median latency (from due time) of all requests answered in the last interval.
    pub p50: Duration,
    /// 99th percentile latency of all requests answered in the last interval.
    pub p99: Duration,
}

impl std::fmt::Display for LiveStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6.1}s {:>9} req {:>8.0}/s | doses {:>9} acked {:>8.0}/s | checkins {} certs {} | \
             errors {} | p50 {:.2} ms p99 {:.2} ms",
            self.elapsed.as_secs_f64(),
            self.requests,
            self.rate_now,
            self.doses_acked,
            self.doses_rate_now,
            self.checkins,
            self.certificates,
            self.errors,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
        )
    }
}

/// Where live progress goes.
#[derive(Debug, Default)]
pub enum ProgressMode {
    /// A live bar on stderr if stdout and stderr are terminals; plain lines on stderr otherwise.
    #[default]
    Auto,
    /// A live bar (indicatif) on stderr.
    Bar,
    /// One plain line per interval on stderr, for logs and CI.
    Lines,
    /// Nothing.
    Quiet,
    /// Each snapshot is sent on this channel (the receiver draws it); nothing is printed.
    Watch(watch::Sender<LiveStats>),
}

impl ProgressMode {
    fn resolve(self) -> Self {
        match self {
            ProgressMode::Auto
                if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() =>
            {
                ProgressMode::Bar
            }
            ProgressMode::Auto => ProgressMode::Lines,
            other => other,
        }
    }
}

/// A running progress display; [`ProgressTask::finish`] stops it after one last snapshot.
pub(crate) struct ProgressTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<ProgressMode>,
}

/// What the display reads from: the run's counters and each worker's latency window.
pub(crate) struct LiveSources {
    pub counters: Arc<LiveCounters>,
    pub windows: Vec<Arc<LiveWindow>>,
}

impl ProgressTask {
    /// Starts publishing snapshots every `interval` for a phase that should last `duration`.
    pub fn start(
        mode: ProgressMode,
        label: String,
        baseline: bool,
        duration: Duration,
        interval: Duration,
        sources: LiveSources,
    ) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mode = mode.resolve();
            let bar = matches!(mode, ProgressMode::Bar).then(|| new_bar(&label, duration));
            if matches!(mode, ProgressMode::Lines) {
                print_line(&format!(
                    "{label}: running for {:.1}s",
                    duration.as_secs_f64()
                ));
            }
            let mut sampler = Sampler::new(sources, baseline);
            let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
            loop {
                let last = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = &mut stopped => true,
                };
                let snapshot = sampler.sample();
                match (&mode, &bar) {
                    (ProgressMode::Watch(sender), _) => {
                        sender.send_replace(snapshot);
                    }
                    (_, Some(bar)) => {
                        bar.set_position(
                            u64::try_from(snapshot.elapsed.as_millis()).unwrap_or(u64::MAX),
                        );
                        bar.set_message(snapshot.to_string());
                    }
                    (ProgressMode::Lines, _) => print_line(&format!("{label}: {snapshot}")),
                    _ => {}
                }
                if last {
                    break;
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            mode
        });
        Self { stop, task }
    }

    /// Publishes a final snapshot and stops. Returns the mode, so a second phase can reuse a
    /// caller's watch channel.
    pub async fn finish(self) -> ProgressMode {
        // The task only ends after receiving this, so the send cannot fail unless it panicked.
        let _ = self.stop.send(());
        self.task.await.unwrap_or(ProgressMode::Quiet)
    }
}

fn new_bar(label: &str, duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Progress lines are the tool's output, not logs: they go to stderr so stdout keeps only the report.
fn print_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Turns the counters into per-interval rates and the windows into per-interval percentiles.
struct Sampler {
    sources: LiveSources,
    baseline: bool,
    started: Instant,
    last_at: Instant,
    last_requests: u64,
    last_doses: u64,
    window: Histogram<u64>,
}

impl Sampler {
    fn new(sources: LiveSources, baseline: bool) -> Self {
        let now = Instant::now();
        Self {
            sources,
            baseline,
            started: now,
            last_at: now,
            last_requests: 0,
            last_doses: 0,
            window: new_histogram(),
        }
    }

    fn sample(&mut self) -> LiveStats {
        let now = Instant::now();
        let c = &self.sources.counters;
        let requests = LiveCounters::get(&c.requests);
        let doses = LiveCounters::get(&c.doses_acked);
        let seconds = now
            .saturating_duration_since(self.last_at)
            .as_secs_f64()
            .max(1e-9);
        self.window.reset();
        for window in &self.sources.windows {
            window.drain_into(&mut self.window);
        }
        let snapshot = LiveStats {
            baseline: self.baseline,
            elapsed: now.saturating_duration_since(self.started),
            requests,
            doses_acked: doses,
            checkins: LiveCounters::get(&c.checkins),
            certificates: LiveCounters::get(&c.certificates),
            errors: LiveCounters::get(&c.errors),
            rate_now: (requests - self.last_requests.min(requests)) as f64 / seconds,
            doses_rate_now: (doses - self.last_doses.min(doses)) as f64 / seconds,
            p50: Duration::from_nanos(self.window.value_at_quantile(0.5)),
            p99: Duration::from_nanos(self.window.value_at_quantile(0.99)),
        };
        self.last_at = now;
        self.last_requests = requests;
        self.last_doses = doses;
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn watch_mode_publishes_rates_and_percentiles() {
        let counters = Arc::new(LiveCounters::default());
        let window = Arc::new(LiveWindow::default());
        let (tx, mut rx) = watch::channel(LiveStats::default());
        let sources = LiveSources {
            counters: Arc::clone(&counters),
            windows: vec![Arc::clone(&window)],
        };
        let progress = ProgressTask::start(
            ProgressMode::Watch(tx),
            "test".into(),
            false,
            Duration::from_secs(10),
            Duration::from_secs(1),
            sources,
        );
        LiveCounters::add(&counters.requests, 500);
        LiveCounters::add(&counters.doses_acked, 200);
        for _ in 0..100 {
            window.record(Duration::from_millis(2));
        }
        rx.changed().await.expect("a snapshot");
        let snapshot = rx.borrow_and_update().clone();
        assert_eq!((snapshot.requests, snapshot.doses_acked), (500, 200));
        assert!((snapshot.rate_now - 500.0).abs() < 1.0, "{snapshot:?}");
        assert!(
            (snapshot.doses_rate_now - 200.0).abs() < 1.0,
            "{snapshot:?}"
        );
        let p50_ms = snapshot.p50.as_secs_f64() * 1e3;
        assert!((1.99..=2.01).contains(&p50_ms), "{snapshot:?}");
        assert!(matches!(progress.finish().await, ProgressMode::Watch(_)));
    }
}
