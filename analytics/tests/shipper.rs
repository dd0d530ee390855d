//! The shipper never lets one row, or one silent server, stop analytics for everyone.
//!
//! - A row the schema cannot hold (a dose dated 1958: ClickHouse's `DateTime` starts in 1970)
//!   is set aside with its reason; the rows around it ship, on both backends.
//! - A ClickHouse that accepts connections and never answers makes a batch fail after
//!   `apply_timeout` instead of holding the shipper forever; the rows stay in the outbox.
//!
//! The ClickHouse half needs `VAXCAMP_TEST_CLICKHOUSE` (set by `tests/run.sh`); without it that
//! half is skipped with a message, unless `VAXCAMP_REQUIRE_CLICKHOUSE=1` (CI).

mod common;
use common::clickhouse_url;

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;
use vaxcamp_analytics::shipper::ShipperConfig;
use vaxcamp_analytics::{
    Analytics, ClickHouseAnalytics, ClickHouseConfig, DoseRow, EmbeddedAnalytics, Event, Outbox,
    Shipper,
};

fn dose(id: u128, at: OffsetDateTime) -> DoseRow {
    DoseRow {
        dose_id: Uuid::from_u128(id),
        person_code: format!("P{id:09}"),
        product: "COMIRNATY".into(),
        lot_number: "FK1".into(),
        dose_number: 1,
        series_doses: 2,
        site_id: "hn-01".into(),
        site_province: "01".into(),
        site_district: "001".into(),
        home_province: "01".into(),
        home_district: "001".into(),
        previous_site: String::new(),
        previous_product: String::new(),
        administered_at: at,
        recorded_at: datetime!(2026-11-20 08:00 UTC),
        version: 1_763_625_600_000_000_000 + id as u64,
        previous_day: None,
    }
}

fn fast() -> ShipperConfig {
    ShipperConfig {
        flush_interval: Duration::from_millis(20),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..ShipperConfig::default()
    }
}

/// Waits until `done` holds, failing with `what` after a generous deadline.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_row_from_1958_is_set_aside_and_the_rest_ship(backend: Arc<dyn Analytics>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = Arc::new(Outbox::open(dir.path(), 1 << 20).expect("outbox"));
    let good_before = dose(1, datetime!(2026-11-20 08:00 UTC));
    let from_1958 = dose(2, datetime!(1958-06-01 08:00 UTC));
    let good_after = dose(3, datetime!(2026-11-20 09:00 UTC));
    // One group commit holding all three, as the shard writer would append it.
    outbox
        .append(vec![
            Event::Dose(good_before),
            Event::Dose(from_1958.clone()),
            Event::Dose(good_after),
        ])
        .expect("append");
    let shipper = Shipper::spawn(outbox.clone(), backend.clone(), fast());
    wait_until("the outbox to drain", || outbox.status().rows == 0).await;
    shipper.stop().await;

    assert_eq!(backend.dose_count().await.expect("count"), 2);
    let status = shipper.status();
    assert_eq!(status.set_aside_rows, 1, "{status:?}");
    assert!(
        status
            .last_set_aside
            .as_deref()
            .is_some_and(|r| r.contains(&from_1958.dose_id.to_string())),
        "the reason names the dose: {status:?}"
    );
    assert_eq!(status.last_error, None, "no batch failed: {status:?}");
    // Kept on disk, with the event, across a restart.
    drop(shipper);
    drop(outbox);
    let outbox = Outbox::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(outbox.status().set_aside, 1);
    let kept = outbox.set_aside_records().expect("records");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].event, Some(Event::Dose(from_1958)));
    assert!(kept[0].reason.contains("outside 1970..2106"), "{kept:?}");
}

#[tokio::test]
async fn embedded_sets_aside_a_row_it_cannot_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(EmbeddedAnalytics::open(dir.path()).expect("open"));
    a_row_from_1958_is_set_aside_and_the_rest_ship(backend).await;
}

#[tokio::test]
async fn clickhouse_sets_aside_a_row_it_cannot_hold() {
    let Some(url) = clickhouse_url() else {
        return;
    };
    let config = ClickHouseConfig {
        database: format!("vaxcamp_test_{}", Uuid::new_v4().simple()),
        ..ClickHouseConfig::new(url)
    };
    let backend = ClickHouseAnalytics::connect(&config)
        .await
        .expect("ClickHouse at VAXCAMP_TEST_CLICKHOUSE");
    a_row_from_1958_is_set_aside_and_the_rest_ship(Arc::new(backend)).await;
}

#[tokio::test]
async fn a_silent_clickhouse_fails_the_batch_after_the_timeout_and_keeps_the_rows() {
    // Accepts connections and never answers: a black-holed or frozen server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let backend = Arc::new(ClickHouseAnalytics::new(&ClickHouseConfig::new(url)));
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = Arc::new(Outbox::open(dir.path(), 1 << 20).expect("outbox"));
    // With a row the schema cannot hold in the same batch: it is set aside only once the
    // batch is in, not again on every failed attempt.
    outbox
        .append(vec![
            Event::Dose(dose(1, datetime!(2026-11-20 08:00 UTC))),
            Event::Dose(dose(2, datetime!(1958-06-01 08:00 UTC))),
        ])
        .expect("append");
    let shipper = Shipper::spawn(
        outbox.clone(),
        backend,
        ShipperConfig {
            apply_timeout: Duration::from_millis(300),
            ..fast()
        },
    );
    wait_until("a failure reported by the shipper", || {
        shipper.status().consecutive_failures >= 2
    })
    .await;
    let status = shipper.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("did not take a batch")),
        "{status:?}"
    );
    assert_eq!(outbox.status().rows, 2, "the rows wait in the outbox");
    assert_eq!(
        (outbox.status().set_aside, status.set_aside_rows),
        (0, 0),
        "nothing is set aside while its batch keeps failing"
    );
    // Stopping does not hang on the silent server either.
    tokio::time::timeout(Duration::from_secs(10), shipper.stop())
        .await
        .expect("the shipper stops");
    silent.abort();
}
