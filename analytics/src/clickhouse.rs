//! Analytics in ClickHouse, for a national campaign.
//!
//! Tables (created by [`MIGRATIONS`] at start-up, idempotently; the SQL runs on ClickHouse 18.16,
//! Debian's package, and on current releases — hence no `DateTime64`, `LowCardinality` or
//! `insert_deduplication_token`):
//! - `doses`: one row per dose version, `ReplacingMergeTree(version)`, partitioned by the month
//!   the dose was first recorded (stable across corrections, so every version of a dose lands
//!   in the same partition) and ordered by `(site_province, site_district, site_id, dose_id)`
//!   for per-area and per-site reads: the history, for ad-hoc questions (read it `FINAL`, with
//!   `deleted = 0` outside the subquery). A replay inserts an identical row that merges away. A
//!   correction that moves a dose to another site inserts a tombstone (`deleted = 1`) under the
//!   old key with the new version, then the new row.
//! - `uptake_site_hour`, `uptake_area_day` (created by version 1, dropped by version 3 with
//!   their views): `uniqExact(dose_id)` rollups that could not take a corrected dose's old
//!   placement out, replaced by the pair rollups of version 2.
//! - `dose_retractions` (version 2): one row per correction, the placement it ended — the
//!   `previous` row as it stood (the doses table's columns, `deleted = 1`) under the
//!   *correction's* version.
//! - `dose_hours` (product, hour, site, dose number), `owed_due` (version 4: product, site, the
//!   day the next dose falls due, whether the dose owes the next one there or settles one owed
//!   there) and `started_districts` (home district, first doses): `AggregatingMergeTree` rollups
//!   of `uniqExactState(dose_id, version)`, kept by materialized views on `doses` (placements,
//!   `retracted = 0`) and on `dose_retractions` (`retracted = 1`). `owed_sites` (version 2, the
//!   same without the due day) was replaced by `owed_due` and dropped by version 4.
//! - `doses.next_due`, `doses.previous_due` (version 4, also on `dose_retractions`): the due
//!   day a dose leaves owed and the one it settles (see [`DoseRow`]). Rows from before version 4
//!   got theirs in the migration's backfill of `owed_due`, from each product's minimum interval
//!   ([`Intervals`]: the server passes its catalogue) and, for the settled day, the person's
//!   previous dose.
//! - `lot_movements` (version 5): each lot received once and each later change of its
//!   allocation as an adjustment by the difference, `ReplacingMergeTree` by movement id (see
//!   [`LotAllocation`]). `stock_movements` (version 1) hashed the quantity into the id, so a
//!   changed lot was "received" twice; version 5 drops it.
//!
//! ## Why the rollups are exact
//! A placement of a dose starts at a version (its first commit, or the correction that put it
//! there) and is ended by the next correction. A dose row puts the pair `(dose_id, version)`
//! under the row's keys; a correction at version `v` puts `(dose_id, v)` under the corrected
//! row's keys and, through `dose_retractions`, under the keys of the row it replaces. So under
//! every key, distinct placed pairs − distinct retracted pairs = placements started there −
//! placements ended there = the doses that are there now. Both are sets, so a replay of any
//! row or correction, in any order, changes nothing; a dose moved A → B → A counts once at A
//! (two placements started there, `v0` and `v2`, one ended, `v1`). A pair has one set of keys,
//! so the sets of different keys are disjoint and counts add up across keys. This relies on
//! each correction naming, as `previous`, the dose as it stood (`ingest/src/feed.rs` does;
//! its version is not used). The exact reads never touch `doses`, nor `FINAL`.
//!
//! Inserts are RowBinary over HTTP with LZ4 (the `clickhouse` crate), without schema validation
//! (`with_validation(false)`: 18.16 lacks what the validation queries).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ::clickhouse::{Client, Row, sql::Identifier};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use store::{AreaCode, District};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::row::{DoseRow, Event, LotAllocation, LotLedger, StockMovement, nanos};
use crate::{
    Analytics, AreaLevel, Granularity, Intervals, OwedWindow, Result, SiteActivity, UptakePoint,
    UptakeQuery, hour_floor,
};

/// Where the analytics database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Upper bound on one insert or query.
    pub timeout: Duration,
}

impl ClickHouseConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: "vaxcamp".into(),
            user: None,
            password: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The schema, in order. Each statement is idempotent; the highest applied version is recorded
/// in `schema_migrations`, so a later release adds statements under a new version.
///
/// Two conventions, applied by the migration runner:
/// - `ALTER TABLE t ADD COLUMN c ...` runs only when `t` has no column `c` (ClickHouse 18.16
///   has no `ADD COLUMN IF NOT EXISTS`), so a migration interrupted after it can run again.
/// - `{min_interval_days}` is replaced by an expression giving the minimum interval after a
///   dose of `product`, in days, from the [`Intervals`] the backend was given.
pub const MIGRATIONS: &[(u32, &str, &[&str])] = &[
    (
        1,
        "doses, hourly and daily rollups, stock movements",
        &[
            "CREATE TABLE IF NOT EXISTS doses (
            dose_id UUID,
            person_code String,
            product String,
            lot_number String,
            dose_number UInt8,
            series_doses UInt8,
            site_id String,
            site_province String,
            site_district String,
            home_province String,
            home_district String,
            previous_site String,
            previous_product String,
            administered_at DateTime('UTC'),
            recorded_at DateTime('UTC'),
            version UInt64,
            deleted UInt8
        ) ENGINE = ReplacingMergeTree(version)
        PARTITION BY toYYYYMM(recorded_at)
        ORDER BY (site_province, site_district, site_id, dose_id)",
            "CREATE TABLE IF NOT EXISTS uptake_site_hour (
            site_province String,
            site_district String,
            site_id String,
            product String,
            dose_number UInt8,
            hour DateTime('UTC'),
            doses AggregateFunction(uniqExact, UUID)
        ) ENGINE = AggregatingMergeTree()
        PARTITION BY toYYYYMM(hour)
        ORDER BY (product, hour, site_province, site_district, site_id, dose_number)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS uptake_site_hour_mv TO uptake_site_hour AS
        SELECT site_province, site_district, site_id, product, dose_number,
               toStartOfHour(administered_at) AS hour, uniqExactState(dose_id) AS doses
        FROM doses WHERE deleted = 0
        GROUP BY site_province, site_district, site_id, product, dose_number, hour",
            "CREATE TABLE IF NOT EXISTS uptake_area_day (
            site_province String,
            site_district String,
            product String,
            dose_number UInt8,
            day Date,
            doses AggregateFunction(uniqExact, UUID)
        ) ENGINE = AggregatingMergeTree()
        PARTITION BY toYYYYMM(day)
        ORDER BY (product, day, site_province, site_district, dose_number)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS uptake_area_day_mv TO uptake_area_day AS
        SELECT site_province, site_district, product, dose_number,
               toDate(administered_at) AS day, uniqExactState(dose_id) AS doses
        FROM doses WHERE deleted = 0
        GROUP BY site_province, site_district, product, dose_number, day",
            "CREATE TABLE IF NOT EXISTS stock_movements (
            movement_id UUID,
            site_id String,
            product String,
            lot_number String,
            quantity Int64,
            reason String,
            at DateTime('UTC')
        ) ENGINE = ReplacingMergeTree()
        ORDER BY (site_id, product, movement_id)",
        ],
    ),
    (
        2,
        "dose retractions and correction-aware rollups of placements",
        &[
            // The placement a correction ended: the row as it stood, under the correction's
            // version. Kept (not a Null table) so that a later rollup can be backfilled.
            "CREATE TABLE IF NOT EXISTS dose_retractions (
            dose_id UUID,
            person_code String,
            product String,
            lot_number String,
            dose_number UInt8,
            series_doses UInt8,
            site_id String,
            site_province String,
            site_district String,
            home_province String,
            home_district String,
            previous_site String,
            previous_product String,
            administered_at DateTime('UTC'),
            recorded_at DateTime('UTC'),
            version UInt64,
            deleted UInt8
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(recorded_at)
        ORDER BY (dose_id, version)",
            "CREATE TABLE IF NOT EXISTS dose_hours (
            site_province String,
            site_district String,
            site_id String,
            product String,
            dose_number UInt8,
            hour DateTime('UTC'),
            retracted UInt8,
            doses AggregateFunction(uniqExact, UUID, UInt64)
        ) ENGINE = AggregatingMergeTree()
        PARTITION BY toYYYYMM(hour)
        ORDER BY (product, hour, site_province, site_district, site_id, dose_number, retracted)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS dose_hours_placed_mv TO dose_hours AS
        SELECT site_province, site_district, site_id, product, dose_number,
               toStartOfHour(administered_at) AS hour, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0
        GROUP BY site_province, site_district, site_id, product, dose_number, hour",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS dose_hours_retracted_mv TO dose_hours AS
        SELECT site_province, site_district, site_id, product, dose_number,
               toStartOfHour(administered_at) AS hour, toUInt8(1) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM dose_retractions
        GROUP BY site_province, site_district, site_id, product, dose_number, hour",
            "CREATE TABLE IF NOT EXISTS owed_sites (
            product String,
            site_id String,
            settles UInt8,
            retracted UInt8,
            doses AggregateFunction(uniqExact, UUID, UInt64)
        ) ENGINE = AggregatingMergeTree()
        ORDER BY (product, site_id, settles, retracted)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_sites_owing_placed_mv TO owed_sites AS
        SELECT product, site_id, toUInt8(0) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0 AND dose_number < series_doses
        GROUP BY product, site_id",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_sites_settling_placed_mv TO owed_sites AS
        SELECT previous_product AS product, previous_site AS site_id, toUInt8(1) AS settles,
               toUInt8(0) AS retracted, uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0 AND previous_site != ''
        GROUP BY previous_product, previous_site",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_sites_owing_retracted_mv TO owed_sites AS
        SELECT product, site_id, toUInt8(0) AS settles, toUInt8(1) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM dose_retractions WHERE dose_number < series_doses
        GROUP BY product, site_id",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_sites_settling_retracted_mv TO owed_sites AS
        SELECT previous_product AS product, previous_site AS site_id, toUInt8(1) AS settles,
               toUInt8(1) AS retracted, uniqExactState(dose_id, version) AS doses
        FROM dose_retractions WHERE previous_site != ''
        GROUP BY previous_product, previous_site",
            "CREATE TABLE IF NOT EXISTS started_districts (
            home_province String,
            home_district String,
            retracted UInt8,
            doses AggregateFunction(uniqExact, UUID, UInt64)
        ) ENGINE = AggregatingMergeTree()
        ORDER BY (home_province, home_district, retracted)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS started_districts_placed_mv TO started_districts AS
        SELECT home_province, home_district, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0 AND dose_number = 1
        GROUP BY home_province, home_district",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS started_districts_retracted_mv TO started_districts AS
        SELECT home_province, home_district, toUInt8(1) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM dose_retractions WHERE dose_number = 1
        GROUP BY home_province, home_district",
            // Backfill from the doses recorded under version 1: each dose's latest placement
            // (read `FINAL`, once). Retractions are not needed for those: the history before
            // now is already collapsed. Idempotent (the same pairs again change nothing).
            // Caveat: a correction shipped by another process between the views' creation and
            // this read can leave its old placement uncounted-yet-retracted; migrate while no
            // other process ships, as a release does.
            "INSERT INTO dose_hours
        SELECT site_province, site_district, site_id, product, dose_number,
               toStartOfHour(administered_at) AS hour, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM (SELECT * FROM doses FINAL) WHERE deleted = 0
        GROUP BY site_province, site_district, site_id, product, dose_number, hour",
            "INSERT INTO owed_sites
        SELECT product, site_id, toUInt8(0) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM (SELECT * FROM doses FINAL) WHERE deleted = 0 AND dose_number < series_doses
        GROUP BY product, site_id",
            "INSERT INTO owed_sites
        SELECT previous_product AS product, previous_site AS site_id, toUInt8(1) AS settles,
               toUInt8(0) AS retracted, uniqExactState(dose_id, version) AS doses
        FROM (SELECT * FROM doses FINAL) WHERE deleted = 0 AND previous_site != ''
        GROUP BY previous_product, previous_site",
            "INSERT INTO started_districts
        SELECT home_province, home_district, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM (SELECT * FROM doses FINAL) WHERE deleted = 0 AND dose_number = 1
        GROUP BY home_province, home_district",
        ],
    ),
    (
        3,
        "drop the version-1 uptake rollups, unread since version 2",
        // Views first, so no insert feeds a table being dropped. Each insert into `doses` fed
        // them for nothing.
        &[
            "DROP TABLE IF EXISTS uptake_site_hour_mv",
            "DROP TABLE IF EXISTS uptake_area_day_mv",
            "DROP TABLE IF EXISTS uptake_site_hour",
            "DROP TABLE IF EXISTS uptake_area_day",
        ],
    ),
    (
        4,
        "owed doses by the day they fall due",
        &[
            "ALTER TABLE doses ADD COLUMN next_due Date",
            "ALTER TABLE doses ADD COLUMN previous_due Date",
            "ALTER TABLE dose_retractions ADD COLUMN next_due Date",
            "ALTER TABLE dose_retractions ADD COLUMN previous_due Date",
            "CREATE TABLE IF NOT EXISTS owed_due (
            product String,
            site_id String,
            due Date,
            settles UInt8,
            retracted UInt8,
            doses AggregateFunction(uniqExact, UUID, UInt64)
        ) ENGINE = AggregatingMergeTree()
        ORDER BY (product, site_id, due, settles, retracted)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_due_owing_placed_mv TO owed_due AS
        SELECT product, site_id, next_due AS due, toUInt8(0) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0 AND dose_number < series_doses
        GROUP BY product, site_id, due",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_due_settling_placed_mv TO owed_due AS
        SELECT previous_product AS product, previous_site AS site_id, previous_due AS due,
               toUInt8(1) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0 AND previous_site != ''
        GROUP BY previous_product, previous_site, due",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_due_owing_retracted_mv TO owed_due AS
        SELECT product, site_id, next_due AS due, toUInt8(0) AS settles, toUInt8(1) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM dose_retractions WHERE dose_number < series_doses
        GROUP BY product, site_id, due",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_due_settling_retracted_mv TO owed_due AS
        SELECT previous_product AS product, previous_site AS site_id, previous_due AS due,
               toUInt8(1) AS settles, toUInt8(1) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM dose_retractions WHERE previous_site != ''
        GROUP BY previous_product, previous_site, due",
            // Backfill from the doses recorded before version 4, each at its latest placement
            // (read `FINAL`, once), as the views would have placed them: the owed day is the
            // dose's day plus its product's interval; the settled day is the previous dose's
            // (same person, the dose number before), found by a join. Rows already carrying
            // their days keep them. Idempotent; the caveat of version 2's backfill applies.
            // (No alias repeats a column name: current releases refuse cyclic aliases; and
            // every joined subquery has an alias: they require it, `joined_subquery_requires_alias`.)
            "INSERT INTO owed_due
        SELECT product, site_id, due, toUInt8(0) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM (SELECT product, site_id, dose_id, version,
                     if(next_due = toDate(0), toDate(administered_at) + {min_interval_days},
                        next_due) AS due
              FROM (SELECT * FROM doses FINAL)
              WHERE deleted = 0 AND dose_number < series_doses)
        GROUP BY product, site_id, due",
            "INSERT INTO owed_due
        SELECT previous_product AS product, previous_site AS site_id, due,
               toUInt8(1) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM (SELECT previous_product, previous_site, dose_id, version,
                     if(previous_due != toDate(0), previous_due,
                        if(earlier_due != toDate(0), earlier_due, toDate(administered_at))) AS due
              FROM (SELECT person_code, toUInt8(dose_number - 1) AS earlier_number,
                           previous_product, previous_site, previous_due, dose_id, version,
                           administered_at
                    FROM (SELECT * FROM doses FINAL)
                    WHERE deleted = 0 AND previous_site != '') AS later
              ANY LEFT JOIN
                   (SELECT person_code, dose_number AS earlier_number,
                           toDate(administered_at) + {min_interval_days} AS earlier_due
                    FROM (SELECT * FROM doses FINAL) WHERE deleted = 0) AS earlier
              USING (person_code, earlier_number))
        GROUP BY previous_product, previous_site, due",
            // The rollup `owed_due` replaces; views first, so no insert feeds a dropped table.
            "DROP TABLE IF EXISTS owed_sites_owing_placed_mv",
            "DROP TABLE IF EXISTS owed_sites_settling_placed_mv",
            "DROP TABLE IF EXISTS owed_sites_owing_retracted_mv",
            "DROP TABLE IF EXISTS owed_sites_settling_retracted_mv",
            "DROP TABLE IF EXISTS owed_sites",
        ],
    ),
    (
        5,
        "lot movements: each lot received once, later changes as adjustments",
        // Filled by the lot announcements the server makes for every lot at start-up (the
        // first announcement of a lot is its receipt), so nothing to backfill. The version-1
        // `stock_movements` it replaces is neither written nor read any more.
        &[
            "CREATE TABLE IF NOT EXISTS lot_movements (
            movement_id UUID,
            site_id String,
            product String,
            lot_number String,
            quantity Int64,
            reason String,
            at DateTime('UTC'),
            announced UInt64
        ) ENGINE = ReplacingMergeTree()
        ORDER BY (product, site_id, lot_number, movement_id)",
            "DROP TABLE IF EXISTS stock_movements",
        ],
    ),
];

/// For reads of `doses` at each dose's latest version (the migration's backfill,
/// [`ClickHouseAnalytics::latest_dose_count`]): `FINAL` in a subquery, filtered outside it,
/// with the optimisations that would filter before the merge turned off.
const EXACT: [(&str, &str); 2] = [
    ("optimize_move_to_prewhere", "0"),
    ("enable_optimize_predicate_expression", "0"),
];

#[derive(Debug, Row, Serialize)]
struct DoseRecord<'a> {
    #[serde(with = "::clickhouse::serde::uuid")]
    dose_id: Uuid,
    person_code: &'a str,
    product: &'a str,
    lot_number: &'a str,
    dose_number: u8,
    series_doses: u8,
    site_id: &'a str,
    site_province: &'a str,
    site_district: &'a str,
    home_province: &'a str,
    home_district: &'a str,
    previous_site: &'a str,
    previous_product: &'a str,
    #[serde(with = "::clickhouse::serde::time::datetime")]
    administered_at: OffsetDateTime,
    #[serde(with = "::clickhouse::serde::time::datetime")]
    recorded_at: OffsetDateTime,
    version: u64,
    deleted: u8,
    /// Days since 1970 (ClickHouse `Date`); 0 when the row owes nothing.
    next_due: u16,
    /// Days since 1970; 0 when the row settles nothing.
    previous_due: u16,
}

/// A day as ClickHouse's `Date`: days since 1970-01-01, within its range.
fn date_days(day: Option<time::Date>) -> u16 {
    day.map_or(0, |day| {
        let days = day.to_julian_day() - time::macros::date!(1970 - 01 - 01).to_julian_day();
        u16::try_from(days.max(0)).unwrap_or(u16::MAX)
    })
}

impl<'a> DoseRecord<'a> {
    fn new(row: &'a DoseRow, version: u64, deleted: bool) -> Self {
        Self {
            dose_id: row.dose_id,
            person_code: &row.person_code,
            product: &row.product,
            lot_number: &row.lot_number,
            dose_number: row.dose_number,
            series_doses: row.series_doses,
            site_id: &row.site_id,
            site_province: &row.site_province,
            site_district: &row.site_district,
            home_province: &row.home_province,
            home_district: &row.home_district,
            previous_site: &row.previous_site,
            previous_product: &row.previous_product,
            administered_at: row.administered_at,
            recorded_at: row.recorded_at,
            version,
            deleted: u8::from(deleted),
            next_due: date_days(row.owed_from()),
            previous_due: date_days(row.settles_from()),
        }
    }
}

#[derive(Debug, Row, Serialize)]
struct MovementRecord<'a> {
    #[serde(with = "::clickhouse::serde::uuid")]
    movement_id: Uuid,
    site_id: &'a str,
    product: &'a str,
    lot_number: &'a str,
    quantity: i64,
    reason: &'a str,
    #[serde(with = "::clickhouse::serde::time::datetime")]
    at: OffsetDateTime,
    /// `nanos(at)` of the announcement that made the movement: orders a lot's announcements.
    announced: u64,
}

/// A lot's movements summed, as [`LotLedger`] needs them.
#[derive(Debug, Row, Deserialize)]
struct LedgerRow {
    site_id: String,
    product: String,
    lot_number: String,
    total: i64,
    last_at: u64,
}

#[derive(Debug, Row, Deserialize)]
struct SiteOwed {
    site_id: String,
    owed: i64,
    lapsed: i64,
}

/// Net figures are placed − retracted, which is never negative when every correction names
/// the dose as it stood; a negative one (a correction of a dose never shipped) counts as 0.
fn net(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[derive(Debug, Row, Deserialize)]
struct SiteCount {
    site_id: String,
    n: i64,
}

#[derive(Debug, Row, Deserialize)]
struct DistrictCount {
    province: String,
    district: String,
    n: i64,
}

#[derive(Debug, Row, Deserialize)]
struct Point {
    area: String,
    bucket: u32,
    doses: i64,
}

/// The ClickHouse analytics backend.
///
/// The schema is applied on first use rather than at construction, so a server whose ClickHouse
/// is down at start-up still starts (and fills its outbox until ClickHouse is back).
pub struct ClickHouseAnalytics {
    /// Without a database selected: creates it.
    server: Client,
    client: Client,
    database: String,
    schema: tokio::sync::OnceCell<()>,
    /// Dates the rows recorded before due dates, in the version-4 backfill.
    intervals: Intervals,
}

impl std::fmt::Debug for ClickHouseAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseAnalytics")
            .finish_non_exhaustive()
    }
}

impl ClickHouseAnalytics {
    /// A client for `config`; nothing is sent until first use.
    pub fn new(config: &ClickHouseConfig) -> Self {
        let mut server = Client::default()
            .with_url(config.url.trim_end_matches('/'))
            .with_validation(false)
            .with_compression(::clickhouse::Compression::Lz4)
            .with_setting("max_execution_time", config.timeout.as_secs().to_string());
        if let Some(user) = &config.user {
            server = server.with_user(user);
        }
        if let Some(password) = &config.password {
            server = server.with_password(password);
        }
        let client = server.clone().with_database(&config.database);
        Self {
            server,
            client,
            database: config.database.clone(),
            schema: tokio::sync::OnceCell::new(),
            intervals: Intervals::default(),
        }
    }

    /// The products' minimum intervals the migrations date old rows with (default: the
    /// built-in catalogue). Give the campaign's catalogue when it has products of its own.
    #[must_use]
    pub fn with_intervals(mut self, intervals: Intervals) -> Self {
        self.intervals = intervals;
        self
    }

    /// Connects, creates the database and applies the migrations not yet applied.
    ///
    /// # Errors
    /// When ClickHouse cannot be reached or refuses the schema.
    pub async fn connect(config: &ClickHouseConfig) -> Result<Self> {
        let analytics = Self::new(config);
        analytics.ready().await?;
        Ok(analytics)
    }

    /// Makes sure the database and schema exist (once per process, retried until it succeeds).
    async fn ready(&self) -> Result<()> {
        self.schema
            .get_or_try_init(|| async {
                self.server
                    .query("CREATE DATABASE IF NOT EXISTS ?")
                    .bind(Identifier(&self.database))
                    .execute()
                    .await?;
                self.migrate().await
            })
            .await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version UInt32, description String, applied_at DateTime('UTC')
                ) ENGINE = TinyLog",
            )
            .execute()
            .await?;
        let applied: Vec<u32> = self
            .client
            .query("SELECT version FROM schema_migrations")
            .fetch_all()
            .await?;
        for (version, description, statements) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for statement in *statements {
                if let Some((table, column)) = added_column(statement)
                    && self.has_column(table, column).await?
                {
                    continue;
                }
                let statement =
                    statement.replace("{min_interval_days}", &interval_sql(&self.intervals));
                // Backfills read `doses FINAL`, hence the exact settings.
                self.exact(&statement).execute().await?;
            }
            self.client
                .query("INSERT INTO schema_migrations VALUES (?, ?, now())")
                .bind(version)
                .bind(description)
                .execute()
                .await?;
            tracing::info!(version, description, "ClickHouse schema migrated");
        }
        Ok(())
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool> {
        let n: u64 = self
            .client
            .query(
                "SELECT count() FROM system.columns
                 WHERE database = currentDatabase() AND table = ? AND name = ?",
            )
            .bind(table)
            .bind(column)
            .fetch_one()
            .await?;
        Ok(n > 0)
    }

    /// The lots' ledgers, for the lots of `sites`.
    async fn ledgers(
        &self,
        sites: &[&str],
    ) -> Result<HashMap<(String, String, String), LotLedger>> {
        let rows: Vec<LedgerRow> = self
            .client
            .query(
                "SELECT site_id, product, lot_number, sum(quantity) AS total,
                        max(announced) AS last_at
                 FROM (SELECT site_id, product, lot_number, quantity, announced
                       FROM lot_movements FINAL WHERE has(?, site_id))
                 GROUP BY site_id, product, lot_number",
            )
            .bind(sites)
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    (r.site_id, r.product, r.lot_number),
                    LotLedger {
                        total: r.total,
                        last_at: r.last_at,
                    },
                )
            })
            .collect())
    }

    /// The movements `announcements` make, against the ledgers in the table (one shipper, so
    /// nothing else writes between this read and the insert; a batch retried after an
    /// ambiguous failure finds its movements there and makes none again).
    async fn movements(&self, announcements: &[LotAllocation]) -> Result<Vec<StockMovement>> {
        if announcements.is_empty() {
            return Ok(Vec::new());
        }
        let mut sites: Vec<&str> = announcements.iter().map(|a| a.site_id.as_str()).collect();
        sites.sort_unstable();
        sites.dedup();
        let mut ledgers = self.ledgers(&sites).await?;
        let mut movements = Vec::new();
        for lot in announcements {
            let key = (
                lot.site_id.clone(),
                lot.product.clone(),
                lot.lot_number.clone(),
            );
            let (movement, after) = LotLedger::apply(ledgers.get(&key).copied(), lot);
            movements.extend(movement);
            if let Some(after) = after {
                ledgers.insert(key, after);
            }
        }
        Ok(movements)
    }

    /// Runs `SELECT count() FROM doses` without `FINAL`: physical rows, for tests that check
    /// replays were absorbed (they may still be there until a merge).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn physical_dose_rows(&self) -> Result<u64> {
        self.ready().await?;
        Ok(self
            .client
            .query("SELECT count() FROM doses")
            .fetch_one()
            .await?)
    }

    /// Doses in `doses` at their latest version, read `FINAL`: the figure [`Analytics::dose_count`]
    /// takes from the rollups, from the row history instead (slow; for checks).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn latest_dose_count(&self) -> Result<u64> {
        self.ready().await?;
        Ok(self
            .exact("SELECT count() FROM (SELECT deleted FROM doses FINAL) WHERE deleted = 0")
            .fetch_one()
            .await?)
    }

    fn exact(&self, sql: &str) -> ::clickhouse::query::Query {
        EXACT
            .iter()
            .fold(self.client.query(sql), |q, (name, value)| {
                q.with_setting(*name, *value)
            })
    }
}

/// Distinct pairs per rollup key (`key`: columns of `table`, a rollup), added where `sign`
/// holds and taken away where not, summed per `group` and selected as `select` plus `n`.
/// Merging the `uniqExact` states key by key keeps the sets small and the work parallel; the
/// keys' sets are disjoint, so their counts add up.
fn net_sql(table: &str, key: &str, filter: &str, select: &str, group: &str, sign: &str) -> String {
    format!(
        "SELECT {select}, sum(if({sign}, toInt64(pairs), -toInt64(pairs))) AS n
         FROM (SELECT {key}, uniqExactMerge(doses) AS pairs FROM {table} {filter} GROUP BY {key})
         GROUP BY {group}"
    )
}

const HOUR_KEY: &str =
    "product, hour, site_province, site_district, site_id, dose_number, retracted";

/// `(table, column)` of an `ALTER TABLE t ADD COLUMN c ...` migration statement.
fn added_column(statement: &str) -> Option<(&str, &str)> {
    let mut words = statement.split_whitespace();
    let mut expect = |word: &str| words.next().is_some_and(|w| w.eq_ignore_ascii_case(word));
    if !(expect("ALTER") && expect("TABLE")) {
        return None;
    }
    let table = words.next()?;
    let mut words_after = words;
    let add = words_after.next()?;
    let column_kw = words_after.next()?;
    if !(add.eq_ignore_ascii_case("ADD") && column_kw.eq_ignore_ascii_case("COLUMN")) {
        return None;
    }
    Some((table, words_after.next()?))
}

/// The minimum interval after a dose of `product`, in days, as SQL: `transform` over the
/// catalogue, 0 for a product it does not know.
fn interval_sql(intervals: &Intervals) -> String {
    let all = intervals.sorted();
    if all.is_empty() {
        return "toUInt16(0)".to_owned();
    }
    let products: Vec<String> = all
        .iter()
        .map(|(p, _)| format!("'{}'", p.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    let days: Vec<String> = all.iter().map(|(_, d)| format!("toUInt16({d})")).collect();
    format!(
        "transform(product, [{}], [{}], toUInt16(0))",
        products.join(", "),
        days.join(", ")
    )
}

#[async_trait]
impl Analytics for ClickHouseAnalytics {
    fn backend_name(&self) -> &'static str {
        "clickhouse"
    }

    async fn prepare(&self) -> Result<()> {
        self.ready().await
    }

    async fn apply(&self, events: &[Event]) -> Result<()> {
        self.ready().await?;
        // Rows of the release before due dates get theirs here (see `DoseRow::fill_legacy_dues`).
        let filled: Vec<std::borrow::Cow<'_, Event>> = events
            .iter()
            .map(|event| fill_legacy_dues(event, &self.intervals))
            .collect();
        let mut doses = Vec::new();
        let mut retractions = Vec::new();
        let mut announcements = Vec::new();
        for event in &filled {
            match event.as_ref() {
                Event::Dose(row) => doses.push(DoseRecord::new(row, row.version, false)),
                Event::DoseCorrected {
                    previous,
                    corrected,
                } => {
                    if previous.sort_key() != corrected.sort_key() {
                        doses.push(DoseRecord::new(previous, corrected.version, true));
                    }
                    doses.push(DoseRecord::new(corrected, corrected.version, false));
                    // The placement the correction ended: the row as it stood, under the
                    // correction's version (the doses table's columns; `deleted` is 1).
                    retractions.push(DoseRecord::new(previous, corrected.version, true));
                }
                Event::Lot(lot) => announcements.push(lot.clone()),
            }
        }
        let lot_movements = self.movements(&announcements).await?;
        let movements: Vec<MovementRecord<'_>> = lot_movements
            .iter()
            .map(|m| MovementRecord {
                movement_id: m.movement_id,
                site_id: &m.site_id,
                product: &m.product,
                lot_number: &m.lot_number,
                quantity: m.quantity,
                reason: &m.reason,
                at: m.at,
                announced: nanos(m.at),
            })
            .collect();
        // Retractions first: should the second insert fail, the batch is retried whole, and
        // until then a dose is missing from its new placement rather than counted twice.
        if !retractions.is_empty() {
            let mut insert = self
                .client
                .insert::<DoseRecord<'_>>("dose_retractions")
                .await?;
            for record in &retractions {
                insert.write(record).await?;
            }
            insert.end().await?;
        }
        if !doses.is_empty() {
            let mut insert = self.client.insert::<DoseRecord<'_>>("doses").await?;
            for record in &doses {
                insert.write(record).await?;
            }
            insert.end().await?;
        }
        if !movements.is_empty() {
            let mut insert = self
                .client
                .insert::<MovementRecord<'_>>("lot_movements")
                .await?;
            for record in &movements {
                insert.write(record).await?;
            }
            insert.end().await?;
        }
        Ok(())
    }

    async fn dose_count(&self) -> Result<u64> {
        self.ready().await?;
        let sql = format!(
            "SELECT sum(if(retracted = 0, toInt64(pairs), -toInt64(pairs)))
             FROM (SELECT {HOUR_KEY}, uniqExactMerge(doses) AS pairs FROM dose_hours
                   GROUP BY {HOUR_KEY})"
        );
        Ok(net(self.client.query(&sql).fetch_one::<i64>().await?))
    }

    async fn site_activity(
        &self,
        product: &str,
        since: OffsetDateTime,
        owed: OwedWindow,
    ) -> Result<Vec<SiteActivity>> {
        self.ready().await?;
        let since = hour_floor(since).unix_timestamp();
        let in_window = net_sql(
            "dose_hours",
            HOUR_KEY,
            "WHERE product = ? AND hour >= toDateTime(?)",
            "site_id",
            "site_id",
            "retracted = 0",
        );
        // Per due day: owing placed and settling retracted add; owing retracted and settling
        // placed take away. Then per site, the days before the window are lapsed, the others
        // (up to its last day, the filter) owed.
        let by_day = net_sql(
            "owed_due",
            "site_id, due, settles, retracted",
            "WHERE product = ? AND due <= toDate(?)",
            "site_id, due",
            "site_id, due",
            "settles = retracted",
        );
        let owed_sql = format!(
            "SELECT site_id, sum(if(due < toDate(?), 0, n)) AS owed,
                    sum(if(due < toDate(?), n, 0)) AS lapsed
             FROM ({by_day}) GROUP BY site_id"
        );
        let in_window = self
            .client
            .query(&in_window)
            .bind(product)
            .bind(since)
            .fetch_all::<SiteCount>();
        let lapsed_before = owed.lapsed_before.to_string();
        let owed_rows = self
            .client
            .query(&owed_sql)
            .bind(&lapsed_before)
            .bind(&lapsed_before)
            .bind(product)
            .bind(owed.due_by.to_string())
            .fetch_all::<SiteOwed>();
        let (in_window, owed_rows) = tokio::try_join!(in_window, owed_rows)?;
        let mut sites: BTreeMap<String, SiteActivity> = BTreeMap::new();
        for count in in_window {
            sites
                .entry(count.site_id.clone())
                .or_insert_with(|| SiteActivity {
                    site_id: count.site_id,
                    ..SiteActivity::default()
                })
                .doses_in_window = net(count.n);
        }
        for row in owed_rows {
            let site = sites
                .entry(row.site_id.clone())
                .or_insert_with(|| SiteActivity {
                    site_id: row.site_id,
                    ..SiteActivity::default()
                });
            site.owed_doses = net(row.owed);
            site.lapsed_doses = net(row.lapsed);
        }
        Ok(sites
            .into_values()
            .filter(|s| s.doses_in_window > 0 || s.owed_doses > 0 || s.lapsed_doses > 0)
            .collect())
    }

    async fn received_by_site(&self, product: &str) -> Result<HashMap<String, i64>> {
        self.ready().await?;
        let rows: Vec<SiteCount> = self
            .client
            .query(
                "SELECT site_id, sum(quantity) AS n
                 FROM (SELECT site_id, quantity FROM lot_movements FINAL WHERE product = ?)
                 GROUP BY site_id",
            )
            .bind(product)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(|r| (r.site_id, r.n)).collect())
    }

    async fn started_by_district(&self) -> Result<HashMap<District, u64>> {
        self.ready().await?;
        let sql = net_sql(
            "started_districts",
            "home_province, home_district, retracted",
            "",
            "home_province AS province, home_district AS district",
            "home_province, home_district",
            "retracted = 0",
        );
        let rows: Vec<DistrictCount> = self.client.query(&sql).fetch_all().await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.n > 0)
            .filter_map(|r| {
                Some((
                    District {
                        province: AreaCode::new(r.province).ok()?,
                        district: AreaCode::new(r.district).ok()?,
                    },
                    net(r.n),
                ))
            })
            .collect())
    }

    async fn uptake(&self, query: &UptakeQuery) -> Result<Vec<UptakePoint>> {
        self.ready().await?;
        let since = hour_floor(query.since).unix_timestamp();
        let until = query.until.unix_timestamp();
        let area = match query.level {
            AreaLevel::Province => "site_province",
            AreaLevel::District => "concat(site_province, '/', site_district)",
            AreaLevel::Site => "site_id",
        };
        let bucket = match query.granularity {
            Granularity::Hour => "toUInt32(hour)",
            Granularity::Day => "toUInt32(toStartOfDay(hour))",
        };
        let mut filter = "WHERE hour >= toDateTime(?) AND hour < toDateTime(?)".to_owned();
        if query.product.is_some() {
            filter.push_str(" AND product = ?");
        }
        if query.province.is_some() {
            filter.push_str(" AND site_province = ?");
        }
        let sql = format!(
            "{} ORDER BY area, bucket",
            net_sql(
                "dose_hours",
                HOUR_KEY,
                &filter,
                &format!("{area} AS area, {bucket} AS bucket"),
                "area, bucket",
                "retracted = 0",
            )
        );
        let mut q = self.client.query(&sql).bind(since).bind(until);
        if let Some(product) = &query.product {
            q = q.bind(product);
        }
        if let Some(province) = &query.province {
            q = q.bind(province);
        }
        let points: Vec<Point> = q.fetch_all().await?;
        Ok(points
            .into_iter()
            .filter(|p| p.doses > 0)
            .map(|p| UptakePoint {
                area: p.area,
                bucket: OffsetDateTime::from_unix_timestamp(i64::from(p.bucket))
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                doses: net(p.doses),
            })
            .collect())
    }
}

/// `event` with the due dates a legacy row lacks filled in; borrowed when it has them.
fn fill_legacy_dues<'a>(event: &'a Event, intervals: &Intervals) -> std::borrow::Cow<'a, Event> {
    let lacks = |row: &DoseRow| {
        (row.leaves_dose_owed() && row.next_due.is_none())
            || (!row.previous_site.is_empty() && row.previous_due.is_none())
    };
    let fill = |row: &DoseRow| {
        let mut row = row.clone();
        row.fill_legacy_dues(|p| intervals.days(p));
        row
    };
    match event {
        Event::Dose(row) if lacks(row) => std::borrow::Cow::Owned(Event::Dose(fill(row))),
        Event::DoseCorrected {
            previous,
            corrected,
        } if lacks(previous) || lacks(corrected) => std::borrow::Cow::Owned(Event::DoseCorrected {
            previous: Box::new(fill(previous)),
            corrected: Box::new(fill(corrected)),
        }),
        other => std::borrow::Cow::Borrowed(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_column_statements_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE doses ADD COLUMN next_due Date"),
            Some(("doses", "next_due"))
        );
        assert_eq!(added_column("DROP TABLE IF EXISTS owed_sites"), None);
        assert_eq!(added_column("ALTER TABLE doses DROP COLUMN x"), None);
    }

    #[test]
    fn the_interval_expression_covers_the_catalogue() {
        let sql = interval_sql(&Intervals::default());
        for product in store::builtin_products() {
            let entry = format!("'{}'", product.code);
            assert!(sql.contains(&entry), "{sql}");
        }
        assert!(sql.starts_with("transform(product, ['ABDALA', "), "{sql}");
        assert!(sql.contains("toUInt16(21)"), "{sql}");
    }
}
