//! A load generator for a vaxcamp server that tells the truth.
//!
//! It drives the HTTP API the way a campaign does (many sites with their own tokens and lots,
//! citizens checked in and vaccinated in order, offline sites uploading paper ledgers) at a constant
//! arrival rate, and measures every request's latency **from the moment it was due**, so a server
//! that stalls cannot hide its queue behind a generator that politely waited (no coordinated
//! omission). It reports per-operation HdrHistograms, the rate achieved against the rate asked for,
//! and, with `--baseline`, the workload as a share of the same machine's `GET /healthz` ceiling.
//!
//! Entry points: [`run`] for `vaxcamp loadtest`, [`check_ledger`] for
//! `vaxcamp loadtest check-ledger`, and [`run_workload`] for callers that run a workload in-process
//! (the demo) and draw their own progress from [`LiveStats`].
//!
//! # Layout
//!
//! - [`args`]: the command-line flags ([`LoadtestArgs`], [`CheckLedgerArgs`]) and the duration parser.
//! - [`campaign`]: the campaign file ([`CampaignFile`]): server, site tokens and lots, population.
//! - [`population`]: person codes and generated registrations as CSV ([`population::RegistrationCsv`]).
//! - `client`: the hyper HTTP/1.1 client and the pre-built request parts every request reuses.
//! - `exec`: the schedule (request *i* due at `start + i/rate`) and the workers that keep to it.
//! - [`workload`]: the campaign model: visits, scenarios, the mix ([`WorkloadConfig`]).
//! - [`stats`]: one HdrHistogram per operation per worker, merged with `add`.
//! - [`progress`]: live progress (bar, plain lines, or a `watch` channel of [`LiveStats`]).
//! - [`report`]: the text summary and the JSON report ([`Report`]).
//! - [`ledger`]: the acknowledged-dose ledger and its check against the server's store.
//!
//! # Invariants
//!
//! - Open loop never drops the schedule silently: a request that could not leave on time leaves late
//!   and its latency includes the wait; requests still unsent when the run ends are counted as
//!   `behind` and warned about.
//! - Every dose the server acknowledged is in the ledger (when `--ledger` is given) once the run
//!   returns.
//! - The request path takes no lock shared between workers (only an uncontended per-worker one for
//!   live percentiles) and no syscall beyond the socket's.

use std::future::Future;

pub mod args;
pub mod campaign;
mod client;
mod exec;
pub mod ledger;
pub mod population;
pub mod progress;
pub mod report;
pub mod stats;
pub mod workload;

pub use args::{CheckLedgerArgs, LoadtestArgs, parse_duration};
pub use campaign::{Area, CampaignFile, CampaignLot, CampaignSite, Population};
pub use client::ClientError;
pub use ledger::LedgerCheck;
pub use progress::{LiveStats, ProgressMode};
pub use report::Report;
pub use stats::Op;
pub use workload::{Mix, Scenario, WorkloadConfig};

use tokio::sync::watch;

/// `vaxcamp loadtest`: runs the workload the flags describe with live progress on stderr, writes
/// `--json` if asked, and returns the report for the caller to print (its `Display` is the text
/// summary) and to decide its exit status.
///
/// `shutdown` ends the run early (e.g. on Ctrl-C); requests in flight are awaited and the report
/// covers what ran.
///
/// # Errors
/// Bad flags or campaign file, a ledger or report file that cannot be written, or a setup failure
/// (e.g. no pass could be fetched for the checkins scenario). Failed requests are not errors: they
/// are in the report.
pub async fn run(
    args: &LoadtestArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Report> {
    let mut campaign = match (&args.campaign, &args.server) {
        (Some(path), _) => CampaignFile::load(path)?,
        (None, Some(server)) if args.scenario == Scenario::Healthz => {
            CampaignFile::server_only(server.clone())
        }
        (None, _) => anyhow::bail!(
            "--campaign FILE is required for --scenario {} (only --scenario healthz can run with --server alone)",
            args.scenario.name()
        ),
    };
    if let Some(server) = &args.server {
        campaign.server.clone_from(server);
    }
    let mut config = WorkloadConfig::new(campaign, args.duration, args.rate);
    config.scenario = args.scenario;
    config.concurrency = args.concurrency;
    config.mix = args.mix;
    config.ledger.clone_from(&args.ledger);
    config.baseline = args.baseline;
    config.timeout = args.timeout;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }

    let report = run_workload(config, ProgressMode::Auto, shutdown).await?;
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report)
}

/// Runs a workload in-process and returns its report; prints nothing except what `progress` asks
/// for. With `config.baseline`, first runs `GET /healthz` with the same settings and attaches that
/// run to the report as [`report::Baseline`].
///
/// To draw your own progress, pass [`ProgressMode::Watch`] and read [`LiveStats`] snapshots from the
/// receiver (one per `config.live_interval`).
///
/// `shutdown` ends the run early; requests in flight are awaited.
///
/// # Errors
/// Invalid configuration, a ledger file that cannot be written, or a setup failure.
pub async fn run_workload(
    config: WorkloadConfig,
    progress: ProgressMode,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Report> {
    config.validate()?;
    tracing::info!(
        scenario = config.scenario.name(),
        rate = config.rate,
        duration_s = config.duration.as_secs_f64(),
        concurrency = config.concurrency,
        seed = config.seed,
        server = %config.campaign.server,
        "load test starting"
    );
    // The phases watch this flag rather than the caller's future, which cannot be polled from two
    // places; it turns true when `shutdown` completes.
    let (stop_tx, stop) = watch::channel(false);
    let work = async {
        let mut progress = progress;
        let mut baseline = None;
        if config.baseline {
            let (healthz, mode) =
                workload::run_phase(&config, Scenario::Healthz, progress, stop.clone(), true)
                    .await?;
            progress = mode;
            if healthz.stopped_early {
                // Interrupted during the baseline: report what ran rather than start the workload.
                return Ok(healthz);
            }
            baseline = Some(healthz);
        }
        let (report, _) =
            workload::run_phase(&config, config.scenario, progress, stop.clone(), false).await?;
        Ok(match baseline {
            Some(healthz) => report.with_baseline(healthz),
            None => report,
        })
    };
    tokio::pin!(work);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut work => result,
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            work.await
        }
    }
}

/// `vaxcamp loadtest check-ledger`: checks that every dose in the ledger is in the server's store
/// exactly once, writes `--json` if asked, and returns the verdict for the caller to print (its
/// `Display`) and to exit non-zero unless [`LedgerCheck::is_ok`].
///
/// # Errors
/// No server or token, an unreadable ledger, or a server that cannot be asked.
pub async fn check_ledger(args: &CheckLedgerArgs) -> anyhow::Result<LedgerCheck> {
    let campaign = args
        .campaign
        .as_deref()
        .map(CampaignFile::load)
        .transpose()?;
    let server = args
        .server
        .clone()
        .or_else(|| campaign.as_ref().map(|c| c.server.clone()))
        .ok_or_else(|| anyhow::anyhow!("give --server URL or --campaign FILE"))?;
    let admin_token = args
        .admin_token
        .clone()
        .or_else(|| campaign.as_ref().map(|c| c.admin_token.clone()))
        .ok_or_else(|| {
            anyhow::anyhow!("give --admin-token TOKEN (or VAXCAMP_ADMIN_TOKEN) or --campaign FILE")
        })?;
    let check = ledger::check(&server, &admin_token, &args.ledger, args.chunk).await?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&check)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo may spawn a run on its own task: the future must be `Send`.
    #[test]
    fn run_workload_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let config = WorkloadConfig::new(
            CampaignFile::server_only("http://127.0.0.1:1"),
            std::time::Duration::from_secs(1),
            1.0,
        );
        let future = run_workload(config, ProgressMode::Quiet, std::future::pending());
        assert_send(&future);
        let args = CheckLedgerArgs {
            ledger: "ledger.csv".into(),
            campaign: None,
            server: None,
            admin_token: None,
            chunk: 1,
            json: None,
        };
        assert_send(&check_ledger(&args));
    }
}
