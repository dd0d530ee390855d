//! Live aggregates for the steering committee's console, kept as doses are committed so that a
//! snapshot costs no store read at all.
//!
//! Where each figure comes from:
//! - Shard writers call [`Live::record_committed`] once per durable group commit with the doses it
//!   wrote. That moves per-site counters (doses since start, the last dose, a 60 s ring of
//!   per-second buckets, a ring of per-day buckets by product), the national per-second history
//!   (10 minutes), the partial/complete series counts and the all-time dose total.
//! - The dose handlers call [`Live::record_outcome`] for every dose that fails (refused,
//!   conflicting, busy...): per site and per kind, since start and per second over the last
//!   minute. Errors are counted when they happen, so "errors in the last minute" does not depend
//!   on how often anyone asks for a snapshot.
//! - The all-time dose and registration totals are read from the store once at start-up
//!   ([`Live::with_totals_at_start`]); a snapshot adds the doses committed and the
//!   registrations created since.
//! - [`seed_from_analytics`] fills the per-day rings at start-up with the last days' doses per site
//!   and product from the analytics backend, so a restart neither zeroes "today" nor judges days
//!   of supply from a few hours of traffic. [`seed_at_start`] first lets the shipper drain what
//!   an earlier run left in the outbox, so acknowledged doses not yet shipped are counted too.
//! - [`Live::snapshot_at`] copies the counters it needs under the lock, then, without it, adds
//!   what the server already holds in memory, passed in as [`LiveInputs`] (sites and lot stock
//!   from the catalogue, queue depths, the latency window), and derives rates, days of supply
//!   and alerts.
//!
//! Time is always passed in (unix seconds; a dose's own times when it is recorded: `recorded_at`
//! for the per-second rates, `administered_at` for its day), so the arithmetic is tested without
//! clocks. Days are the campaign's days: midnight to midnight at its UTC offset
//! (`[campaign] utc_offset`, Viet Nam's +07:00 by default). Figures "since start"
//! count from the moment this server started; "today" counts from midnight when the seed worked,
//! else from the start (the snapshot's `today_since` says which).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use analytics::{Analytics, AreaLevel, Granularity, UptakeQuery};
use serde::Serialize;
use store::{Dose, ProductCode, Site, SiteId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::areas::AreaNames;
use crate::campaign::Campaign;
use crate::metrics::LatencySummary;

const SECONDS_PER_DAY: i64 = 86_400;
/// Seconds of national doses/s history in a snapshot.
const HISTORY_SECONDS: usize = 600;
/// Seconds over which a site's rate, and errors, are counted.
const RATE_WINDOW: usize = 60;
/// Seconds averaged for "doses/s now".
const NOW_WINDOW: i64 = 5;
/// Complete days over which daily uptake is averaged for days of supply.
pub const UPTAKE_DAYS: usize = 7;
/// Days each per-day ring holds: the complete days of the uptake window, and today.
const DAY_SLOTS: usize = UPTAKE_DAYS + 1;

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
    /// Dose errors over the last minute that make a spike (nationally, or at one site): at
    /// least this many... Default 10.
    pub error_spike_min: u64,
    /// ...and at least this share of dose attempts. Default 0.05.
    pub error_spike_share: f64,
    /// Seconds of observation before a daily uptake (and so days of supply) is estimated from
    /// today alone, when there is no history of whole days. Default 60.
    pub min_observation_s: i64,
    /// The campaign's time zone, seconds east of UTC: its midnight starts "today" and the days
    /// of the uptake window. Default 25200 (+07:00, Viet Nam). In the snapshot as `utc_offset_s`.
    #[serde(skip)]
    pub utc_offset_s: i64,
    /// Live streams served at once; one more is answered 503. Default 64.
    #[serde(skip)]
    pub max_streams: usize,
}

/// Viet Nam's offset from UTC, the default campaign time zone.
pub const DEFAULT_UTC_OFFSET_S: i64 = 7 * 3_600;

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
            utc_offset_s: DEFAULT_UTC_OFFSET_S,
            max_streams: 64,
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

    /// Buckets `last - N + 1 ..= last`, oldest first.
    fn window<const N: usize>(&self, last: i64) -> [u64; N] {
        std::array::from_fn(|i| self.get(last - N as i64 + 1 + i as i64))
    }
}

/// Doses of one series (a site's product, a product nationally...) per day: the complete days
/// of the uptake window, oldest first, then today.
type DayCounts = [u64; DAY_SLOTS];
const TODAY: usize = DAY_SLOTS - 1;

/// What one site did: doses since the server started, and per day (seeded at start-up).
#[derive(Debug, Clone)]
struct SiteCounters {
    per_second: Ring,
    /// Doses per day by product (an index into [`LiveState::products`]).
    per_product_day: Vec<(usize, Ring)>,
    since_start: u64,
    last_dose: Option<i64>,
}

impl SiteCounters {
    fn new(start: i64) -> Self {
        Self {
            per_second: Ring::new(RATE_WINDOW, start),
            per_product_day: Vec::new(),
            since_start: 0,
            last_dose: None,
        }
    }

    fn product_day(&mut self, product: usize, start_day: i64) -> &mut Ring {
        let at = match self.per_product_day.iter().position(|(p, _)| *p == product) {
            Some(at) => at,
            None => {
                self.per_product_day
                    .push((product, Ring::new(DAY_SLOTS, start_day)));
                self.per_product_day.len() - 1
            }
        };
        &mut self.per_product_day[at].1
    }
}

/// (outcome, refusal rule): the labels of the `dose_outcomes` metric.
type OutcomeKey = (&'static str, Option<&'static str>);

/// Events since start, and per second over the last minute.
#[derive(Debug, Clone)]
struct Tally {
    since_start: u64,
    per_second: Ring,
}

impl Tally {
    fn new(start: i64) -> Self {
        Self {
            since_start: 0,
            per_second: Ring::new(RATE_WINDOW, start),
        }
    }

    fn add(&mut self, at: i64) {
        self.since_start += 1;
        self.per_second.add(at, 1);
    }
}

/// Dose errors, counted by the request handlers as they answer. Apart from [`LiveState`], so
/// that a failing request (above all a 503 `busy`, when the queues are full and the writers
/// are the bottleneck) never waits for the lock every shard writer takes at each commit.
#[derive(Debug, Default)]
struct ErrorState {
    by_kind: BTreeMap<OutcomeKey, Tally>,
    /// The campaign's sites only.
    by_site: HashMap<SiteId, Tally>,
}

#[derive(Debug)]
struct LiveState {
    sites: HashMap<SiteId, SiteCounters>,
    /// Every product seen, in order of first sight: the per-day rings refer to them by index.
    products: Vec<ProductCode>,
    national: Ring,
    since_start: u64,
    partial: u64,
    complete: u64,
    /// The first day whose doses are all counted: the seed's first day, or (without a seed) the
    /// first whole day after the start.
    complete_from_day: i64,
    /// Whether the seed from the analytics backend worked (then today counts from midnight).
    seeded: bool,
}

impl LiveState {
    fn product_index(&mut self, product: &ProductCode) -> usize {
        match self.products.iter().position(|p| p == product) {
            Some(i) => i,
            None => {
                self.products.push(product.clone());
                self.products.len() - 1
            }
        }
    }
}

/// The live model: counters moved at commit time, snapshots built from them on demand.
pub struct Live {
    /// What the shard writers move at each commit.
    state: Mutex<LiveState>,
    /// What the dose handlers move when a request fails; never held with `state`.
    errors: Mutex<ErrorState>,
    campaign: Arc<Campaign>,
    config: LiveConfig,
    started_at: i64,
    /// All doses and registrations stored when the server started, read from the store once.
    /// A snapshot's totals add what was counted since (the doses committed, the registrations
    /// created), so it never reads the store.
    doses_at_start: u64,
    registrations_at_start: u64,
    /// The newest snapshot as JSON: `GET /v1/live` and every stream share one build a second.
    cache: Mutex<Option<(Instant, Arc<str>)>>,
    /// Held while a snapshot is built, so that requests arriving together wait for one build
    /// instead of each making their own.
    building: tokio::sync::Mutex<()>,
    /// Snapshots built since start: what the sharing saves shows here.
    snapshots_built: AtomicU64,
    /// One permit per live stream being served: caps what a wall of consoles (or a client
    /// reconnecting in a loop) can hold open.
    streams: Arc<Semaphore>,
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
/// from the server's in-memory state; tests make it up.
#[derive(Debug, Clone, Default)]
pub struct LiveInputs {
    pub backend: String,
    pub sites: Vec<Site>,
    pub lots: Vec<LotLevel>,
    /// Counters since the server started.
    pub registrations_since_start: u64,
    pub checkins_since_start: u64,
    pub certificates_signed: u64,
    pub queue_depths: Vec<usize>,
    /// Dose latency over the last minute.
    pub latency: LatencySummary,
    pub analytics: AnalyticsFigures,
    /// Province and district names (display only).
    pub area_names: Arc<AreaNames>,
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
    /// Rows dropped because the outbox was full (kept across restarts).
    pub dropped_rows: u64,
    /// Rows the backends cannot hold, set aside instead of shipped (kept across restarts).
    pub set_aside: u64,
    /// The backend's last refusal, cleared by the next success.
    pub last_error: Option<String>,
    /// A lag above this many seconds raises `analytics_lagging`.
    pub lag_alert_s: u64,
}

impl AnalyticsFigures {
    /// What an operator must hear about analytics: rows lost to a full outbox, rows set aside,
    /// a lag beyond the threshold. Shared by the live console and `GET /v1/stats`.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if self.dropped_rows > 0 {
            alerts.push(Alert {
                severity: Severity::Critical,
                kind: "analytics_rows_dropped",
                site_id: None,
                shard: None,
                message: format!(
                    "{} analytics rows were dropped because the outbox was full: allocation and uptake \
                     figures undercount by that many doses (the doses themselves are safe in the store). \
                     Raise analytics.outbox_max_bytes and keep the analytics backend reachable",
                    self.dropped_rows
                ),
            });
        }
        if self.set_aside > 0 {
            alerts.push(Alert {
                severity: Severity::Warning,
                kind: "analytics_rows_set_aside",
                site_id: None,
                shard: None,
                message: format!(
                    "{} analytics rows were set aside because the backend cannot hold them (a time \
                     before 1970, or an unreadable outbox entry); the server log names each dose. \
                     Correct those doses to ship them",
                    self.set_aside
                ),
            });
        }
        if self.lag_ms > self.lag_alert_s * 1_000 {
            let full = self.outbox_bytes as f64 * 100.0 / self.outbox_max_bytes.max(1) as f64;
            alerts.push(Alert {
                severity: if full > 80.0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                kind: "analytics_lagging",
                site_id: None,
                shard: None,
                message: format!(
                    "analytics {} s behind, {} rows waiting ({full:.0}% of the outbox){}",
                    self.lag_ms / 1_000,
                    self.outbox_rows,
                    self.last_error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            });
        }
        alerts
    }
}

/// One lot's stock at a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotLevel {
    pub site_id: SiteId,
    pub product: ProductCode,
    pub remaining: u64,
    pub used: u64,
}

/// Doses of one product at one site on one of the campaign's days, from the analytics backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySeed {
    pub site_id: SiteId,
    pub product: ProductCode,
    /// The day, numbered as [`campaign_day`] numbers them.
    pub day: i64,
    pub doses: u64,
}

/// `GET /v1/live`: the whole campaign at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSnapshot {
    /// Unix seconds when this snapshot was made.
    pub generated_at: i64,
    /// Unix seconds when the server started; "since start" figures count from here.
    pub started_at: i64,
    /// Unix seconds from which `doses.today` counts: the campaign's midnight, or the start if
    /// the day's earlier doses could not be learned at start-up.
    pub today_since: i64,
    /// The campaign's time zone, seconds east of UTC.
    pub utc_offset_s: i64,
    pub backend: String,
    pub thresholds: LiveConfig,
    pub doses: DoseFigures,
    pub certificates: SeriesCounts,
    pub registrations: RegistrationFigures,
    pub checkins_since_start: u64,
    pub certificates_signed: u64,
    /// Dose latency over the last minute (the server's rolling hdrhistograms).
    pub latency_ms: LatencySummary,
    pub queues: QueueFigures,
    pub errors: ErrorFigures,
    pub stock: StockFigures,
    /// Every site, ordered by site id.
    pub sites: Vec<SiteLive>,
    /// Names of the provinces (`01`) and districts (`01/001`) the sites stand in, where the
    /// campaign has them (`vaxcamp import areas`); codes without a name are left out.
    pub area_names: BTreeMap<String, String>,
    pub analytics: AnalyticsFigures,
    /// Most severe first.
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoseFigures {
    /// All doses stored.
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
    /// Dose errors over the last 60 seconds.
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
    /// Average doses a day (see [`daily_uptake`]), `None` before there is anything to go on.
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
    /// Dose requests from this site that failed, over the last 60 seconds and since start.
    pub errors_last_minute: u64,
    pub errors_since_start: u64,
    pub stock: Vec<ProductStock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
}

/// Every kind of [`Alert`], as the API documents them.
pub const ALERT_KINDS: [&str; 8] = [
    "out_of_stock",
    "queue_near_full",
    "error_spike",
    "analytics_rows_dropped",
    "low_stock",
    "site_silent",
    "analytics_lagging",
    "analytics_rows_set_aside",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub severity: Severity,
    /// One of [`ALERT_KINDS`]: `site_silent`, `error_spike` (national, or with a `site_id`),
    /// `queue_near_full`, `low_stock`, `out_of_stock`, `analytics_lagging`,
    /// `analytics_rows_dropped` or `analytics_rows_set_aside`.
    pub kind: &'static str,
    pub site_id: Option<SiteId>,
    /// The shard of a `queue_near_full` alert; absent from the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<usize>,
    /// Says what happened in figures that change from one snapshot to the next: what names
    /// an alert is its kind, site and shard, never its message.
    pub message: String,
}

/// The campaign's day number of a moment: days since the epoch, midnight to midnight at
/// `utc_offset_s`.
pub fn campaign_day(unix: i64, utc_offset_s: i64) -> i64 {
    (unix + utc_offset_s).div_euclid(SECONDS_PER_DAY)
}

/// Unix seconds of the campaign's midnight that starts `day`.
pub fn day_start(day: i64, utc_offset_s: i64) -> i64 {
    day * SECONDS_PER_DAY - utc_offset_s
}

/// Average doses a day of one series (a site's product), from `days` (the complete days of
/// the uptake window, oldest first, then today) of which those from `first_complete` on are
/// fully counted.
///
/// Whole days only: the average over the complete days from the first one with a dose (so a
/// site that opened three days ago is not averaged over seven), never an extrapolation of the
/// hours seen so far. Today's doses so far are a lower bound of today's uptake, so the estimate
/// is at least that: a surge shows the same day, and with no history at all today alone is the
/// estimate, which grows through the day and never raises a false low-stock alert. `None`
/// with neither history nor `observed` (a minute of this server's own observation).
pub fn daily_uptake(days: &DayCounts, first_complete: usize, observed: bool) -> Option<f64> {
    let history = &days[first_complete.min(TODAY)..TODAY];
    let average = history.iter().position(|&n| n > 0).map(|first| {
        let span = &history[first..];
        span.iter().sum::<u64>() as f64 / span.len() as f64
    });
    let today = days[TODAY] as f64;
    match average {
        Some(average) => Some(average.max(today)),
        None => observed.then_some(today),
    }
}

/// What a snapshot copies of one site's counters, under the lock.
struct SiteCounted {
    today: u64,
    /// By product index.
    products: Vec<(usize, DayCounts)>,
    rate_window: u64,
    /// Doses committed over the same minute as `errors_last_minute`: the other attempts.
    committed_last_minute: u64,
    since_start: u64,
    last_dose: Option<i64>,
}

/// What a snapshot copies of one site's errors, under the errors' lock.
#[derive(Default)]
struct SiteErrors {
    last_minute: u64,
    since_start: u64,
}

/// What a snapshot copies of the live state, under the locks; everything else is computed
/// after they are released, so shard writers never wait for a snapshot being built.
struct Counted {
    sites: Vec<Option<SiteCounted>>,
    /// In the order of `sites`.
    site_errors: Vec<SiteErrors>,
    products: Vec<ProductCode>,
    history: Vec<u64>,
    national_now: u64,
    national_rate: u64,
    national_minute: u64,
    national_active: bool,
    since_start: u64,
    partial: u64,
    complete: u64,
    /// (kind, since start, last minute)
    errors: Vec<(OutcomeKey, u64, u64)>,
    complete_from_day: i64,
    seeded: bool,
}

impl Live {
    /// A live model starting now.
    pub fn new(campaign: Arc<Campaign>, config: LiveConfig) -> Self {
        Self::starting_at(campaign, config, unix_now())
    }

    /// A live model whose "since start" begins at `started_at` (unix seconds).
    pub fn starting_at(campaign: Arc<Campaign>, config: LiveConfig, started_at: i64) -> Self {
        let start_day = campaign_day(started_at, config.utc_offset_s);
        // Without a seed, the first whole day counted is the day after the start (the start's
        // own day, if the server started at midnight).
        let complete_from_day = if day_start(start_day, config.utc_offset_s) == started_at {
            start_day
        } else {
            start_day + 1
        };
        let streams = Arc::new(Semaphore::new(config.max_streams.max(1)));
        Self {
            state: Mutex::new(LiveState {
                sites: HashMap::new(),
                products: Vec::new(),
                national: Ring::new(HISTORY_SECONDS + 1, started_at),
                since_start: 0,
                partial: 0,
                complete: 0,
                complete_from_day,
                seeded: false,
            }),
            errors: Mutex::new(ErrorState::default()),
            campaign,
            config,
            started_at,
            doses_at_start: 0,
            registrations_at_start: 0,
            cache: Mutex::new(None),
            building: tokio::sync::Mutex::new(()),
            snapshots_built: AtomicU64::new(0),
            streams,
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

    fn lock_errors(&self) -> MutexGuard<'_, ErrorState> {
        // Counters only, as `lock`.
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start_day(&self) -> i64 {
        campaign_day(self.started_at, self.config.utc_offset_s)
    }

    /// The all-time totals as the store counted them at start-up, read before the write path
    /// starts: a snapshot adds the doses committed since ([`Live::record_committed`]) and the
    /// registrations created since ([`LiveInputs::registrations_since_start`]).
    #[must_use]
    pub fn with_totals_at_start(mut self, doses: u64, registrations: u64) -> Self {
        self.doses_at_start = doses;
        self.registrations_at_start = registrations;
        self
    }

    /// Fills the per-day rings with doses given before this server started: `from_day` (the
    /// first day the seed covers whole) through today. Call once, before the write path starts,
    /// so that no dose is counted both here and by [`Live::record_committed`].
    pub fn seed_days(&self, from_day: i64, seeds: impl IntoIterator<Item = DaySeed>) {
        let start_day = self.start_day();
        let mut state = self.lock();
        for seed in seeds {
            if seed.day > start_day || seed.doses == 0 {
                continue;
            }
            let product = state.product_index(&seed.product);
            let started_at = self.started_at;
            state
                .sites
                .entry(seed.site_id)
                .or_insert_with(|| SiteCounters::new(started_at))
                .product_day(product, start_day)
                .add(seed.day, seed.doses);
        }
        state.complete_from_day = from_day.min(state.complete_from_day);
        state.seeded = true;
    }

    /// Counts doses a shard writer has just committed.
    ///
    /// Two clocks, each for what it measures: the per-second rings (doses/s, a site's rate, its
    /// last dose) count the server's traffic now, at the dose's `recorded_at`; the per-day
    /// counts (today, the uptake behind days of supply) count vaccinations on the day they were
    /// given, at `administered_at`, as the analytics backend that seeds them at start-up does.
    /// So a ledger import of last week's doses shows as traffic, but not as today's uptake, and
    /// a restart moves no dose to another day. A dose given before the day window is in none of
    /// its days.
    pub fn record_committed(&self, doses: &[Dose]) {
        if doses.is_empty() {
            return;
        }
        let products = self.campaign.products();
        let started_at = self.started_at;
        let offset = self.config.utc_offset_s;
        let start_day = self.start_day();
        let mut state = self.lock();
        for dose in doses {
            let at = dose.recorded_at.unix_timestamp();
            let day = campaign_day(dose.administered_at.unix_timestamp(), offset);
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
            let product = state.product_index(&dose.product);
            // A site's id is copied once, at its first dose: not for every dose under the lock.
            let site = match state.sites.get_mut(&dose.site_id) {
                Some(site) => site,
                None => state
                    .sites
                    .entry(dose.site_id.clone())
                    .or_insert_with(|| SiteCounters::new(started_at)),
            };
            site.per_second.add(at, 1);
            site.product_day(product, start_day).add(day, 1);
            site.since_start += 1;
            site.last_dose = Some(site.last_dose.map_or(at, |last| last.max(at)));
        }
    }

    /// Counts a dose request's outcome now, for `site` (the caller's, when known). Successes
    /// (`created`, `duplicate`) are counted by the commits; only failures are kept here.
    pub fn record_outcome(
        &self,
        site: Option<&SiteId>,
        outcome: &'static str,
        rule: Option<&'static str>,
    ) {
        self.record_outcome_at(site, outcome, rule, unix_now());
    }

    /// [`Live::record_outcome`] at `at` (unix seconds).
    pub fn record_outcome_at(
        &self,
        site: Option<&SiteId>,
        outcome: &'static str,
        rule: Option<&'static str>,
        at: i64,
    ) {
        if is_success(outcome) {
            return;
        }
        // Only the campaign's sites: an admin's request naming a site that does not exist
        // must not grow the map.
        let site = site.filter(|id| self.campaign.has_site(id));
        let started_at = self.started_at;
        let mut errors = self.lock_errors();
        errors
            .by_kind
            .entry((outcome, rule))
            .or_insert_with(|| Tally::new(started_at))
            .add(at);
        if let Some(site) = site {
            match errors.by_site.get_mut(site) {
                Some(tally) => tally.add(at),
                None => {
                    let mut tally = Tally::new(started_at);
                    tally.add(at);
                    errors.by_site.insert(site.clone(), tally);
                }
            }
        }
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

    /// The snapshot JSON younger than `max_age`, building it with `build` when there is none.
    /// Callers arriving together wait for one build: however many consoles and `GET /v1/live`
    /// callers there are, a snapshot is built at most once per `max_age`.
    ///
    /// # Errors
    /// What `build` returns.
    pub async fn shared_json<E>(
        &self,
        max_age: Duration,
        build: impl FnOnce() -> Result<Arc<str>, E>,
    ) -> Result<Arc<str>, E> {
        if let Some(json) = self.cached_json(max_age) {
            return Ok(json);
        }
        let _building = self.building.lock().await;
        if let Some(json) = self.cached_json(max_age) {
            return Ok(json);
        }
        let json = build()?;
        self.snapshots_built.fetch_add(1, Ordering::Relaxed);
        self.store_json(json.clone());
        Ok(json)
    }

    /// Snapshots built by [`Live::shared_json`] since start.
    pub fn snapshots_built(&self) -> u64 {
        self.snapshots_built.load(Ordering::Relaxed)
    }

    /// A permit to serve one live stream, or `None` when as many as allowed are open. The
    /// stream holds it until it ends.
    pub fn stream_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Ends every live stream (the server is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// A receiver that turns true when the server shuts down.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Copies, under the lock, what a snapshot at `now` needs of the counters of `sites`.
    fn count(&self, now: i64, sites: &[&Site]) -> Counted {
        let offset = self.config.utc_offset_s;
        let today = campaign_day(now, offset);
        let last_complete = now - 1;
        let rate_span = (now - self.started_at).clamp(1, RATE_WINDOW as i64);
        let now_span = (now - self.started_at).clamp(1, NOW_WINDOW);
        let minute_from = now - RATE_WINDOW as i64 + 1;
        // The errors first, under their own lock, released before the writers' is taken.
        let (site_errors, errors) = {
            let errors = self.lock_errors();
            let by_site: Vec<SiteErrors> = sites
                .iter()
                .map(|site| {
                    errors
                        .by_site
                        .get(&site.site_id)
                        .map_or_else(SiteErrors::default, |tally| SiteErrors {
                            last_minute: tally.per_second.sum(minute_from, now),
                            since_start: tally.since_start,
                        })
                })
                .collect();
            let by_kind: Vec<(OutcomeKey, u64, u64)> = errors
                .by_kind
                .iter()
                .map(|(kind, tally)| {
                    (
                        *kind,
                        tally.since_start,
                        tally.per_second.sum(minute_from, now),
                    )
                })
                .collect();
            (by_site, by_kind)
        };
        let mut state = self.lock();
        state.national.advance(last_complete);
        let counted_sites = sites
            .iter()
            .map(|site| {
                let counters = state.sites.get(&site.site_id)?;
                let products: Vec<(usize, DayCounts)> = counters
                    .per_product_day
                    .iter()
                    .map(|(p, ring)| (*p, ring.window::<DAY_SLOTS>(today)))
                    .collect();
                Some(SiteCounted {
                    today: products.iter().map(|(_, days)| days[TODAY]).sum(),
                    products,
                    rate_window: counters
                        .per_second
                        .sum(last_complete - rate_span + 1, last_complete),
                    committed_last_minute: counters.per_second.sum(minute_from, now),
                    since_start: counters.since_start,
                    last_dose: counters.last_dose,
                })
            })
            .collect();
        let history_from = last_complete - HISTORY_SECONDS as i64 + 1;
        Counted {
            sites: counted_sites,
            site_errors,
            products: state.products.clone(),
            history: (history_from..=last_complete)
                .map(|s| state.national.get(s))
                .collect(),
            national_now: state
                .national
                .sum(last_complete - now_span + 1, last_complete),
            national_rate: state
                .national
                .sum(last_complete - rate_span + 1, last_complete),
            national_minute: state.national.sum(minute_from, now),
            national_active: state
                .national
                .sum(last_complete - RATE_WINDOW as i64 + 1, last_complete)
                > 0,
            since_start: state.since_start,
            partial: state.partial,
            complete: state.complete,
            errors,
            complete_from_day: state.complete_from_day,
            seeded: state.seeded,
        }
    }

    /// The campaign as of `now` (unix seconds).
    pub fn snapshot_at(&self, now: i64, inputs: LiveInputs) -> LiveSnapshot {
        let config = &self.config;
        let offset = config.utc_offset_s;
        let today = campaign_day(now, offset);
        let rate_span = (now - self.started_at).clamp(1, RATE_WINDOW as i64);
        let now_span = (now - self.started_at).clamp(1, NOW_WINDOW);
        let mut sorted_sites: Vec<&Site> = inputs.sites.iter().collect();
        sorted_sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));

        // The only part under the lock.
        let counted = self.count(now, &sorted_sites);

        let today_since = if counted.seeded || today > self.start_day() {
            day_start(today, offset)
        } else {
            self.started_at
        };
        // Index of the first fully counted day in a `DayCounts`.
        let first_complete =
            usize::try_from(counted.complete_from_day - (today - UPTAKE_DAYS as i64))
                .unwrap_or(0)
                .min(TODAY);
        let observed = now - self.started_at >= config.min_observation_s;
        let uptake = |days: &DayCounts| daily_uptake(days, first_complete, observed);

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

        // National stock and uptake by product: sums of the sites'.
        let mut national_products: BTreeMap<ProductCode, (u64, Option<f64>)> = BTreeMap::new();
        let mut sites = Vec::with_capacity(sorted_sites.len());
        let mut alerts = Vec::new();
        for ((site, counters), errors) in sorted_sites
            .iter()
            .zip(&counted.sites)
            .zip(&counted.site_errors)
        {
            let product_days = |product: &ProductCode| -> DayCounts {
                counters
                    .as_ref()
                    .and_then(|c| {
                        c.products
                            .iter()
                            .find(|(p, _)| counted.products.get(*p) == Some(product))
                    })
                    .map_or([0; DAY_SLOTS], |(_, days)| *days)
            };
            let mut stock = Vec::new();
            let (mut remaining, mut doses_total) = (0u64, 0u64);
            let mut site_uptake: Option<f64> = None;
            for (product, (left, used)) in lots_by_site.get(&site.site_id).into_iter().flatten() {
                remaining += left;
                doses_total += used;
                let product_uptake = uptake(&product_days(product));
                if let Some(u) = product_uptake {
                    *site_uptake.get_or_insert(0.0) += u;
                }
                let national = national_products.entry((*product).clone()).or_default();
                national.0 += left;
                if let Some(u) = product_uptake {
                    *national.1.get_or_insert(0.0) += u;
                }
                stock.push(ProductStock {
                    product: (*product).clone(),
                    remaining: *left,
                    uptake_per_day: product_uptake,
                    days_of_supply: days_of_supply(*left, product_uptake),
                });
            }
            let days = days_of_supply(remaining, site_uptake);
            let low_stock = remaining == 0 || days.is_some_and(|d| d < config.low_stock_days);
            let last_dose = counters.as_ref().and_then(|c| c.last_dose);
            let quiet_since = last_dose.unwrap_or(self.started_at);
            let silent = counted.national_active && now - quiet_since > config.silent_after_s;
            let errors_last_minute = errors.last_minute;
            let label = || format!("{} ({})", site.site_id, site.name);
            if remaining == 0 {
                alerts.push(Alert {
                    severity: Severity::Critical,
                    kind: "out_of_stock",
                    site_id: Some(site.site_id.clone()),
                    shard: None,
                    message: format!("{}: no doses left in stock", label()),
                });
            } else if low_stock {
                alerts.push(Alert {
                    severity: Severity::Warning,
                    kind: "low_stock",
                    site_id: Some(site.site_id.clone()),
                    shard: None,
                    message: format!(
                        "{}: {:.1} days of supply ({remaining} doses)",
                        label(),
                        days.unwrap_or(0.0)
                    ),
                });
            }
            if silent {
                let message = match last_dose {
                    Some(_) => format!(
                        "{}: no dose for {} while other sites are active",
                        label(),
                        minutes(now - quiet_since)
                    ),
                    None => format!(
                        "{}: no dose since the server started {} ago, while other sites are active",
                        label(),
                        minutes(now - quiet_since)
                    ),
                };
                alerts.push(Alert {
                    severity: Severity::Warning,
                    kind: "site_silent",
                    site_id: Some(site.site_id.clone()),
                    shard: None,
                    message,
                });
            }
            // A site whose own requests fail, even while the nation's share stays low.
            let committed = counters.as_ref().map_or(0, |c| c.committed_last_minute);
            if let Some(share) = spike(errors_last_minute, committed, config) {
                alerts.push(Alert {
                    severity: Severity::Critical,
                    kind: "error_spike",
                    site_id: Some(site.site_id.clone()),
                    shard: None,
                    message: format!(
                        "{}: {errors_last_minute} dose errors in the last 60 s ({:.0}% of its attempts)",
                        label(),
                        share * 100.0
                    ),
                });
            }
            sites.push(SiteLive {
                site_id: site.site_id.clone(),
                name: site.name.clone(),
                province: site.area.province.to_string(),
                district: site.area.district.to_string(),
                commune: site.area.commune.as_ref().map(ToString::to_string),
                daily_capacity: site.daily_capacity,
                doses_today: counters.as_ref().map_or(0, |c| c.today),
                doses_since_start: counters.as_ref().map_or(0, |c| c.since_start),
                doses_total,
                rate_per_s: counters.as_ref().map_or(0, |c| c.rate_window) as f64
                    / rate_span as f64,
                last_dose_at: last_dose,
                remaining,
                uptake_per_day: site_uptake,
                days_of_supply: days,
                low_stock,
                silent,
                errors_last_minute,
                errors_since_start: errors.since_start,
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
                    shard: Some(shard),
                    message: format!(
                        "shard {shard} queue at {depth}/{capacity} ({:.0}%): doses will soon be answered 503",
                        *depth as f64 * 100.0 / capacity as f64
                    ),
                });
            }
        }

        // Errors, nationally: since start by kind, and the last minute against the doses
        // committed in it.
        let kinds: Vec<(String, u64, u64)> = counted
            .errors
            .iter()
            .map(|&((outcome, rule), total, minute)| {
                let kind = match rule {
                    Some(rule) => format!("{outcome}:{rule}"),
                    None => outcome.to_owned(),
                };
                (kind, total, minute)
            })
            .collect();
        let total_errors: u64 = kinds.iter().map(|(_, total, _)| total).sum();
        let last_minute: u64 = kinds.iter().map(|(_, _, minute)| minute).sum();
        if let Some(share) = spike(last_minute, counted.national_minute, config) {
            let mut recent: Vec<(&str, u64)> = kinds
                .iter()
                .filter(|(_, _, minute)| *minute > 0)
                .map(|(kind, _, minute)| (kind.as_str(), *minute))
                .collect();
            recent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let most: Vec<String> = recent
                .iter()
                .take(3)
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            alerts.push(Alert {
                severity: Severity::Critical,
                kind: "error_spike",
                site_id: None,
                shard: None,
                message: format!(
                    "{last_minute} dose errors in the last 60 s ({:.0}% of attempts): {}",
                    share * 100.0,
                    most.join(", ")
                ),
            });
        }
        let mut by_kind: Vec<ErrorCount> = kinds
            .iter()
            .filter(|(_, total, _)| *total > 0)
            .map(|(kind, count, _)| ErrorCount {
                kind: kind.clone(),
                count: *count,
            })
            .collect();
        by_kind.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));

        let remaining: u64 = national_products.values().map(|(left, _)| left).sum();
        let national_uptake = sites
            .iter()
            .filter_map(|s| s.uptake_per_day)
            .reduce(|a, b| a + b);
        let by_product = national_products
            .into_iter()
            .map(|(product, (left, product_uptake))| ProductStock {
                product,
                remaining: left,
                uptake_per_day: product_uptake,
                days_of_supply: days_of_supply(left, product_uptake),
            })
            .collect();

        let doses = DoseFigures {
            // The same count as `since_start`, copied under the same lock as the day counts.
            total: self.doses_at_start + counted.since_start,
            today: sites.iter().map(|s| s.doses_today).sum(),
            since_start: counted.since_start,
            per_s_now: counted.national_now as f64 / now_span as f64,
            per_s_1m: counted.national_rate as f64 / rate_span as f64,
            history_per_s: counted.history,
            history_end: now,
        };
        alerts.extend(inputs.analytics.alerts());
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
            utc_offset_s: offset,
            backend: inputs.backend,
            thresholds: config.clone(),
            doses,
            certificates: SeriesCounts {
                partial: counted.partial,
                complete: counted.complete,
            },
            registrations: RegistrationFigures {
                total: self.registrations_at_start + inputs.registrations_since_start,
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
            area_names: inputs.area_names.of_sites(&inputs.sites),
            analytics: inputs.analytics,
            alerts,
        }
    }
}

/// Fills `live`'s per-day rings from `analytics` with the doses of the campaign's current day
/// and the [`UPTAKE_DAYS`] before it, per site and product, as of `now`. Call at start-up,
/// before the write path starts (see [`Live::seed_days`]). Returns the doses seeded.
///
/// The analytics backends count doses per hour of administration; an hour is given to the day
/// it starts in (exact for offsets in whole hours, like Viet Nam's).
///
/// # Errors
/// When the analytics backend cannot answer; `live` is then left as it was, and "today"
/// counts from the server's start.
pub async fn seed_from_analytics(
    live: &Live,
    analytics: &dyn Analytics,
    now: i64,
) -> analytics::Result<u64> {
    let offset = live.config.utc_offset_s;
    let today = campaign_day(now, offset);
    let from_day = today - UPTAKE_DAYS as i64;
    let at = |unix: i64| {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let mut products: Vec<ProductCode> = live.campaign.products().keys().cloned().collect();
    products.sort();
    let mut seeds = Vec::new();
    for product in products {
        let points = analytics
            .uptake(&UptakeQuery {
                level: AreaLevel::Site,
                granularity: Granularity::Hour,
                since: at(day_start(from_day, offset)),
                until: at(now + 3_600),
                product: Some(product.to_string()),
                province: None,
            })
            .await?;
        for point in points {
            let Ok(site_id) = SiteId::new(&point.area) else {
                continue;
            };
            seeds.push(DaySeed {
                site_id,
                product: product.clone(),
                day: campaign_day(point.bucket.unix_timestamp(), offset),
                doses: point.doses,
            });
        }
    }
    let doses = seeds.iter().map(|s| s.doses).sum();
    live.seed_days(from_day, seeds);
    Ok(doses)
}

/// [`seed_from_analytics`] now, at start-up, within `timeout` (`[live] seed_timeout_seconds`).
///
/// Rows still in the outbox (doses acknowledged before a restart that the backend has not got
/// yet) are not in the backend's answer, so it first waits, within the same time, for the
/// shipper to drain `outbox`; nothing else appends to it yet. When the backend cannot answer,
/// the console's "today" counts from the server's start (it says so) and days of supply wait for
/// whole days of this server's own observation. Logs which, and what the seed missed.
pub async fn seed_at_start(
    live: &Live,
    analytics: &dyn Analytics,
    outbox: &analytics::Outbox,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let waiting = outbox.status().rows;
    let mut left = waiting;
    while left > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = outbox.status().rows;
    }
    if left > 0 {
        tracing::warn!(
            rows = left,
            of = waiting,
            backend = analytics.backend_name(),
            "the analytics outbox did not drain within {} s of start-up: today's and the last days' figures miss the doses among these rows",
            timeout.as_secs()
        );
    }
    // The drain may have used the time up; the read still gets a moment of its own.
    let read_timeout = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    let now = unix_now();
    match tokio::time::timeout(read_timeout, seed_from_analytics(live, analytics, now)).await {
        Ok(Ok(doses)) => tracing::info!(
            doses,
            days = UPTAKE_DAYS + 1,
            backend = analytics.backend_name(),
            "live figures seeded with the last days' doses per site"
        ),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            backend = analytics.backend_name(),
            "cannot read the last days' doses from analytics: today counts from now, and days of supply from what this server sees"
        ),
        Err(_) => tracing::warn!(
            backend = analytics.backend_name(),
            "the analytics backend did not answer within {} s of start-up ([live] seed_timeout_seconds): today counts from now, and days of supply from what this server sees",
            timeout.as_secs()
        ),
    }
}

/// The share of attempts that failed, when the errors make a spike.
fn spike(errors: u64, committed: u64, config: &LiveConfig) -> Option<f64> {
    let attempts = errors + committed;
    if attempts == 0 || errors < config.error_spike_min {
        return None;
    }
    let share = errors as f64 / attempts as f64;
    (share >= config.error_spike_share).then_some(share)
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

    /// 2030-01-02 00:00:00 UTC.
    const DAY2: i64 = 1_893_542_400;
    /// Midnight of 2030-01-02 in Viet Nam (UTC+7): 17:00 UTC the day before.
    const VN_MIDNIGHT: i64 = DAY2 - 7 * 3_600;
    const T0: i64 = DAY2 + 8 * 3600; // 08:00 UTC, 15:00 in Viet Nam

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

    fn campaign(sites: &[Site]) -> Arc<Campaign> {
        let campaign = Campaign::default();
        for product in store::builtin_products() {
            campaign.upsert_product(product);
        }
        for site in sites {
            campaign.upsert_site(site.clone());
        }
        Arc::new(campaign)
    }

    fn live_with(sites: &[Site], start: i64) -> Live {
        Live::starting_at(campaign(sites), LiveConfig::default(), start)
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

    fn seed(site: &str, product: &str, day: i64, doses: u64) -> DaySeed {
        DaySeed {
            site_id: SiteId::new(site).unwrap(),
            product: ProductCode::new(product).unwrap(),
            day,
            doses,
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
        assert_eq!(ring.window::<3>(161), [0, 0, 1]);
        ring.advance(1000);
        assert_eq!(ring.sum(0, 1000), 0);
    }

    #[test]
    fn campaign_days_turn_at_the_campaign_midnight() {
        let vn = DEFAULT_UTC_OFFSET_S;
        assert_eq!(
            campaign_day(VN_MIDNIGHT - 1, vn) + 1,
            campaign_day(VN_MIDNIGHT, vn)
        );
        assert_eq!(day_start(campaign_day(T0, vn), vn), VN_MIDNIGHT);
        assert_eq!(day_start(campaign_day(T0, 0), 0), DAY2);
    }

    #[test]
    fn rates_count_complete_seconds_over_the_last_minute() {
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        let live = live_with(&sites, T0);
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
        assert_eq!(json["utc_offset_s"], 25_200);
        assert_eq!(snapshot.doses.since_start, 181);
        assert_eq!(
            snapshot.doses.total, 181,
            "counted in memory from the seed (0)"
        );
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
    fn totals_are_kept_in_memory_from_the_start_up_seed() {
        let sites = [site("a", "01", "001")];
        let live = live_with(&sites, T0).with_totals_at_start(1_000, 50_000);
        live.record_committed(&[
            dose("a", "COMIRNATY", 1, T0 + 1),
            dose("a", "COMIRNATY", 1, T0 + 1),
        ]);
        let mut registered = inputs(&sites, vec![]);
        registered.registrations_since_start = 1;
        let snapshot = live.snapshot_at(T0 + 5, registered);
        assert_eq!(snapshot.doses.total, 1_002);
        assert_eq!(snapshot.registrations.total, 50_001);
    }

    #[test]
    fn doses_today_start_again_at_the_campaign_midnight() {
        // Viet Nam's day ends at 17:00 UTC, not at UTC midnight.
        let sites = [site("a", "01", "001")];
        let live = live_with(&sites, VN_MIDNIGHT - 600);
        live.record_committed(&[dose("a", "COMIRNATY", 1, VN_MIDNIGHT - 10)]);
        live.record_committed(&[dose("a", "COMIRNATY", 1, VN_MIDNIGHT + 10)]);
        let snapshot = live.snapshot_at(VN_MIDNIGHT + 20, inputs(&sites, vec![]));
        assert_eq!(snapshot.sites[0].doses_today, 1);
        assert_eq!(snapshot.sites[0].doses_since_start, 2);
        assert_eq!(snapshot.today_since, VN_MIDNIGHT);
        assert_eq!(snapshot.doses.today, 1);
        // At UTC midnight nothing rolls over.
        let utc = live.snapshot_at(DAY2 + 5, inputs(&sites, vec![]));
        assert_eq!(utc.doses.today, 1);
    }

    /// A dose given at `given` and recorded at `recorded` (a ledger typed in later).
    fn ledger_dose(site: &str, product: &str, given: i64, recorded: i64) -> Dose {
        Dose {
            administered_at: time::OffsetDateTime::from_unix_timestamp(given).unwrap(),
            ..dose(site, product, 1, recorded)
        }
    }

    /// A ledger of yesterday's doses typed in today counts in today's traffic (doses/s) but on
    /// the day the doses were given, as the analytics seed counts them after a restart: today
    /// and days of supply do not move, and no false low-stock alert is raised. A dose from
    /// before the day window is in none of its days.
    #[test]
    fn doses_count_on_the_day_they_were_given() {
        let sites = [site("a", "01", "001")];
        let today = campaign_day(T0, DEFAULT_UTC_OFFSET_S);
        let week = || (1..=7).map(|back| seed("a", "COMIRNATY", today - back, 1_000));
        let live = live_with(&sites, T0);
        live.seed_days(today - 7, week());
        let yesterday = T0 - 86_400;
        let mut ledger: Vec<Dose> = (0..1_500)
            .map(|_| ledger_dose("a", "COMIRNATY", yesterday, T0 + 10))
            .collect();
        ledger.push(ledger_dose("a", "COMIRNATY", T0 - 30 * 86_400, T0 + 10));
        live.record_committed(&ledger);
        live.record_committed(&[dose("a", "COMIRNATY", 1, T0 + 20)]);
        let stock = || inputs(&sites, vec![lot("a", "COMIRNATY", 4_000)]);
        let snapshot = live.snapshot_at(T0 + 30, stock());
        let a = &snapshot.sites[0];
        assert_eq!(a.doses_today, 1);
        assert_eq!(snapshot.doses.today, 1);
        // 6 days of 1,000 and yesterday's 2,500: 8,500 over 7 days.
        assert_eq!(a.uptake_per_day, Some(8_500.0 / 7.0));
        assert!(!a.low_stock, "{:?}", a.days_of_supply);
        assert!(snapshot.alerts.is_empty(), "{:?}", snapshot.alerts);
        // The server's traffic counts every dose when it arrived.
        assert_eq!(snapshot.doses.since_start, 1_502);
        assert_eq!(snapshot.doses.history_per_s.iter().sum::<u64>(), 1_502);
        assert_eq!(a.doses_since_start, 1_502);
        assert_eq!(a.last_dose_at, Some(T0 + 20));

        // After a restart, the analytics seed puts the same doses on the same days.
        let restarted = live_with(&sites, T0 + 30);
        let mut seeds: Vec<DaySeed> = week().collect();
        seeds.push(seed("a", "COMIRNATY", today - 1, 1_500));
        seeds.push(seed("a", "COMIRNATY", today, 1));
        restarted.seed_days(today - 7, seeds);
        let after = restarted.snapshot_at(T0 + 30, stock());
        assert_eq!(after.sites[0].doses_today, a.doses_today);
        assert_eq!(after.sites[0].uptake_per_day, a.uptake_per_day);
        assert_eq!(after.sites[0].days_of_supply, a.days_of_supply);
    }

    #[test]
    fn without_a_seed_today_counts_from_the_start() {
        let sites = [site("a", "01", "001")];
        let live = live_with(&sites, T0);
        let snapshot = live.snapshot_at(T0 + 60, inputs(&sites, vec![]));
        assert_eq!(snapshot.today_since, T0);
    }

    /// A restart at 10:00 (Viet Nam) of a site that gave 1,000 doses a day for a week and 300
    /// this morning: the seed keeps "today" at 300 and the uptake at 1,000 a day. Scaling the
    /// three hours seen to a day (the old estimate) made it 2,400 and raised a false alert.
    #[test]
    fn after_a_restart_days_of_supply_come_from_whole_days() {
        let sites = [site("a", "01", "001")];
        let today = campaign_day(T0, DEFAULT_UTC_OFFSET_S);
        let ten = VN_MIDNIGHT + 10 * 3_600; // 10:00 in Viet Nam
        let live = live_with(&sites, ten);
        let mut seeds: Vec<DaySeed> = (1..=7)
            .map(|back| seed("a", "COMIRNATY", today - back, 1_000))
            .collect();
        seeds.push(seed("a", "COMIRNATY", today, 300));
        live.seed_days(today - 7, seeds);
        let stock = || inputs(&sites, vec![lot("a", "COMIRNATY", 4_000)]);
        let snapshot = live.snapshot_at(ten + 30, stock());
        let a = &snapshot.sites[0];
        assert_eq!(a.doses_today, 300);
        assert_eq!(snapshot.today_since, VN_MIDNIGHT);
        assert_eq!(a.uptake_per_day, Some(1_000.0));
        assert_eq!(a.days_of_supply, Some(4.0));
        assert!(!a.low_stock, "4 days is above the 3-day threshold");
        assert!(snapshot.alerts.is_empty(), "{:?}", snapshot.alerts);
        // Three busy hours later (600 more), still 1,000 a day: nothing is extrapolated.
        for i in 0..600 {
            live.record_committed(&[dose("a", "COMIRNATY", 1, ten + i * 18)]);
        }
        let later = live.snapshot_at(ten + 3 * 3_600, stock());
        assert_eq!(later.sites[0].doses_today, 900);
        assert_eq!(later.sites[0].uptake_per_day, Some(1_000.0));
        // A surge beyond the week's average shows the same day: today so far is a floor.
        for i in 0..300 {
            live.record_committed(&[dose("a", "COMIRNATY", 1, ten + 3 * 3_600 + i)]);
        }
        let surge = live.snapshot_at(ten + 4 * 3_600, stock());
        assert_eq!(surge.sites[0].uptake_per_day, Some(1_200.0));
        assert_eq!(surge.stock.uptake_per_day, Some(1_200.0));
    }

    /// The average starts at the site's first day with doses: a site that opened two days ago
    /// is not averaged over seven.
    #[test]
    fn uptake_is_averaged_from_the_first_day_with_doses() {
        let days: DayCounts = [0, 0, 0, 0, 0, 800, 1_200, 50];
        assert_eq!(daily_uptake(&days, 0, true), Some(1_000.0));
        // Only the last three days are fully counted (no seed; the server has run 3 days).
        let days: DayCounts = [0, 0, 0, 0, 5_000, 900, 1_100, 50];
        assert_eq!(daily_uptake(&days, 5, true), Some(1_000.0));
        // No history: today so far, once a minute was observed.
        let days: DayCounts = [0, 0, 0, 0, 0, 0, 0, 300];
        assert_eq!(daily_uptake(&days, 0, true), Some(300.0));
        assert_eq!(daily_uptake(&days, 7, false), None);
    }

    /// Without any history (the analytics backend was away), three hours of daytime traffic
    /// do not become a day's rate of 2.4 times as much: today so far is the estimate.
    #[test]
    fn without_history_three_hours_are_not_scaled_to_a_day() {
        let sites = [site("a", "01", "001")];
        let nine = VN_MIDNIGHT + 9 * 3_600;
        let live = live_with(&sites, nine);
        for i in 0..300 {
            live.record_committed(&[dose("a", "COMIRNATY", 1, nine + i * 36)]);
        }
        let snapshot = live.snapshot_at(
            nine + 3 * 3_600,
            inputs(&sites, vec![lot("a", "COMIRNATY", 1_500)]),
        );
        let a = &snapshot.sites[0];
        assert_eq!(a.uptake_per_day, Some(300.0));
        assert_eq!(a.days_of_supply, Some(5.0));
        assert!(snapshot.alerts.iter().all(|a| a.kind != "low_stock"));
    }

    #[test]
    fn days_of_supply_by_product_and_alerts() {
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        let today = campaign_day(T0, DEFAULT_UTC_OFFSET_S);
        let live = live_with(&sites, T0);
        live.seed_days(
            today - 7,
            (1..=7).map(|back| seed("a", "COMIRNATY", today - back, 2_400)),
        );
        let lots = vec![
            lot("a", "COMIRNATY", 4_000),
            lot("a", "SPIKEVAX", 800),
            lot("b", "SPIKEVAX", 0),
        ];
        // Site b was quiet for an hour while a vaccinated.
        for s in (0..3_600).step_by(30) {
            live.record_committed(&[dose("a", "COMIRNATY", 1, T0 + s)]);
        }
        let snapshot = live.snapshot_at(T0 + 3600, inputs(&sites, lots));
        let a = &snapshot.sites[0];
        assert_eq!(a.remaining, 4_800);
        assert_eq!(a.uptake_per_day, Some(2_400.0));
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
        let comirnaty = &snapshot.stock.by_product[0];
        assert_eq!(comirnaty.uptake_per_day, Some(2_400.0));
    }

    #[test]
    fn no_uptake_estimate_before_a_minute_of_observation_without_history() {
        let sites = [site("a", "01", "001")];
        let live = live_with(&sites, T0);
        live.record_committed(&[dose("a", "COMIRNATY", 1, T0 + 1)]);
        let snapshot = live.snapshot_at(T0 + 30, inputs(&sites, vec![lot("a", "COMIRNATY", 10)]));
        assert_eq!(snapshot.sites[0].uptake_per_day, None);
        assert_eq!(snapshot.sites[0].days_of_supply, None);
        assert!(!snapshot.sites[0].low_stock);
        assert!(snapshot.alerts.is_empty(), "{:?}", snapshot.alerts);
    }

    #[test]
    fn a_site_is_silent_only_while_others_are_active() {
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        let live = live_with(&sites, T0);
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
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        let live = live_with(&sites, T0);
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
        let sites = [site("a", "01", "001")];
        let live = live_with(&sites, T0);
        let stock = || inputs(&sites, vec![lot("a", "COMIRNATY", 1_000_000)]);
        let a = SiteId::new("a").unwrap();
        // 7 errors early on, then 2 doses a second for a minute.
        for _ in 0..5 {
            live.record_outcome_at(Some(&a), "refused", Some("lot_exhausted"), T0 + 10);
        }
        for _ in 0..2 {
            live.record_outcome_at(None, "failed", None, T0 + 10);
        }
        live.record_outcome_at(Some(&a), "created", None, T0 + 10);
        let first = live.snapshot_at(T0 + 11, stock());
        assert_eq!(first.errors.total, 7);
        assert_eq!(first.errors.last_minute, 7);
        assert_eq!(first.sites[0].errors_last_minute, 5);
        assert!(
            first.alerts.iter().all(|a| a.kind != "error_spike"),
            "under 10"
        );
        for s in 100..160 {
            live.record_committed(&[
                dose("a", "COMIRNATY", 1, T0 + s),
                dose("a", "COMIRNATY", 1, T0 + s),
            ]);
        }
        // A minute later the early errors have left the window; 3 more against 120 doses is no
        // spike, however often snapshots are taken.
        for s in [150, 155, 158] {
            live.record_outcome_at(Some(&a), "refused", Some("lot_exhausted"), T0 + s);
        }
        for now in [T0 + 159, T0 + 160, T0 + 160] {
            let calm = live.snapshot_at(now, stock());
            assert_eq!(calm.errors.last_minute, 3);
            assert!(calm.alerts.iter().all(|a| a.kind != "error_spike"));
        }
        // 40 errors in the next 30 s with no doses is a spike, nationally and at site a: 43
        // errors against 58 doses committed in the minute.
        for i in 0..40 {
            live.record_outcome_at(
                Some(&a),
                "refused",
                Some("lot_exhausted"),
                T0 + 161 + i % 29,
            );
        }
        let spike = live.snapshot_at(T0 + 190, stock());
        let kinds: Vec<(&str, Option<&str>)> = spike
            .alerts
            .iter()
            .map(|a| (a.kind, a.site_id.as_ref().map(SiteId::as_str)))
            .collect();
        assert_eq!(kinds, [("error_spike", None), ("error_spike", Some("a"))]);
        assert_eq!(
            spike.alerts[0].message,
            "43 dose errors in the last 60 s (43% of attempts): refused:lot_exhausted 43"
        );
        assert_eq!(
            spike.alerts[1].message,
            "a (Site a): 43 dose errors in the last 60 s (43% of its attempts)"
        );
        assert_eq!(spike.sites[0].errors_last_minute, 43);
        assert_eq!(spike.sites[0].errors_since_start, 48);
        assert_eq!(
            spike.errors.by_kind,
            [
                ErrorCount {
                    kind: "refused:lot_exhausted".into(),
                    count: 48
                },
                ErrorCount {
                    kind: "failed".into(),
                    count: 2
                }
            ]
        );
    }

    /// One site failing is a spike at that site even when the nation's share stays low.
    #[test]
    fn error_spike_at_one_site_of_many() {
        let sites = [site("a", "01", "001"), site("b", "79", "760")];
        let live = live_with(&sites, T0);
        let b = SiteId::new("b").unwrap();
        for s in 0..60 {
            let doses: Vec<Dose> = (0..10).map(|_| dose("a", "COMIRNATY", 1, T0 + s)).collect();
            live.record_committed(&doses);
        }
        for i in 0..12 {
            live.record_outcome_at(Some(&b), "refused", Some("lot_not_at_site"), T0 + 40 + i);
        }
        let snapshot = live.snapshot_at(T0 + 60, inputs(&sites, vec![]));
        let spikes: Vec<Option<&str>> = snapshot
            .alerts
            .iter()
            .filter(|a| a.kind == "error_spike")
            .map(|a| a.site_id.as_ref().map(SiteId::as_str))
            .collect();
        assert_eq!(
            spikes,
            [Some("b")],
            "12 of 612 attempts is no national spike"
        );
        // An unknown site named by an admin is counted nationally only.
        let ghost = SiteId::new("ghost").unwrap();
        live.record_outcome_at(Some(&ghost), "refused", Some("unknown_lot"), T0 + 60);
        let snapshot = live.snapshot_at(T0 + 61, inputs(&sites, vec![]));
        assert_eq!(snapshot.errors.total, 13);
        let errors = live.lock_errors();
        assert!(!errors.by_site.contains_key(&ghost));
        assert_eq!(errors.by_site.len(), 1);
    }

    /// A failing request (a 503 `busy` when the queues are full) counts its error without the
    /// lock the shard writers take at each commit.
    #[test]
    fn errors_are_counted_while_a_writer_holds_the_lock() {
        let sites = [site("a", "01", "001")];
        let live = Arc::new(live_with(&sites, T0));
        let writers = live.lock();
        let (done, counted) = std::sync::mpsc::channel();
        let handler = {
            let live = live.clone();
            std::thread::spawn(move || {
                let a = SiteId::new("a").unwrap();
                live.record_outcome_at(Some(&a), "busy", None, T0 + 1);
                live.record_outcome_at(None, "busy", None, T0 + 1);
                done.send(()).unwrap();
            })
        };
        let waited = counted.recv_timeout(Duration::from_secs(30));
        drop(writers);
        handler.join().unwrap();
        assert!(waited.is_ok(), "the error waited for the writers' lock");
        let snapshot = live.snapshot_at(T0 + 2, inputs(&sites, vec![]));
        assert_eq!(snapshot.errors.total, 2);
        assert_eq!(snapshot.sites[0].errors_since_start, 1);
    }

    #[test]
    fn queues_near_full_raise_an_alert() {
        let live = live_with(&[], T0);
        let mut i = inputs(&[], vec![]);
        i.queue_depths = vec![10, 900, 819];
        let snapshot = live.snapshot_at(T0 + 10, i);
        let messages: Vec<&str> = snapshot.alerts.iter().map(|a| a.message.as_str()).collect();
        assert_eq!(
            messages,
            ["shard 1 queue at 900/1024 (88%): doses will soon be answered 503"]
        );
        // The shard is named apart from the message, which changes as the queue moves.
        let json = serde_json::to_value(&snapshot.alerts).unwrap();
        assert_eq!(json[0]["shard"], 1);
        let mut other = snapshot.alerts[0].clone();
        other.shard = None;
        assert!(
            serde_json::to_value(&other).unwrap().get("shard").is_none(),
            "only queue alerts name a shard"
        );
    }

    #[test]
    fn empty_campaign_snapshot() {
        let live = live_with(&[], T0);
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
        assert!(json["thresholds"].get("utc_offset_s").is_none());
    }

    /// Writers are not held up by a snapshot: the lock is taken only to copy counters, so a
    /// writer's `record_committed` gets it between two snapshots' copies.
    #[test]
    fn snapshots_and_commits_interleave() {
        let sites: Vec<Site> = (0..500)
            .map(|i| site(&format!("s{i:03}"), "01", "001"))
            .collect();
        let live = Arc::new(live_with(&sites, T0));
        let writer = {
            let live = live.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    live.record_committed(&[dose(
                        &format!("s{:03}", i % 500),
                        "COMIRNATY",
                        1,
                        T0 + 1,
                    )]);
                }
            })
        };
        let input = inputs(&sites, vec![]);
        let mut last = 0;
        for _ in 0..20 {
            let snapshot = live.snapshot_at(T0 + 2, input.clone());
            assert!(snapshot.doses.since_start >= last);
            last = snapshot.doses.since_start;
        }
        writer.join().unwrap();
        assert_eq!(live.snapshot_at(T0 + 2, input).doses.since_start, 2_000);
    }

    /// Callers that arrive while a snapshot is being built wait for that build and share it.
    /// The first build is held (on a multi-thread runtime, so the others run meanwhile) until
    /// every other caller has been polled once: with one build at a time they are then waiting
    /// for it; without, they have built their own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_build_serves_callers_that_arrive_together() {
        const OTHERS: usize = 7;
        let live = Arc::new(live_with(&[], T0));
        let builds = Arc::new(AtomicU64::new(0));
        // Each other caller says when its call was first polled.
        let (arrived, arrivals) = std::sync::mpsc::channel::<()>();
        let (building, first_is_building) = tokio::sync::oneshot::channel();
        let first = {
            let (live, builds) = (live.clone(), builds.clone());
            tokio::spawn(async move {
                live.shared_json(Duration::from_secs(60), move || {
                    builds.fetch_add(1, Ordering::Relaxed);
                    let _ = building.send(());
                    // Hands the worker's other tasks to another thread while this one waits.
                    tokio::task::block_in_place(|| {
                        for _ in 0..OTHERS {
                            arrivals
                                .recv_timeout(Duration::from_secs(30))
                                .map_err(|_| "a caller was never polled")?;
                        }
                        Ok::<_, &str>(Arc::from("first"))
                    })
                })
                .await
            })
        };
        first_is_building.await.unwrap();
        let others: Vec<_> = (0..OTHERS)
            .map(|_| {
                let (live, builds, arrived) = (live.clone(), builds.clone(), arrived.clone());
                tokio::spawn(async move {
                    let mut call = Box::pin(live.shared_json(Duration::from_secs(60), move || {
                        builds.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, &str>(Arc::from("another"))
                    }));
                    let mut arrived = Some(arrived);
                    std::future::poll_fn(move |cx| {
                        let poll = call.as_mut().poll(cx);
                        if let Some(arrived) = arrived.take() {
                            let _ = arrived.send(());
                        }
                        poll
                    })
                    .await
                })
            })
            .collect();
        assert_eq!(&*first.await.unwrap().unwrap(), "first");
        for other in others {
            assert_eq!(&*other.await.unwrap().unwrap(), "first", "the shared build");
        }
        assert_eq!(builds.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stream_permits_are_capped() {
        let live = Live::starting_at(
            campaign(&[]),
            LiveConfig {
                max_streams: 2,
                ..LiveConfig::default()
            },
            T0,
        );
        let first = live.stream_permit().unwrap();
        let _second = live.stream_permit().unwrap();
        assert!(live.stream_permit().is_none());
        drop(first);
        assert!(
            live.stream_permit().is_some(),
            "an ended stream frees its place"
        );
    }

    #[tokio::test]
    async fn the_seed_reads_uptake_per_site_and_day_from_analytics() {
        let dir = tempfile::tempdir().unwrap();
        let analytics = analytics::EmbeddedAnalytics::open(dir.path()).unwrap();
        let sites = [site("a", "01", "001")];
        let now = VN_MIDNIGHT + 10 * 3_600;
        let events: Vec<analytics::Event> = [
            (now - 2 * 86_400, 2),         // two days ago
            (VN_MIDNIGHT - 60, 3),         // yesterday, 23:59 in Viet Nam (16:59 UTC)
            (VN_MIDNIGHT + 3_600, 4),      // today, 01:00
            (now - 8 * 86_400 - 3_600, 9), // before the window
        ]
        .into_iter()
        .flat_map(|(at, n)| (0..n).map(move |_| at))
        .map(|at| dose_row(&sites[0], at))
        .collect();
        analytics.apply(&events).await.unwrap();
        let live = live_with(&sites, now);
        let seeded = seed_from_analytics(&live, &analytics, now).await.unwrap();
        assert_eq!(seeded, 9);
        let snapshot = live.snapshot_at(now + 60, inputs(&sites, vec![lot("a", "COMIRNATY", 100)]));
        assert_eq!(snapshot.doses.today, 4);
        assert_eq!(snapshot.today_since, VN_MIDNIGHT);
        // Two days ago 2, yesterday 3: 2.5 a day on average; today's 4 so far is more.
        assert_eq!(snapshot.sites[0].uptake_per_day, Some(4.0));
    }

    /// The analytics row of a first dose given at `site` at `at`.
    fn dose_row(site: &Site, at: i64) -> analytics::Event {
        let d = dose(site.site_id.as_str(), "COMIRNATY", 1, at);
        let person = store::Registration {
            person_code: d.person_code.clone(),
            name: "An".into(),
            birth_date: time::macros::date!(1990 - 01 - 01),
            phone: None,
            area: site.area.clone(),
            priority_group: 1,
            registered_at: d.recorded_at,
        };
        analytics::Event::Dose(analytics::DoseRow::new(
            &d,
            &person,
            site,
            analytics::row::SeriesPosition {
                series_doses: 2,
                previous: None,
            },
            d.recorded_at,
        ))
    }

    #[tokio::test]
    async fn the_seed_waits_for_doses_an_earlier_run_left_in_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = analytics::EmbeddedAnalytics::open(&dir.path().join("analytics")).unwrap();
        let analytics: Arc<dyn Analytics> = Arc::new(embedded);
        let outbox =
            Arc::new(analytics::Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
        let sites = [site("a", "01", "001")];
        let now = unix_now();
        // One dose shipped before the restart, three acknowledged but still in the outbox.
        analytics.apply(&[dose_row(&sites[0], now)]).await.unwrap();
        outbox
            .append((0..3).map(|_| dose_row(&sites[0], now)).collect())
            .unwrap();
        let today = |live: &Live| {
            live.snapshot_at(now, inputs(&sites, vec![lot("a", "COMIRNATY", 100)]))
                .doses
                .today
        };

        // Nothing ships them: the seed waits its time, then counts what the backend has.
        let undrained = live_with(&sites, now);
        let waited = std::time::Instant::now();
        seed_at_start(
            &undrained,
            analytics.as_ref(),
            &outbox,
            Duration::from_secs(1),
        )
        .await;
        assert!(waited.elapsed() >= Duration::from_secs(1), "it waited");
        assert_eq!(today(&undrained), 1, "the three in the outbox are missed");

        // With the shipper running (as at start-up), the seed counts all four.
        let shipper = analytics::Shipper::spawn(
            outbox.clone(),
            analytics.clone(),
            analytics::shipper::ShipperConfig {
                flush_interval: Duration::from_millis(10),
                ..Default::default()
            },
        );
        let live = live_with(&sites, now);
        seed_at_start(&live, analytics.as_ref(), &outbox, Duration::from_secs(30)).await;
        assert_eq!(outbox.status().rows, 0);
        assert_eq!(today(&live), 4);
        shipper.stop().await;
    }

    #[test]
    fn analytics_alerts_say_what_was_lost_and_what_to_do() {
        let healthy = AnalyticsFigures {
            backend: "clickhouse".into(),
            outbox_max_bytes: 1_000,
            lag_alert_s: 60,
            ..AnalyticsFigures::default()
        };
        assert_eq!(healthy.alerts(), Vec::new());
        let troubled = AnalyticsFigures {
            dropped_rows: 12,
            set_aside: 1,
            lag_ms: 61_000,
            outbox_rows: 500,
            outbox_bytes: 900,
            last_error: Some("connection refused".into()),
            ..healthy
        };
        let alerts = troubled.alerts();
        let kinds: Vec<(&str, Severity)> = alerts.iter().map(|a| (a.kind, a.severity)).collect();
        assert_eq!(
            kinds,
            vec![
                ("analytics_rows_dropped", Severity::Critical),
                ("analytics_rows_set_aside", Severity::Warning),
                // 90 % of the outbox is used: critical.
                ("analytics_lagging", Severity::Critical),
            ]
        );
        assert!(
            alerts[0]
                .message
                .starts_with("12 analytics rows were dropped")
        );
        assert!(alerts[0].message.contains("outbox_max_bytes"));
        assert!(
            alerts[2].message.ends_with(": connection refused"),
            "{}",
            alerts[2].message
        );
    }
}
