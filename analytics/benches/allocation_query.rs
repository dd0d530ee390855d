//! How long the allocation planner takes over a national-size dose table.
//!
//! ```text
//! VAXCAMP_BENCH_CLICKHOUSE=http://127.0.0.1:8123 cargo bench -p vaxcamp-analytics --bench allocation_query
//! ```
//! Loads `DOSES` (default 10,000,000) dose rows — 500 sites in 63 provinces, two products, two
//! thirds of people back for dose 2 — into a fresh ClickHouse database, then times the planner
//! (its exact reads of the placed − retracted rollups — doses in the window, owed doses by due
//! day, people started — and of the lot movements, plus the plan) at site, district
//! and province level, and an uptake series from the same rollups; 5 runs each, median and
//! worst. `EMBEDDED_DOSES` (default
//! 1,000,000) does the same on the embedded rollups. A plain `main` (not criterion): each
//! iteration is seconds long and the load minutes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use store::{Area, AreaCode, District, Site, SiteId};
use time::OffsetDateTime;
use uuid::Uuid;
use vaxcamp_analytics::allocation::{Level, PlanRequest};
use vaxcamp_analytics::planner::{self, Figures};
use vaxcamp_analytics::{
    Analytics, AreaLevel, ClickHouseAnalytics, ClickHouseConfig, DoseRow, EmbeddedAnalytics, Event,
    Granularity, UptakeQuery,
};

const SITES: usize = 500;
const PROVINCES: usize = 63;

fn sites() -> Vec<Site> {
    (0..SITES)
        .map(|i| Site {
            site_id: SiteId::new(format!("s-{i:03}")).expect("valid"),
            name: format!("Site {i}"),
            area: Area {
                province: AreaCode::new(format!("{:02}", i % PROVINCES + 1)).expect("valid"),
                district: AreaCode::new(format!("{:03}", i % 200)).expect("valid"),
                commune: None,
            },
            daily_capacity: 2_000,
        })
        .collect()
}

/// Rows `from..to` of a deterministic campaign over the last 60 days.
fn rows(sites: &[Site], now: OffsetDateTime, from: u64, to: u64) -> Vec<Event> {
    let mut out = Vec::with_capacity((to - from) as usize);
    for n in from..to {
        let person = n / 2;
        let second = n % 2 == 1;
        if second && person % 3 == 0 {
            continue; // a third never come back
        }
        let site = &sites[(person % SITES as u64) as usize];
        let (product, series) = if person % 5 == 0 {
            ("VAXZEVRIA", 2)
        } else {
            ("COMIRNATY", 2)
        };
        let days_ago = (person % 60) as i64;
        let first_at = now - time::Duration::days(days_ago);
        let at = first_at + time::Duration::days(if second { 28 } else { 0 });
        let at = at.min(now);
        out.push(Event::Dose(DoseRow {
            dose_id: Uuid::from_u64_pair(0x5eed, n),
            person_code: format!("P{person:011}"),
            product: product.into(),
            lot_number: "LOT-1".into(),
            dose_number: if second { 2 } else { 1 },
            series_doses: series,
            site_id: site.site_id.to_string(),
            site_province: site.area.province.to_string(),
            site_district: site.area.district.to_string(),
            home_province: site.area.province.to_string(),
            home_district: site.area.district.to_string(),
            previous_site: if second {
                site.site_id.to_string()
            } else {
                String::new()
            },
            previous_product: if second {
                product.into()
            } else {
                String::new()
            },
            // A second dose settles the first under the first's day.
            previous_day: second.then(|| first_at.date()),
            administered_at: at,
            recorded_at: at,
            version: 1,
        }));
    }
    out
}

async fn load(backend: &dyn Analytics, sites: &[Site], now: OffsetDateTime, doses: u64) {
    let started = Instant::now();
    let chunk = 200_000;
    let mut from = 0;
    while from < doses {
        let to = (from + chunk).min(doses);
        backend
            .apply(&rows(sites, now, from, to))
            .await
            .expect("apply");
        from = to;
    }
    let count = backend.dose_count().await.expect("count");
    println!(
        "  loaded {count} doses into {} in {:.1} s",
        backend.backend_name(),
        started.elapsed().as_secs_f64()
    );
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:>7.1} ms, worst {:>7.1} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    )
}

async fn time_queries(backend: &dyn Analytics, sites: &[Site], now: OffsetDateTime) {
    let stock: HashMap<SiteId, u64> = sites.iter().map(|s| (s.site_id.clone(), 100)).collect();
    let registrations: HashMap<District, u64> = sites
        .iter()
        .map(|s| (s.area.district_key(), 200_000))
        .collect();
    for level in [Level::Site, Level::District, Level::Province] {
        let mut times = Vec::new();
        let mut allocated = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let plan = planner::propose(
                backend,
                &PlanRequest {
                    product: "COMIRNATY".into(),
                    shipment_doses: 1_000_000,
                    unit_doses: 6,
                    window_days: 7,
                    horizon_days: 14,
                    level,
                    owed_lapse_days: 90,
                },
                Figures {
                    sites,
                    stock_on_hand: &stock,
                    registrations_by_district: &registrations,
                    min_interval_days: 21,
                    now,
                },
            )
            .await
            .expect("plan");
            times.push(started.elapsed());
            allocated = plan.allocated_doses;
        }
        println!(
            "  allocation at {:<8} {} ({allocated} doses allocated)",
            level.as_str(),
            summary(times)
        );
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let points = backend
            .uptake(&UptakeQuery {
                level: AreaLevel::Province,
                granularity: Granularity::Day,
                since: now.replace_time(time::Time::MIDNIGHT) - time::Duration::days(29),
                until: now.replace_time(time::Time::MIDNIGHT) + time::Duration::days(1),
                product: None,
                province: None,
            })
            .await
            .expect("uptake");
        times.push(started.elapsed());
        assert!(!points.is_empty());
    }
    println!("  uptake, 30 days by province: {}", summary(times));
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let sites = sites();
    let now = OffsetDateTime::now_utc();
    match std::env::var("VAXCAMP_BENCH_CLICKHOUSE") {
        Ok(url) => {
            let doses = env_u64("DOSES", 10_000_000);
            println!("ClickHouse at {url}, {doses} dose rows:");
            let backend = ClickHouseAnalytics::connect(&ClickHouseConfig {
                database: format!("vaxcamp_bench_{}", Uuid::new_v4().simple()),
                timeout: Duration::from_secs(600),
                ..ClickHouseConfig::new(url)
            })
            .await
            .expect("connect");
            load(&backend, &sites, now, doses).await;
            time_queries(&backend, &sites, now).await;
        }
        Err(_) => println!("ClickHouse: skipped (set VAXCAMP_BENCH_CLICKHOUSE)"),
    }
    let doses = env_u64("EMBEDDED_DOSES", 1_000_000);
    if doses > 0 {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = EmbeddedAnalytics::open(dir.path()).expect("open");
        println!("embedded, {doses} dose rows:");
        load(&backend, &sites, now, doses).await;
        time_queries(&backend, &sites, now).await;
    }
}
