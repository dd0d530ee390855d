//! The rate schedule and latency accounting against a server that stalls on cue.
//!
//! None of these tests asserts how fast this machine is. They assert relations that hold on a slow
//! machine too: a request cannot be answered before the stall ends, so its latency from its due time
//! is at least the part of the stall it waited through; a closed loop cannot have more requests
//! caught in a stall than it has workers; the generator never sends ahead of the schedule.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::time::Instant;
use vaxcamp_loadtest::{
    CampaignFile, Op, ProgressMode, Report, Scenario, WorkloadConfig, run_workload,
};

use crate::serve;

/// A `/healthz` that answers at once, except that when request number `stall_at` arrives, every
/// request arriving in the next `stall` (that one included) is held until the stall ends, as a
/// server does during a long GC pause, a compaction, or an fsync stuck behind a busy disk.
struct Staller {
    stall_at: u64,
    stall: Duration,
    arrivals: AtomicU64,
    stalled_until: Mutex<Option<Instant>>,
    stalled: AtomicBool,
    /// Arrival instants, to check the generator never runs ahead of its schedule.
    arrived_at: Mutex<Vec<Instant>>,
}

impl Staller {
    fn new(stall_at: u64, stall: Duration) -> Arc<Self> {
        Arc::new(Self {
            stall_at,
            stall,
            arrivals: AtomicU64::new(0),
            stalled_until: Mutex::new(None),
            stalled: AtomicBool::new(false),
            arrived_at: Mutex::new(Vec::new()),
        })
    }
}

async fn healthz(State(staller): State<Arc<Staller>>) -> axum::Json<serde_json::Value> {
    let now = Instant::now();
    staller.arrived_at.lock().expect("lock").push(now);
    let n = staller.arrivals.fetch_add(1, Ordering::SeqCst);
    let until = {
        let mut until = staller.stalled_until.lock().expect("lock");
        if n == staller.stall_at {
            *until = Some(now + staller.stall);
            staller.stalled.store(true, Ordering::SeqCst);
        }
        *until
    };
    if let Some(until) = until.filter(|&until| now < until) {
        tokio::time::sleep_until(until).await;
    }
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn start(staller: &Arc<Staller>) -> String {
    serve(
        Router::new()
            .route("/healthz", get(healthz))
            .with_state(Arc::clone(staller)),
    )
    .await
}

async fn run(server: &str, rate: f64, duration: Duration, concurrency: usize) -> Report {
    let mut config = WorkloadConfig::new(CampaignFile::server_only(server), duration, rate);
    config.scenario = Scenario::Healthz;
    config.concurrency = concurrency;
    config.timeout = Duration::from_secs(30);
    run_workload(config, ProgressMode::Quiet, std::future::pending())
        .await
        .expect("run")
}

/// Requests whose latency was at least `at_least`.
fn slower_than(report: &Report, at_least: Duration) -> u64 {
    let histogram = report.operations[&Op::Healthz]
        .latency
        .histogram()
        .expect("histogram");
    let floor = u64::try_from(at_least.as_nanos()).expect("fits");
    histogram.len() - histogram.count_between(0, floor.saturating_sub(1))
}

const STALL: Duration = Duration::from_millis(200);
const CONCURRENCY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_from_due_time_shows_the_stall_and_closed_loop_hides_it() {
    // Open loop: 1000 requests/s for 1.2 s; the stall begins at the 300th arrival.
    let staller = Staller::new(300, STALL);
    let server = start(&staller).await;
    let open = run(&server, 1000.0, Duration::from_millis(1200), CONCURRENCY).await;
    assert!(
        staller.stalled.load(Ordering::SeqCst),
        "the server never stalled"
    );

    let healthz = &open.operations[&Op::Healthz];
    assert_eq!(healthz.errors, 0, "{open}");
    // The request that triggered the stall waited all of it.
    assert!(
        healthz.latency.max_ns >= nanos(STALL),
        "max {} ns\n{open}",
        healthz.latency.max_ns
    );
    // Every request due during the first half of the stall waited at least the other half, whether
    // it reached the server (and was held there) or waited for one of the 8 stuck workers. At
    // 1000/s that is ~100 requests: 8% of the run, so the p99 is at least half the stall.
    let open_slow = slower_than(&open, STALL / 2);
    assert!(
        open_slow >= 50,
        "only {open_slow} requests took ≥ 100 ms in open loop\n{open}"
    );
    assert!(
        healthz.latency.p99_ns >= nanos(STALL / 2),
        "p99 {} ns\n{open}",
        healthz.latency.p99_ns
    );
    // Waiting for a worker is visible as send lag too.
    let lag = open
        .schedule
        .lag
        .as_ref()
        .expect("open loop has a lag histogram");
    assert!(
        lag.max_ns >= nanos(STALL / 2),
        "max send lag {} ns\n{open}",
        lag.max_ns
    );

    // Closed loop against the same kind of stall: while the server stalls, the workers wait and send
    // nothing, so at most one request per worker is caught, however long the stall.
    let staller = Staller::new(300, STALL);
    let server = start(&staller).await;
    let closed = run(&server, 0.0, Duration::from_millis(1200), CONCURRENCY).await;
    assert!(
        staller.stalled.load(Ordering::SeqCst),
        "the server never stalled"
    );
    let closed_slow = slower_than(&closed, STALL / 2);
    assert!(
        closed_slow <= CONCURRENCY as u64,
        "{closed_slow} slow requests in closed loop\n{closed}"
    );
    assert!(open_slow > closed_slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_the_target_rate_on_a_fast_server_and_never_runs_ahead() {
    // A stall that never comes.
    let staller = Staller::new(u64::MAX, STALL);
    let server = start(&staller).await;
    let before = Instant::now();
    let report = run(&server, 400.0, Duration::from_secs(1), CONCURRENCY).await;

    let schedule = &report.schedule;
    assert_eq!(schedule.scheduled, 400, "{report}");
    assert_eq!(schedule.sent, 400, "{report}");
    assert_eq!(schedule.behind, 0);
    let off = (schedule.achieved_rate - 400.0).abs() / 400.0;
    assert!(
        off <= 0.15,
        "achieved {} req/s for a target of 400\n{report}",
        schedule.achieved_rate
    );
    assert_eq!(report.operations[&Op::Healthz].ok, 400);

    // Request i is due at start + i/400 and leaves at most 2 ms (two timer ticks) early, so by any
    // instant t at most 400 * (t - start + 2 ms) + 1 requests can have arrived. (`before` is earlier
    // than the schedule's start, which only makes the bound stricter than the truth.)
    let arrived = staller.arrived_at.lock().expect("lock").clone();
    for checkpoint in [100, 250, 500, 750] {
        let t = before + Duration::from_millis(checkpoint);
        let by_then = arrived.iter().filter(|&&a| a < t).count();
        let allowed = (400.0 * (checkpoint as f64 + 2.0) / 1000.0).ceil() as usize + 1;
        assert!(
            by_then <= allowed,
            "{by_then} requests had arrived {checkpoint} ms in; at most {allowed} were due"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_workers_for_the_rate_shows_as_latency_and_behind_not_as_a_lower_rate() {
    // Every request takes 20 ms (a stall at every arrival), one worker, 200 requests/s due: the
    // worker can do 50/s. The schedule must not quietly stretch to 50/s with 20 ms latencies.
    let staller = Arc::new(SlowEvery {
        delay: Duration::from_millis(20),
    });
    let server = serve(
        Router::new()
            .route("/healthz", get(slow))
            .with_state(staller),
    )
    .await;
    let report = run(&server, 200.0, Duration::from_millis(600), 1).await;
    let healthz = &report.operations[&Op::Healthz];
    // ~30 of 120 due requests were sent; the rest are reported as behind, with a warning.
    assert_eq!(report.schedule.scheduled, 120);
    assert!(report.schedule.behind >= 60, "{report}");
    assert!(
        report.warnings.iter().any(|w| w.contains("fell behind")),
        "{report}"
    );
    // Request k left at ~20k ms but was due at 5k ms: the latency grows with k, up to ~0.45 s.
    assert!(
        healthz.latency.max_ns >= nanos(Duration::from_millis(300)),
        "{report}"
    );
    assert!(
        healthz.latency.p50_ns >= nanos(Duration::from_millis(100)),
        "{report}"
    );
}

struct SlowEvery {
    delay: Duration,
}

async fn slow(State(slow): State<Arc<SlowEvery>>) -> &'static str {
    tokio::time::sleep(slow.delay).await;
    "{\"status\":\"ok\"}"
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("fits")
}
