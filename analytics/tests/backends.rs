//! The analytics contract, checked on both backends: replays never count twice, corrections
//! replace, owed doses follow the person, and ClickHouse and the embedded rollups give the same
//! answers — down to the allocation plan — on the same doses.
//!
//! The ClickHouse half needs a server: `VAXCAMP_TEST_CLICKHOUSE=http://127.0.0.1:PORT` (set by
//! `tests/run.sh`, which starts one). Without it those checks are skipped with a message, unless
//! `VAXCAMP_REQUIRE_CLICKHOUSE=1` (CI) makes that a failure.

mod common;
use common::clickhouse_url;

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;
use vaxcamp_analytics as analytics;

use analytics::allocation::{Level, PlanRequest};
use analytics::planner::{self, Figures};
use analytics::row::utc_day;
use analytics::{
    Analytics, AreaLevel, ClickHouseAnalytics, ClickHouseConfig, DoseRow, EmbeddedAnalytics, Event,
    Granularity, OwedWindow, UptakeQuery,
};
use store::{Area, AreaCode, District, Site, SiteId};
use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const NOW: OffsetDateTime = datetime!(2026-11-20 15:30 UTC);

/// A fresh database on the test server.
async fn clickhouse() -> Option<ClickHouseAnalytics> {
    let url = clickhouse_url()?;
    let config = ClickHouseConfig {
        database: format!("vaxcamp_test_{}", Uuid::new_v4().simple()),
        ..ClickHouseConfig::new(url)
    };
    Some(
        ClickHouseAnalytics::connect(&config)
            .await
            .expect("ClickHouse at VAXCAMP_TEST_CLICKHOUSE"),
    )
}

fn embedded() -> (tempfile::TempDir, EmbeddedAnalytics) {
    let dir = tempfile::tempdir().expect("tempdir");
    let analytics = EmbeddedAnalytics::open(dir.path()).expect("open");
    (dir, analytics)
}

struct SiteSpec {
    id: &'static str,
    province: &'static str,
    district: &'static str,
}

const SITES: [SiteSpec; 5] = [
    SiteSpec {
        id: "hn-01",
        province: "01",
        district: "001",
    },
    SiteSpec {
        id: "hn-02",
        province: "01",
        district: "001",
    },
    SiteSpec {
        id: "hn-03",
        province: "01",
        district: "002",
    },
    SiteSpec {
        id: "hcm-01",
        province: "79",
        district: "760",
    },
    SiteSpec {
        id: "hcm-02",
        province: "79",
        district: "761",
    },
];

/// Minimum interval after a dose of `product`, in days, as the campaign's catalogue says
/// (JANSSEN, a one-dose product of these tests, is not in the built-in catalogue: 0).
const COMIRNATY_INTERVAL: u16 = 21;

/// A dose row; `previous` is (site, product, time) of the dose before in the series, whose UTC
/// day the row carries as the write path reports it.
#[allow(clippy::too_many_arguments)]
fn row(
    id: u128,
    person: u32,
    product: &str,
    series: u8,
    number: u8,
    site: &SiteSpec,
    home: (&str, &str),
    previous: Option<(&str, &str, OffsetDateTime)>,
    at: OffsetDateTime,
) -> DoseRow {
    DoseRow {
        dose_id: Uuid::from_u128(id),
        person_code: format!("P{person:09}"),
        product: product.into(),
        lot_number: "LOT1".into(),
        dose_number: number,
        series_doses: series,
        site_id: site.id.into(),
        site_province: site.province.into(),
        site_district: site.district.into(),
        home_province: home.0.into(),
        home_district: home.1.into(),
        previous_site: previous.map(|p| p.0.to_owned()).unwrap_or_default(),
        previous_product: previous.map(|p| p.1.to_owned()).unwrap_or_default(),
        previous_day: previous.map(|p| utc_day(p.2)),
        administered_at: at,
        recorded_at: at,
        version: nanos(at),
    }
}

fn nanos(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos()).expect("after 1970")
}

/// A deterministic campaign: 600 people over 10 days; two-dose COMIRNATY for most, one-dose
/// JANSSEN for every seventh; second doses 3 days later, sometimes at another site. Every
/// eleventh person started 100 to 130 days ago instead: most of those who did not come back
/// have lapsed.
fn campaign() -> Vec<DoseRow> {
    let mut rows = Vec::new();
    let mut id = 1u128;
    let mut state = 0x2545_f491_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for person in 0..600u32 {
        let site = &SITES[(next() % 5) as usize];
        let home = (site.province, site.district);
        let first = if person % 11 == 0 {
            NOW - Duration::days(100 + (next() % 30) as i64)
        } else {
            NOW - Duration::hours((next() % 240) as i64) - Duration::minutes(7)
        };
        let (product, series) = if person % 7 == 0 {
            ("JANSSEN", 1)
        } else {
            ("COMIRNATY", 2)
        };
        rows.push(row(id, person, product, series, 1, site, home, None, first));
        id += 1;
        let second = first + Duration::days(3);
        if series == 2 && second < NOW && next() % 3 != 0 {
            let back = if next() % 4 == 0 {
                &SITES[(next() % 5) as usize]
            } else {
                site
            };
            rows.push(row(
                id,
                person,
                product,
                series,
                2,
                back,
                home,
                Some((site.id, product, first)),
                second,
            ));
            id += 1;
        }
    }
    rows
}

/// What the rows say, computed directly: the answers both backends must give.
struct Expected {
    doses: u64,
    in_window: BTreeMap<String, u64>,
    /// Per site: (owed, lapsed) in the window, before dropping sites with neither.
    owed: BTreeMap<String, (i64, i64)>,
    started: BTreeMap<(String, String), u64>,
}

/// The owed windows the checks ask for, with Comirnaty's 21 days: the default 14-day horizon,
/// and 28 days, which takes in every recent first dose.
fn windows() -> [OwedWindow; 2] {
    [
        OwedWindow::new(NOW.date(), 14, 90, COMIRNATY_INTERVAL),
        OwedWindow::new(NOW.date(), 28, 90, COMIRNATY_INTERVAL),
    ]
}

/// What the rows say, worked out per person rather than per rollup key, so that a dose counted
/// under one key and settled under another cannot pass: a person is owed their next dose at
/// the site of their last dose when it leaves one owed, due on its UTC day plus the interval
/// the window is asked with; owed when due by `due_by`, lapsed when due before
/// `lapsed_before`. Only the rows' own doses, never their `previous_*` fields, are read.
fn expected(
    rows: &[DoseRow],
    product: &str,
    since: OffsetDateTime,
    window: OwedWindow,
) -> Expected {
    let mut e = Expected {
        doses: rows.len() as u64,
        in_window: BTreeMap::new(),
        owed: BTreeMap::new(),
        started: BTreeMap::new(),
    };
    let mut last: HashMap<&str, &DoseRow> = HashMap::new();
    for r in rows {
        let entry = last.entry(r.person_code.as_str()).or_insert(r);
        if r.dose_number > entry.dose_number {
            *entry = r;
        }
    }
    for r in last.values() {
        if r.product != product || r.dose_number >= r.series_doses {
            continue;
        }
        let day = r.administered_at.to_offset(time::UtcOffset::UTC).date();
        let due = day + Duration::days(i64::from(window.interval_days));
        let entry = e.owed.entry(r.site_id.clone()).or_default();
        if due < window.lapsed_before {
            entry.1 += 1;
        } else if due <= window.due_by {
            entry.0 += 1;
        }
    }
    for r in rows {
        if r.product == product && r.administered_at >= since {
            *e.in_window.entry(r.site_id.clone()).or_default() += 1;
        }
        if r.dose_number == 1 {
            *e.started
                .entry((r.home_province.clone(), r.home_district.clone()))
                .or_default() += 1;
        }
    }
    e
}

async fn check_against(backend: &dyn Analytics, rows: &[DoseRow], label: &str) {
    let since = analytics::hour_floor(NOW) - Duration::days(7);
    for window in windows() {
        let e = expected(rows, "COMIRNATY", since, window);
        let activity = backend
            .site_activity("COMIRNATY", since, window)
            .await
            .expect("site_activity");
        let in_window: BTreeMap<String, u64> = activity
            .iter()
            .filter(|a| a.doses_in_window > 0)
            .map(|a| (a.site_id.clone(), a.doses_in_window))
            .collect();
        assert_eq!(in_window, e.in_window, "{label}: doses in window per site");
        let owed: BTreeMap<String, (i64, i64)> = activity
            .iter()
            .filter(|a| a.owed_doses > 0 || a.lapsed_doses > 0)
            .map(|a| {
                (
                    a.site_id.clone(),
                    (a.owed_doses as i64, a.lapsed_doses as i64),
                )
            })
            .collect();
        let want_owed: BTreeMap<String, (i64, i64)> = e
            .owed
            .into_iter()
            .map(|(site, (owed, lapsed))| (site, (owed.max(0), lapsed.max(0))))
            .filter(|(_, (owed, lapsed))| *owed > 0 || *lapsed > 0)
            .collect();
        assert_eq!(
            owed, want_owed,
            "{label}: owed and lapsed doses per site, {window:?}"
        );
    }
    let e = expected(rows, "COMIRNATY", since, windows()[0]);
    assert_eq!(
        backend.dose_count().await.expect("count"),
        e.doses,
        "{label}: dose count"
    );
    let started: BTreeMap<(String, String), u64> = backend
        .started_by_district()
        .await
        .expect("started")
        .into_iter()
        .map(|(d, n)| ((d.province.to_string(), d.district.to_string()), n))
        .collect();
    assert_eq!(started, e.started, "{label}: started by home district");
}

fn events(rows: &[DoseRow]) -> Vec<Event> {
    rows.iter().cloned().map(Event::Dose).collect()
}

/// Applies `rows` in uneven batches, then replays a shuffled half of them.
async fn load(backend: &dyn Analytics, rows: &[DoseRow]) {
    let all = events(rows);
    for chunk in all.chunks(97) {
        backend.apply(chunk).await.expect("apply");
    }
    let replay: Vec<Event> = all.iter().rev().step_by(2).cloned().collect();
    for chunk in replay.chunks(31) {
        backend.apply(chunk).await.expect("replay");
    }
}

#[tokio::test]
async fn embedded_counts_each_dose_once_however_often_it_is_replayed() {
    let rows = campaign();
    let (_dir, backend) = embedded();
    load(&backend, &rows).await;
    check_against(&backend, &rows, "embedded").await;
    // The whole set once more, in one batch, and it still counts once.
    backend.apply(&events(&rows)).await.expect("apply all");
    check_against(&backend, &rows, "embedded, replayed").await;
}

#[tokio::test]
async fn clickhouse_counts_each_dose_once_however_often_it_is_replayed() {
    let Some(backend) = clickhouse().await else {
        return;
    };
    let rows = campaign();
    load(&backend, &rows).await;
    check_against(&backend, &rows, "clickhouse").await;
    assert!(
        backend.physical_dose_rows().await.expect("rows") >= rows.len() as u64,
        "the replays really were inserted (and are absorbed by the reads)"
    );
}

/// A second process migrating the same database applies nothing twice, and the schema holds
/// what the reads use and not what nothing reads any more (version 3's and 4's rollups, version
/// 5's `stock_movements`).
#[tokio::test]
async fn clickhouse_migrations_apply_once_and_drop_what_nothing_reads() {
    let Some(url) = clickhouse_url() else {
        return;
    };
    let database = format!("vaxcamp_test_{}", Uuid::new_v4().simple());
    let config = ClickHouseConfig {
        database: database.clone(),
        ..ClickHouseConfig::new(url.clone())
    };
    let rows = campaign();
    let first = ClickHouseAnalytics::connect(&config).await.expect("first");
    load(&first, &rows).await;
    let second = ClickHouseAnalytics::connect(&config)
        .await
        .expect("a second process on the same database");
    check_against(&second, &rows, "clickhouse, migrated twice").await;

    let client = clickhouse::Client::default()
        .with_url(&url)
        .with_validation(false);
    let versions: Vec<u32> = client
        .query("SELECT version FROM ?.schema_migrations ORDER BY version")
        .bind(clickhouse::sql::Identifier(&database))
        .fetch_all()
        .await
        .expect("schema_migrations");
    let expected: Vec<u32> = analytics::clickhouse::MIGRATIONS
        .iter()
        .map(|(v, _, _)| *v)
        .collect();
    assert_eq!(versions, expected, "each migration applied exactly once");
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
        .bind(&database)
        .fetch_all()
        .await
        .expect("system.tables");
    for gone in [
        "uptake_site_hour",
        "uptake_site_hour_mv",
        "uptake_area_day",
        "uptake_area_day_mv",
        "owed_sites",
        "owed_sites_owing_placed_mv",
        "owed_sites_settling_retracted_mv",
        "stock_movements",
    ] {
        assert!(
            !tables.iter().any(|t| t == gone),
            "{gone} should be dropped: {tables:?}"
        );
    }
    for kept in [
        "doses",
        "dose_retractions",
        "dose_hours",
        "owed_days",
        "owed_days_owing_placed_mv",
        "owed_days_settling_placed_mv",
        "owed_days_owing_retracted_mv",
        "owed_days_settling_retracted_mv",
        "started_districts",
        "lot_movements",
    ] {
        assert!(
            tables.iter().any(|t| t == kept),
            "{kept} missing: {tables:?}"
        );
    }
}

/// A database written by the previous release (migrations 1 to 3, rows without the previous
/// dose's day, corrections among them, second doses never on their due day) is migrated by the
/// current one: the backfill puts every owed dose under its own day and every settling one
/// under its previous dose's, so owed and lapsed doses come out exactly as counted per person;
/// and second doses recorded after the upgrade — half of them legacy entries from the outbox,
/// without the previous dose's day — settle the first doses recorded before it.
#[tokio::test]
async fn clickhouse_migration_dates_the_doses_recorded_before_due_dates() {
    let Some(url) = clickhouse_url() else {
        return;
    };
    let database = format!("vaxcamp_test_{}", Uuid::new_v4().simple());
    let client = clickhouse::Client::default()
        .with_url(&url)
        .with_validation(false);
    client
        .query("CREATE DATABASE ?")
        .bind(clickhouse::sql::Identifier(&database))
        .execute()
        .await
        .expect("database");
    let client = client.with_database(&database);
    client
        .query(
            "CREATE TABLE schema_migrations (
                version UInt32, description String, applied_at DateTime('UTC')
            ) ENGINE = TinyLog",
        )
        .execute()
        .await
        .expect("schema_migrations");
    for (version, description, statements) in &analytics::clickhouse::MIGRATIONS[..3] {
        for statement in *statements {
            client.query(statement).execute().await.expect(statement);
        }
        client
            .query("INSERT INTO schema_migrations VALUES (?, ?, now())")
            .bind(version)
            .bind(description)
            .execute()
            .await
            .expect("recorded");
    }
    // The corrected campaign's last stage as the old release left it: every row at its latest
    // version, moved doses with a tombstone under their old key. The last 100 second doses
    // come after the upgrade.
    let stages = corrected_campaign();
    let (_, rows) = stages.last().expect("stages");
    let second_doses: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].dose_number == 2)
        .collect();
    let after: Vec<usize> = second_doses[second_doses.len() - 100..].to_vec();
    let before: Vec<&DoseRow> = (0..rows.len())
        .filter(|i| !after.contains(i))
        .map(|i| &rows[i])
        .collect();
    let value = |r: &DoseRow, version: u64, deleted: u8| {
        format!(
            "('{}', '{}', '{}', '{}', {}, {}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', {}, {}, {}, {})",
            r.dose_id,
            r.person_code,
            r.product,
            r.lot_number,
            r.dose_number,
            r.series_doses,
            r.site_id,
            r.site_province,
            r.site_district,
            r.home_province,
            r.home_district,
            r.previous_site,
            r.previous_product,
            r.administered_at.unix_timestamp(),
            r.recorded_at.unix_timestamp(),
            version,
            deleted,
        )
    };
    let mut values: Vec<String> = before.iter().map(|r| value(r, r.version, 0)).collect();
    // An older version of one row, replaced by the one above (`FINAL` keeps the latest).
    values.push(value(before[0], before[0].version - 1, 0));
    client
        .query(&format!(
            "INSERT INTO doses (dose_id, person_code, product, lot_number, dose_number,
                series_doses, site_id, site_province, site_district, home_province, home_district,
                previous_site, previous_product, administered_at, recorded_at, version, deleted)
             VALUES {}",
            values.join(", ")
        ))
        .execute()
        .await
        .expect("old rows");

    let backend = ClickHouseAnalytics::connect(&ClickHouseConfig {
        database: database.clone(),
        ..ClickHouseConfig::new(url.clone())
    })
    .await
    .expect("migrated");
    let old_rows: Vec<DoseRow> = before.iter().map(|r| (*r).clone()).collect();
    // Owed and lapsed only: the old release's own rollups (`dose_hours`) were not filled here.
    let since = analytics::hour_floor(NOW) - Duration::days(7);
    let owed_of = |activity: Vec<analytics::SiteActivity>| -> BTreeMap<String, (i64, i64)> {
        activity
            .into_iter()
            .filter(|a| a.owed_doses > 0 || a.lapsed_doses > 0)
            .map(|a| (a.site_id, (a.owed_doses as i64, a.lapsed_doses as i64)))
            .collect()
    };
    let want = |rows: &[DoseRow], window| -> BTreeMap<String, (i64, i64)> {
        expected(rows, "COMIRNATY", since, window)
            .owed
            .into_iter()
            .map(|(site, (owed, lapsed))| (site, (owed.max(0), lapsed.max(0))))
            .filter(|(_, (owed, lapsed))| *owed > 0 || *lapsed > 0)
            .collect()
    };
    for window in windows() {
        let got = owed_of(
            backend
                .site_activity("COMIRNATY", since, window)
                .await
                .expect("q"),
        );
        assert_eq!(
            got,
            want(&old_rows, window),
            "after the migration, {window:?}"
        );
        assert!(!got.is_empty(), "something is owed");
    }
    let new_rows: Vec<Event> = after
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let row = rows[i].clone();
            Event::Dose(if n % 2 == 0 { legacy(row) } else { row })
        })
        .collect();
    backend.apply(&new_rows).await.expect("new second doses");
    for window in windows() {
        let got = owed_of(
            backend
                .site_activity("COMIRNATY", since, window)
                .await
                .expect("q"),
        );
        assert_eq!(
            got,
            want(rows, window),
            "after new second doses, {window:?}"
        );
    }
}

/// A first dose is owed its second from the day it falls due, at the site it was given, until
/// the person lapses; a second dose at another site settles it; a correction that moves a dose
/// replaces it everywhere.
async fn owed_doses_follow_the_person_and_corrections_replace(backend: &dyn Analytics) {
    let [a, b, ..] = &SITES;
    let t = NOW - Duration::days(5);
    let first = row(1, 1, "COMIRNATY", 2, 1, a, ("01", "001"), None, t);
    backend
        .apply(&[Event::Dose(first.clone())])
        .await
        .expect("apply");
    let owed = |v: Vec<analytics::SiteActivity>| -> Vec<(String, u64, u64)> {
        v.into_iter()
            .filter(|s| s.owed_doses > 0 || s.lapsed_doses > 0)
            .map(|s| (s.site_id, s.owed_doses, s.lapsed_doses))
            .collect()
    };
    let since = NOW - Duration::days(7);
    // Due 21 days after dose 1, 16 days from now: not in a 14-day horizon, in a 28-day one.
    let [fortnight, four_weeks] = windows();
    assert_eq!(
        owed(
            backend
                .site_activity("COMIRNATY", since, fortnight)
                .await
                .expect("q")
        ),
        vec![],
        "not due within a 14-day horizon"
    );
    assert_eq!(
        owed(
            backend
                .site_activity("COMIRNATY", since, four_weeks)
                .await
                .expect("q")
        ),
        vec![("hn-01".to_owned(), 1, 0)],
        "dose 1 of 2 leaves dose 2 owed where it was given, from its due day"
    );
    // Asked 120 days from now, the person is 104 days overdue: lapsed, not owed.
    let later = OwedWindow::new(NOW.date() + Duration::days(120), 14, 90, COMIRNATY_INTERVAL);
    assert_eq!(
        owed(
            backend
                .site_activity("COMIRNATY", since, later)
                .await
                .expect("q")
        ),
        vec![("hn-01".to_owned(), 0, 1)],
        "more than 90 days overdue is lapsed"
    );
    let second = row(
        2,
        1,
        "COMIRNATY",
        2,
        2,
        b,
        ("01", "001"),
        Some(("hn-01", "COMIRNATY", t)),
        t + Duration::days(3),
    );
    backend
        .apply(&[Event::Dose(second.clone())])
        .await
        .expect("apply");
    for window in [fortnight, four_weeks, later] {
        assert!(
            owed(
                backend
                    .site_activity("COMIRNATY", since, window)
                    .await
                    .expect("q")
            )
            .is_empty(),
            "dose 2 at another site settles it"
        );
    }
    // The first dose was really given at hn-03 in another district: corrected.
    let mut moved = row(1, 1, "COMIRNATY", 2, 1, &SITES[2], ("01", "001"), None, t);
    moved.version = first.version + 1_000;
    backend
        .apply(&[Event::DoseCorrected {
            previous: Box::new(first.clone()),
            corrected: Box::new(moved.clone()),
        }])
        .await
        .expect("correct");
    // Replaying the stale original changes nothing.
    backend
        .apply(&[Event::Dose(first.clone())])
        .await
        .expect("stale replay");
    let activity: BTreeMap<String, u64> = backend
        .site_activity("COMIRNATY", since, four_weeks)
        .await
        .expect("q")
        .into_iter()
        .filter(|s| s.doses_in_window > 0)
        .map(|s| (s.site_id, s.doses_in_window))
        .collect();
    assert_eq!(
        activity,
        BTreeMap::from([("hn-02".to_owned(), 1), ("hn-03".to_owned(), 1)]),
        "the corrected dose counts at its new site only"
    );
    assert_eq!(backend.dose_count().await.expect("count"), 2);
}

#[tokio::test]
async fn embedded_owed_doses_and_corrections() {
    let (_dir, backend) = embedded();
    owed_doses_follow_the_person_and_corrections_replace(&backend).await;
}

#[tokio::test]
async fn clickhouse_owed_doses_and_corrections() {
    let Some(backend) = clickhouse().await else {
        return;
    };
    owed_doses_follow_the_person_and_corrections_replace(&backend).await;
}

/// (site, owed, lapsed) of `product` for `window`, sites with neither left out.
async fn owed_in(
    backend: &dyn Analytics,
    product: &str,
    window: OwedWindow,
) -> Vec<(String, u64, u64)> {
    backend
        .site_activity(product, NOW - Duration::days(7), window)
        .await
        .expect("site_activity")
        .into_iter()
        .filter(|s| s.owed_doses > 0 || s.lapsed_doses > 0)
        .map(|s| (s.site_id, s.owed_doses, s.lapsed_doses))
        .collect()
}

fn owed_at(rows: &[(&str, u64, u64)]) -> Vec<(String, u64, u64)> {
    rows.iter()
        .map(|(site, owed, lapsed)| ((*site).to_owned(), *owed, *lapsed))
        .collect()
}

/// The ministry revises VAXZEVRIA's interval from 28 to 84 days between people's first and
/// second doses; one first dose is then corrected. Each owed dose stays where its first dose
/// put it, falls due by the interval as it is now, and the second dose settles exactly it.
///
/// By hand, asked on 2026-11-20 with a 14-day horizon (due by 2026-12-03) and 60 days' grace
/// (lapsed when due before 2026-09-21):
/// - P201, dose 1 at hn-01 on 2026-08-01: due 08-29 at 28 days (lapsed), 10-24 at 84 (owed).
/// - P203, dose 1 at hn-01 on 2026-08-03: due 08-31 at 28 (lapsed), 10-26 at 84 (owed).
/// - P201's dose 2 at hn-02 on 2026-10-26, two days after its revised due day, settles P201.
/// - P203's dose 1 corrected to hn-03 on 2026-08-04: due 09-01 at 28 (lapsed), 10-27 at 84
///   (owed); asked on 2027-06-01 (lapsed before 2027-04-02) it is lapsed at hn-03.
/// - P203's dose 2 at hn-01 on 2026-10-28 settles it; then both of P203's doses corrected
///   back (dose 1 at hn-01 on 08-03, so dose 2 now follows hn-01's 08-03): still nothing owed.
async fn owed_doses_keep_their_day_when_the_interval_changes(backend: &dyn Analytics) {
    let [hn01, hn02, hn03, ..] = &SITES;
    let home = ("01", "001");
    let product = "VAXZEVRIA";
    let at_28 = OwedWindow::new(date!(2026 - 11 - 20), 14, 60, 28);
    let at_84 = OwedWindow::new(date!(2026 - 11 - 20), 14, 60, 84);
    let next_june = OwedWindow::new(date!(2027 - 06 - 01), 14, 60, 84);
    let label = backend.backend_name();

    let p201_1 = row(
        201,
        201,
        product,
        2,
        1,
        hn01,
        home,
        None,
        datetime!(2026-08-01 09:00 UTC),
    );
    let p203_1 = row(
        203,
        203,
        product,
        2,
        1,
        hn01,
        home,
        None,
        datetime!(2026-08-03 09:00 UTC),
    );
    backend
        .apply(&[Event::Dose(p201_1.clone()), Event::Dose(p203_1.clone())])
        .await
        .expect("apply");
    assert_eq!(
        owed_in(backend, product, at_28).await,
        owed_at(&[("hn-01", 0, 2)]),
        "{label}: at 28 days both were due in August: lapsed"
    );
    assert_eq!(
        owed_in(backend, product, at_84).await,
        owed_at(&[("hn-01", 2, 0)]),
        "{label}: at 84 days both fall due in late October: owed"
    );

    let p201_2 = row(
        202,
        201,
        product,
        2,
        2,
        hn02,
        home,
        Some(("hn-01", product, p201_1.administered_at)),
        datetime!(2026-10-26 10:00 UTC),
    );
    let mut p203_1_moved = row(
        203,
        203,
        product,
        2,
        1,
        hn03,
        home,
        None,
        datetime!(2026-08-04 09:00 UTC),
    );
    p203_1_moved.recorded_at = p203_1.recorded_at;
    p203_1_moved.version = nanos(NOW);
    backend
        .apply(&[
            Event::Dose(p201_2.clone()),
            correction(&p203_1, &p203_1_moved),
        ])
        .await
        .expect("apply");
    assert_eq!(
        owed_in(backend, product, at_84).await,
        owed_at(&[("hn-03", 1, 0)]),
        "{label}: P201 settled; P203 owed where the correction put dose 1"
    );
    assert_eq!(
        owed_in(backend, product, at_28).await,
        owed_at(&[("hn-03", 0, 1)]),
        "{label}: the correction moved P203's lapsed dose too"
    );
    assert_eq!(
        owed_in(backend, product, next_june).await,
        owed_at(&[("hn-03", 0, 1)]),
        "{label}: next June only P203 has lapsed; P201's settled dose never does"
    );

    let p203_2 = row(
        204,
        203,
        product,
        2,
        2,
        hn01,
        home,
        Some(("hn-03", product, p203_1_moved.administered_at)),
        datetime!(2026-10-28 10:00 UTC),
    );
    backend
        .apply(&[Event::Dose(p203_2.clone())])
        .await
        .expect("apply");
    let mut p203_1_back = p203_1.clone();
    p203_1_back.version = nanos(NOW) + 1_000;
    let mut p203_2_after = row(
        204,
        203,
        product,
        2,
        2,
        hn01,
        home,
        Some(("hn-01", product, p203_1.administered_at)),
        p203_2.administered_at,
    );
    p203_2_after.version = nanos(NOW) + 1_000;
    backend
        .apply(&[
            correction(&p203_1_moved, &p203_1_back),
            correction(&p203_2, &p203_2_after),
        ])
        .await
        .expect("apply");
    for window in [at_28, at_84, next_june] {
        assert_eq!(
            owed_in(backend, product, window).await,
            vec![],
            "{label}: every owed dose settled, {window:?}"
        );
    }
    assert_eq!(backend.dose_count().await.expect("count"), 4, "{label}");
}

#[tokio::test]
async fn embedded_owed_doses_keep_their_day_when_the_interval_changes() {
    let (_dir, backend) = embedded();
    owed_doses_keep_their_day_when_the_interval_changes(&backend).await;
}

#[tokio::test]
async fn clickhouse_owed_doses_keep_their_day_when_the_interval_changes() {
    let Some(backend) = clickhouse().await else {
        return;
    };
    owed_doses_keep_their_day_when_the_interval_changes(&backend).await;
}

/// A row as the previous release wrote it into the outbox: without the previous dose's day.
fn legacy(mut row: DoseRow) -> DoseRow {
    row.previous_day = None;
    row
}

/// Second doses from the previous release's outbox, shipped after the upgrade, none given on its
/// due day, settle the first dose where it was counted: found among the stored doses, or in the
/// same batch; one whose first dose was never shipped settles nothing.
///
/// By hand (COMIRNATY, 21 days), asked on 2026-11-20 with a 14-day horizon and 90 days' grace
/// (due by 12-03, lapsed before 08-22), 27 days' grace (lapsed before 10-24), and on 2027-03-01
/// with 90 days' grace (lapsed before 2026-12-01):
/// - P301, dose 1 at hn-01 on 10-01 (shipped before; due 10-22), legacy dose 2 at hn-02 on
///   10-25: settled.
/// - P302, legacy dose 1 at hn-01 on 10-02 (due 10-23) and legacy dose 2 at hn-02 on 10-30 in
///   the same batch: settled.
/// - P303, legacy dose 2 at hn-02 on 10-27 after a dose 1 at hn-01 that never reached
///   analytics: nothing owed was counted, nothing is taken away.
/// - P304, dose 1 at hn-01 on 10-03 (due 10-24), no dose 2: owed in both November windows (10-24
///   is not before 10-24), lapsed by next March.
///
/// Settling P301 or P302 under its own day (10-25, 10-30) instead would leave hn-01 with a
/// lapsed dose under the 27-day grace (their first doses' due days, 10-22 and 10-23, are
/// before 10-24 while 10-25 and 10-30 are not).
async fn legacy_second_doses_settle_where_the_first_was_counted(backend: &dyn Analytics) {
    let [hn01, hn02, ..] = &SITES;
    let home = ("01", "001");
    let product = "COMIRNATY";
    let label = backend.backend_name();
    let dose1 = |person: u32, day: u8| {
        let at = datetime!(2026-10-01 09:00 UTC) + Duration::days(i64::from(day) - 1);
        row(
            u128::from(person) * 10 + 1,
            person,
            product,
            2,
            1,
            hn01,
            home,
            None,
            at,
        )
    };
    let dose2 = |first: &DoseRow, at: OffsetDateTime| {
        let person: u32 = first.person_code[1..].parse().expect("number");
        legacy(row(
            u128::from(person) * 10 + 2,
            person,
            product,
            2,
            2,
            hn02,
            home,
            Some(("hn-01", product, first.administered_at)),
            at,
        ))
    };
    let p301_1 = dose1(301, 1);
    let p303_1 = dose1(303, 1);
    let p304_1 = dose1(304, 3);
    backend
        .apply(&[Event::Dose(p301_1.clone()), Event::Dose(p304_1.clone())])
        .await
        .expect("shipped before the upgrade");
    let p302_1 = legacy(dose1(302, 2));
    backend
        .apply(&[
            Event::Dose(dose2(&p301_1, datetime!(2026-10-25 09:00 UTC))),
            Event::Dose(p302_1.clone()),
            Event::Dose(dose2(&p302_1, datetime!(2026-10-30 09:00 UTC))),
            Event::Dose(dose2(&p303_1, datetime!(2026-10-27 09:00 UTC))),
        ])
        .await
        .expect("the outbox's legacy entries");
    let today = date!(2026 - 11 - 20);
    for (window, want) in [
        (OwedWindow::new(today, 14, 90, 21), ("hn-01", 1, 0)),
        (OwedWindow::new(today, 14, 27, 21), ("hn-01", 1, 0)),
        (
            OwedWindow::new(date!(2027 - 03 - 01), 14, 90, 21),
            ("hn-01", 0, 1),
        ),
    ] {
        assert_eq!(
            owed_in(backend, product, window).await,
            owed_at(&[want]),
            "{label}: only P304 is owed, {window:?}"
        );
    }
    assert_eq!(backend.dose_count().await.expect("count"), 6, "{label}");
}

#[tokio::test]
async fn embedded_legacy_second_doses_settle_where_the_first_was_counted() {
    let (_dir, backend) = embedded();
    legacy_second_doses_settle_where_the_first_was_counted(&backend).await;
}

#[tokio::test]
async fn clickhouse_legacy_second_doses_settle_where_the_first_was_counted() {
    let Some(backend) = clickhouse().await else {
        return;
    };
    legacy_second_doses_settle_where_the_first_was_counted(&backend).await;
}

/// A correction as `ingest/src/feed.rs` makes it: `previous` is the dose as it stood, under its
/// first commit's version (not the version of the last correction).
fn correction(before: &DoseRow, after: &DoseRow) -> Event {
    Event::DoseCorrected {
        previous: Box::new(DoseRow {
            version: nanos(before.recorded_at),
            ..before.clone()
        }),
        corrected: Box::new(after.clone()),
    }
}

/// Two people on top of the campaign, corrected over and over. Person A's first dose goes to
/// another province and out of the uptake window, then becomes a one-dose product at a third
/// site, then returns exactly to where it was first placed; their second dose follows each time
/// (its `previous_site` changes, as `feed.rs` reports). Person B's home district is corrected
/// away and back. Returns the stages: the events that lead to it and the rows as they stand.
fn corrected_campaign() -> Vec<(Vec<Event>, Vec<DoseRow>)> {
    // A second dose settles under the day of the first as it stands.
    fn settles(second: &mut DoseRow, first: &DoseRow) {
        second.previous_day = Some(utc_day(first.administered_at));
    }
    let base = campaign();
    let t = NOW - Duration::days(4) - Duration::minutes(20);
    let [s1, s2, s3, s4, s5] = &SITES;
    let first = row(
        100_001,
        9_001,
        "COMIRNATY",
        2,
        1,
        s1,
        ("01", "001"),
        None,
        t,
    );
    let second = row(
        100_002,
        9_001,
        "COMIRNATY",
        2,
        2,
        s2,
        ("01", "001"),
        Some((s1.id, "COMIRNATY", t)),
        t + Duration::days(3),
    );
    let other = row(
        100_003,
        9_002,
        "COMIRNATY",
        2,
        1,
        s5,
        ("79", "761"),
        None,
        t,
    );
    // Each correction is a new version of the rows it changes, later than any commit.
    let version = |step: u64| nanos(NOW) + step * 1_000_000;
    let moved = |r: &DoseRow, step: u64, change: &dyn Fn(&mut DoseRow)| {
        let mut r = r.clone();
        change(&mut r);
        r.version = version(step);
        r
    };

    let place = |r: &mut DoseRow, site: &SiteSpec| {
        r.site_id = site.id.into();
        r.site_province = site.province.into();
        r.site_district = site.district.into();
    };
    let previous = |r: &mut DoseRow, site: &str, product: &str| {
        r.previous_site = site.into();
        r.previous_product = product.into();
    };
    // 1: to hcm-01, eight days earlier (out of the window); B moves house.
    let first_1 = moved(&first, 1, &|r| {
        place(r, s4);
        r.administered_at = t - Duration::days(8);
    });
    let mut second_1 = moved(&second, 1, &|r| previous(r, s4.id, "COMIRNATY"));
    settles(&mut second_1, &first_1);
    let other_1 = moved(&other, 1, &|r| {
        r.home_province = "01".into();
        r.home_district = "002".into();
    });
    // 2: a one-dose JANSSEN at hn-03, two hours later: nothing owed any more.
    let first_2 = moved(&first_1, 2, &|r| {
        place(r, s3);
        r.product = "JANSSEN".into();
        r.series_doses = 1;
        r.administered_at = t + Duration::hours(2);
    });
    let mut second_2 = moved(&second_1, 2, &|r| previous(r, s3.id, "JANSSEN"));
    settles(&mut second_2, &first_2);
    // 3: back exactly where each was first placed, under new versions.
    let first_3 = moved(&first, 3, &|_| {});
    let second_3 = moved(&second, 3, &|_| {});
    let other_3 = moved(&other, 3, &|_| {});
    let with = |extra: &[&DoseRow]| -> Vec<DoseRow> {
        base.iter()
            .cloned()
            .chain(extra.iter().map(|r| (*r).clone()))
            .collect()
    };
    vec![
        (
            events(&with(&[&first, &second, &other])),
            with(&[&first, &second, &other]),
        ),
        (
            vec![
                correction(&first, &first_1),
                correction(&second, &second_1),
                correction(&other, &other_1),
            ],
            with(&[&first_1, &second_1, &other_1]),
        ),
        (
            vec![
                correction(&first_1, &first_2),
                correction(&second_1, &second_2),
            ],
            with(&[&first_2, &second_2, &other_1]),
        ),
        (
            vec![
                correction(&first_2, &first_3),
                correction(&second_2, &second_3),
                correction(&other_1, &other_3),
            ],
            with(&[&first_3, &second_3, &other_3]),
        ),
    ]
}

/// Doses per site and hour since `since`, as `uptake` at site level and hourly granularity
/// must give them.
fn expected_uptake(
    rows: &[DoseRow],
    since: OffsetDateTime,
) -> BTreeMap<(String, OffsetDateTime), u64> {
    let mut points = BTreeMap::new();
    for r in rows.iter().filter(|r| r.administered_at >= since) {
        *points
            .entry((r.site_id.clone(), analytics::hour_floor(r.administered_at)))
            .or_default() += 1;
    }
    points
}

async fn check_uptake(backend: &dyn Analytics, rows: &[DoseRow], label: &str) {
    let points: BTreeMap<(String, OffsetDateTime), u64> = backend
        .uptake(&UptakeQuery {
            level: AreaLevel::Site,
            granularity: Granularity::Hour,
            since: NOW - Duration::days(30),
            until: NOW + Duration::days(1),
            product: None,
            province: None,
        })
        .await
        .expect("uptake")
        .into_iter()
        .map(|p| ((p.area, p.bucket), p.doses))
        .collect();
    assert_eq!(
        points,
        expected_uptake(rows, analytics::hour_floor(NOW - Duration::days(30))),
        "{label}: uptake per site and hour"
    );
}

/// Each stage applied in order matches its rows; then every event of every stage, three times
/// over, shuffled, changes nothing.
async fn corrections_any_number_of_times_replayed_in_any_order(backend: &dyn Analytics) {
    let stages = corrected_campaign();
    for (i, (stage, rows)) in stages.iter().enumerate() {
        for chunk in stage.chunks(97) {
            backend.apply(chunk).await.expect("apply");
        }
        let label = format!("{}, stage {i}", backend.backend_name());
        check_against(backend, rows, &label).await;
        check_uptake(backend, rows, &label).await;
    }
    let mut replay: Vec<Event> = stages
        .iter()
        .flat_map(|(stage, _)| stage.iter().cloned())
        .collect();
    replay = [replay.clone(), replay.clone(), replay].concat();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..replay.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        replay.swap(i, (state % (i as u64 + 1)) as usize);
    }
    for chunk in replay.chunks(53) {
        backend.apply(chunk).await.expect("replay");
    }
    let (_, rows) = stages.last().expect("stages");
    let label = format!("{}, after shuffled replays", backend.backend_name());
    check_against(backend, rows, &label).await;
    check_uptake(backend, rows, &label).await;
}

#[tokio::test]
async fn embedded_corrections_any_number_of_times_replayed_in_any_order() {
    let (_dir, backend) = embedded();
    corrections_any_number_of_times_replayed_in_any_order(&backend).await;
}

#[tokio::test]
async fn clickhouse_corrections_any_number_of_times_replayed_in_any_order() {
    let Some(backend) = clickhouse().await else {
        return;
    };
    corrections_any_number_of_times_replayed_in_any_order(&backend).await;
    assert_eq!(
        backend.latest_dose_count().await.expect("count"),
        backend.dose_count().await.expect("count"),
        "the rollups agree with the row history read FINAL"
    );
}

fn store_sites() -> Vec<Site> {
    SITES
        .iter()
        .map(|s| Site {
            site_id: SiteId::new(s.id).expect("valid"),
            name: format!("Site {}", s.id),
            area: Area {
                province: AreaCode::new(s.province).expect("valid"),
                district: AreaCode::new(s.district).expect("valid"),
                commune: None,
            },
            daily_capacity: 40,
        })
        .collect()
}

#[tokio::test]
async fn clickhouse_and_embedded_give_the_same_answers_and_the_same_plan() {
    let Some(clickhouse) = clickhouse().await else {
        return;
    };
    let (_dir, embedded) = embedded();
    let rows = campaign();
    let backends: [(&str, Arc<dyn Analytics>); 2] = [
        ("clickhouse", Arc::new(clickhouse)),
        ("embedded", Arc::new(embedded)),
    ];
    // Lots: one per site, and hn-02's raised from 600 to 700 a day later.
    let lot = |site: &str, quantity: u64, at: OffsetDateTime| {
        Event::Lot(analytics::LotAllocation {
            site_id: site.into(),
            product: "COMIRNATY".into(),
            lot_number: format!("LOT-{site}"),
            quantity,
            at,
        })
    };
    let mut lots: Vec<Event> = SITES
        .iter()
        .enumerate()
        .map(|(i, s)| lot(s.id, 500 + 100 * i as u64, NOW - Duration::days(30)))
        .collect();
    lots.push(lot("hn-02", 700, NOW - Duration::days(29)));
    for (_, backend) in &backends {
        load(backend.as_ref(), &rows).await;
        backend.apply(&lots).await.expect("lots");
        backend.apply(&lots).await.expect("lots replayed");
    }
    let sites = store_sites();
    let stock: HashMap<SiteId, u64> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.site_id.clone(), 30 * i as u64))
        .collect();
    let registrations: HashMap<District, u64> = SITES
        .iter()
        .map(|s| {
            (
                District {
                    province: AreaCode::new(s.province).expect("valid"),
                    district: AreaCode::new(s.district).expect("valid"),
                },
                400,
            )
        })
        .collect();
    let mut answers = Vec::new();
    for (name, backend) in &backends {
        let mut answer = Vec::new();
        let mut seen = Seen::default();
        for level in [AreaLevel::Province, AreaLevel::District, AreaLevel::Site] {
            for granularity in [Granularity::Day, Granularity::Hour] {
                for since in [
                    NOW - Duration::days(10),
                    NOW.replace_time(time::Time::MIDNIGHT) - Duration::days(5),
                ] {
                    let points = backend
                        .uptake(&UptakeQuery {
                            level,
                            granularity,
                            since,
                            until: NOW.replace_time(time::Time::MIDNIGHT) + Duration::days(1),
                            product: None,
                            province: None,
                        })
                        .await
                        .expect("uptake");
                    seen.uptake |= points.iter().any(|p| p.doses > 0);
                    answer.push(format!("{level:?} {granularity:?} {since}: {points:?}"));
                }
            }
        }
        for level in [Level::Site, Level::District, Level::Province] {
            for (quantity, horizon_days) in [(0, 14), (150, 14), (600, 14), (5_000, 14), (600, 28)]
            {
                let plan = planner::propose(
                    backend.as_ref(),
                    &PlanRequest {
                        product: "COMIRNATY".into(),
                        shipment_doses: quantity,
                        unit_doses: 6,
                        window_days: 7,
                        horizon_days,
                        level,
                        owed_lapse_days: 90,
                    },
                    Figures {
                        sites: &sites,
                        stock_on_hand: &stock,
                        registrations_by_district: &registrations,
                        min_interval_days: COMIRNATY_INTERVAL,
                        now: NOW,
                    },
                )
                .await
                .expect("plan");
                assert!(
                    plan.allocated_doses <= quantity,
                    "{name}: never more than the shipment"
                );
                seen.allocated |= plan.allocated_doses > 0;
                for line in &plan.lines {
                    seen.owed |= line.owed_doses > 0;
                    seen.lapsed |= line.lapsed_doses > 0;
                    seen.received |= line.received_doses > 0;
                }
                if level == Level::Site {
                    let hn02 = plan
                        .lines
                        .iter()
                        .find(|l| l.area == "hn-02")
                        .expect("hn-02");
                    assert_eq!(hn02.received_doses, 700, "{name}: received, then adjusted");
                }
                answer.push(serde_json::to_string(&plan).expect("json"));
            }
        }
        assert!(
            seen.allocated && seen.owed && seen.lapsed && seen.received && seen.uptake,
            "{name}: the answers must have something to compare: {seen:?}"
        );
        answers.push(answer);
    }
    for (ch, emb) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(ch, emb, "ClickHouse and embedded differ");
    }
}

/// What the answers compared above hold, so that agreeing on nothing cannot pass.
#[derive(Debug, Default)]
struct Seen {
    uptake: bool,
    allocated: bool,
    owed: bool,
    lapsed: bool,
    received: bool,
}
