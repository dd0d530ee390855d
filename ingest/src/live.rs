//! Live aggregates for the steering committee's console, kept as doses are committed so that a
//! snapshot costs no store scan.
//!
//! Where each figure comes from:
//! - Shard writers call [`Live::record_committed`] once per durable group commit with the doses it
//!   wrote. That moves per-site counters (doses today, since start, the last dose, a 60 s ring of
//!   per-second buckets, a 7-day ring of per-day buckets, per product too), the national
//!   per-second history (10 minutes) and the partial/complete series counts.
//! - [`Live::snapshot_at`] combines those with what the server already holds in memory, passed in
//!   as [`LiveInputs`]: sites and lot stock from the catalogue, store totals (running counters),
//!   queue depths, the dose latency histogram and the dose outcome counters. From them it
//!   derives rates, days of supply and alerts.
//!
//! Time is always passed in (unix seconds; a dose's own `recorded_at` when it is recorded), so the
//! arithmetic is tested without clocks. Days are UTC days. Figures "since start" and "today"
//! count from the moment this server started: a restart begins them again, while all-time totals
//! (`doses.total`, each site's `doses_total`) come from the store's counters and lot usage.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use store::{Dose, ProductCode, Site, SiteId};
use tokio::sync::watch;

use crate::campaign::Campaign;
use crate::metrics::{LatencySummary, Metrics, OutcomeTotals};

const SECONDS_PER_DAY: i64 = 86_400;
/// Seconds of national doses/s history in a snapshot.
const HISTORY_SECONDS: usize = 600;
/// Seconds over which a site's rate is averaged.
const RATE_WINDOW: usize = 60;
/// Seconds averaged for "doses/s now".
const NOW_WINDOW: i64 = 5;
/// UTC days over which daily uptake is averaged for days of supply.
const UPTAKE_DAYS: usize = 7;

/// Thresholds of the derived figures and alerts. Defaults are what a national command centre
/// would want on a wall screen; they are echoed in every snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveConfig {
    /// Jobs a shard queue holds (the writer's `queue_capacity`), for the "queue near full" alert.
    pub queue_capacity: usize,
    /// A shard queue above this share of its capacity raises an alert. Default 0.8.
    pub queue_alert_fraction: f64,
    /// A site with fewer days of supply than this is "low stock". Default 3.
    pub low_stock_days: f64,
    /// A site that sent no dose for this long while others did is "silent". Default 10 min.
    pub silent_after_s: i64,
    /// Dose errors over the last minute that make a spike: at least this many... Default 10.
    pub error_spike_min: u64,
    /// ...and at least this share of dose attempts. Default 0.05.
    pub error_spike_share: f64,
    /// Seconds of observation before a daily uptake (and so days of supply) is estimated.
    /// Default 60.
    pub min_observation_s: i64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            queue_alert_fraction: 0.8,
            low_stock_days: 3.0,
            silent_after_s: 600,
            error_spike_min: 10,
            error_spike_share: 0.05,
            min_observation_s: 60,
        }
    }
}

/// Counts per time bucket (a second or a day) over the last `len` buckets, in a fixed ring.
#[derive(Debug, Clone)]
struct Ring {
    counts: Vec<u64>,
    /// The newest bucket the ring holds; buckets `newest - len + 1 ..= newest` are valid.
    newest: i64,
}

impl Ring {
    fn new(len: usize, start: i64) -> Self {
        Self {
            counts: vec![0; len.max(1)],
            newest: start,
        }
    }

    fn len(&self) -> i64 {
        self.counts.len() as i64
    }

    fn index(&self, bucket: i64) -> usize {
        bucket.rem_euclid(self.len()) as usize
    }

    /// Moves the ring forward to `bucket`, zeroing the buckets it passes.
    fn advance(&mut self, bucket: i64) {
        if bucket <= self.newest {
            return;
        }
        if bucket - self.newest >= self.len() {
            self.counts.fill(0);
        } else {
            for b in self.newest + 1..=bucket {
                let i = self.index(b);
                self.counts[i] = 0;
            }
        }
        self.newest = bucket;
    }

    fn add(&mut self, bucket: i64, n: u64) {
        self.advance(bucket);
        if bucket <= self.newest - self.len() {
            return; // older than the ring holds
        }
        let i = self.index(bucket);
        self.counts[i] += n;
    }

    fn get(&self, bucket: i64) -> u64 {
        if bucket > self.newest || bucket <= self.newest - self.len() {
            0
        } else {
            self.counts[self.index(bucket)]
        }
    }

    /// The sum over buckets `from ..= to`; buckets the ring no longer holds count 0.
    fn sum(&self, from: i64, to: i64) -> u64 {
        let from = from.max(self.newest - self.len() + 1);
        let to = to.min(self.newest);
        (from..=to).map(|b| self.get(b)).sum()
    }
}

/// What one site did since the server started.
#[derive(Debug, Clone)]
struct SiteCounters {
    per_second: Ring,
    per_day: Ring,
    /// Per-day doses by product, for days of supply per product.
    per_product_day: Vec<(ProductCode, Ring)>,
    since_start: u64,
    last_dose: Option<i64>,
}

impl SiteCounters {
    fn new(start: i64) -> Self {
        Self {
            per_second: Ring::new(RATE_WINDOW, start),
            per_day: Ring::new(UPTAKE_DAYS, start.div_euclid(SECONDS_PER_DAY)),
            per_product_day: Vec::new(),
            since_start: 0,
            last_dose: None,
        }
    }
}

/// Cumulative dose errors by kind at one moment, to tell how many happened in the last minute.
#[derive(Debug, Clone)]
struct ErrorSample {
    at: i64,
    by_kind: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct LiveState {
    sites: HashMap<SiteId, SiteCounters>,
    national: Ring,
    since_start: u64,
    partial: u64,
    complete: u64,
    error_samples: VecDeque<ErrorSample>,
}

/// The live model: counters moved at commit time, snapshots built from them on demand.
pub struct Live {
    state: Mutex<LiveState>,
    campaign: Arc<Campaign>,
    config: LiveConfig,
    started_at: i64,
    /// The dose outcome counts the request handlers keep in `Metrics`.
    outcomes: OutcomeTotals,
    /// The newest snapshot as JSON: every stream subscriber shares one build per second.
    cache: Mutex<Option<(Instant, Arc<str>)>>,
    /// Turns true when the server shuts down, ending every live stream so that graceful
    /// shutdown does not wait on them forever.
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

/// Everything a snapshot needs that the live model does not count itself. The API gathers it
/// from the server's state; tests make it up.
#[derive(Debug, Clone, Default)]
pub struct LiveInputs {
    pub backend: String,
    pub sites: Vec<Site>,
    pub lots: Vec<LotLevel>,
    /// All-time totals from the store's running counters.
    pub doses_total: u64,
    pub registrations_total: u64,
    /// Counters since the server started.
    pub registrations_since_start: u64,
    pub checkins_since_start: u64,
    pub certificates_signed: u64,
    pub queue_depths: Vec<usize>,
    pub latency: LatencySummary,
    /// Cumulative dose outcomes by kind (`outcome` or `outcome:rule`), successes included.
    pub outcomes: BTreeMap<String, u64>,
    pub analytics: AnalyticsFigures,
}

/// The analytics side: how far behind the dose path it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnalyticsFigures {
    /// `clickhouse` or `embedded`.
    pub backend: String,
    /// Rows committed but not yet in the analytics backend.
    pub outbox_rows: u64,
    pub outbox_bytes: u64,
    pub outbox_max_bytes: u64,
    /// Age of the oldest row waiting, in milliseconds: the analytics lag.
    pub lag_ms: u64,
    /// Rows dropped because the outbox was full (since start).
    pub dropped_rows: u64,
    /// The backend's last refusal, cleared by the next success.
    pub last_error: Option<String>,
    /// A lag above this many seconds raises `analytics_lagging`.
    pub lag_alert_s: u64,
}

/// One lot's stock at a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotLevel {
    pub site_id: SiteId,
    pub product: ProductCode,
    pub remaining: u64,
    pub used: u64,
}

/// `GET /v1/live`: the whole campaign at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSnapshot {
    /// Unix seconds when this snapshot was made.
    pub generated_at: i64,
    /// Unix seconds when the server started; "since start" figures count from here.
    pub started_at: i64,
    /// Unix seconds from which `doses.today` counts: UTC midnight, or the start if later.
    pub today_since: i64,
    pub backend: String,
    pub thresholds: LiveConfig,
    pub doses: DoseFigures,
    pub certificates: SeriesCounts,
    pub registrations: RegistrationFigures,
    pub checkins_since_start: u64,
    pub certificates_signed: u64,
    /// Dose request latency since start (the server's hdrhistogram).
    pub latency_ms: LatencySummary,
    pub queues: QueueFigures,
    pub errors: ErrorFigures,
    pub stock: StockFigures,
    /// Every site, ordered by site id.
    pub sites: Vec<SiteLive>,
    pub analytics: AnalyticsFigures,
    /// Most severe first.
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoseFigures {
    /// All doses stored (store counters).
    pub total: u64,
    pub today: u64,
    pub since_start: u64,
    /// Over the last 5 complete seconds.
    #[serde(serialize_with = "three_decimals")]
    pub per_s_now: f64,
    /// Over the last 60 complete seconds (or since start, if shorter).
    #[serde(serialize_with = "three_decimals")]
    pub per_s_1m: f64,
    /// Doses per second, oldest first, for the seconds before `history_end` (exclusive).
    pub history_per_s: Vec<u64>,
    pub history_end: i64,
}

/// Certificates as issued by commits since start: partial (yellow) or complete (blue) series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeriesCounts {
    pub partial: u64,
    pub complete: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegistrationFigures {
    pub total: u64,
    pub since_start: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueFigures {
    pub capacity: usize,
    /// Jobs waiting, per shard.
    pub depths: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFigures {
    /// Dose errors since start (every outcome but created and duplicate).
    pub total: u64,
    /// Dose errors over the last minute of snapshots.
    pub last_minute: u64,
    /// Since start, most frequent first.
    pub by_kind: Vec<ErrorCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// `outcome` or `outcome:rule`, as in the `dose_outcomes` metric.
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StockFigures {
    pub remaining: u64,
    #[serde(serialize_with = "three_decimals_or_null")]
    pub uptake_per_day: Option<f64>,
    #[serde(serialize_with = "three_decimals_or_null")]
    pub days_of_supply: Option<f64>,
    pub by_product: Vec<ProductStock>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductStock {
    pub product: ProductCode,
    pub remaining: u64,
    /// Average doses a day over the observed window, `None` before enough observation.
    #[serde(serialize_with = "three_decimals_or_null")]
    pub uptake_per_day: Option<f64>,
    /// `remaining / uptake_per_day`; `None` when there is no uptake to divide by.
    #[serde(serialize_with = "three_decimals_or_null")]
    pub days_of_supply: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteLive {
    pub site_id: SiteId,
    pub name: String,
    pub province: String,
    pub district: String,
    pub commune: Option<String>,
    pub daily_capacity: u32,
    pub doses_today: u64,
    pub doses_since_start: u64,
    /// All doses given from the site's lots (all time).
    pub doses_total: u64,
    /// Doses per second over the last minute.
    #[serde(serialize_with = "three_decimals")]
    pub rate_per_s: f64,
    pub last_dose_at: Option<i64>,
    pub remaining: u64,
    #[serde(serialize_with = "three_decimals_or_null")]
    pub uptake_per_day: Option<f64>,
    #[serde(serialize_with = "three_decimals_or_null")]
    pub days_of_supply: Option<f64>,
    pub low_stock: bool,
    /// No dose for `silent_after_s` while other sites were active.
    pub silent: bool,
    pub stock: Vec<ProductStock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub severity: Severity,
    /// `site_silent`, `error_spike`, `queue_near_full`, `low_stock`, `out_of_stock`,
    /// `analytics_lagging` or `analytics_rows_dropped`.
    pub kind: &'static str,
    pub site_id: Option<SiteId>,
    pub message: String,
}

impl Live {
    /// A live model starting now.
    pub fn new(campaign: Arc<Campaign>, metrics: &Metrics, config: LiveConfig) -> Self {
        Self::starting_at(campaign, metrics, config, unix_now())
    }

    /// A live model whose "since start" begins at `started_at` (unix seconds).
    pub fn starting_at(
        campaign: Arc<Campaign>,
        metrics: &Metrics,
        config: LiveConfig,
        started_at: i64,
    ) -> Self {
        let outcomes = metrics.outcome_totals();
        Self {
            state: Mutex::new(LiveState {
                sites: HashMap::new(),
                national: Ring::new(HISTORY_SECONDS + 1, started_at),
                since_start: 0,
                partial: 0,
                complete: 0,
                error_samples: VecDeque::new(),
            }),
            campaign,
            config,
            started_at,
            outcomes,
            cache: Mutex::new(None),
            closed: watch::Sender::new(false),
        }
    }

    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, LiveState> {
        // Counters only: a panic mid-update leaves at worst one dose miscounted.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts doses a shard writer has just committed, at their `recorded_at` second.
    pub fn record_committed(&self, doses: &[Dose]) {
        if doses.is_empty() {
            return;
        }
        let products = self.campaign.products();
        let started_at = self.started_at;
        let mut state = self.lock();
        for dose in doses {
            let at = dose.recorded_at.unix_timestamp();
            let day = at.div_euclid(SECONDS_PER_DAY);
            state.national.add(at, 1);
            state.since_start += 1;
            // The status of the certificate this dose gives: complete once the dose number
            // reaches the product's series length (as `certify::SeriesStatus::for_doses`).
            let complete = products
                .get(&dose.product)
                .is_some_and(|p| dose.dose_number >= p.doses_in_series);
            if complete {
                state.complete += 1;
            } else {
                state.partial += 1;
            }
            let site = state
                .sites
                .entry(dose.site_id.clone())
                .or_insert_with(|| SiteCounters::new(started_at));
            site.per_second.add(at, 1);
            site.per_day.add(day, 1);
            site.since_start += 1;
            site.last_dose = Some(site.last_dose.map_or(at, |last| last.max(at)));
            match site
                .per_product_day
                .iter_mut()
                .find(|(p, _)| *p == dose.product)
            {
                Some((_, ring)) => ring.add(day, 1),
                None => {
                    let mut ring = Ring::new(UPTAKE_DAYS, started_at.div_euclid(SECONDS_PER_DAY));
                    ring.add(day, 1);
                    site.per_product_day.push((dose.product.clone(), ring));
                }
            }
        }
    }

    /// Cumulative dose outcomes by kind (`outcome` or `outcome:rule`).
    pub fn outcome_counts(&self) -> BTreeMap<String, u64> {
        self.outcomes.counts()
    }

    /// The snapshot JSON built within `max_age`, if any.
    pub fn cached_json(&self, max_age: Duration) -> Option<Arc<str>> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .as_ref()
            .filter(|(built, _)| built.elapsed() < max_age)
            .map(|(_, json)| json.clone())
    }

    pub fn store_json(&self, json: Arc<str>) {
        *self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), json));
    }

    /// Ends every live stream (the server is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// A receiver that turns true when the server shuts down.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// The campaign as of `now` (unix seconds).
    pub fn snapshot_at(&self, now: i64, inputs: LiveInputs) -> LiveSnapshot {
        let config = &self.config;
        let today = now.div_euclid(SECONDS_PER_DAY);
        let today_since = (today * SECONDS_PER_DAY).max(self.started_at);
        // Daily uptake is averaged over the days the ring holds, as far as this server saw them.
        let window_start =
            ((today - UPTAKE_DAYS as i64 + 1) * SECONDS_PER_DAY).max(self.started_at);
        let observed = now - window_start;
        let uptake = |doses: u64| -> Option<f64> {
            (observed >= config.min_observation_s)
                .then(|| doses as f64 * SECONDS_PER_DAY as f64 / observed as f64)
        };
        let first_day = today - UPTAKE_DAYS as i64 + 1;
        // Rates over complete seconds only, and never over more time than the server has run.
        let last_complete = now - 1;
        let rate_span = (now - self.started_at).clamp(1, RATE_WINDOW as i64);
        let now_span = (now - self.started_at).clamp(1, NOW_WINDOW);

        let mut state = self.lock();
        state.national.advance(last_complete);

        // Stock by site and product, from the catalogue's lot counters.
        let mut lots_by_site: HashMap<&SiteId, BTreeMap<&ProductCode, (u64, u64)>> = HashMap::new();
        for lot in &inputs.lots {
            let entry = lots_by_site
                .entry(&lot.site_id)
                .or_default()
                .entry(&lot.product)
                .or_default();
            entry.0 += lot.remaining;
            entry.1 += lot.used;
        }

        let national_active = state
            .national
            .sum(last_complete - RATE_WINDOW as i64 + 1, last_complete)
            > 0;
        let mut national_products: BTreeMap<ProductCode, (u64, u64)> = BTreeMap::new();
        let mut national_window_doses = 0u64;
        let mut sites = Vec::with_capacity(inputs.sites.len());
        let mut alerts = Vec::new();
        let empty = SiteCounters::new(self.started_at);
        let mut sorted_sites: Vec<&Site> = inputs.sites.iter().collect();
        sorted_sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));
        for site in sorted_sites {
            let counters = state.sites.get(&site.site_id).unwrap_or(&empty);
            let window_doses = counters.per_day.sum(first_day, today);
            national_window_doses += window_doses;
            let mut stock = Vec::new();
            let (mut remaining, mut doses_total) = (0u64, 0u64);
            for (product, (left, used)) in lots_by_site.get(&site.site_id).into_iter().flatten() {
                remaining += left;
                doses_total += used;
                let product_doses = counters
                    .per_product_day
                    .iter()
                    .find(|(p, _)| p == *product)
                    .map_or(0, |(_, ring)| ring.sum(first_day, today));
                let national = national_products.entry((*product).clone()).or_default();
                national.0 += left;
                national.1 += product_doses;
                let product_uptake = uptake(product_doses);
                stock.push(ProductStock {
                    product: (*product).clone(),
                    remaining: *left,
                    uptake_per_day: product_uptake,
                    days_of_supply: days_of_supply(*left, product_uptake),
                });
            }
            let uptake_per_day = uptake(window_doses);
            let days = days_of_supply(remaining, uptake_per_day);
            let low_stock = remaining == 0 || days.is_some_and(|d| d < config.low_stock_days);
            let quiet_since = counters.last_dose.unwrap_or(self.started_at);
            let silent = national_active && now - quiet_since > config.silent_after_s;
            let label = format!("{} ({})", site.site_id, site.name);
            if remaining == 0 {
                alerts.push(Alert {
                    severity: Severity::Critical,
                    kind: "out_of_stock",
                    site_id: Some(site.site_id.clone()),
                    message: format!("{label}: no doses left in stock"),
                });
            } else if low_stock {
                alerts.push(Alert {
                    severity: Severity::Warning,
                    kind: "low_stock",
                    site_id: Some(site.site_id.clone()),
                    message: format!(
                        "{label}: {:.1} days of supply ({remaining} doses)",
                        days.unwrap_or(0.0)
                    ),
                });
            }
            if silent {
                let message = match counters.last_dose {
                    Some(_) => format!(
                        "{label}: no dose for {} while other sites are active",
                        minutes(now - quiet_since)
                    ),
                    None => format!(
                        "{label}: no dose since the server started {} ago, while other sites are active",
                        minutes(now - quiet_since)
                    ),
                };
                alerts.push(Alert {
                    severity: Severity::Warning,
                    kind: "site_silent",
                    site_id: Some(site.site_id.clone()),
                    message,
                });
            }
            sites.push(SiteLive {
                site_id: site.site_id.clone(),
                name: site.name.clone(),
                province: site.area.province.to_string(),
                district: site.area.district.to_string(),
                commune: site.area.commune.as_ref().map(ToString::to_string),
                daily_capacity: site.daily_capacity,
                doses_today: counters.per_day.get(today),
                doses_since_start: counters.since_start,
                doses_total,
                rate_per_s: counters
                    .per_second
                    .sum(last_complete - rate_span + 1, last_complete)
                    as f64
                    / rate_span as f64,
                last_dose_at: counters.last_dose,
                remaining,
                uptake_per_day,
                days_of_supply: days,
                low_stock,
                silent,
                stock,
            });
        }

        // Queues.
        let capacity = config.queue_capacity.max(1);
        for (shard, depth) in inputs.queue_depths.iter().enumerate() {
            if *depth as f64 > capacity as f64 * config.queue_alert_fraction {
                alerts.push(Alert {
                    severity: Severity::Critical,
                    kind: "queue_near_full",
                    site_id: None,
                    message: format!(
                        "shard {shard} queue at {depth}/{capacity} ({:.0}%): doses will soon be answered 503",
                        *depth as f64 * 100.0 / capacity as f64
                    ),
                });
            }
        }

        // Errors: totals since start, and the last minute from the samples snapshots keep.
        let errors_now: BTreeMap<String, u64> = inputs
            .outcomes
            .iter()
            .filter(|(kind, _)| !is_success(kind))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let total_errors: u64 = errors_now.values().sum();
        state.error_samples.push_back(ErrorSample {
            at: now,
            by_kind: errors_now.clone(),
        });
        while state
            .error_samples
            .front()
            .is_some_and(|s| s.at < now - 2 * RATE_WINDOW as i64)
        {
            state.error_samples.pop_front();
        }
        // The newest sample at least a minute old, else the oldest there is.
        let baseline = state
            .error_samples
            .iter()
            .rev()
            .find(|s| s.at <= now - RATE_WINDOW as i64)
            .or_else(|| state.error_samples.front())
            .cloned();
        let mut last_minute = 0u64;
        if let Some(baseline) = baseline.filter(|b| b.at < now) {
            let mut recent: Vec<(String, u64)> = errors_now
                .iter()
                .map(|(kind, n)| {
                    let before = baseline.by_kind.get(kind).copied().unwrap_or(0);
                    (kind.clone(), n.saturating_sub(before))
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            last_minute = recent.iter().map(|(_, n)| n).sum();
            let committed = state.national.sum(baseline.at, last_complete);
            let attempts = last_minute + committed;
            let share = if attempts == 0 {
                0.0
            } else {
                last_minute as f64 / attempts as f64
            };
            if last_minute >= config.error_spike_min && share >= config.error_spike_share {
                recent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let most: Vec<String> = recent
                    .iter()
                    .take(3)
                    .map(|(kind, n)| format!("{kind} {n}"))
                    .collect();
                alerts.push(Alert {
                    severity: Severity::Critical,
                    kind: "error_spike",
                    site_id: None,
                    message: format!(
                        "{last_minute} dose errors in the last {} s ({:.0}% of attempts): {}",
                        now - baseline.at,
                        share * 100.0,
                        most.join(", ")
                    ),
                });
            }
        }
        let mut by_kind: Vec<ErrorCount> = errors_now
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, count)| ErrorCount { kind, count })
            .collect();
        by_kind.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));

        let remaining: u64 = national_products.values().map(|(left, _)| left).sum();
        let national_uptake = uptake(national_window_doses);
        let by_product = national_products
            .into_iter()
            .map(|(product, (left, doses))| {
                let product_uptake = uptake(doses);
                ProductStock {
                    product,
                    remaining: left,
                    uptake_per_day: product_uptake,
                    days_of_supply: days_of_supply(left, product_uptake),
                }
            })
            .collect();

        let history_from = last_complete - HISTORY_SECONDS as i64 + 1;
        let history_per_s = (history_from..=last_complete)
            .map(|s| state.national.get(s))
            .collect();
        let doses = DoseFigures {
            total: inputs.doses_total,
            today: sites.iter().map(|s| s.doses_today).sum(),
            since_start: state.since_start,
            per_s_now: state
                .national
                .sum(last_complete - now_span + 1, last_complete) as f64
                / now_span as f64,
            per_s_1m: state
                .national
                .sum(last_complete - rate_span + 1, last_complete) as f64
                / rate_span as f64,
            history_per_s,
            history_end: now,
        };
        let analytics = inputs.analytics;
        if analytics.dropped_rows > 0 {
            alerts.push(Alert {
                severity: Severity::Critical,
                kind: "analytics_rows_dropped",
                site_id: None,
                message: format!(
                    "{} dose rows were dropped because the analytics outbox was full: analytics undercount until they are shipped again from the store",
                    analytics.dropped_rows
                ),
            });
        }
        if analytics.lag_ms > analytics.lag_alert_s * 1_000 {
            let full =
                analytics.outbox_bytes as f64 * 100.0 / analytics.outbox_max_bytes.max(1) as f64;
            alerts.push(Alert {
                severity: if full > 80.0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                kind: "analytics_lagging",
                site_id: None,
                message: format!(
                    "analytics {} s behind, {} rows waiting ({full:.0}% of the outbox){}",
                    analytics.lag_ms / 1_000,
                    analytics.outbox_rows,
                    analytics
                        .last_error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            });
        }
        alerts.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then_with(|| a.kind.cmp(b.kind))
                .then_with(|| a.site_id.cmp(&b.site_id))
        });
        LiveSnapshot {
            generated_at: now,
            started_at: self.started_at,
            today_since,
            backend: inputs.backend,
            thresholds: config.clone(),
            doses,
            certificates: SeriesCounts {
                partial: state.partial,
                complete: state.complete,
            },
            registrations: RegistrationFigures {
                total: inputs.registrations_total,
                since_start: inputs.registrations_since_start,
            },
            checkins_since_start: inputs.checkins_since_start,
            certificates_signed: inputs.certificates_signed,
            latency_ms: inputs.latency,
            queues: QueueFigures {
                capacity,
                depths: inputs.queue_depths,
            },
            errors: ErrorFigures {
                total: total_errors,
                last_minute,
                by_kind,
            },
            stock: StockFigures {
                remaining,
                uptake_per_day: national_uptake,
                days_of_supply: days_of_supply(remaining, national_uptake),
                by_product,
            },
            sites,
            analytics,
            alerts,
        }
    }
}

/// Figures in the JSON keep three decimals: plenty for a screen, and a 500-site snapshot a
/// second stays small.
fn three_decimals<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((value * 1000.0).round() / 1000.0)
}

fn three_decimals_or_null<S: serde::Serializer>(
    value: &Option<f64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => three_decimals(v, serializer),
        None => serializer.serialize_none(),
    }
}

fn days_of_supply(remaining: u64, uptake_per_day: Option<f64>) -> Option<f64> {
    uptake_per_day
        .filter(|u| *u > 0.0)
        .map(|u| remaining as f64 / u)
}

fn is_success(kind: &str) -> bool {
    kind == "created" || kind == "duplicate"
}

fn minutes(seconds: i64) -> String {
    if seconds >= 3600 {
        format!("{} h {} min", seconds / 3600, seconds % 3600 / 60)
    } else {
        format!("{} min", seconds / 60)
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use store::{Area, AreaCode, DoseId, LotNumber, PersonCode};

    /// 2030-01-02 00:00:00 UTC, a day boundary, so "today" is easy to reason about.
    const DAY2: i64 = 1_893_542_400;
    const T0: i64 = DAY2 + 8 * 3600; // 08:00 UTC

    fn site(id: &str, province: &str, district: &str) -> Site {
        Site {
            site_id: SiteId::new(id).unwrap(),
            name: format!("Site {id}"),
            area: Area {
                province: AreaCode::new(province).unwrap(),
                district: AreaCode::new(district).unwrap(),
                commune: None,
            },
            daily_capacity: 1000,
        }
    }

    fn dose(site: &str, product: &str, number: u8, at: i64) -> Dose {
        let when = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
        Dose {
            dose_id: DoseId(uuid::Uuid::new_v4()),
            person_code: PersonCode::new("P1").unwrap(),
            product: ProductCode::new(product).unwrap(),
            lot_number: LotNumber::new("L1").unwrap(),
            dose_number: number,
            site_id: SiteId::new(site).unwrap(),
            vaccinator: "nurse".into(),
            administered_at: when,
            recorded_at: when,
        }
    }

    fn lot(site: &str, product: &str, remaining: u64) -> LotLevel {
        LotLevel {
            site_id: SiteId::new(site).unwrap(),
            product: ProductCode::new(product).unwrap(),
            remaining,
            used: 0,
        }
    }

    fn campaign() -> Arc<Campaign> {
        let campaign = Campaign::default();
        for product in store::builtin_products() {
            campaign.upsert_product(product);
        }
        Arc::new(campaign)
    }

    fn live_from(start: i64) -> Live {
        Live::starting_at(campaign(), &Metrics::new(), LiveConfig::default(), start)
    }

    fn inputs(sites: &[Site], lots: Vec<LotLevel>) -> LiveInputs {
        LiveInputs {
            backend: "test".into(),
            sites: sites.to_vec(),
            lots,
            queue_depths: vec![0, 0],
            ..LiveInputs::default()
        }
    }

    #[test]
    fn ring_forgets_what_falls_out_of_its_window() {
        let mut ring = Ring::new(60, 100);
        ring.add(101, 2);
        ring.add(130, 3);
        assert_eq!(ring.sum(71, 130), 5);
        ring.add(161, 1); // second 101 falls out
        assert_eq!(ring.sum(102, 161), 4);
        assert_eq!(ring.get(101), 0);
        ring.add(50, 9); // far too old: ignored
        assert_eq!(ring.sum(0, 200), 4);
        ring.advance(1000);
        assert_eq!(ring.sum(0, 1000), 0);
    }

    #[test]
    fn rates_count_complete_seconds_over_the_last_minute() {
        let live = live_from(T0);
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        // Site a: 3 doses a second for seconds T0+100 .. T0+159 (one minute).
        for s in 100..160 {
            let doses: Vec<Dose> = (0..3).map(|_| dose("a", "COMIRNATY", 1, T0 + s)).collect();
            live.record_committed(&doses);
        }
        live.record_committed(&[dose("b", "SPIKEVAX", 2, T0 + 150)]);
        let snapshot = live.snapshot_at(
            T0 + 160,
            inputs(
                &sites,
                vec![lot("a", "COMIRNATY", 5000), lot("b", "SPIKEVAX", 10)],
            ),
        );
        let a = &snapshot.sites[0];
        assert_eq!(a.site_id.as_str(), "a");
        assert!((a.rate_per_s - 3.0).abs() < 1e-9, "{}", a.rate_per_s);
        assert_eq!(a.doses_today, 180);
        assert_eq!(a.last_dose_at, Some(T0 + 159));
        let b = &snapshot.sites[1];
        assert!((b.rate_per_s - 1.0 / 60.0).abs() < 1e-9);
        // The JSON keeps three decimals.
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["sites"][1]["rate_per_s"], 0.017);
        assert_eq!(snapshot.doses.since_start, 181);
        assert!((snapshot.doses.per_s_now - 3.0).abs() < 1e-9);
        assert!((snapshot.doses.per_s_1m - 181.0 / 60.0).abs() < 1e-9);
        assert_eq!(snapshot.doses.history_per_s.len(), HISTORY_SECONDS);
        assert_eq!(snapshot.doses.history_per_s.last(), Some(&3));
        assert_eq!(snapshot.doses.history_per_s.iter().sum::<u64>(), 181);
        // Dose 1 of Comirnaty is a partial series; dose 2 of Spikevax completes one.
        assert_eq!(
            snapshot.certificates,
            SeriesCounts {
                partial: 180,
                complete: 1
            }
        );
        // A minute later with nothing new, the rate has fallen to zero but today's count stays.
        let later = live.snapshot_at(T0 + 221, inputs(&sites, vec![]));
        assert_eq!(later.sites[0].rate_per_s, 0.0);
        assert_eq!(later.sites[0].doses_today, 180);
        assert_eq!(later.doses.per_s_now, 0.0);
    }

    #[test]
    fn doses_today_start_again_at_utc_midnight() {
        let live = live_from(DAY2 - 600);
        let sites = [site("a", "01", "001")];
        live.record_committed(&[dose("a", "COMIRNATY", 1, DAY2 - 10)]);
        live.record_committed(&[dose("a", "COMIRNATY", 1, DAY2 + 10)]);
        let snapshot = live.snapshot_at(DAY2 + 20, inputs(&sites, vec![]));
        assert_eq!(snapshot.sites[0].doses_today, 1);
        assert_eq!(snapshot.sites[0].doses_since_start, 2);
        assert_eq!(snapshot.today_since, DAY2);
        assert_eq!(snapshot.doses.today, 1);
    }

    #[test]
    fn days_of_supply_divide_stock_by_observed_daily_uptake() {
        let live = live_from(T0);
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        // One hour, 100 doses at site a: 2,400 a day. 4,800 left → 2 days; under 3 → low.
        for i in 0..100 {
            live.record_committed(&[dose("a", "COMIRNATY", 1, T0 + i * 36)]);
        }
        let lots = vec![
            lot("a", "COMIRNATY", 4_000),
            lot("a", "SPIKEVAX", 800),
            lot("b", "SPIKEVAX", 0),
        ];
        let snapshot = live.snapshot_at(T0 + 3600, inputs(&sites, lots));
        let a = &snapshot.sites[0];
        assert_eq!(a.remaining, 4_800);
        assert!((a.uptake_per_day.unwrap() - 2_400.0).abs() < 1e-6);
        assert!((a.days_of_supply.unwrap() - 2.0).abs() < 1e-9);
        assert!(a.low_stock);
        // By product: Comirnaty is used, Spikevax is not (no uptake: no days of supply).
        assert_eq!(a.stock[0].product.as_str(), "COMIRNATY");
        assert!((a.stock[0].days_of_supply.unwrap() - 4_000.0 / 2_400.0).abs() < 1e-9);
        assert_eq!(a.stock[1].uptake_per_day, Some(0.0));
        assert_eq!(a.stock[1].days_of_supply, None);
        // Site b has no stock at all: out of stock, a critical alert.
        let b = &snapshot.sites[1];
        assert!(b.low_stock);
        assert_eq!(b.days_of_supply, None);
        let kinds: Vec<(&str, Option<&str>)> = snapshot
            .alerts
            .iter()
            .map(|a| (a.kind, a.site_id.as_ref().map(SiteId::as_str)))
            .collect();
        // Site b also sent nothing for an hour while a was busy.
        assert_eq!(
            kinds,
            [
                ("out_of_stock", Some("b")),
                ("low_stock", Some("a")),
                ("site_silent", Some("b"))
            ]
        );
        assert!(
            snapshot.alerts[1].message.contains("2.0 days of supply"),
            "{:?}",
            snapshot.alerts
        );
        // Nationally: 4,800 left over 2,400 a day.
        assert_eq!(snapshot.stock.remaining, 4_800);
        assert!((snapshot.stock.days_of_supply.unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn no_uptake_estimate_before_a_minute_of_observation() {
        let live = live_from(T0);
        let sites = [site("a", "01", "001")];
        live.record_committed(&[dose("a", "COMIRNATY", 1, T0 + 1)]);
        let snapshot = live.snapshot_at(T0 + 30, inputs(&sites, vec![lot("a", "COMIRNATY", 10)]));
        assert_eq!(snapshot.sites[0].uptake_per_day, None);
        assert_eq!(snapshot.sites[0].days_of_supply, None);
        assert!(!snapshot.sites[0].low_stock);
        assert!(snapshot.alerts.is_empty(), "{:?}", snapshot.alerts);
    }

    #[test]
    fn a_site_is_silent_only_while_others_are_active() {
        let live = live_from(T0);
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        let stock = || {
            vec![
                lot("a", "COMIRNATY", 1_000_000),
                lot("b", "SPIKEVAX", 1_000_000),
            ]
        };
        live.record_committed(&[dose("b", "SPIKEVAX", 1, T0 + 5)]);
        // Site a keeps vaccinating until T0 + 1000; b stopped at T0 + 5.
        for s in (0..1000).step_by(10) {
            live.record_committed(&[dose("a", "COMIRNATY", 1, T0 + s)]);
        }
        let snapshot = live.snapshot_at(T0 + 1000, inputs(&sites, stock()));
        let silent: Vec<&str> = snapshot
            .alerts
            .iter()
            .filter(|a| a.kind == "site_silent")
            .map(|a| a.message.as_str())
            .collect();
        assert_eq!(
            silent,
            ["b (Site b): no dose for 16 min while other sites are active"]
        );
        assert!(snapshot.sites[1].silent && !snapshot.sites[0].silent);
        // When nobody vaccinates (night), nobody is reported silent.
        let night = live.snapshot_at(T0 + 5000, inputs(&sites, stock()));
        assert!(night.alerts.iter().all(|a| a.kind != "site_silent"));
    }

    #[test]
    fn a_site_that_never_sent_is_silent_after_the_threshold() {
        let live = live_from(T0);
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        for s in (0..700).step_by(5) {
            live.record_committed(&[dose("a", "COMIRNATY", 1, T0 + s)]);
        }
        let snapshot = live.snapshot_at(T0 + 700, inputs(&sites, vec![]));
        let messages: Vec<&str> = snapshot
            .alerts
            .iter()
            .filter(|a| a.kind == "site_silent")
            .map(|a| a.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "b (Site b): no dose since the server started 11 min ago, while other sites are active"
            ]
        );
    }

    #[test]
    fn error_spike_compares_errors_with_attempts_over_the_last_minute() {
        let live = live_from(T0);
        let sites = [site("a", "01", "001")];
        let with_errors = |refused: u64, failed: u64| {
            let mut i = inputs(&sites, vec![lot("a", "COMIRNATY", 1_000_000)]);
            i.outcomes = BTreeMap::from([
                ("created".to_owned(), 5_000),
                ("refused:lot_exhausted".to_owned(), refused),
                ("failed".to_owned(), failed),
            ]);
            i
        };
        // A baseline sample at T0 + 100 with 7 errors, then 2 doses a second.
        let first = live.snapshot_at(T0 + 100, with_errors(5, 2));
        assert_eq!(first.errors.total, 7);
        assert_eq!(first.errors.last_minute, 0);
        assert!(first.alerts.iter().all(|a| a.kind != "error_spike"));
        for s in 100..160 {
            live.record_committed(&[
                dose("a", "COMIRNATY", 1, T0 + s),
                dose("a", "COMIRNATY", 1, T0 + s),
            ]);
        }
        // A minute later: 3 more errors against 120 doses is no spike.
        let calm = live.snapshot_at(T0 + 160, with_errors(7, 3));
        assert_eq!(calm.errors.last_minute, 3);
        assert!(calm.alerts.iter().all(|a| a.kind != "error_spike"));
        // 40 more errors in the next 30 s against 0 doses is.
        let spike = live.snapshot_at(T0 + 190, with_errors(45, 5));
        let alert = spike
            .alerts
            .iter()
            .find(|a| a.kind == "error_spike")
            .expect("a spike");
        assert_eq!(alert.severity, Severity::Critical);
        assert!(
            alert.message.starts_with("43 dose errors in the last 90 s"),
            "{}",
            alert.message
        );
        assert!(
            alert.message.contains("refused:lot_exhausted 40"),
            "{}",
            alert.message
        );
        assert_eq!(
            spike.errors.by_kind,
            [
                ErrorCount {
                    kind: "refused:lot_exhausted".into(),
                    count: 45
                },
                ErrorCount {
                    kind: "failed".into(),
                    count: 5
                }
            ]
        );
    }

    #[test]
    fn queues_near_full_raise_an_alert() {
        let live = live_from(T0);
        let mut i = inputs(&[], vec![]);
        i.queue_depths = vec![10, 900, 819];
        let snapshot = live.snapshot_at(T0 + 10, i);
        let messages: Vec<&str> = snapshot.alerts.iter().map(|a| a.message.as_str()).collect();
        assert_eq!(
            messages,
            ["shard 1 queue at 900/1024 (88%): doses will soon be answered 503"]
        );
    }

    #[test]
    fn empty_campaign_snapshot() {
        let live = live_from(T0);
        let snapshot = live.snapshot_at(T0 + 5, inputs(&[], vec![]));
        assert!(snapshot.sites.is_empty());
        assert!(snapshot.alerts.is_empty());
        assert_eq!(snapshot.doses.today, 0);
        assert_eq!(snapshot.stock.days_of_supply, None);
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(
            json["doses"]["history_per_s"].as_array().unwrap().len(),
            600
        );
        assert_eq!(json["thresholds"]["low_stock_days"], 3.0);
    }

    #[test]
    fn outcomes_are_read_from_the_metric() {
        let metrics = Metrics::new();
        metrics.dose_outcome("created", None);
        metrics.dose_outcome("refused", Some("too_early"));
        metrics.dose_outcome("refused", Some("too_early"));
        metrics.dose_outcome("busy", None);
        let live = Live::new(campaign(), &metrics, LiveConfig::default());
        let counts = live.outcome_counts();
        assert_eq!(
            counts,
            BTreeMap::from([
                ("busy".to_owned(), 1),
                ("created".to_owned(), 1),
                ("refused:too_early".to_owned(), 2)
            ])
        );
    }
}
