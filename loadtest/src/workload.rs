//! The campaign workload: many sites, each with its own token and lots, serving citizens drawn from
//! the registered population, in the order a real site works.
//!
//! A **visit** is a short sequence of requests; each request takes one slot of the schedule (so
//! `--rate` is always HTTP requests per second), and a worker runs the steps of its visits in order:
//!
//! - *walk-in* (the rest of the mix): fetch the citizen's pass (they were bulk-imported and have no
//!   QR in hand) → check in → if eligible, record the dose the check-in names → sometimes fetch the
//!   certificate image → sometimes verify the certificate that came with the dose;
//! - *return* (`--mix-return`): a citizen who got a dose earlier in this run comes back: check in
//!   (fetching the pass first if it is not cached) → the dose, if the check-in says it is due. For
//!   citizens vaccinated minutes ago it is not (the server enforces the interval), so the check-in's
//!   refusal is counted as an *expected refusal*, not an error;
//! - *paper ledger* (`--mix-batch`): an offline site uploads a batch of first doses through
//!   `doses:batch`, back-dated by more than the longest dose interval, so those citizens can legally
//!   return for dose 2 during the run.
//!
//! Each worker owns a stripe of the population and its own citizens' state (cached passes, who may
//! return), so the request path takes no locks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::campaign::{CampaignFile, CampaignLot, Population};
use crate::client::{self, Answer, Endpoints, HttpClient, NoAnswer};
use crate::exec::{self, Pace, Worker};
use crate::ledger::{LedgerEntry, LedgerSender, LedgerWriter};
use crate::population::splitmix64;
use crate::progress::{LiveSources, ProgressMode, ProgressTask};
use crate::report::{Report, RunFacts};
use crate::stats::{LiveCounters, LiveWindow, Op, Outcome, Stats};

/// What the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// The campaign model: walk-ins, returns for dose 2, paper-ledger batches, certificates, verifies.
    Mix,
    /// Only `POST /v1/doses`: first doses for citizens of the population (no check-in).
    Doses,
    /// Only `POST /v1/checkins`, over a pool of passes fetched before the clock starts.
    Checkins,
    /// Only `POST /v1/doses:batch` with `--batch-size` first doses each.
    Batch,
    /// Only `GET /healthz`: the HTTP ceiling of this generator and server.
    Healthz,
}

impl Scenario {
    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Mix => "mix",
            Scenario::Doses => "doses",
            Scenario::Checkins => "checkins",
            Scenario::Batch => "batch",
            Scenario::Healthz => "healthz",
        }
    }
}

/// The campaign mix, in percentages. Defaults model a busy urban campaign day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Percent of visits that are a citizen returning for their next dose (the rest of the visits
    /// not taken by --mix-batch are walk-ins for a first dose).
    #[arg(long = "mix-return", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub return_pct: u8,
    /// Percent of visits that are a paper-ledger batch upload from an offline site.
    #[arg(long = "mix-batch", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub batch_pct: u8,
    /// Percent of recorded doses followed by a certificate image download (PNG or SVG).
    #[arg(long = "mix-certificate", default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub certificate_pct: u8,
    /// Percent of recorded doses whose certificate is then verified (`POST /v1/verify`).
    #[arg(long = "mix-verify", default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub verify_pct: u8,
    /// Doses per batch upload (scenario batch, and paper-ledger visits of the mix).
    #[arg(long = "batch-size", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            return_pct: 10,
            batch_pct: 1,
            certificate_pct: 5,
            verify_pct: 20,
            batch_size: 50,
        }
    }
}

/// Everything a run needs. [`WorkloadConfig::new`] fills in the documented defaults.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Server, tokens, lots and population.
    pub campaign: CampaignFile,
    /// What to send. Default: [`Scenario::Mix`].
    pub scenario: Scenario,
    /// Target requests per second; 0 means closed loop (as fast as answers come).
    pub rate: f64,
    /// How long to run.
    pub duration: Duration,
    /// Workers: the most requests in flight at once, and the connection pool size. Default 64.
    pub concurrency: usize,
    /// The campaign mix (scenario `mix`; `batch_size` also for scenario `batch`).
    pub mix: Mix,
    /// Seed of every random choice. Default: random (and printed in the report).
    pub seed: u64,
    /// Append every acknowledged dose to this file. Default: none.
    pub ledger: Option<std::path::PathBuf>,
    /// First measure `GET /healthz` with the same settings. Default: no.
    pub baseline: bool,
    /// Time allowed for each request's complete answer. Default 10 s.
    pub timeout: Duration,
    /// How often live progress is published. Default 1 s.
    pub live_interval: Duration,
}

/// The most workers a run may have.
pub const MAX_CONCURRENCY: usize = 100_000;
/// The highest target rate accepted, requests per second.
pub const MAX_RATE: f64 = 10_000_000.0;

impl WorkloadConfig {
    /// A mix workload against `campaign` for `duration` at `rate` requests per second (0 = closed
    /// loop), with every other setting at its default.
    pub fn new(campaign: CampaignFile, duration: Duration, rate: f64) -> Self {
        Self {
            campaign,
            scenario: Scenario::Mix,
            rate,
            duration,
            concurrency: 64,
            mix: Mix::default(),
            seed: rand::random(),
            ledger: None,
            baseline: false,
            timeout: Duration::from_secs(10),
            live_interval: Duration::from_secs(1),
        }
    }

    /// Checks that the settings make sense together.
    ///
    /// # Errors
    /// Names the setting that does not.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rate.is_finite() && (0.0..=MAX_RATE).contains(&self.rate),
            "--rate must be between 0 (closed loop) and {MAX_RATE} requests per second, not {}",
            self.rate
        );
        anyhow::ensure!(
            self.rate == 0.0 || self.rate >= 0.001,
            "--rate {} is below one request in 1000 s; use 0 for closed loop",
            self.rate
        );
        anyhow::ensure!(
            !self.duration.is_zero(),
            "--duration must be more than zero"
        );
        anyhow::ensure!(
            (1..=MAX_CONCURRENCY).contains(&self.concurrency),
            "--concurrency must be between 1 and {MAX_CONCURRENCY}"
        );
        anyhow::ensure!(!self.timeout.is_zero(), "--timeout must be more than zero");
        anyhow::ensure!(
            !self.live_interval.is_zero(),
            "the live interval must be more than zero"
        );
        anyhow::ensure!(
            u16::from(self.mix.return_pct) + u16::from(self.mix.batch_pct) <= 100,
            "--mix-return + --mix-batch must not exceed 100 percent of visits"
        );
        Endpoints::new(&self.campaign.server)?;
        if self.scenario != Scenario::Healthz {
            self.campaign.validate_for_sites()?;
            let prefix = &self.campaign.people.code_prefix;
            anyhow::ensure!(
                prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "people.code_prefix {prefix:?} must be letters, digits, '-' or '_' (it goes into URLs)"
            );
        }
        Ok(())
    }
}

/// Read-only state shared by every worker of a phase.
struct Context {
    scenario: Scenario,
    mix: Mix,
    client: HttpClient,
    endpoints: Endpoints,
    sites: Vec<Site>,
    population: Population,
    counters: Arc<LiveCounters>,
    /// How far back paper-ledger doses are dated: a day more than the longest dose interval.
    paper_age: time::Duration,
}

struct Site {
    /// `Authorization: Bearer <site token>`, built once.
    auth: HeaderValue,
    lots: Vec<CampaignLot>,
}

/// A citizen who got a dose in this run and may come back for the next one.
#[derive(Debug, Clone)]
struct Returning {
    person: u64,
    qr: Option<Arc<str>>,
    site: usize,
}

/// One request of a visit.
#[derive(Debug)]
enum Step {
    Healthz,
    Pass {
        person: u64,
        site: usize,
    },
    Checkin {
        person: u64,
        qr: Arc<str>,
        site: usize,
    },
    Dose {
        person: u64,
        qr: Option<Arc<str>>,
        site: usize,
        lot: usize,
        dose_number: u8,
    },
    Batch {
        site: usize,
    },
    Certificate {
        person: u64,
        site: usize,
    },
    Verify {
        certificate: String,
    },
}

/// This worker's stripe of the population, walked from a seeded starting point, so workers never
/// serve the same citizen and repeated runs with different seeds start at different citizens.
struct Cohort {
    first: u64,
    len: u64,
    cursor: u64,
}

impl Cohort {
    fn new(population: &Population, worker: u64, workers: u64, rng: &mut SmallRng) -> Self {
        let count = population.count.max(1);
        let lo = count * worker / workers;
        let hi = count * (worker + 1) / workers;
        // More workers than people: share, rather than leave a worker with nobody to serve.
        let (lo, len) = if hi > lo {
            (lo, hi - lo)
        } else {
            (worker % count, 1)
        };
        Self {
            first: population.first + lo,
            len,
            cursor: rng.random_range(0..len),
        }
    }

    fn next(&mut self) -> u64 {
        let person = self.first + self.cursor % self.len;
        self.cursor += 1;
        person
    }
}

/// `administered_at` for doses given now, formatted once per second: RFC 3339 formatting is not
/// free, and at 20,000 doses/s the same second would be formatted 20,000 times.
struct Clock {
    second: i64,
    text: String,
}

impl Clock {
    fn now(&mut self) -> &str {
        let now = OffsetDateTime::now_utc();
        if now.unix_timestamp() != self.second {
            self.second = now.unix_timestamp();
            self.text = rfc3339(now);
        }
        &self.text
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

/// The key a check-in refusal is counted under. The server's reason may be a code (`too_early`)
/// or a sentence (`too early: dose 2 is due from 2026-12-01`); counting sentences would make a key
/// per date, so the part before any `:` becomes a code (`too_early`) if it is short, else `fallback`.
fn refusal_reason(reason: &str, fallback: &str) -> String {
    let head = reason
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .replace([' ', '-'], "_");
    let is_code = !head.is_empty()
        && head.len() <= 32
        && head
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if is_code { head } else { fallback.to_owned() }
}

const VACCINATORS: [&str; 8] = [
    "nurse-01", "nurse-02", "nurse-03", "nurse-04", "nurse-05", "nurse-06", "nurse-07", "nurse-08",
];

#[derive(Serialize)]
struct DoseBody<'a> {
    dose_id: Uuid,
    person_code: &'a str,
    lot: &'a str,
    dose_number: u8,
    vaccinator: &'a str,
    administered_at: &'a str,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    doses: &'a [DoseBody<'a>],
}

#[derive(Serialize)]
struct QrBody<'a> {
    qr: &'a str,
}

#[derive(Deserialize)]
struct PassAnswer {
    registration_qr: String,
}

#[derive(Deserialize)]
struct CheckinAnswer {
    #[serde(default)]
    next_dose: Option<NextDose>,
    #[serde(default)]
    eligible_today: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct NextDose {
    /// `null` once the series is complete.
    #[serde(default)]
    dose_number: Option<u8>,
    /// The series product; `null` for a first dose (any product).
    #[serde(default)]
    product: Option<String>,
    /// Products that may be used instead of `product`.
    #[serde(default)]
    mixable_with: Vec<String>,
    #[serde(default)]
    series_complete: bool,
}

#[derive(Deserialize)]
struct DoseAnswer {
    certificate: String,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    dose_id: Uuid,
    status: u16,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct VerifyAnswer {
    valid: bool,
}

/// One worker: a virtual vaccination desk serving its stripe of the population at any site.
struct SiteWorker {
    ctx: Arc<Context>,
    rng: SmallRng,
    stats: Stats,
    window: Arc<LiveWindow>,
    ledger: Option<LedgerSender>,
    cohort: Cohort,
    /// The rest of the visits in progress.
    pending: VecDeque<Step>,
    /// Citizens who may come back for their next dose (bounded; see `returning_cap`).
    returning: Vec<Returning>,
    returning_cap: usize,
    /// Passes fetched before the clock started (scenario checkins).
    checkin_pool: Vec<(u64, Arc<str>)>,
    clock: Clock,
}

/// Total citizens kept for returns across all workers: a pass QR is a few hundred bytes.
const RETURNING_TOTAL: usize = 65_536;
/// Total passes fetched before a checkins run.
const CHECKIN_POOL_TOTAL: usize = 4_096;

impl SiteWorker {
    fn new(
        ctx: Arc<Context>,
        worker: u64,
        workers: u64,
        seed: u64,
        ledger: Option<LedgerSender>,
    ) -> Self {
        let mut rng = SmallRng::seed_from_u64(splitmix64(seed ^ splitmix64(worker)));
        let cohort = Cohort::new(&ctx.population, worker, workers, &mut rng);
        let per_worker = RETURNING_TOTAL / usize::try_from(workers).unwrap_or(1).max(1);
        Self {
            ctx,
            rng,
            stats: Stats::default(),
            window: Arc::new(LiveWindow::default()),
            ledger,
            cohort,
            pending: VecDeque::new(),
            returning: Vec::new(),
            returning_cap: per_worker.max(16),
            checkin_pool: Vec::new(),
            clock: Clock {
                second: i64::MIN,
                text: String::new(),
            },
        }
    }

    fn percent(&mut self, pct: u8) -> bool {
        self.rng.random_range(0..100u8) < pct
    }

    fn random_site(&mut self) -> usize {
        self.rng.random_range(0..self.ctx.sites.len().max(1))
    }

    /// The next request: the next step of a visit in progress, or the start of a new visit.
    fn next_step(&mut self) -> Step {
        match self.ctx.scenario {
            Scenario::Healthz => Step::Healthz,
            Scenario::Doses => {
                let person = self.cohort.next();
                let site = self.random_site();
                let lot = self
                    .rng
                    .random_range(0..self.ctx.sites[site].lots.len().max(1));
                Step::Dose {
                    person,
                    qr: None,
                    site,
                    lot,
                    dose_number: 1,
                }
            }
            Scenario::Checkins => {
                let site = self.random_site();
                match self.checkin_pool.len() {
                    0 => Step::Pass {
                        person: self.cohort.next(),
                        site,
                    },
                    n => {
                        let (person, qr) = self.checkin_pool[self.rng.random_range(0..n)].clone();
                        Step::Checkin { person, qr, site }
                    }
                }
            }
            Scenario::Batch => Step::Batch {
                site: self.random_site(),
            },
            Scenario::Mix => match self.pending.pop_front() {
                Some(step) => step,
                None => self.new_visit(),
            },
        }
    }

    fn new_visit(&mut self) -> Step {
        let mix = self.ctx.mix;
        let roll = self.rng.random_range(0..100u8);
        if roll < mix.batch_pct {
            return Step::Batch {
                site: self.random_site(),
            };
        }
        if roll < mix.batch_pct + mix.return_pct && !self.returning.is_empty() {
            let at = self.rng.random_range(0..self.returning.len());
            let citizen = self.returning.swap_remove(at);
            return match citizen.qr {
                Some(qr) => Step::Checkin {
                    person: citizen.person,
                    qr,
                    site: citizen.site,
                },
                None => Step::Pass {
                    person: citizen.person,
                    site: citizen.site,
                },
            };
        }
        Step::Pass {
            person: self.cohort.next(),
            site: self.random_site(),
        }
    }

    fn remember_returning(&mut self, citizen: Returning) {
        if self.returning.len() < self.returning_cap {
            self.returning.push(citizen);
        } else {
            // Full: replace someone at random, so the pool keeps a mix of old and recent doses.
            let at = self.rng.random_range(0..self.returning.len());
            self.returning[at] = citizen;
        }
    }

    fn new_dose_id(&mut self) -> Uuid {
        // From the worker's RNG rather than the OS: `Uuid::new_v4` asks the kernel for every id.
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    /// Records the end of one request: its latency from `origin`, in the worker's statistics and the
    /// live figures.
    fn record(&mut self, op: Op, origin: Instant, outcome: Outcome<'_>) {
        let latency = origin.elapsed();
        self.stats.record(op, latency, outcome);
        let counters = &self.ctx.counters;
        LiveCounters::add(&counters.requests, 1);
        match outcome {
            Outcome::Transport(_) => LiveCounters::add(&counters.errors, 1),
            Outcome::Failed { .. } => {
                LiveCounters::add(&counters.errors, 1);
                self.window.record(latency);
            }
            Outcome::Ok | Outcome::Refused(_) => self.window.record(latency),
        }
    }

    /// Records an answer that is not a success: its status and error code.
    fn record_failure(&mut self, op: Op, origin: Instant, result: &Result<Answer, NoAnswer>) {
        match result {
            Ok(answer) => {
                let code = client::error_code(&answer.body);
                self.record(
                    op,
                    origin,
                    Outcome::Failed {
                        status: answer.status.as_u16(),
                        code: &code,
                    },
                );
            }
            Err(no_answer) => self.record(op, origin, Outcome::Transport(no_answer.code())),
        }
    }

    async fn acked(&mut self, dose_id: Uuid, person: u64) {
        LiveCounters::add(&self.ctx.counters.doses_acked, 1);
        if let Some(ledger) = &mut self.ledger {
            let person_code = self.ctx.population.person_code(person);
            ledger
                .push(LedgerEntry {
                    dose_id,
                    person_code,
                })
                .await;
        }
    }

    async fn healthz(&mut self, origin: Instant) {
        let request = HttpClient::get(self.ctx.endpoints.healthz.clone(), None);
        let result = self.ctx.client.send(request).await;
        match &result {
            Ok(answer) if answer.status.is_success() => {
                self.record(Op::Healthz, origin, Outcome::Ok)
            }
            _ => self.record_failure(Op::Healthz, origin, &result),
        }
    }

    async fn pass(&mut self, origin: Instant, person: u64, site: usize) {
        let ctx = Arc::clone(&self.ctx);
        let code = ctx.population.person_code(person);
        let Some(uri) = ctx.endpoints.path(&format!("/v1/people/{code}/pass")) else {
            return self.record(Op::Pass, origin, Outcome::Transport("bad_uri"));
        };
        let result = ctx
            .client
            .send(HttpClient::get(uri, Some(&ctx.sites[site].auth)))
            .await;
        match &result {
            Ok(answer) if answer.status.is_success() => {
                match serde_json::from_slice::<PassAnswer>(&answer.body) {
                    Ok(pass) => {
                        self.record(Op::Pass, origin, Outcome::Ok);
                        let qr: Arc<str> = pass.registration_qr.into();
                        if ctx.scenario == Scenario::Checkins {
                            self.checkin_pool.push((person, qr));
                        } else {
                            self.pending.push_front(Step::Checkin { person, qr, site });
                        }
                    }
                    Err(_) => self.record(
                        Op::Pass,
                        origin,
                        Outcome::Failed {
                            status: answer.status.as_u16(),
                            code: "unexpected_answer",
                        },
                    ),
                }
            }
            _ => self.record_failure(Op::Pass, origin, &result),
        }
    }

    async fn checkin(&mut self, origin: Instant, person: u64, qr: Arc<str>, site: usize) {
        let ctx = Arc::clone(&self.ctx);
        let body = serde_json::to_vec(&QrBody { qr: &qr }).unwrap_or_default();
        let request = HttpClient::post_json(
            ctx.endpoints.checkins.clone(),
            Some(&ctx.sites[site].auth),
            body,
        );
        let result = ctx.client.send(request).await;
        let answer = match &result {
            Ok(answer) if answer.status.is_success() => answer,
            _ => return self.record_failure(Op::Checkin, origin, &result),
        };
        let Ok(checkin) = serde_json::from_slice::<CheckinAnswer>(&answer.body) else {
            let status = answer.status.as_u16();
            return self.record(
                Op::Checkin,
                origin,
                Outcome::Failed {
                    status,
                    code: "unexpected_answer",
                },
            );
        };
        LiveCounters::add(&ctx.counters.checkins, 1);
        let next = checkin.next_dose;
        let due = next
            .as_ref()
            .and_then(|n| n.dose_number)
            .filter(|_| checkin.eligible_today);
        let Some(dose_number) = due else {
            let complete = next
                .as_ref()
                .is_none_or(|n| n.series_complete || n.dose_number.is_none());
            let fallback = if complete {
                "series_complete"
            } else {
                "not_eligible"
            };
            let reason = checkin
                .reason
                .as_deref()
                .map_or_else(|| fallback.to_owned(), |r| refusal_reason(r, fallback));
            return self.record(Op::Checkin, origin, Outcome::Refused(&reason));
        };
        self.record(Op::Checkin, origin, Outcome::Ok);
        if ctx.scenario != Scenario::Mix {
            return;
        }
        // The site's lot of the series product (or one it may be mixed with); any lot for a first
        // dose, or if the site has none of them (the server's refusal is then part of the figures).
        let lots = &ctx.sites[site].lots;
        let usable = |lot: &CampaignLot| {
            next.as_ref().is_some_and(|n| {
                n.product.as_deref() == Some(lot.product.as_str())
                    || n.mixable_with.contains(&lot.product)
            })
        };
        let lot = lots
            .iter()
            .position(usable)
            .unwrap_or_else(|| self.rng.random_range(0..lots.len().max(1)));
        self.pending.push_front(Step::Dose {
            person,
            qr: Some(qr),
            site,
            lot,
            dose_number,
        });
    }

    async fn dose(
        &mut self,
        origin: Instant,
        person: u64,
        qr: Option<Arc<str>>,
        site: usize,
        lot: usize,
        dose_number: u8,
    ) {
        let ctx = Arc::clone(&self.ctx);
        let dose_id = self.new_dose_id();
        let person_code = ctx.population.person_code(person);
        let vaccinator = VACCINATORS[self.rng.random_range(0..VACCINATORS.len())];
        let lots = &ctx.sites[site].lots;
        let body = DoseBody {
            dose_id,
            person_code: &person_code,
            lot: lots.get(lot).map_or("", |l| l.lot.as_str()),
            dose_number,
            vaccinator,
            administered_at: self.clock.now(),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let request = HttpClient::post_json(
            ctx.endpoints.doses.clone(),
            Some(&ctx.sites[site].auth),
            body,
        );
        let result = ctx.client.send(request).await;
        let answer = match &result {
            Ok(answer) if answer.status.is_success() => answer,
            _ => return self.record_failure(Op::Dose, origin, &result),
        };
        // The certificate in the answer is only parsed when it is going to be verified: at 20,000
        // doses/s, parsing every answer would cost the generator a noticeable share of a core.
        let verify = ctx.scenario == Scenario::Mix && self.percent(ctx.mix.verify_pct);
        let certificate = verify
            .then(|| serde_json::from_slice::<DoseAnswer>(&answer.body).ok())
            .flatten();
        if verify && certificate.is_none() {
            // Acknowledged (so it goes in the ledger), but the answer broke the contract.
            let status = answer.status.as_u16();
            self.record(
                Op::Dose,
                origin,
                Outcome::Failed {
                    status,
                    code: "no_certificate_in_answer",
                },
            );
        } else {
            self.record(Op::Dose, origin, Outcome::Ok);
        }
        self.stats.doses.single_acked += 1;
        self.acked(dose_id, person).await;
        if ctx.scenario != Scenario::Mix {
            return;
        }
        // Follow-ups go to the front, so push them in reverse: certificate image first, then verify.
        if let Some(dose) = certificate {
            self.pending.push_front(Step::Verify {
                certificate: dose.certificate,
            });
        }
        if self.percent(ctx.mix.certificate_pct) {
            self.pending.push_front(Step::Certificate { person, site });
        }
        self.remember_returning(Returning { person, qr, site });
    }

    async fn batch(&mut self, origin: Instant, site: usize) {
        let ctx = Arc::clone(&self.ctx);
        let size = usize::from(ctx.mix.batch_size);
        let lots = &ctx.sites[site].lots;
        let paper_day = OffsetDateTime::now_utc() - ctx.paper_age;
        let mut people = Vec::with_capacity(size);
        let mut codes = Vec::with_capacity(size);
        let mut times = Vec::with_capacity(size);
        let mut lot_names = Vec::with_capacity(size);
        for _ in 0..size {
            let person = self.cohort.next();
            people.push((self.new_dose_id(), person));
            codes.push(ctx.population.person_code(person));
            // A day's page of the paper ledger: spread over eight working hours.
            times.push(rfc3339(
                paper_day - time::Duration::seconds(self.rng.random_range(0..8 * 3600)),
            ));
            lot_names.push(
                lots[self.rng.random_range(0..lots.len().max(1))]
                    .lot
                    .as_str(),
            );
        }
        let doses: Vec<DoseBody<'_>> = (0..size)
            .map(|i| DoseBody {
                dose_id: people[i].0,
                person_code: &codes[i],
                lot: lot_names[i],
                dose_number: 1,
                vaccinator: VACCINATORS[i % VACCINATORS.len()],
                administered_at: &times[i],
            })
            .collect();
        let body = serde_json::to_vec(&BatchBody { doses: &doses }).unwrap_or_default();
        drop(doses);
        let request = HttpClient::post_json(
            ctx.endpoints.doses_batch.clone(),
            Some(&ctx.sites[site].auth),
            body,
        );
        let result = ctx.client.send(request).await;
        self.stats.doses.batch_sent += size as u64;
        let answer = match &result {
            Ok(answer) if answer.status.is_success() => answer,
            _ => return self.record_failure(Op::Batch, origin, &result),
        };
        let Ok(batch) = serde_json::from_slice::<BatchAnswer>(&answer.body) else {
            let status = answer.status.as_u16();
            return self.record(
                Op::Batch,
                origin,
                Outcome::Failed {
                    status,
                    code: "unexpected_answer",
                },
            );
        };
        self.record(Op::Batch, origin, Outcome::Ok);
        for (i, result) in batch.results.iter().enumerate() {
            // Results normally come in request order; look the id up only if they do not.
            let person = match people.get(i) {
                Some(&(id, person)) if id == result.dose_id => Some(person),
                _ => people
                    .iter()
                    .find(|(id, _)| *id == result.dose_id)
                    .map(|&(_, person)| person),
            };
            let Some(person) = person else {
                *self
                    .stats
                    .doses
                    .batch_by_code
                    .entry("unknown_dose_id_in_answer".into())
                    .or_default() += 1;
                continue;
            };
            if matches!(result.status, 200 | 201) {
                self.stats.doses.batch_acked += 1;
                self.acked(result.dose_id, person).await;
                if ctx.scenario == Scenario::Mix {
                    self.remember_returning(Returning {
                        person,
                        qr: None,
                        site,
                    });
                }
            } else {
                *self
                    .stats
                    .doses
                    .batch_by_status
                    .entry(result.status)
                    .or_default() += 1;
                let code = result
                    .error
                    .clone()
                    .unwrap_or_else(|| "no_error_code".into());
                *self.stats.doses.batch_by_code.entry(code).or_default() += 1;
            }
        }
    }

    async fn certificate(&mut self, origin: Instant, person: u64, site: usize) {
        let ctx = Arc::clone(&self.ctx);
        let code = ctx.population.person_code(person);
        let format = if self.rng.random::<bool>() {
            "png"
        } else {
            "svg"
        };
        let Some(uri) = ctx
            .endpoints
            .path(&format!("/v1/people/{code}/certificate?format={format}"))
        else {
            return self.record(Op::Certificate, origin, Outcome::Transport("bad_uri"));
        };
        let result = ctx
            .client
            .send(HttpClient::get(uri, Some(&ctx.sites[site].auth)))
            .await;
        match &result {
            Ok(answer) if answer.status.is_success() && !answer.body.is_empty() => {
                self.record(Op::Certificate, origin, Outcome::Ok);
                LiveCounters::add(&ctx.counters.certificates, 1);
            }
            Ok(answer) if answer.status.is_success() => {
                let status = answer.status.as_u16();
                self.record(
                    Op::Certificate,
                    origin,
                    Outcome::Failed {
                        status,
                        code: "empty_image",
                    },
                );
            }
            _ => self.record_failure(Op::Certificate, origin, &result),
        }
    }

    async fn verify(&mut self, origin: Instant, certificate: String) {
        let ctx = Arc::clone(&self.ctx);
        let body = serde_json::to_vec(&QrBody { qr: &certificate }).unwrap_or_default();
        // Verification is public: no token.
        let result = ctx
            .client
            .send(HttpClient::post_json(
                ctx.endpoints.verify.clone(),
                None,
                body,
            ))
            .await;
        let answer = match &result {
            Ok(answer) if answer.status.is_success() => answer,
            _ => return self.record_failure(Op::Verify, origin, &result),
        };
        let status = answer.status.as_u16();
        match serde_json::from_slice::<VerifyAnswer>(&answer.body) {
            Ok(VerifyAnswer { valid: true }) => self.record(Op::Verify, origin, Outcome::Ok),
            // The certificate was issued by this server moments ago: "not valid" is a bug.
            Ok(VerifyAnswer { valid: false }) => {
                self.record(
                    Op::Verify,
                    origin,
                    Outcome::Failed {
                        status,
                        code: "fresh_certificate_not_valid",
                    },
                );
            }
            Err(_) => self.record(
                Op::Verify,
                origin,
                Outcome::Failed {
                    status,
                    code: "unexpected_answer",
                },
            ),
        }
    }

    /// Scenario checkins: fetch this worker's share of passes before the clock starts, so the run
    /// measures check-ins only. Gives up on `stop` or after a few failures in a row (a server that is
    /// down or hanging would otherwise cost a timeout per attempt). Returns how many were fetched.
    async fn prepare_checkins(&mut self, wanted: usize, stop: &watch::Receiver<bool>) -> usize {
        const GIVE_UP_AFTER: u32 = 3;
        let mut failures_in_a_row = 0;
        while self.checkin_pool.len() < wanted
            && failures_in_a_row < GIVE_UP_AFTER
            && !*stop.borrow()
        {
            let before = self.checkin_pool.len();
            let person = self.cohort.next();
            let site = self.random_site();
            self.pass(Instant::now(), person, site).await;
            failures_in_a_row = if self.checkin_pool.len() > before {
                0
            } else {
                failures_in_a_row + 1
            };
        }
        // Setup requests are not part of the measurement.
        self.stats = Stats::default();
        self.checkin_pool.len()
    }
}

impl Worker for SiteWorker {
    async fn call(&mut self, _index: u64, origin: Instant) {
        match self.next_step() {
            Step::Healthz => self.healthz(origin).await,
            Step::Pass { person, site } => self.pass(origin, person, site).await,
            Step::Checkin { person, qr, site } => self.checkin(origin, person, qr, site).await,
            Step::Dose {
                person,
                qr,
                site,
                lot,
                dose_number,
            } => {
                self.dose(origin, person, qr, site, lot, dose_number).await;
            }
            Step::Batch { site } => self.batch(origin, site).await,
            Step::Certificate { person, site } => self.certificate(origin, person, site).await,
            Step::Verify { certificate } => self.verify(origin, certificate).await,
        }
    }
}

/// Runs one phase (the baseline or the workload itself) and reports it. Returns the progress mode so
/// that a caller's watch channel carries on into the next phase.
pub(crate) async fn run_phase(
    config: &WorkloadConfig,
    scenario: Scenario,
    progress: ProgressMode,
    stop: watch::Receiver<bool>,
    baseline: bool,
) -> anyhow::Result<(Report, ProgressMode)> {
    let campaign = &config.campaign;
    let endpoints = Endpoints::new(&campaign.server)?;
    let sites = if scenario == Scenario::Healthz {
        Vec::new()
    } else {
        campaign
            .sites
            .iter()
            .map(|site| {
                Ok(Site {
                    auth: client::bearer(&site.token)?,
                    lots: site.lots.clone(),
                })
            })
            .collect::<Result<Vec<_>, client::ClientError>>()?
    };
    let longest_interval = campaign
        .sites
        .iter()
        .flat_map(|s| &s.lots)
        .map(|l| l.dose_interval_days)
        .max();
    let counters = Arc::new(LiveCounters::default());
    let ctx = Arc::new(Context {
        scenario,
        mix: config.mix,
        client: HttpClient::new(config.concurrency, config.timeout),
        endpoints,
        sites,
        population: campaign.people.clone(),
        counters: Arc::clone(&counters),
        paper_age: time::Duration::days(i64::from(longest_interval.unwrap_or(0)) + 1),
    });

    let writes_doses = matches!(scenario, Scenario::Mix | Scenario::Doses | Scenario::Batch);
    let ledger = match &config.ledger {
        Some(path) if writes_doses => Some(LedgerWriter::open(path)?),
        _ => None,
    };
    let workers_n = config.concurrency as u64;
    let mut workers: Vec<SiteWorker> = (0..workers_n)
        .map(|w| {
            SiteWorker::new(
                Arc::clone(&ctx),
                w,
                workers_n,
                config.seed,
                ledger.as_ref().map(|l| l.sender()),
            )
        })
        .collect();

    if scenario == Scenario::Checkins {
        let wanted = (CHECKIN_POOL_TOTAL / config.concurrency).max(4);
        let mut setup = JoinSet::new();
        for mut worker in workers {
            let stop = stop.clone();
            setup.spawn(async move {
                let fetched = worker.prepare_checkins(wanted, &stop).await;
                (worker, fetched)
            });
        }
        workers = Vec::with_capacity(config.concurrency);
        let mut fetched = 0;
        while let Some(joined) = setup.join_next().await {
            let (worker, n) = joined.map_err(|e| anyhow::anyhow!("check-in setup failed: {e}"))?;
            fetched += n;
            workers.push(worker);
        }
        anyhow::ensure!(
            fetched > 0,
            "could not fetch a single pass from {} (GET /v1/people/{{code}}/pass): is the population \
             imported and are the site tokens right?",
            campaign.server
        );
        tracing::info!(passes = fetched, "check-in pool ready");
        // The setup's requests are not part of the run's live figures either.
        counters.reset();
        let mut discard = crate::stats::new_histogram();
        for worker in &workers {
            worker.window.drain_into(&mut discard);
        }
    }

    let label = if baseline {
        "baseline healthz".to_owned()
    } else {
        format!("scenario {}", scenario.name())
    };
    let sources = LiveSources {
        counters,
        windows: workers.iter().map(|w| Arc::clone(&w.window)).collect(),
    };
    let progress = ProgressTask::start(
        progress,
        label,
        baseline,
        config.duration,
        config.live_interval,
        sources,
    );
    let started_at = rfc3339(OffsetDateTime::now_utc());

    let pace = Pace::from_rate(config.rate);
    let executed = exec::execute(workers, pace, config.duration, stop).await;
    let progress = progress.finish().await;
    let mut executed = executed?;

    let mut stats = Stats::default();
    stats.lag = executed.lag.clone();
    for worker in &mut executed.workers {
        if let Some(ledger) = &mut worker.ledger {
            ledger.flush().await;
        }
        stats.add(&worker.stats);
    }
    drop(executed.workers);
    if let Some(ledger) = ledger {
        let written = ledger.close().await?;
        tracing::info!(written, "ledger written");
    }

    let facts = RunFacts {
        started_at,
        server: &campaign.server,
        scenario,
        target_rate: (config.rate > 0.0).then_some(config.rate),
        concurrency: config.concurrency,
        duration: config.duration,
        elapsed: executed.elapsed,
        seed: config.seed,
        mix: (scenario == Scenario::Mix).then_some(config.mix),
        stopped_early: executed.stopped_early,
        scheduled: executed.scheduled,
        sent: executed.sent,
    };
    Ok((Report::build(facts, &stats), progress))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohorts_are_disjoint_stripes_of_the_population() {
        let population = Population {
            first: 100,
            count: 10,
            code_prefix: "P".into(),
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = Vec::new();
        for w in 0..3 {
            let mut cohort = Cohort::new(&population, w, 3, &mut rng);
            let mine: Vec<u64> = (0..cohort.len).map(|_| cohort.next()).collect();
            assert!(mine.iter().all(|p| (100..110).contains(p)));
            seen.extend(mine);
        }
        seen.sort_unstable();
        assert_eq!(seen, (100..110).collect::<Vec<_>>());

        // More workers than people: every worker still has someone to serve.
        let tiny = Population {
            first: 0,
            count: 2,
            code_prefix: "P".into(),
        };
        assert_eq!(Cohort::new(&tiny, 5, 8, &mut rng).next(), 1);
    }

    #[test]
    fn config_validation_names_the_bad_setting() {
        let campaign: CampaignFile = serde_json::from_str(
            r#"{"server": "http://127.0.0.1:1", "admin_token": "a",
                "sites": [{"site_id": "S", "token": "t", "lots": [{"lot": "L", "product": "X", "dose_interval_days": 21}]}],
                "people": {"first": 0, "count": 10, "code_prefix": "P"}}"#,
        )
        .expect("campaign");
        let ok = WorkloadConfig::new(campaign.clone(), Duration::from_secs(1), 100.0);
        ok.validate().expect("valid");
        let mut bad = ok.clone();
        bad.mix.return_pct = 60;
        bad.mix.batch_pct = 50;
        assert!(
            bad.validate()
                .expect_err("over 100%")
                .to_string()
                .contains("--mix-return")
        );
        let mut bad = ok.clone();
        bad.rate = f64::NAN;
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.campaign.people.code_prefix = "P/".into();
        assert!(bad.validate().is_err());
        let mut healthz = WorkloadConfig::new(
            CampaignFile::server_only("http://127.0.0.1:1"),
            Duration::from_secs(1),
            0.0,
        );
        healthz.scenario = Scenario::Healthz;
        healthz.validate().expect("healthz needs no sites");
        healthz.scenario = Scenario::Doses;
        assert!(healthz.validate().is_err(), "doses need sites");
    }

    #[test]
    fn refusal_reasons_become_codes() {
        assert_eq!(refusal_reason("too_early", "x"), "too_early");
        assert_eq!(
            refusal_reason("too early: dose 2 is due from 2026-12-01", "x"),
            "too_early"
        );
        assert_eq!(
            refusal_reason("series complete: 2 of 2 doses given", "x"),
            "series_complete"
        );
        assert_eq!(
            refusal_reason(
                "the series product COMIRNATY is not in the catalogue",
                "not_eligible"
            ),
            "not_eligible"
        );
        assert_eq!(refusal_reason("", "series_complete"), "series_complete");
    }

    #[test]
    fn clock_formats_rfc3339_seconds() {
        let mut clock = Clock {
            second: i64::MIN,
            text: String::new(),
        };
        let text = clock.now().to_owned();
        assert!(text.ends_with('Z') && text.len() == 20, "{text}");
        OffsetDateTime::parse(&text, &Rfc3339).expect("parses back");
    }
}
