//! What the server counts, in one place: Prometheus families for `/metrics`, and hdrhistograms
//! of dose latency: since start (`/v1/stats`) and over the last minute (the console's
//! p50/p99/p99.9, where a spike after hours of traffic must show).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use analytics::{OutboxStatus, ShipperStatus};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the server exports. Field names match the exported names without the prefix.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<Labels, Counter>,
    pub http_request_seconds: Family<Labels, Histogram>,
    /// Per-dose outcomes: created, duplicate, conflict, refused (with rule), failed, busy.
    pub dose_outcomes: Family<Labels, Counter>,
    pub doses_committed: Counter,
    pub commit_batch_doses: Histogram,
    pub commit_seconds: Histogram,
    pub shard_queue_depth: Family<Labels, Gauge>,
    pub registrations: Counter,
    pub checkins: Counter,
    pub certificates_signed: Counter,
    /// The analytics outbox and shipper, set from their status at each scrape
    /// ([`Metrics::record_analytics`]), one metric per figure so that each has one unit.
    pub analytics_outbox_rows: Gauge<u64, AtomicU64>,
    pub analytics_outbox_bytes: Gauge<u64, AtomicU64>,
    pub analytics_outbox_max_bytes: Gauge<u64, AtomicU64>,
    pub analytics_lag_seconds: Gauge<f64, AtomicU64>,
    /// Totals the outbox keeps on disk, so they survive restarts: gauges, not counters.
    pub analytics_dropped_rows: Gauge<u64, AtomicU64>,
    pub analytics_set_aside_rows: Gauge<u64, AtomicU64>,
    pub analytics_shipper_consecutive_failures: Gauge<u64, AtomicU64>,
    /// Rows shipped since start: moved at each scrape by what the shipper shipped since the
    /// one before (see `shipped_seen`).
    pub analytics_shipped_rows: Counter,
    /// The largest shipped-rows figure a scrape has added to `analytics_shipped_rows`: with
    /// `fetch_max`, scrapes that run at once add each row once.
    shipped_seen: AtomicU64,
    /// Dose latency in microseconds, from the request's arrival to its answer, since start.
    dose_latency_us: Mutex<hdrhistogram::Histogram<u64>>,
    /// The same over the last minute, for the console.
    dose_latency_window: Mutex<LatencyWindow>,
    /// Seconds for the latency window count from here (monotonic: a clock step moves nothing).
    created: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// The seconds the figures cover; absent for figures since start.
    #[serde(skip_serializing_if = "is_zero")]
    pub window_s: u64,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vaxcamp");
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_request_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "http_request_seconds",
            "HTTP request duration by route",
            http_request_seconds.clone(),
        );
        let dose_outcomes = Family::<Labels, Counter>::default();
        registry.register(
            "dose_outcomes",
            "Doses by outcome (and refusal rule)",
            dose_outcomes.clone(),
        );
        let doses_committed = Counter::default();
        registry.register(
            "doses_committed",
            "Doses written durably",
            doses_committed.clone(),
        );
        let commit_batch_doses = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_batch_doses",
            "Doses per group commit",
            commit_batch_doses.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "commit_seconds",
            "Duration of a durable group commit",
            commit_seconds.clone(),
        );
        let shard_queue_depth = Family::<Labels, Gauge>::default();
        registry.register(
            "shard_queue_depth",
            "Write jobs waiting per shard",
            shard_queue_depth.clone(),
        );
        let registrations = Counter::default();
        registry.register(
            "registrations",
            "Registrations created",
            registrations.clone(),
        );
        let checkins = Counter::default();
        registry.register("checkins", "Successful check-ins", checkins.clone());
        let certificates_signed = Counter::default();
        registry.register(
            "certificates_signed",
            "Certificates signed",
            certificates_signed.clone(),
        );
        let analytics_outbox_rows = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "analytics_outbox_rows",
            "Rows committed and waiting in the analytics outbox",
            analytics_outbox_rows.clone(),
        );
        let analytics_outbox_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "analytics_outbox_bytes",
            "Encoded bytes waiting in the analytics outbox",
            analytics_outbox_bytes.clone(),
        );
        let analytics_outbox_max_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "analytics_outbox_max_bytes",
            "The analytics outbox's bound; rows beyond it are dropped",
            analytics_outbox_max_bytes.clone(),
        );
        let analytics_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "analytics_lag_seconds",
            "Age of the oldest row waiting in the analytics outbox",
            analytics_lag_seconds.clone(),
        );
        let analytics_dropped_rows = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "analytics_dropped_rows",
            "Rows dropped because the analytics outbox was full (all time, kept on disk)",
            analytics_dropped_rows.clone(),
        );
        let analytics_set_aside_rows = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "analytics_set_aside_rows",
            "Rows set aside because the analytics backend cannot hold them (all time, kept on disk)",
            analytics_set_aside_rows.clone(),
        );
        let analytics_shipper_consecutive_failures = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "analytics_shipper_consecutive_failures",
            "Shipments to the analytics backend that failed in a row",
            analytics_shipper_consecutive_failures.clone(),
        );
        let analytics_shipped_rows = Counter::default();
        registry.register(
            "analytics_shipped_rows",
            "Rows shipped to the analytics backend",
            analytics_shipped_rows.clone(),
        );
        Self {
            registry,
            http_requests,
            http_request_seconds,
            dose_outcomes,
            doses_committed,
            commit_batch_doses,
            commit_seconds,
            shard_queue_depth,
            registrations,
            checkins,
            certificates_signed,
            analytics_outbox_rows,
            analytics_outbox_bytes,
            analytics_outbox_max_bytes,
            analytics_lag_seconds,
            analytics_dropped_rows,
            analytics_set_aside_rows,
            analytics_shipper_consecutive_failures,
            analytics_shipped_rows,
            shipped_seen: AtomicU64::new(0),
            dose_latency_us: Mutex::new(latency_histogram()),
            dose_latency_window: Mutex::new(LatencyWindow::default()),
            created: Instant::now(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Sets the analytics figures from the outbox's and the shipper's status (at a scrape).
    pub fn record_analytics(&self, outbox: &OutboxStatus, shipper: &ShipperStatus) {
        self.analytics_outbox_rows.set(outbox.rows);
        self.analytics_outbox_bytes.set(outbox.bytes);
        self.analytics_outbox_max_bytes.set(outbox.max_bytes);
        self.analytics_lag_seconds
            .set(outbox.oldest_age_ms as f64 / 1_000.0);
        self.analytics_dropped_rows.set(outbox.dropped_rows);
        self.analytics_set_aside_rows.set(outbox.set_aside);
        self.analytics_shipper_consecutive_failures
            .set(u64::from(shipper.consecutive_failures));
        // The shipper counts since start; the counter moves by what no scrape has added yet.
        let added = self
            .shipped_seen
            .fetch_max(shipper.shipped_rows, Ordering::Relaxed);
        self.analytics_shipped_rows
            .inc_by(shipper.shipped_rows.saturating_sub(added));
    }

    pub fn dose_outcome(&self, outcome: &'static str, rule: Option<&'static str>) {
        let mut labels: Labels = vec![("outcome", outcome.to_owned())];
        if let Some(rule) = rule {
            labels.push(("rule", rule.to_owned()));
        }
        self.dose_outcomes.get_or_create(&labels).inc();
    }

    /// Records the latency of one dose request.
    pub fn record_dose_latency(&self, elapsed: Duration) {
        self.record_doses_latency(elapsed, 1);
    }

    /// Records `doses` doses answered after `elapsed` (a batch: each of its doses waited that
    /// long for its acknowledgement).
    pub fn record_doses_latency(&self, elapsed: Duration, doses: u64) {
        self.record_doses_latency_at(self.seconds(), elapsed, doses);
    }

    fn seconds(&self) -> i64 {
        i64::try_from(self.created.elapsed().as_secs()).unwrap_or(i64::MAX)
    }

    fn record_doses_latency_at(&self, at: i64, elapsed: Duration, doses: u64) {
        if doses == 0 {
            return;
        }
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        // Clamped into the histograms' range above, so recording cannot fail.
        let _ = self
            .dose_latency_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record_n(micros, doses);
        self.dose_latency_window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(at, micros, doses);
    }

    /// Dose latency since the server started.
    pub fn dose_latency(&self) -> LatencySummary {
        summary(
            &self
                .dose_latency_us
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            0,
        )
    }

    /// Dose latency over the last minute.
    pub fn dose_latency_window(&self) -> LatencySummary {
        self.dose_latency_window_at(self.seconds())
    }

    fn dose_latency_window_at(&self, now: i64) -> LatencySummary {
        // Every dose answer records into the window: copy its slots under the lock, and merge
        // (allocate and add six histograms) after releasing it.
        let slots = self
            .dose_latency_window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .current_slots(now);
        summary(&merged(&slots), LATENCY_WINDOW_S)
    }
}

/// Latencies above a minute are counted as a minute.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Seconds of latency the console's figures cover, in slots of `LATENCY_SLOT_S`.
const LATENCY_WINDOW_S: u64 = 60;
const LATENCY_SLOT_S: i64 = 10;
const LATENCY_SLOTS: usize = (LATENCY_WINDOW_S as i64 / LATENCY_SLOT_S) as usize;

fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    // Fixed, valid bounds (1 µs to 60 s, 3 significant figures): construction cannot fail.
    #[allow(clippy::expect_used)]
    hdrhistogram::Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn summary(histogram: &hdrhistogram::Histogram<u64>, window_s: u64) -> LatencySummary {
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        window_s,
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p90_ms: ms(histogram.value_at_quantile(0.9)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The last minute of latencies: one hdrhistogram per ten seconds, six of them in a ring; a
/// slot whose ten seconds have passed out of the minute is cleared and reused. Reading merges
/// the slots still inside the minute (so the window is 50 to 60 s long).
struct LatencyWindow {
    /// (slot number: seconds / `LATENCY_SLOT_S`, its latencies)
    slots: Vec<(i64, hdrhistogram::Histogram<u64>)>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self {
            slots: (0..LATENCY_SLOTS)
                .map(|_| (i64::MIN, latency_histogram()))
                .collect(),
        }
    }
}

impl LatencyWindow {
    fn record(&mut self, at: i64, micros: u64, n: u64) {
        let slot = at.div_euclid(LATENCY_SLOT_S);
        let (number, histogram) = &mut self.slots[slot.rem_euclid(LATENCY_SLOTS as i64) as usize];
        if *number != slot {
            histogram.reset();
            *number = slot;
        }
        let _ = histogram.record_n(micros, n);
    }

    /// Copies of the slots still inside the minute that ends at `now`; the empty ones are left
    /// out.
    fn current_slots(&self, now: i64) -> Vec<hdrhistogram::Histogram<u64>> {
        let current = now.div_euclid(LATENCY_SLOT_S);
        self.slots
            .iter()
            .filter(|(number, histogram)| {
                *number > current - LATENCY_SLOTS as i64
                    && *number <= current
                    && !histogram.is_empty()
            })
            .map(|(_, histogram)| histogram.clone())
            .collect()
    }
}

/// One histogram of the latencies in `slots`.
fn merged(slots: &[hdrhistogram::Histogram<u64>]) -> hdrhistogram::Histogram<u64> {
    let mut merged = latency_histogram();
    for histogram in slots {
        // Same bounds on both sides: adding cannot fail.
        let _ = merged.add(histogram);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_families() {
        let metrics = Metrics::new();
        metrics.doses_committed.inc();
        metrics.dose_outcome("refused", Some("too_early"));
        let text = metrics.render();
        assert!(text.contains("vaxcamp_doses_committed_total 1"), "{text}");
        assert!(
            text.contains("vaxcamp_dose_outcomes_total{outcome=\"refused\",rule=\"too_early\"} 1"),
            "{text}"
        );
    }

    /// One metric per analytics figure, each in its unit; rows shipped move by what was shipped
    /// since the last scrape, so scrapes (even at once) never count a row twice.
    #[test]
    fn analytics_figures_have_one_unit_each() {
        let metrics = Metrics::new();
        let outbox = OutboxStatus {
            rows: 12,
            bytes: 3_000,
            max_bytes: 1 << 20,
            dropped_rows: 4,
            set_aside: 1,
            oldest_age_ms: 1_500,
            ..OutboxStatus::default()
        };
        let mut shipper = ShipperStatus {
            shipped_rows: 100,
            consecutive_failures: 2,
            ..ShipperStatus::default()
        };
        metrics.record_analytics(&outbox, &shipper);
        metrics.record_analytics(&outbox, &shipper);
        std::thread::scope(|scope| {
            shipper.shipped_rows = 150;
            for _ in 0..4 {
                scope.spawn(|| metrics.record_analytics(&outbox, &shipper));
            }
        });
        let text = metrics.render();
        for line in [
            "vaxcamp_analytics_outbox_rows 12",
            "vaxcamp_analytics_outbox_bytes 3000",
            "vaxcamp_analytics_outbox_max_bytes 1048576",
            "vaxcamp_analytics_lag_seconds 1.5",
            "vaxcamp_analytics_dropped_rows 4",
            "vaxcamp_analytics_set_aside_rows 1",
            "vaxcamp_analytics_shipper_consecutive_failures 2",
            "vaxcamp_analytics_shipped_rows_total 150",
            "# TYPE vaxcamp_analytics_shipped_rows counter",
            "# TYPE vaxcamp_analytics_dropped_rows gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        assert!(!text.contains("figure="), "{text}");
    }

    /// A spike after a long calm shows in the last minute's p99.9 and leaves it a minute later,
    /// while the figures since start hardly move.
    #[test]
    fn latency_window_shows_a_recent_spike() {
        let metrics = Metrics::new();
        for second in 0..3_600 {
            metrics.record_doses_latency_at(second, Duration::from_millis(2), 10);
        }
        // A batch of 100 doses answered after 900 ms, at second 3,600.
        metrics.record_doses_latency_at(3_600, Duration::from_millis(900), 100);
        let window = metrics.dose_latency_window_at(3_605);
        assert_eq!(window.window_s, 60);
        // The slots of seconds 3,550 to 3,609: fifty seconds of ten doses, and the batch.
        assert_eq!(window.count, 500 + 100);
        assert!(window.p99_ms > 800.0, "{window:?}");
        let all = metrics.dose_latency();
        assert!(all.p99_ms < 3.0, "drowned since start: {all:?}");
        assert_eq!(all.count, 36_100);
        // A minute later the spike has left the window.
        for second in 3_601..3_670 {
            metrics.record_doses_latency_at(second, Duration::from_millis(2), 10);
        }
        let later = metrics.dose_latency_window_at(3_670);
        assert!(later.p999_ms < 3.0, "{later:?}");
        // Nothing recorded for a while: an empty window.
        assert_eq!(metrics.dose_latency_window_at(10_000).count, 0);
    }

    #[test]
    fn latency_quantiles() {
        let metrics = Metrics::new();
        for ms in 1..=100 {
            metrics.record_dose_latency(Duration::from_millis(ms));
        }
        let summary = metrics.dose_latency();
        assert_eq!(summary.count, 100);
        assert_eq!(metrics.dose_latency_window().count, 100);
        assert!((49.0..=51.0).contains(&summary.p50_ms), "{summary:?}");
        assert!((99.0..=100.5).contains(&summary.max_ms), "{summary:?}");
    }
}
