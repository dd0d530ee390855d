//! The campaign workload against the contract fake: the visit sequence, expected refusals, paper-
//! ledger dose 2s, and a ledger that matches what the server stored.

use std::sync::Arc;
use std::time::Duration;

use vaxcamp_loadtest::{
    CampaignFile, CampaignLot, CampaignSite, Mix, Op, Population, ProgressMode, Scenario,
    WorkloadConfig, run_workload,
};

use crate::fake::{ADMIN_TOKEN, Fake, INTERVAL_DAYS, SITE_TOKEN, app};
use crate::serve;

fn campaign(server: &str) -> CampaignFile {
    CampaignFile {
        server: server.to_owned(),
        admin_token: ADMIN_TOKEN.to_owned(),
        sites: vec![CampaignSite {
            site_id: "S001".into(),
            token: SITE_TOKEN.into(),
            area: None,
            lots: vec![CampaignLot {
                lot: "LOT-A".into(),
                product: "COMIRNATY".into(),
                dose_interval_days: u32::try_from(INTERVAL_DAYS).expect("fits"),
            }],
        }],
        people: Population {
            first: 0,
            count: 100_000,
            code_prefix: "P".into(),
        },
    }
}

fn config(server: &str, scenario: Scenario, rate: f64, duration: Duration) -> WorkloadConfig {
    let mut config = WorkloadConfig::new(campaign(server), duration, rate);
    config.scenario = scenario;
    config.concurrency = 8;
    config.seed = 7;
    config
}

fn ledger_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .expect("ledger")
        .lines()
        .count()
}

async fn check(server: &str, ledger: &std::path::Path) -> vaxcamp_loadtest::LedgerCheck {
    vaxcamp_loadtest::ledger::check(server, ADMIN_TOKEN, ledger, 10_000)
        .await
        .expect("check ledger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mix_follows_the_visit_sequence_and_its_ledger_matches_the_store() {
    let fake = Arc::new(Fake::default());
    let server = serve(app(Arc::clone(&fake))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.csv");
    let mut config = config(&server, Scenario::Mix, 500.0, Duration::from_secs(2));
    config.mix = Mix {
        return_pct: 30,
        batch_pct: 5,
        certificate_pct: 20,
        verify_pct: 50,
        batch_size: 20,
    };
    config.ledger = Some(ledger.clone());
    let report = run_workload(config, ProgressMode::Quiet, std::future::pending())
        .await
        .expect("run");

    // The fake is strict about shapes, tokens and order: any mistake shows up as an error.
    for (op, r) in &report.operations {
        assert_eq!(r.errors, 0, "{op:?} had errors\n{report}");
    }
    for op in [
        Op::Pass,
        Op::Checkin,
        Op::Dose,
        Op::Batch,
        Op::Certificate,
        Op::Verify,
    ] {
        assert!(
            report.operations.contains_key(&op),
            "no {op:?} in the mix\n{report}"
        );
    }
    assert!(report.doses.batch_errors_by_status.is_empty(), "{report}");
    // Citizens vaccinated minutes ago came back and were turned away at check-in, as expected...
    let refusals = &report.operations[&Op::Checkin].refusals;
    assert!(
        refusals.get("too_early").copied().unwrap_or(0) > 0,
        "{report}"
    );
    // ...while paper-ledger citizens, dated more than the interval back, got their second dose.
    let second_doses = fake
        .doses
        .lock()
        .expect("lock")
        .values()
        .filter(|(_, d)| d.dose_number == 2)
        .count();
    assert!(second_doses > 0, "no dose 2 was recorded\n{report}");

    // Every acknowledged dose is in the ledger, and the store holds each exactly once.
    let stored = fake.doses.lock().expect("lock").len() as u64;
    assert_eq!(report.doses.acked, stored, "{report}");
    assert_eq!(ledger_lines(&ledger) as u64, stored);
    let verdict = check(&server, &ledger).await;
    assert!(verdict.is_ok(), "{verdict}");
    assert_eq!(verdict.stored_once, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doses_scenario_in_closed_loop_acks_only_what_it_ledgers() {
    let fake = Arc::new(Fake::default());
    let server = serve(app(Arc::clone(&fake))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.csv");
    let mut config = config(&server, Scenario::Doses, 0.0, Duration::from_millis(500));
    config.ledger = Some(ledger.clone());
    let report = run_workload(config, ProgressMode::Quiet, std::future::pending())
        .await
        .expect("run");

    let doses = &report.operations[&Op::Dose];
    assert_eq!(doses.errors, 0, "{report}");
    assert_eq!(report.operations.len(), 1, "only doses\n{report}");
    assert!(report.target_rate.is_none() && report.schedule.lag.is_none());
    assert_eq!(report.doses.single_acked, doses.ok);
    assert_eq!(ledger_lines(&ledger) as u64, doses.ok);
    assert!(check(&server, &ledger).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkins_scenario_fetches_passes_before_the_clock_starts() {
    let fake = Arc::new(Fake::default());
    let server = serve(app(Arc::clone(&fake))).await;
    let report = run_workload(
        config(
            &server,
            Scenario::Checkins,
            300.0,
            Duration::from_millis(500),
        ),
        ProgressMode::Quiet,
        std::future::pending(),
    )
    .await
    .expect("run");
    // Setup is not measured: only check-ins are in the report, all of them answered.
    assert_eq!(
        report.operations.keys().copied().collect::<Vec<_>>(),
        vec![Op::Checkin],
        "{report}"
    );
    assert_eq!(report.operations[&Op::Checkin].ok, report.schedule.sent);
    assert_eq!(report.schedule.sent, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_and_shutdown() {
    let fake = Arc::new(Fake::default());
    let server = serve(app(Arc::clone(&fake))).await;
    let mut config = config(&server, Scenario::Batch, 50.0, Duration::from_millis(400));
    config.baseline = true;
    config.mix.batch_size = 10;
    let report = run_workload(config, ProgressMode::Quiet, std::future::pending())
        .await
        .expect("run");
    let baseline = report.baseline.as_ref().expect("baseline");
    assert_eq!(baseline.healthz.scenario, Scenario::Healthz);
    assert_eq!(baseline.measure, "doses_acked_per_s");
    assert!(baseline.ceiling_rate > 0.0);
    // 10 doses per batch request against healthz requests at the same rate: about 1000%.
    assert!(baseline.share_pct > 500.0, "{report}");
    assert_eq!(
        report.doses.batch_acked, report.doses.batch_sent,
        "{report}"
    );

    // Shutdown ends a long run early, and the report says so.
    let long = self::config(&server, Scenario::Healthz, 100.0, Duration::from_secs(60));
    let report = run_workload(
        long,
        ProgressMode::Quiet,
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await
    .expect("run");
    assert!(report.stopped_early);
    assert!(report.elapsed_s < 30.0);
    assert!(report.warnings.iter().any(|w| w.contains("interrupted")));
}
