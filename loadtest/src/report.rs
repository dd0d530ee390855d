//! The report: a text summary for people and a JSON document (histograms included) for scripts.
//!
//! The JSON schema is documented in `loadtest/README.md`; [`REPORT_FORMAT`] names its version and
//! changes whenever a field changes meaning.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::stats::{Op, OpStats, Stats};
use crate::workload::{Mix, Scenario};

/// The value of [`Report::format`] for reports written by this version.
pub const REPORT_FORMAT: &str = "vaxcamp-loadtest-report/1";

/// Why a report could not be read or a histogram decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The report file could not be read or written.
    #[error("report file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a report.
    #[error("report file {path} is not a loadtest report: {source}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// A histogram field is not base64 of a V2-deflate histogram.
    #[error("histogram is not base64 of an HdrHistogram V2 (deflate) encoding: {0}")]
    Histogram(String),
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopMode {
    /// Constant arrival rate; latency measured from each request's due time.
    Open,
    /// Each worker sends as soon as its last request finished; latency measured from the send.
    Closed,
}

/// Everything measured in one run. Serialized as the `--json` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_FORMAT`].
    pub format: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// The server's base URL.
    pub server: String,
    /// The workload.
    pub scenario: Scenario,
    /// Open or closed loop.
    pub mode: LoopMode,
    /// Target requests per second (open loop only).
    pub target_rate: Option<f64>,
    /// Workers, i.e. the most requests in flight at once.
    pub concurrency: usize,
    /// The configured duration, in seconds.
    pub duration_s: f64,
    /// From the first request's due time until the last answer, in seconds.
    pub elapsed_s: f64,
    /// The seed of every random choice; pass it as `--seed` to repeat the run's choices.
    pub seed: u64,
    /// The mix (scenario `mix` only).
    pub mix: Option<Mix>,
    /// The run was interrupted before its duration was up.
    pub stopped_early: bool,
    /// How well the generator kept to its schedule.
    pub schedule: ScheduleReport,
    /// Per operation, keyed by its name (`dose`, `checkin`, ...); only operations that ran.
    pub operations: BTreeMap<Op, OpReport>,
    /// What happened to the doses sent.
    pub doses: DoseReport,
    /// Things that make the figures less trustworthy than they look (falling behind, errors).
    pub warnings: Vec<String>,
    /// The `--baseline` healthz run, if any.
    pub baseline: Option<Baseline>,
}

/// How well the generator kept to its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleReport {
    /// Requests due before the run ended (open loop), or sent (closed loop).
    pub scheduled: u64,
    /// Requests sent (every one was answered, failed, or timed out).
    pub sent: u64,
    /// Due but never sent because every worker was still busy when the run ended.
    pub behind: u64,
    /// Requests completed per second of elapsed time.
    pub achieved_rate: f64,
    /// How late requests left relative to their due time (open loop only).
    pub lag: Option<LatencyReport>,
}

/// Statistics of one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// Requests sent.
    pub requests: u64,
    /// 2xx answers (including expected refusals).
    pub ok: u64,
    /// Failed requests: non-2xx, wrong 2xx content, transport errors and timeouts.
    pub errors: u64,
    /// Requests per second of elapsed time.
    pub rate: f64,
    /// Latency of every request that got an HTTP answer, from its due time.
    pub latency: LatencyReport,
    /// Errors by HTTP status; `0` means no answer (connection failed or timed out).
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Errors by the `error` code of the answer (`no_error_body` if it had none; `timeout`,
    /// `connect_failed`, `connection_error` for status 0).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Expected refusals by reason: 2xx answers that declined, as the workload expects (a check-in
    /// of a citizen whose next dose is not due yet).
    pub refusals: BTreeMap<String, u64>,
}

/// A latency distribution: summary figures in nanoseconds and the full histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Values recorded.
    pub count: u64,
    /// Smallest, ns.
    pub min_ns: u64,
    /// Mean, ns.
    pub mean_ns: f64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 90th percentile, ns.
    pub p90_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
    /// The HdrHistogram (ns, 3 significant figures) in the V2 deflate encoding, base64 (standard
    /// alphabet, padded): the same text HdrHistogram's interval logs carry, readable by every
    /// HdrHistogram implementation.
    pub histogram: String,
}

impl LatencyReport {
    /// Summarises and encodes `histogram`.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        let mut encoded = Vec::new();
        let histogram_text = match V2DeflateSerializer::new().serialize(histogram, &mut encoded) {
            Ok(_) => BASE64.encode(&encoded),
            Err(error) => {
                tracing::error!(
                    ?error,
                    "could not encode a histogram; the JSON report lacks it"
                );
                String::new()
            }
        };
        let empty = histogram.is_empty();
        Self {
            count: histogram.len(),
            min_ns: if empty { 0 } else { histogram.min() },
            mean_ns: if empty { 0.0 } else { histogram.mean() },
            p50_ns: histogram.value_at_quantile(0.5),
            p90_ns: histogram.value_at_quantile(0.9),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
            histogram: histogram_text,
        }
    }

    /// Decodes the full histogram, e.g. to merge several runs or read any other percentile.
    ///
    /// # Errors
    /// The field is not base64 of a V2 (deflate) histogram.
    pub fn histogram(&self) -> Result<Histogram<u64>, ReportError> {
        let bytes = BASE64
            .decode(&self.histogram)
            .map_err(|e| ReportError::Histogram(e.to_string()))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| ReportError::Histogram(format!("{e:?}")))
    }
}

/// What happened to the doses sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoseReport {
    /// Doses acknowledged (2xx), single and in batches: durable on the server.
    pub acked: u64,
    /// `acked` per second of elapsed time.
    pub acked_per_s: f64,
    /// Single doses acknowledged.
    pub single_acked: u64,
    /// Doses sent inside batches.
    pub batch_sent: u64,
    /// Doses inside batches acknowledged (per-dose status 200 or 201).
    pub batch_acked: u64,
    /// Per-dose statuses inside batch answers other than 200/201.
    pub batch_errors_by_status: BTreeMap<u16, u64>,
    /// Per-dose error codes inside batch answers.
    pub batch_errors_by_code: BTreeMap<String, u64>,
}

/// The `--baseline` run: the same generator, settings and duration against `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Healthz requests completed per second: the ceiling of this generator and HTTP stack on this
    /// machine (a true ceiling only in closed loop; in open loop it is capped by the target rate).
    pub ceiling_rate: f64,
    /// What the workload's figure of merit is: `doses_acked_per_s`, `checkins_per_s` or
    /// `requests_per_s`.
    pub measure: String,
    /// The workload's figure of merit as a percentage of `ceiling_rate`.
    pub share_pct: f64,
    /// The full healthz report.
    pub healthz: Box<Report>,
}

/// The facts of one phase the report is built from.
pub(crate) struct RunFacts<'a> {
    pub started_at: String,
    pub server: &'a str,
    pub scenario: Scenario,
    pub target_rate: Option<f64>,
    pub concurrency: usize,
    pub duration: std::time::Duration,
    pub elapsed: std::time::Duration,
    pub seed: u64,
    pub mix: Option<Mix>,
    pub stopped_early: bool,
    pub scheduled: u64,
    pub sent: u64,
}

impl Report {
    pub(crate) fn build(facts: RunFacts<'_>, stats: &Stats) -> Self {
        let seconds = facts.elapsed.as_secs_f64().max(1e-9);
        let mut operations = BTreeMap::new();
        for op in Op::ALL {
            if let Some(s) = stats.op(op) {
                operations.insert(op, op_report(s, seconds));
            }
        }
        let d = &stats.doses;
        let acked = d.single_acked + d.batch_acked;
        let doses = DoseReport {
            acked,
            acked_per_s: acked as f64 / seconds,
            single_acked: d.single_acked,
            batch_sent: d.batch_sent,
            batch_acked: d.batch_acked,
            batch_errors_by_status: d.batch_by_status.clone(),
            batch_errors_by_code: d.batch_by_code.clone(),
        };
        let open = facts.target_rate.is_some();
        let schedule = ScheduleReport {
            scheduled: facts.scheduled,
            sent: facts.sent,
            behind: facts.scheduled.saturating_sub(facts.sent),
            achieved_rate: facts.sent as f64 / seconds,
            lag: open.then(|| LatencyReport::from_histogram(&stats.lag)),
        };
        let mut report = Report {
            format: REPORT_FORMAT.to_owned(),
            started_at: facts.started_at,
            server: facts.server.to_owned(),
            scenario: facts.scenario,
            mode: if open {
                LoopMode::Open
            } else {
                LoopMode::Closed
            },
            target_rate: facts.target_rate,
            concurrency: facts.concurrency,
            duration_s: facts.duration.as_secs_f64(),
            elapsed_s: facts.elapsed.as_secs_f64(),
            seed: facts.seed,
            mix: facts.mix,
            stopped_early: facts.stopped_early,
            schedule,
            operations,
            doses,
            warnings: Vec::new(),
            baseline: None,
        };
        report.warnings = report.find_warnings();
        report
    }

    /// Attaches a baseline healthz report and computes the share of its ceiling this run reached.
    pub(crate) fn with_baseline(mut self, healthz: Report) -> Self {
        let ceiling_rate = healthz.schedule.achieved_rate;
        let (measure, rate) = self.figure_of_merit();
        self.baseline = Some(Baseline {
            ceiling_rate,
            measure: measure.to_owned(),
            share_pct: if ceiling_rate > 0.0 {
                100.0 * rate / ceiling_rate
            } else {
                0.0
            },
            healthz: Box::new(healthz),
        });
        self
    }

    /// The rate this scenario is judged by, and its name.
    fn figure_of_merit(&self) -> (&'static str, f64) {
        let seconds = self.elapsed_s.max(1e-9);
        match self.scenario {
            Scenario::Mix | Scenario::Doses | Scenario::Batch => {
                ("doses_acked_per_s", self.doses.acked_per_s)
            }
            Scenario::Checkins => (
                "checkins_per_s",
                self.operations
                    .get(&Op::Checkin)
                    .map_or(0.0, |op| op.ok as f64 / seconds),
            ),
            Scenario::Healthz => ("requests_per_s", self.schedule.achieved_rate),
        }
    }

    fn find_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let s = &self.schedule;
        if s.behind > 0 {
            warnings.push(format!(
                "fell behind: {} of {} due requests ({:.1}%) were never sent because all {} workers \
                 were busy; their latency is not in the percentiles. Raise --concurrency or lower --rate.",
                s.behind,
                s.scheduled,
                100.0 * s.behind as f64 / s.scheduled.max(1) as f64,
                self.concurrency
            ));
        }
        if let (Some(lag), Some(rate)) = (&s.lag, self.target_rate) {
            // A request interval or 10 ms, whichever is larger, is "late" enough to mention.
            let threshold = (1e9 / rate).max(1e7);
            if lag.p99_ns as f64 > threshold {
                warnings.push(format!(
                    "requests left late (send lag p99 {:.1} ms): every worker was busy, so the server \
                     (or this generator's CPU) could not keep up with {rate} req/s; latencies include the wait",
                    lag.p99_ns as f64 / 1e6
                ));
            }
        }
        let requests: u64 = self.operations.values().map(|o| o.requests).sum();
        let errors: u64 = self.operations.values().map(|o| o.errors).sum();
        if requests > 0 && errors * 100 >= requests {
            warnings.push(format!(
                "{errors} of {requests} requests ({:.1}%) failed; see errors by status and code",
                100.0 * errors as f64 / requests as f64
            ));
        }
        if self.stopped_early {
            warnings.push("the run was interrupted before its duration was up".to_owned());
        }
        warnings
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(e.into()))?;
        std::fs::write(path, text).map_err(io)
    }

    /// Reads a report written by [`Report::write_json`].
    ///
    /// # Errors
    /// The file cannot be read or is not a report.
    pub fn read_json(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read(path).map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ReportError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

fn op_report(s: &OpStats, seconds: f64) -> OpReport {
    OpReport {
        requests: s.requests,
        ok: s.ok,
        errors: s.errors(),
        rate: s.requests as f64 / seconds,
        latency: LatencyReport::from_histogram(&s.latency),
        errors_by_status: s.by_status.clone(),
        errors_by_code: s.by_code.clone(),
        refusals: s.refusals.clone(),
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn counts<K: fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    let mut out = String::new();
    for (key, count) in map {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{key} ×{count}");
    }
    out
}

/// The text summary.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pace = match self.target_rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop (as fast as answers come)".to_owned(),
        };
        writeln!(
            f,
            "vaxcamp loadtest: scenario {} against {}, {pace}, {} workers, {:.1}s (seed {})",
            self.scenario.name(),
            self.server,
            self.concurrency,
            self.duration_s,
            self.seed
        )?;
        let s = &self.schedule;
        match self.target_rate {
            Some(rate) => writeln!(
                f,
                "schedule   {} due, {} sent, {} behind; achieved {:.1} req/s = {:.1}% of the target",
                s.scheduled,
                s.sent,
                s.behind,
                s.achieved_rate,
                100.0 * s.achieved_rate / rate
            )?,
            None => writeln!(
                f,
                "schedule   {} sent; achieved {:.1} req/s",
                s.sent, s.achieved_rate
            )?,
        }
        if let Some(lag) = &s.lag {
            writeln!(
                f,
                "send lag   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (due time → sent; grows when every worker is busy)",
                ms(lag.p50_ns),
                ms(lag.p99_ns),
                ms(lag.max_ns)
            )?;
        }
        let d = &self.doses;
        if d.acked > 0 || d.batch_sent > 0 || self.operations.contains_key(&Op::Dose) {
            write!(
                f,
                "doses      {} acknowledged, {:.1}/s (single {}",
                d.acked, d.acked_per_s, d.single_acked
            )?;
            if d.batch_sent > 0 {
                write!(f, "; in batches {} of {} sent", d.batch_acked, d.batch_sent)?;
            }
            writeln!(f, ")")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<12}{:>10}{:>10}{:>8}{:>10}{:>9}{:>9}{:>9}{:>10}{:>9}",
            "operation",
            "requests",
            "ok",
            "errors",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        )?;
        for (op, r) in &self.operations {
            let l = &r.latency;
            writeln!(
                f,
                "{:<12}{:>10}{:>10}{:>8}{:>10.1}{:>9.2}{:>9.2}{:>9.2}{:>10.2}{:>9.2}",
                op.name(),
                r.requests,
                r.ok,
                r.errors,
                r.rate,
                ms(l.p50_ns),
                ms(l.p90_ns),
                ms(l.p99_ns),
                ms(l.p999_ns),
                ms(l.max_ns)
            )?;
        }
        let failing: Vec<_> = self
            .operations
            .iter()
            .filter(|(_, r)| r.errors > 0)
            .collect();
        if !failing.is_empty() || !d.batch_errors_by_status.is_empty() {
            writeln!(f, "\nerrors (status 0 = no answer)")?;
            for (op, r) in failing {
                writeln!(
                    f,
                    "  {:<12} by status: {}; by code: {}",
                    op.name(),
                    counts(&r.errors_by_status),
                    counts(&r.errors_by_code)
                )?;
            }
            if !d.batch_errors_by_status.is_empty() {
                writeln!(
                    f,
                    "  {:<12} by status: {}; by code: {}",
                    "batch doses",
                    counts(&d.batch_errors_by_status),
                    counts(&d.batch_errors_by_code)
                )?;
            }
        }
        let refusing: Vec<_> = self
            .operations
            .iter()
            .filter(|(_, r)| !r.refusals.is_empty())
            .collect();
        if !refusing.is_empty() {
            writeln!(f, "\nexpected refusals (not errors)")?;
            for (op, r) in refusing {
                writeln!(f, "  {:<12} {}", op.name(), counts(&r.refusals))?;
            }
        }
        if let Some(b) = &self.baseline {
            let p99 = b
                .healthz
                .operations
                .get(&Op::Healthz)
                .map_or(0, |o| o.latency.p99_ns);
            writeln!(
                f,
                "\nbaseline   healthz {:.1} req/s (p99 {:.2} ms) with the same settings",
                b.ceiling_rate,
                ms(p99)
            )?;
            let what = match b.measure.as_str() {
                "doses_acked_per_s" => "dose ingest",
                "checkins_per_s" => "check-ins",
                _ => "requests",
            };
            writeln!(
                f,
                "           {what} reached {:.1}% of the healthz ceiling",
                b.share_pct
            )?;
            if self.target_rate.is_some() {
                writeln!(
                    f,
                    "           (open loop: both runs are capped by --rate; use --rate 0 for the true ceiling)"
                )?;
            }
        }
        if !self.warnings.is_empty() {
            writeln!(f, "\nwarnings")?;
            for warning in &self.warnings {
                writeln!(f, "  - {warning}")?;
            }
        }
        if self.target_rate.is_some() {
            writeln!(
                f,
                "\nLatency is measured from each request's due time (start + i/rate), so time spent \
                 waiting for a free worker counts."
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Outcome;
    use std::time::Duration;

    fn sample_report() -> Report {
        let mut stats = Stats::default();
        for i in 1..=1000u64 {
            stats.record(Op::Dose, Duration::from_micros(200 + i), Outcome::Ok);
        }
        stats.record(
            Op::Dose,
            Duration::from_millis(40),
            Outcome::Failed {
                status: 503,
                code: "queue_full",
            },
        );
        stats.record(
            Op::Checkin,
            Duration::from_micros(900),
            Outcome::Refused("too_early"),
        );
        crate::stats::record(&mut stats.lag, 1_000);
        stats.doses.single_acked = 1000;
        let facts = RunFacts {
            started_at: "2026-11-21T08:30:00Z".into(),
            server: "http://127.0.0.1:8080",
            scenario: Scenario::Mix,
            target_rate: Some(1000.0),
            concurrency: 64,
            duration: Duration::from_secs(1),
            elapsed: Duration::from_millis(1002),
            seed: 42,
            mix: Some(Mix::default()),
            stopped_early: false,
            scheduled: 1002,
            sent: 1002,
        };
        Report::build(facts, &stats)
    }

    #[test]
    fn json_round_trip_keeps_every_field_and_the_histograms() {
        let report = sample_report();
        let mut healthz = sample_report();
        healthz.scenario = Scenario::Healthz;
        let report = report.with_baseline(healthz);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("report.json");
        report.write_json(&path).expect("write");
        let back = Report::read_json(&path).expect("read");

        // Floats go through decimal text; compare them with a tolerance and everything else exactly.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        assert!(close(
            back.schedule.achieved_rate,
            report.schedule.achieved_rate
        ));
        assert!(close(back.doses.acked_per_s, report.doses.acked_per_s));
        let mut normalised = back.clone();
        normalised.schedule.achieved_rate = report.schedule.achieved_rate;
        normalised.doses.acked_per_s = report.doses.acked_per_s;
        for (op, r) in &mut normalised.operations {
            assert!(close(r.rate, report.operations[op].rate));
            assert!(close(
                r.latency.mean_ns,
                report.operations[op].latency.mean_ns
            ));
            r.rate = report.operations[op].rate;
            r.latency.mean_ns = report.operations[op].latency.mean_ns;
        }
        normalised.baseline = report.baseline.clone();
        assert_eq!(normalised, report);

        let dose = &back.operations[&Op::Dose];
        let histogram = dose.latency.histogram().expect("decodes");
        assert_eq!(histogram.len(), 1001);
        assert_eq!(histogram.value_at_quantile(0.99), dose.latency.p99_ns);
        assert_eq!(dose.errors_by_status, BTreeMap::from([(503, 1)]));
        assert_eq!(
            back.operations[&Op::Checkin].refusals,
            BTreeMap::from([("too_early".into(), 1)])
        );
        let baseline = back.baseline.expect("baseline");
        assert_eq!(baseline.measure, "doses_acked_per_s");
        assert_eq!(baseline.healthz.scenario, Scenario::Healthz);

        // Operations are keyed by name, as the README documents.
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(json["operations"]["dose"]["errors_by_status"]["503"], 1);
        assert_eq!(json["format"], REPORT_FORMAT);
    }

    #[test]
    fn text_summary_names_the_figures() {
        let text = sample_report().to_string();
        assert!(text.contains("open loop at 1000 req/s"), "{text}");
        assert!(text.contains("1000 acknowledged"), "{text}");
        assert!(text.contains("queue_full ×1"), "{text}");
        assert!(text.contains("too_early ×1"), "{text}");
        assert!(text.contains("due time"), "{text}");
    }

    #[test]
    fn falling_behind_is_a_warning() {
        let mut stats = Stats::default();
        stats.record(Op::Healthz, Duration::from_millis(1), Outcome::Ok);
        let facts = RunFacts {
            started_at: String::new(),
            server: "http://x",
            scenario: Scenario::Healthz,
            target_rate: Some(100.0),
            concurrency: 1,
            duration: Duration::from_secs(1),
            elapsed: Duration::from_secs(1),
            seed: 0,
            mix: None,
            stopped_early: false,
            scheduled: 100,
            sent: 60,
        };
        let report = Report::build(facts, &stats);
        assert_eq!(report.schedule.behind, 40);
        assert!(
            report.warnings.iter().any(|w| w.contains("fell behind")),
            "{:?}",
            report.warnings
        );
    }
}
