//! How fast can the generator itself go? Runs it against a stub server that does no work (static
//! answers from an axum app on its own runtime threads), so the figure is the ceiling of the
//! generator plus the HTTP stack on this machine: any real server measurement far below it is the
//! server's, not the generator's.
//!
//! ```text
//! cargo run --release -p vaxcamp-loadtest --example generator_ceiling -- \
//!     --scenario doses --rate 0 --duration 10s --concurrency 64
//! ```
//!
//! Takes every `vaxcamp loadtest` flag (the campaign is made up and points at the stub), plus
//! `--server-threads` and `--generator-threads` to split the cores.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use clap::Parser;
use serde_json::{Value, json};
use vaxcamp_loadtest::{CampaignFile, CampaignLot, CampaignSite, LoadtestArgs, Population};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadtestArgs,
    /// Runtime threads of the stub server.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Runtime threads of the generator.
    #[arg(long, default_value_t = 1)]
    generator_threads: usize,
}

const DOSE_ANSWER: &str = r#"{"dose":{"dose_id":"00000000-0000-4000-8000-000000000000","person_code":"P000000001","lot":"L1","dose_number":1},"certificate":"VC1:6BFOXN*TS0BI$ZD.P9UOL97O4-2HH77HRM3DSPTLRR+%3"}"#;

fn stub() -> Router {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route("/v1/doses", post(|_body: axum::body::Bytes| async { (axum::http::StatusCode::CREATED, DOSE_ANSWER) }))
        .route(
            "/v1/checkins",
            post(|_body: axum::body::Bytes| async {
                axum::Json(json!({"person": {}, "doses": [], "next_dose": {"dose_number": 1, "product": "COMIRNATY", "earliest": "2026-01-01"}, "eligible_today": true, "reason": null}))
            }),
        )
        .route(
            "/v1/people/{code}/pass",
            get(|axum::extract::Path(code): axum::extract::Path<String>| async move {
                axum::Json(json!({"person_code": code, "registration_qr": format!("RG1:{code}")}))
            }),
        )
        .route(
            "/v1/people/{code}/certificate",
            get(|| async { ([("content-type", "image/svg+xml")], "<svg xmlns=\"http://www.w3.org/2000/svg\"/>") }),
        )
        .route("/v1/verify", post(|_body: axum::body::Bytes| async { axum::Json(json!({"valid": true})) }))
        .route(
            "/v1/doses:batch",
            post(|axum::Json(body): axum::Json<Value>| async move {
                let results: Vec<Value> = body["doses"]
                    .as_array()
                    .map(|doses| doses.iter().map(|d| json!({"dose_id": d["dose_id"], "status": 201, "error": null})).collect())
                    .unwrap_or_default();
                axum::Json(json!({"results": results}))
            }),
        )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.server_threads)
        .thread_name("stub-server")
        .enable_all()
        .build()?;
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    server.spawn(async move { axum::serve(listener, stub()).await });

    let dir = tempfile::tempdir()?;
    let campaign_path = dir.path().join("campaign.json");
    CampaignFile {
        server: url,
        admin_token: "stub".into(),
        sites: vec![CampaignSite {
            site_id: "S1".into(),
            token: "stub".into(),
            area: None,
            lots: vec![CampaignLot {
                lot: "L1".into(),
                product: "COMIRNATY".into(),
                dose_interval_days: 21,
            }],
        }],
        people: Population {
            first: 0,
            count: 1_000_000,
            code_prefix: "P".into(),
        },
    }
    .save(&campaign_path)?;
    let mut args = cli.args;
    args.campaign = Some(campaign_path);
    args.server = None;

    let generator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.generator_threads)
        .thread_name("generator")
        .enable_all()
        .build()?;
    let report = generator.block_on(async {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        vaxcamp_loadtest::run(&args, ctrl_c).await
    })?;
    print!("{report}");
    server.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
