//! What the server counts, in one place: Prometheus families for `/metrics`, and an
//! hdrhistogram of dose latency for the console's p50/p99/p99.9 (`/v1/stats`).

use std::sync::Mutex;
use std::time::Duration;

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
    /// Dose request latency in microseconds, from arrival to answer.
    dose_latency_us: Mutex<hdrhistogram::Histogram<u64>>,
    /// The same counts as `dose_outcomes`, readable without encoding the exposition (the live
    /// console reads them every second). Keys are static strings: no allocation per dose.
    outcome_totals: OutcomeTotals,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
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
        // Fixed, valid bounds (1 µs to 60 s, 3 significant figures): construction cannot fail.
        #[allow(clippy::expect_used)]
        let dose_latency_us = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .expect("valid histogram bounds");
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
            dose_latency_us: Mutex::new(dose_latency_us),
            outcome_totals: OutcomeTotals::default(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn dose_outcome(&self, outcome: &'static str, rule: Option<&'static str>) {
        let mut labels: Labels = vec![("outcome", outcome.to_owned())];
        if let Some(rule) = rule {
            labels.push(("rule", rule.to_owned()));
        }
        self.dose_outcomes.get_or_create(&labels).inc();
        self.outcome_totals.add(outcome, rule);
    }

    /// A handle on the dose outcome counts, for readers that outlive a borrow of `Metrics`.
    pub fn outcome_totals(&self) -> OutcomeTotals {
        self.outcome_totals.clone()
    }

    pub fn record_dose_latency(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        let mut histogram = self
            .dose_latency_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Clamped into the histogram's range above, so this cannot fail.
        let _ = histogram.record(micros);
    }

    pub fn dose_latency(&self) -> LatencySummary {
        let histogram = self
            .dose_latency_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p90_ms: ms(histogram.value_at_quantile(0.9)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// (outcome, refusal rule): the labels of `dose_outcomes`.
type OutcomeKey = (&'static str, Option<&'static str>);

/// Cumulative dose outcomes by (outcome, rule), shared between `Metrics` and its readers.
#[derive(Debug, Clone, Default)]
pub struct OutcomeTotals(std::sync::Arc<Mutex<std::collections::BTreeMap<OutcomeKey, u64>>>);

impl OutcomeTotals {
    fn add(&self, outcome: &'static str, rule: Option<&'static str>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((outcome, rule))
            .or_default() += 1;
    }

    /// Counts keyed `outcome` or `outcome:rule` (e.g. `refused:too_early`).
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        let totals = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        totals
            .iter()
            .map(|(&(outcome, rule), &n)| {
                let kind = match rule {
                    Some(rule) => format!("{outcome}:{rule}"),
                    None => outcome.to_owned(),
                };
                (kind, n)
            })
            .collect()
    }
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

    #[test]
    fn latency_quantiles() {
        let metrics = Metrics::new();
        for ms in 1..=100 {
            metrics.record_dose_latency(Duration::from_millis(ms));
        }
        let summary = metrics.dose_latency();
        assert_eq!(summary.count, 100);
        assert!((49.0..=51.0).contains(&summary.p50_ms), "{summary:?}");
        assert!((99.0..=100.5).contains(&summary.max_ms), "{summary:?}");
    }
}
