//! Analytics lag at a sustained dose rate: commit → visible in the backend.
//!
//! ```text
//! VAXCAMP_BENCH_CLICKHOUSE=http://127.0.0.1:8123 cargo bench -p vaxcamp-analytics --bench shipper_lag
//! RATE=20000 SECONDS=60 GROUP=200 (defaults)
//! ```
//! Appends dose rows to a real outbox (fsync'd, as the shard writers do) in groups of `GROUP`
//! rows (one group commit) at `RATE` rows/s, while the real shipper moves them to ClickHouse
//! (or, without `VAXCAMP_BENCH_CLICKHOUSE`, to the embedded rollups). Every second it samples
//! the shipper's lag of the last batch (append of its oldest row → the backend's acknowledgement)
//! and reports the median, p99 and worst, then checks the backend counted every row once.
//! This isolates the analytics path from the HTTP server: on this 2-core machine the server
//! itself cannot sustain 20,000 doses/s (see BENCHMARKS.md), so an end-to-end run would not
//! reach the rate the target names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;
use vaxcamp_analytics::shipper::ShipperConfig;
use vaxcamp_analytics::{
    Analytics, ClickHouseAnalytics, ClickHouseConfig, DoseRow, EmbeddedAnalytics, Event, Outbox,
    Shipper,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn row(n: u64, now: OffsetDateTime) -> Event {
    let site = n % 500;
    Event::Dose(DoseRow {
        dose_id: Uuid::from_u64_pair(0x1a9, n),
        person_code: format!("P{n:011}"),
        product: "COMIRNATY".into(),
        lot_number: "LOT-1".into(),
        dose_number: 1,
        series_doses: 2,
        site_id: format!("s-{site:03}"),
        site_province: format!("{:02}", site % 63 + 1),
        site_district: format!("{:03}", site % 200),
        home_province: format!("{:02}", site % 63 + 1),
        home_district: format!("{:03}", site % 200),
        previous_site: String::new(),
        previous_product: String::new(),
        administered_at: now,
        recorded_at: now,
        version: 1,
        previous_day: None,
    })
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate = env_u64("RATE", 20_000);
    let seconds = env_u64("SECONDS", 60);
    let group = env_u64("GROUP", 200).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn Analytics> = match std::env::var("VAXCAMP_BENCH_CLICKHOUSE") {
        Ok(url) => Arc::new(
            ClickHouseAnalytics::connect(&ClickHouseConfig {
                database: format!("vaxcamp_lag_{}", Uuid::new_v4().simple()),
                ..ClickHouseConfig::new(url)
            })
            .await
            .expect("connect"),
        ),
        Err(_) => Arc::new(EmbeddedAnalytics::open(&dir.path().join("rollups")).expect("open")),
    };
    let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 34).expect("outbox"));
    let shipper = Shipper::spawn(outbox.clone(), backend.clone(), ShipperConfig::default());
    println!(
        "{} backend, {rate} rows/s in groups of {group} for {seconds} s",
        backend.backend_name()
    );

    // The appender: a blocking thread, like a shard writer.
    let total = rate * seconds;
    let appender = {
        let outbox = outbox.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0;
            while n < total {
                let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let now = OffsetDateTime::now_utc();
                let events: Vec<Event> = (n..(n + group).min(total)).map(|i| row(i, now)).collect();
                n += events.len() as u64;
                outbox.append(events).expect("append");
            }
            started.elapsed()
        })
    };
    let mut lags = Vec::new();
    let mut last_batches = 0;
    while !appender.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = shipper.status();
        if status.batches > last_batches {
            lags.push(status.last_lag_ms);
            last_batches = status.batches;
        }
    }
    let took = appender.join().expect("appender");
    let drained = Instant::now();
    while outbox.status().rows > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = shipper.status();
    shipper.stop().await;
    lags.sort_unstable();
    println!(
        "appended {total} rows in {:.1} s ({:.0}/s); drained {:.2} s after the last append",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        drained.elapsed().as_secs_f64()
    );
    if !lags.is_empty() {
        println!(
            "lag (append → acknowledged by the backend), per-second samples: median {} ms, p99 {} ms, worst sampled {} ms; worst of all {} batches {} ms",
            quantile(&lags, 0.5),
            quantile(&lags, 0.99),
            lags[lags.len() - 1],
            status.batches,
            status.max_lag_ms
        );
    }
    let counted = backend.dose_count().await.expect("count");
    println!("backend counts {counted} doses (expected {total})");
    assert_eq!(counted, total, "every row exactly once");
}
