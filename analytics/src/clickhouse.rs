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
//! - `dose_hours` (product, hour, site, dose number), `owed_days` (version 4: product, site, the
//!   UTC day of the dose that owes the next one, whether the dose owes the next one there or
//!   settles one owed there) and `started_districts` (home district, first doses):
//!   `AggregatingMergeTree` rollups of `uniqExactState(dose_id, version)`, kept by materialized
//!   views on `doses` (placements, `retracted = 0`) and on `dose_retractions` (`retracted = 1`).
//!   `owed_sites` (version 2, the same without the day) was replaced by `owed_days` and dropped
//!   by version 4. The minimum interval is added when reading ([`crate::OwedWindow`]), so the
//!   rollup holds only facts that never change.
//! - `doses.previous_day` (version 4, `Nullable(Date)`, also on `dose_retractions`): the day of
//!   the dose before in the series, which a dose settles under (see [`DoseRow`]). `NULL` for
//!   first doses, for rows from before version 4 (the migration's backfill of `owed_days` found
//!   theirs by joining the person's previous dose) and for a legacy second dose whose previous
//!   dose is not here.
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

use crate::row::{
    self, DoseRow, Event, LotAllocation, LotLedger, SeriesDays, StockMovement, nanos,
};
use crate::{
    Analytics, AreaLevel, Granularity, OwedWindow, Result, SiteActivity, UNIX_EPOCH_JULIAN_DAY,
    UptakePoint, UptakeQuery, hour_floor,
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
/// `ALTER TABLE t ADD COLUMN c ...` runs only when `t` has no column `c` (ClickHouse 18.16 has no
/// `ADD COLUMN IF NOT EXISTS`), so a migration interrupted after it can run again.
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
        "owed doses by the day of the dose that owes them",
        &[
            "ALTER TABLE doses ADD COLUMN previous_day Nullable(Date)",
            "ALTER TABLE dose_retractions ADD COLUMN previous_day Nullable(Date)",
            "CREATE TABLE IF NOT EXISTS owed_days (
            product String,
            site_id String,
            day Date,
            settles UInt8,
            retracted UInt8,
            doses AggregateFunction(uniqExact, UUID, UInt64)
        ) ENGINE = AggregatingMergeTree()
        ORDER BY (product, site_id, day, settles, retracted)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_days_owing_placed_mv TO owed_days AS
        SELECT product, site_id, toDate(administered_at) AS day, toUInt8(0) AS settles,
               toUInt8(0) AS retracted, uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0 AND dose_number < series_doses
        GROUP BY product, site_id, day",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_days_settling_placed_mv TO owed_days AS
        SELECT previous_product AS product, previous_site AS site_id,
               assumeNotNull(previous_day) AS day, toUInt8(1) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM doses WHERE deleted = 0 AND previous_site != '' AND isNotNull(previous_day)
        GROUP BY previous_product, previous_site, day",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_days_owing_retracted_mv TO owed_days AS
        SELECT product, site_id, toDate(administered_at) AS day, toUInt8(0) AS settles,
               toUInt8(1) AS retracted, uniqExactState(dose_id, version) AS doses
        FROM dose_retractions WHERE dose_number < series_doses
        GROUP BY product, site_id, day",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS owed_days_settling_retracted_mv TO owed_days AS
        SELECT previous_product AS product, previous_site AS site_id,
               assumeNotNull(previous_day) AS day, toUInt8(1) AS settles, toUInt8(1) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM dose_retractions WHERE previous_site != '' AND isNotNull(previous_day)
        GROUP BY previous_product, previous_site, day",
            // Backfill from the doses recorded before version 4, each at its latest placement
            // (read `FINAL`, once), as the views would have placed them: a dose that owes the
            // next one under its own day; one that settles under the day of the person's
            // previous dose (the dose number before), found by a join — a row whose previous
            // dose is not here settles nothing, as on the embedded backend. Rows with
            // `previous_day` were inserted after the views existed, which placed them.
            // Idempotent; the caveat of version 2's backfill applies. (No alias repeats a
            // column name: current releases refuse cyclic aliases; and every joined subquery
            // has an alias: they require it, `joined_subquery_requires_alias`.)
            "INSERT INTO owed_days
        SELECT product, site_id, toDate(administered_at) AS day, toUInt8(0) AS settles,
               toUInt8(0) AS retracted, uniqExactState(dose_id, version) AS doses
        FROM (SELECT * FROM doses FINAL) WHERE deleted = 0 AND dose_number < series_doses
        GROUP BY product, site_id, day",
            "INSERT INTO owed_days
        SELECT previous_product AS product, previous_site AS site_id, earlier_day AS day,
               toUInt8(1) AS settles, toUInt8(0) AS retracted,
               uniqExactState(dose_id, version) AS doses
        FROM (SELECT person_code, toUInt8(dose_number - 1) AS earlier_number,
                     previous_product, previous_site, dose_id, version
              FROM (SELECT * FROM doses FINAL)
              WHERE deleted = 0 AND previous_site != '' AND isNull(previous_day)) AS later
        ANY INNER JOIN
             (SELECT person_code, dose_number AS earlier_number,
                     toDate(administered_at) AS earlier_day
              FROM (SELECT * FROM doses FINAL) WHERE deleted = 0) AS earlier
        USING (person_code, earlier_number)
        GROUP BY previous_product, previous_site, day",
            // The rollup `owed_days` replaces; views first, so no insert feeds a dropped table.
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
    /// The previous dose's day as ClickHouse's `Date` (days since 1970); `NULL` when unknown.
    previous_day: Option<u16>,
}

/// A day as ClickHouse's `Date`: days since 1970-01-01, within its range (the rows' days are:
/// times outside 1970..2106 are set aside, `Event::unrepresentable`).
fn date_days(day: time::Date) -> u16 {
    u16::try_from((day.to_julian_day() - UNIX_EPOCH_JULIAN_DAY).max(0)).unwrap_or(u16::MAX)
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
            previous_day: row.previous_day.map(date_days),
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

/// A dose of a person, at its latest placement: what a legacy row's previous day is found in.
#[derive(Debug, Row, Deserialize)]
struct SeriesDayRow {
    person_code: String,
    dose_number: u8,
    /// Days since 1970.
    day: u16,
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
        }
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
                // Backfills read `doses FINAL`, hence the exact settings.
                self.exact(statement).execute().await?;
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

    /// `events`, with the previous dose's day of every second dose from the previous release's
    /// outbox looked up in the batch and in `doses` (each of those people's doses at its
    /// latest placement). Borrowed when the batch has none, as after the first batches
    /// following an upgrade. The look-up reads `doses` without its sort key: a one-off.
    async fn with_previous_days<'a>(
        &self,
        events: &'a [Event],
    ) -> Result<std::borrow::Cow<'a, [Event]>> {
        let people: Vec<&str> = row::lacking_previous_day(events).into_iter().collect();
        if people.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(events));
        }
        // The latest placement of a dose is its placed (`deleted = 0`) row of the highest
        // version: a move leaves the old one behind a tombstone of the new version.
        let stored: Vec<SeriesDayRow> = self
            .client
            .query(
                "SELECT person_code, argMax(dose_number, version) AS dose_number,
                        toUInt16(argMax(toDate(administered_at), version)) AS day
                 FROM doses WHERE deleted = 0 AND has(?, person_code)
                 GROUP BY dose_id, person_code",
            )
            .bind(&people)
            .fetch_all()
            .await?;
        let mut known = SeriesDays::default();
        for dose in stored {
            let julian = UNIX_EPOCH_JULIAN_DAY + i32::from(dose.day);
            if let Ok(day) = time::Date::from_julian_day(julian) {
                known.insert(&dose.person_code, dose.dose_number, day);
            }
        }
        Ok(std::borrow::Cow::Owned(row::fill_previous_days(
            events, known,
        )))
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
        let events = self.with_previous_days(events).await?;
        let mut doses = Vec::new();
        let mut retractions = Vec::new();
        let mut announcements = Vec::new();
        for event in events.iter() {
            match event {
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
        // Per day of the owing dose: owing placed and settling retracted add; owing retracted
        // and settling placed take away. Then per site, with the product's interval applied
        // (`OwedWindow::dose_day_bounds`), the days before the lapse bound are lapsed, the
        // others (up to the owed bound, the filter) owed.
        let by_day = net_sql(
            "owed_days",
            "site_id, day, settles, retracted",
            "WHERE product = ? AND toInt64(day) <= ?",
            "site_id, day",
            "site_id, day",
            "settles = retracted",
        );
        let owed_sql = format!(
            "SELECT site_id, sum(if(toInt64(day) < ?, 0, n)) AS owed,
                    sum(if(toInt64(day) < ?, n, 0)) AS lapsed
             FROM ({by_day}) GROUP BY site_id"
        );
        let in_window = self
            .client
            .query(&in_window)
            .bind(product)
            .bind(since)
            .fetch_all::<SiteCount>();
        let bounds = owed.dose_day_bounds();
        let owed_rows = self
            .client
            .query(&owed_sql)
            .bind(bounds.lapsed_before)
            .bind(bounds.lapsed_before)
            .bind(product)
            .bind(bounds.owed_through)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_column_statements_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE doses ADD COLUMN previous_day Nullable(Date)"),
            Some(("doses", "previous_day"))
        );
        assert_eq!(added_column("DROP TABLE IF EXISTS owed_sites"), None);
        assert_eq!(added_column("ALTER TABLE doses DROP COLUMN x"), None);
    }
}
