//! `vaxcamp demo`: a whole campaign on this machine, on embedded defaults.
//!
//! 1. Creates a campaign in `<out>/data`: sites across six provinces, lots, an observer token.
//! 2. Generates the pre-registrations (a million by default) as CSV and imports them in bulk,
//!    through the same code as `vaxcamp import registrations`.
//! 3. Serves the API on a loopback port and drives generated site traffic (check-in → dose →
//!    certificate, offline batches, verification) for `--duration`, with live progress: the
//!    live console when stdout is a terminal, plain progress otherwise.
//! 4. Re-reads every acknowledged dose from the store, writes sample certificates (PNG, SVG,
//!    text) and a summary (printed and as JSON).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ingest::areas::AreaNames;
use ingest::{ServerConfig, setup};
use loadtest::{CampaignFile, CampaignLot, CampaignSite, Population, ProgressMode, WorkloadConfig};
use serde_json::json;
use store::{
    Area, AreaCode, EmbeddedOptions, EmbeddedStore, Lot, LotNumber, ProductCode, Role, Site,
    SiteId, Store,
};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to drive traffic: 500ms, 30s, 5m.
    #[arg(long, default_value = "60s", value_parser = loadtest::parse_duration)]
    pub duration: Duration,
    /// Where the campaign, summary and sample certificates go. A previous demo's data there is replaced.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Pre-registrations to generate and import.
    #[arg(long, default_value_t = 1_000_000)]
    pub people: u64,
    /// Vaccination sites (spread over six provinces).
    #[arg(long, default_value_t = 24)]
    pub sites: usize,
    /// Target requests per second (open loop); 0 drives as fast as the server answers.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seed for generated people and traffic, to repeat a run.
    #[arg(long, default_value_t = 2021)]
    pub seed: u64,
    /// Doses in each lot. By default lots are sized to this run's traffic (so the sample
    /// shipment has a split to make); give a large number when the campaign is set up for
    /// load tests that run longer than the demo (see BENCHMARKS.md).
    #[arg(long)]
    pub lot_doses: Option<u64>,
}

/// An area's code and name (General Statistics Office codes).
type Named = (&'static str, &'static str);

/// Provinces of the demo, with two districts each (codes as in the national registry; names as
/// the console shows them).
const PROVINCES: [(&str, &str, [Named; 2]); 6] = [
    ("01", "Hà Nội", [("001", "Ba Đình"), ("005", "Cầu Giấy")]),
    (
        "79",
        "TP. Hồ Chí Minh",
        [("760", "Quận 1"), ("769", "TP. Thủ Đức")],
    ),
    (
        "48",
        "Đà Nẵng",
        [("490", "Liên Chiểu"), ("492", "Hải Châu")],
    ),
    (
        "31",
        "Hải Phòng",
        [("303", "Hồng Bàng"), ("304", "Ngô Quyền")],
    ),
    (
        "92",
        "Cần Thơ",
        [("916", "Ninh Kiều"), ("918", "Bình Thủy")],
    ),
    (
        "83",
        "Bến Tre",
        [("829", "TP. Bến Tre"), ("831", "Châu Thành")],
    ),
];

/// The products each site stocks, with the days between doses.
const PRODUCTS: [(&str, u32); 2] = [("COMIRNATY", 21), ("SPIKEVAX", 28)];

/// Doses in each of a site's lots: 1.25 to 2.75 times what the demo's traffic is expected to use
/// there (about half the requests are doses, spread evenly over sites and products; a rate of
/// 0 is taken as 10,000 requests/s). No site runs out in a run of a minute or more (in shorter
/// ones uneven traffic between sites can empty a few lots near the end: the console then shows
/// them out of stock, as it would in a campaign), yet afterwards most
/// districts hold less than the planner's two weeks of need, unevenly, so the sample shipment
/// has a real split to make.
fn lot_doses(args: &DemoArgs, site_index: usize) -> u64 {
    if let Some(doses) = args.lot_doses {
        return doses;
    }
    let rate = if args.rate > 0.0 { args.rate } else { 10_000.0 };
    let doses = rate * args.duration.as_secs_f64() * 0.5;
    let per_lot = doses / (args.sites.max(1) * PRODUCTS.len()) as f64;
    let expected = (per_lot.ceil() as u64).max(500);
    expected * (5 + 2 * (site_index % 4) as u64) / 4
}

/// The sample shipment the demo asks the planner to split between districts.
const SAMPLE_SHIPMENT: (&str, u64) = ("COMIRNATY", 10_000);

struct Built {
    campaign: CampaignFile,
    store: Arc<dyn Store>,
    observer: String,
}

async fn build_campaign(args: &DemoArgs, data: &Path) -> anyhow::Result<Built> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::create(data, &EmbeddedOptions::default())?);
    let init = setup::init_campaign(store.as_ref(), data, "VN-MOH", "VN").await?;
    let admin_token = init
        .admin_token
        .context("a fresh campaign has an admin token")?;
    let observer = setup::add_token(store.as_ref(), Role::Observer, None, "demo console").await?;
    let expires = time::OffsetDateTime::now_utc().date() + time::Duration::days(180);
    let mut sites = Vec::new();
    let mut area_names = AreaNames::default();
    for i in 0..args.sites.max(1) {
        let (province, province_name, districts) = PROVINCES[i % PROVINCES.len()];
        let (district, district_name) = districts[(i / PROVINCES.len()) % 2];
        let site_id = format!("s{province}-{i:03}");
        let area = Area {
            province: AreaCode::new(province)?,
            district: AreaCode::new(district)?,
            commune: None,
        };
        area_names.name_province(&area.province, province_name);
        area_names.name_district(&area.district_key(), district_name);
        let site = Site {
            site_id: SiteId::new(&site_id)?,
            name: format!("Điểm tiêm {} số {}", province_name, i + 1),
            area,
            daily_capacity: 2_000 + 500 * (i as u32 % 5),
        };
        let (token, _) = setup::add_site(store.as_ref(), &site).await?;
        let mut lots = Vec::new();
        for (n, (product, interval)) in PRODUCTS.iter().enumerate() {
            let lot_number = format!("{}{:04}", &product[..2], i * 10 + n);
            setup::add_lot(
                store.as_ref(),
                &Lot {
                    lot_number: LotNumber::new(&lot_number)?,
                    site_id: site.site_id.clone(),
                    product: ProductCode::new(*product)?,
                    expires,
                    quantity: lot_doses(args, i),
                },
            )
            .await?;
            lots.push(CampaignLot {
                lot: lot_number,
                product: (*product).to_owned(),
                dose_interval_days: *interval,
            });
        }
        sites.push(CampaignSite {
            site_id,
            token,
            area: Some(loadtest::Area {
                province: province.to_owned(),
                district: district.to_owned(),
                commune: format!("{district}01"),
            }),
            lots,
        });
    }
    setup::put_area_names(store.as_ref(), &area_names).await?;
    let campaign = CampaignFile {
        server: String::new(),
        admin_token,
        sites,
        people: Population {
            first: 0,
            count: args.people,
            code_prefix: "P".to_owned(),
        },
    };
    Ok(Built {
        campaign,
        store,
        observer,
    })
}

/// Removes a previous demo's data directory, and nothing that is not one.
fn clear_previous(data: &Path) -> anyhow::Result<()> {
    if data.exists() {
        anyhow::ensure!(
            data.join("catalog").is_dir(),
            "{} exists and is not a vaxcamp data directory; choose another --out",
            data.display()
        );
        std::fs::remove_dir_all(data)
            .with_context(|| format!("removing the previous demo in {}", data.display()))?;
    }
    Ok(())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let out = &args.out;
    let data = out.join("data");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    clear_previous(&data)?;
    eprintln!("vaxcamp demo: campaign in {}", data.display());

    let built = build_campaign(&args, &data).await?;
    let Built {
        mut campaign,
        store,
        observer,
    } = built;

    // The population, generated as CSV and bulk-imported like an operator would.
    let csv_path = out.join("registrations.csv");
    let started = Instant::now();
    loadtest::population::RegistrationCsv::from_campaign(&campaign, args.seed)
        .write_file(&csv_path)
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let file = std::fs::File::open(&csv_path)?;
    let import = crate::admin::import_with_progress(
        store.as_ref(),
        std::io::BufReader::new(file),
        args.people,
    )
    .await?;
    let import_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} pre-registrations in {:.1} s ({:.0}/s); {} refused",
        import.created,
        import_secs,
        import.created as f64 / import_secs.max(0.001),
        import.error_count
    );

    // Serve on a loopback port.
    let config = ServerConfig {
        data: data.clone(),
        ..ServerConfig::default()
    };
    let state = ingest::build_state(store.clone(), &data, &config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    campaign.server.clone_from(&base);
    campaign.save(&out.join("campaign.json"))?;
    // The read-only token for watching the demo from another terminal (`vaxcamp console`,
    // console/measure-cpu.sh), next to campaign.json and as secret as it.
    std::fs::write(out.join("observer-token"), &observer)?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ingest::serve(listener, state, async move {
        let _ = server_stopped.await;
    }));
    eprintln!(
        "serving on {base}; driving site traffic for {:?} at {} req/s",
        args.duration, args.rate
    );

    // Drive traffic.
    let ledger = out.join("ledger.csv");
    let _ = std::fs::remove_file(&ledger);
    let mut workload = WorkloadConfig::new(campaign.clone(), args.duration, args.rate);
    workload.concurrency = args.concurrency;
    workload.seed = args.seed;
    workload.ledger = Some(ledger.clone());
    // In a terminal, the live console watches the demo's own server while the traffic runs; it
    // closes when the traffic ends, and quitting it (q) ends the traffic early, as Ctrl-C does.
    let (traffic_done, console_stop) = tokio::sync::oneshot::channel::<()>();
    let (console_quit, quit_seen) = tokio::sync::oneshot::channel::<()>();
    let console = std::io::IsTerminal::is_terminal(&std::io::stdout()).then(|| {
        let args = console::ConsoleArgs {
            server: base.clone(),
            token: observer.clone(),
            low_stock_days: None,
        };
        tokio::spawn(async move {
            let result = console::run_until(args, async {
                let _ = console_stop.await;
            })
            .await;
            let _ = console_quit.send(());
            result
        })
    });
    let progress = if console.is_some() {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    };
    let report = loadtest::run_workload(workload, progress, async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Ok(()) = quit_seen => {}
        }
    })
    .await;
    let _ = traffic_done.send(());
    if let Some(console) = console {
        console.await.context("console task")??;
    }
    let report = report?;
    report.write_json(&out.join("loadtest-report.json"))?;

    // Re-read every acknowledged dose from the store, through the API.
    let check = loadtest::ledger::check(&base, &campaign.admin_token, &ledger, 5_000).await?;

    // Sample certificates.
    let samples = write_samples(&base, &campaign, &ledger, out).await;

    // What the analytics side made of it: the outbox drained, and a shipment proposal.
    let allocation = sample_allocation(&base, &observer, out).await;

    let _ = stop_server.send(());
    server.await.context("server task")??;

    let dose = report.operations.get(&loadtest::Op::Dose);
    let certificates = report
        .operations
        .get(&loadtest::Op::Certificate)
        .map_or(0, |o| o.ok)
        + report.doses.single_acked;
    let summary = json!({
        "duration_s": report.elapsed_s,
        "registrations_imported": import.created,
        "doses_acknowledged": report.doses.acked,
        "doses_acknowledged_distinct": check.unique,
        "doses_found_in_store_on_reread": check.stored_once,
        "doses_missing": check.missing.len(),
        "doses_duplicated": check.duplicated.len(),
        "certificates_issued": certificates,
        "dose_rate_per_s": report.doses.acked_per_s,
        "requests_per_s": report.schedule.achieved_rate,
        "dose_latency_p50_ms": dose.map(|d| d.latency.p50_ns as f64 / 1e6),
        "dose_latency_p99_ms": dose.map(|d| d.latency.p99_ns as f64 / 1e6),
        "errors": report.operations.values().map(|o| o.errors).sum::<u64>(),
        "sample_certificates": samples,
        "allocation_sample": allocation.as_ref().map(|a| a.json.clone()),
        "observer_token": observer,
        "files": {
            "campaign": out.join("campaign.json"),
            "ledger": ledger,
            "loadtest_report": out.join("loadtest-report.json"),
            "registrations_csv": csv_path,
        },
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    println!("\n== vaxcamp demo summary ==");
    println!("registrations imported       {}", import.created);
    println!(
        "doses acknowledged           {} ({} distinct)",
        report.doses.acked, check.unique
    );
    println!("doses found in store (reread) {}", check.stored_once);
    println!(
        "missing / duplicated         {} / {}",
        check.missing.len(),
        check.duplicated.len()
    );
    println!("certificates issued          {certificates}");
    println!(
        "dose rate                    {:.0}/s over {:.1} s",
        report.doses.acked_per_s, report.elapsed_s
    );
    if let Some(d) = dose {
        println!(
            "dose latency                 p50 {:.2} ms, p99 {:.2} ms",
            d.latency.p50_ns as f64 / 1e6,
            d.latency.p99_ns as f64 / 1e6
        );
    }
    println!(
        "sample certificates          {}",
        samples
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    match &allocation {
        Some(a) => println!("allocation sample            {}", a.line),
        None => println!("allocation sample            (the planner did not answer; see the log)"),
    }
    println!(
        "summary                      {}",
        out.join("summary.json").display()
    );
    anyhow::ensure!(
        check.is_ok(),
        "some acknowledged doses are not stored exactly once: {check}"
    );
    Ok(())
}

/// A shipment proposal from the running demo server, for the summary.
struct AllocationSample {
    json: serde_json::Value,
    line: String,
}

/// Waits (up to 10 s) for the analytics outbox to drain, then asks the planner how to split
/// [`SAMPLE_SHIPMENT`] between districts; writes the answer to
/// `allocation-sample.json`.
async fn sample_allocation(base: &str, token: &str, out: &Path) -> Option<AllocationSample> {
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client.get(format!("{base}{path}")).bearer_auth(token);
        async move {
            let response = request.send().await.ok()?;
            response.json::<serde_json::Value>().await.ok()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let stats = get("/v1/stats".into()).await?;
        if stats["analytics"]["outbox"]["rows"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (product, quantity) = SAMPLE_SHIPMENT;
    let answer = get(format!(
        "/v1/allocation?product={product}&quantity={quantity}&level=district"
    ))
    .await?;
    let plan = answer.get("plan")?;
    std::fs::write(
        out.join("allocation-sample.json"),
        serde_json::to_vec_pretty(&answer).ok()?,
    )
    .ok()?;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let line = format!(
        "{quantity} {product} doses over {} districts needing {}: {} allocated, {} held back, {} need unmet; {}",
        plan["lines"].as_array().map_or(0, Vec::len),
        n(&plan["need_doses"]),
        n(&plan["allocated_doses"]),
        n(&plan["held_back_doses"]),
        n(&plan["unmet_need_doses"]),
        out.join("allocation-sample.json").display()
    );
    Some(AllocationSample { json: answer, line })
}

/// Fetches the certificate of the last person in the ledger as PNG, SVG and text, and checks
/// the text verifies against the published trust list.
async fn write_samples(
    base: &str,
    campaign: &CampaignFile,
    ledger: &Path,
    out: &Path,
) -> Vec<PathBuf> {
    let person = std::fs::read_to_string(ledger).ok().and_then(|text| {
        text.lines()
            .rev()
            .find(|l| !l.starts_with('#'))
            .and_then(|l| l.split(',').nth(1))
            .map(|p| p.trim().to_owned())
    });
    let Some(person) = person else {
        tracing::warn!("no dose was acknowledged, so there is no sample certificate");
        return Vec::new();
    };
    let client = reqwest::Client::new();
    let token = campaign
        .sites
        .first()
        .map(|s| s.token.clone())
        .unwrap_or_default();
    let mut written = Vec::new();
    for (format, name) in [
        ("png", "certificate-sample.png"),
        ("svg", "certificate-sample.svg"),
        ("text", "certificate-sample.txt"),
    ] {
        let url = format!("{base}/v1/people/{person}/certificate?format={format}");
        let answer = async {
            client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await
        }
        .await;
        match answer {
            Ok(bytes) => {
                let path = out.join(name);
                if std::fs::write(&path, bytes).is_ok() {
                    written.push(path);
                }
            }
            Err(e) => tracing::warn!(error = %e, format, "could not fetch a sample certificate"),
        }
    }
    written
}
