//! Measurements: one hdrhistogram per operation, kept per worker and merged with `add` at the end.
//!
//! Each worker owns its `Stats` outright, so recording a request is a few adds on memory no other
//! thread touches. The only shared state on the request path is `LiveCounters` (relaxed atomics)
//! and the worker's short-interval `LiveWindow`, an uncontended mutex that the progress task takes
//! once per tick.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant figures kept by every histogram.
pub const SIGFIG: u8 = 3;

/// A fresh latency histogram: values in nanoseconds, 3 significant figures, growing as needed so a
/// worker that only ever sees sub-millisecond answers does not pay for a 60-second range.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // `new` only fails for sigfig > 5.
    Histogram::new(SIGFIG).expect("3 significant figures is a valid histogram precision")
}

/// Records `value` (ns), growing the histogram as needed. `saturating_record` would not grow it: it
/// clamps to the current range, which for an auto-resizing histogram is almost nothing.
pub(crate) fn record(histogram: &mut Histogram<u64>, value: u64) {
    if histogram.record(value).is_err() {
        // Only beyond i64::MAX / 2 ns (146 years): clamp.
        histogram.saturating_record(value);
    }
}

/// Nanoseconds in `d`, saturating (a request would have to take 584 years to saturate).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The HTTP operations the generator performs, one histogram each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `GET /healthz`.
    Healthz,
    /// `GET /v1/people/{code}/pass`: the citizen's pre-registration QR.
    Pass,
    /// `POST /v1/checkins`.
    Checkin,
    /// `POST /v1/doses`: one dose, acknowledged once durable.
    Dose,
    /// `POST /v1/doses:batch`: an offline site's paper ledger.
    Batch,
    /// `GET /v1/people/{code}/certificate?format=png|svg`.
    Certificate,
    /// `POST /v1/verify`.
    Verify,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 7] = [
        Op::Healthz,
        Op::Pass,
        Op::Checkin,
        Op::Dose,
        Op::Batch,
        Op::Certificate,
        Op::Verify,
    ];

    /// The operation's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Healthz => "healthz",
            Op::Pass => "pass",
            Op::Checkin => "checkin",
            Op::Dose => "dose",
            Op::Batch => "batch",
            Op::Certificate => "certificate",
            Op::Verify => "verify",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// How one request ended, as far as the statistics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome<'a> {
    /// A 2xx answer that did what was asked.
    Ok,
    /// A 2xx answer that declined for a reason the workload expects (a check-in of a citizen whose
    /// next dose is not due yet). Counted apart from errors.
    Refused(&'a str),
    /// An HTTP answer that is an error (`status` ≥ 300, or a 2xx whose content is wrong, with the
    /// code saying what was wrong).
    Failed { status: u16, code: &'a str },
    /// No HTTP answer at all: connection refused, reset, or the request timed out. Status 0 in
    /// reports; no latency is recorded because there is no answer to time.
    Transport(&'a str),
}

/// Statistics of one operation.
#[derive(Debug, Clone)]
pub(crate) struct OpStats {
    /// Latency of every request that got an HTTP answer, in ns, measured from the request's due time.
    pub latency: Histogram<u64>,
    /// Requests sent, answered or not.
    pub requests: u64,
    /// 2xx answers (including expected refusals).
    pub ok: u64,
    /// Errors by HTTP status; 0 means no answer (transport error or timeout).
    pub by_status: BTreeMap<u16, u64>,
    /// Errors by the `error` code of the body (or a transport error kind).
    pub by_code: BTreeMap<String, u64>,
    /// Expected refusals by reason.
    pub refusals: BTreeMap<String, u64>,
}

impl OpStats {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            requests: 0,
            ok: 0,
            by_status: BTreeMap::new(),
            by_code: BTreeMap::new(),
            refusals: BTreeMap::new(),
        }
    }

    /// Errors of any kind.
    pub fn errors(&self) -> u64 {
        self.by_status.values().sum()
    }

    fn add(&mut self, other: &OpStats) {
        merge_histogram(&mut self.latency, &other.latency);
        self.requests += other.requests;
        self.ok += other.ok;
        merge_counts(&mut self.by_status, &other.by_status);
        merge_counts(&mut self.by_code, &other.by_code);
        merge_counts(&mut self.refusals, &other.refusals);
    }
}

/// Adds `source` into `target`. Both histograms auto-resize, so `add` cannot run out of range; if it
/// ever failed, the error is logged rather than dropping a whole worker's figures silently.
pub(crate) fn merge_histogram(target: &mut Histogram<u64>, source: &Histogram<u64>) {
    if let Err(error) = target.add(source) {
        tracing::error!(%error, "could not merge latency histograms; the report undercounts");
    }
}

fn merge_counts<K: Ord + Clone>(target: &mut BTreeMap<K, u64>, source: &BTreeMap<K, u64>) {
    for (key, count) in source {
        *target.entry(key.clone()).or_default() += count;
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    // Look up by &str first so the common case (a code already seen) allocates nothing.
    match map.get_mut(key) {
        Some(count) => *count += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

/// What happened to the doses sent, across single and batch uploads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DoseCounts {
    /// Single doses acknowledged (201 or 200).
    pub single_acked: u64,
    /// Doses inside batches acknowledged (per-dose status 201 or 200).
    pub batch_acked: u64,
    /// Doses sent inside batches.
    pub batch_sent: u64,
    /// Per-dose statuses inside batch answers other than 200/201.
    pub batch_by_status: BTreeMap<u16, u64>,
    /// Per-dose error codes inside batch answers.
    pub batch_by_code: BTreeMap<String, u64>,
}

/// Everything one worker measured. Merged across workers with [`Stats::add`].
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    ops: [Option<OpStats>; Op::ALL.len()],
    /// How late each request was sent relative to its due time (open loop only), in ns. Zero when
    /// the generator keeps up; growing when every worker is busy (slow server, or too little
    /// `--concurrency`) or the generator's CPU is saturated.
    pub lag: Histogram<u64>,
    pub doses: DoseCounts,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            ops: Default::default(),
            lag: new_histogram(),
            doses: DoseCounts::default(),
        }
    }
}

impl Stats {
    /// Records one request of `op` that took `latency` (from its due time) and ended as `outcome`.
    pub fn record(&mut self, op: Op, latency: Duration, outcome: Outcome<'_>) {
        // Histograms are created on first use: a pure scenario touches one or two operations, and
        // each histogram is ~100 KiB per worker.
        let stats = self.ops[op.slot()].get_or_insert_with(OpStats::new);
        stats.requests += 1;
        match outcome {
            Outcome::Ok => stats.ok += 1,
            Outcome::Refused(reason) => {
                stats.ok += 1;
                bump(&mut stats.refusals, reason);
            }
            Outcome::Failed { status, code } => {
                *stats.by_status.entry(status).or_default() += 1;
                bump(&mut stats.by_code, code);
            }
            Outcome::Transport(kind) => {
                *stats.by_status.entry(0).or_default() += 1;
                bump(&mut stats.by_code, kind);
                return;
            }
        }
        record(&mut stats.latency, nanos(latency));
    }

    /// The statistics of `op`, if any request of it was made.
    pub fn op(&self, op: Op) -> Option<&OpStats> {
        self.ops[op.slot()].as_ref()
    }

    /// Adds another worker's figures into these.
    pub fn add(&mut self, other: &Stats) {
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(OpStats::new).add(theirs);
            }
        }
        merge_histogram(&mut self.lag, &other.lag);
        let (d, o) = (&mut self.doses, &other.doses);
        d.single_acked += o.single_acked;
        d.batch_acked += o.batch_acked;
        d.batch_sent += o.batch_sent;
        merge_counts(&mut d.batch_by_status, &o.batch_by_status);
        merge_counts(&mut d.batch_by_code, &o.batch_by_code);
    }
}

/// Run-wide counters read by the progress display. Relaxed atomics: each is an independent tally
/// and a snapshot that is a few requests stale is fine.
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub doses_acked: AtomicU64,
    pub checkins: AtomicU64,
    pub certificates: AtomicU64,
}

impl LiveCounters {
    /// Back to zero (after a setup phase that is not part of the run).
    pub fn reset(&self) {
        for counter in [
            &self.requests,
            &self.errors,
            &self.doses_acked,
            &self.checkins,
            &self.certificates,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Latencies of one worker since the progress task last looked, for live percentiles.
#[derive(Debug)]
pub(crate) struct LiveWindow(Mutex<Histogram<u64>>);

impl Default for LiveWindow {
    fn default() -> Self {
        Self(Mutex::new(new_histogram()))
    }
}

impl LiveWindow {
    pub fn record(&self, latency: Duration) {
        // A poisoned lock only means another thread panicked mid-record; the counts are still usable.
        record(
            &mut self.0.lock().unwrap_or_else(PoisonError::into_inner),
            nanos(latency),
        );
    }

    /// Moves this window's latencies into `into` and starts a new window.
    pub fn drain_into(&self, into: &mut Histogram<u64>) {
        let mut window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        merge_histogram(into, &window);
        window.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn per_worker_stats_merge_with_add() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=100 {
            a.record(Op::Dose, ms(i), Outcome::Ok);
        }
        b.record(
            Op::Dose,
            ms(500),
            Outcome::Failed {
                status: 422,
                code: "too_early",
            },
        );
        b.record(Op::Dose, ms(1), Outcome::Transport("timeout"));
        b.record(Op::Checkin, ms(2), Outcome::Refused("too_early"));
        b.doses.single_acked = 3;

        let mut total = Stats::default();
        total.add(&a);
        total.add(&b);
        let dose = total.op(Op::Dose).expect("dose stats");
        assert_eq!(dose.requests, 102);
        assert_eq!(dose.ok, 100);
        // The transport error has no latency to record; the 422 does.
        assert_eq!(dose.latency.len(), 101);
        assert_eq!(
            dose.latency.highest_equivalent(dose.latency.max()),
            dose.latency.highest_equivalent(nanos(ms(500)))
        );
        let p50 = dose.latency.value_at_quantile(0.5);
        assert!((49_000_000..=52_000_000).contains(&p50), "p50 {p50}");
        assert_eq!(dose.by_status, BTreeMap::from([(0, 1), (422, 1)]));
        assert_eq!(dose.by_code.get("too_early"), Some(&1));
        assert_eq!(dose.errors(), 2);
        let checkin = total.op(Op::Checkin).expect("checkin stats");
        assert_eq!((checkin.ok, checkin.errors()), (1, 0));
        assert_eq!(checkin.refusals.get("too_early"), Some(&1));
        assert!(total.op(Op::Verify).is_none());
        assert_eq!(total.doses.single_acked, 3);
    }

    #[test]
    fn live_window_drains_and_resets() {
        let window = LiveWindow::default();
        window.record(ms(3));
        window.record(ms(4));
        let mut seen = new_histogram();
        window.drain_into(&mut seen);
        assert_eq!(seen.len(), 2);
        window.drain_into(&mut seen);
        assert_eq!(seen.len(), 2, "a drained window is empty");
    }
}
