//! Analytics in ClickHouse, for a national campaign.
//!
//! Tables (created by [`MIGRATIONS`] at start-up, idempotently; the SQL runs on ClickHouse 18.16,
//! Debian's package, and on current releases — hence no `DateTime64`, `LowCardinality` or
//! `insert_deduplication_token`):
//! - `doses`: one row per dose version, `ReplacingMergeTree(version)`, partitioned by the month
//!   the dose was first recorded (stable across corrections, so every version of a dose lands
//!   in the same partition) and ordered by `(site_province, site_district, site_id, dose_id)`
//!   for per-area and per-site reads. A replay inserts an identical row that merges away; the
//!   exact queries read it `FINAL`. A correction that moves a dose to another site inserts a
//!   tombstone (`deleted = 1`) under the old key with the new version, then the new row.
//! - `uptake_site_hour`, `uptake_area_day`: rollups kept by materialized views, as
//!   `uniqExact(dose_id)` states, so a replayed row does not count twice. They count a dose
//!   where it was first recorded (a correction's new placement is added, the old one cannot be
//!   taken out of a distinct count); the allocation figures therefore read `doses` itself.
//! - `stock_movements`: deliveries per lot, `ReplacingMergeTree` by movement id.
//!
//! Inserts are RowBinary over HTTP with LZ4 (the `clickhouse` crate), without schema validation
//! (`with_validation(false)`: 18.16 lacks what the validation queries).

use std::collections::HashMap;
use std::time::Duration;

use ::clickhouse::{Client, Row, sql::Identifier};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use store::{AreaCode, District};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::row::{DoseRow, Event};
use crate::{
    Analytics, AreaLevel, Granularity, Result, SiteActivity, UptakePoint, UptakeQuery, hour_floor,
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
pub const MIGRATIONS: &[(u32, &str, &[&str])] = &[(
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
)];

/// The exact reads see each dose once at its latest version: `FINAL` in a subquery, filtered
/// outside it, with the optimisations that would filter before the merge turned off.
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
}

#[derive(Debug, Row, Deserialize)]
struct SiteCounts {
    site_id: String,
    in_window: u64,
    owed_here: u64,
}

#[derive(Debug, Row, Deserialize)]
struct SiteCount {
    site_id: String,
    n: u64,
}

#[derive(Debug, Row, Deserialize)]
struct DistrictCount {
    province: String,
    district: String,
    n: u64,
}

#[derive(Debug, Row, Deserialize)]
struct Point {
    area: String,
    bucket: u32,
    doses: u64,
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
                self.client.query(statement).execute().await?;
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

    fn exact(&self, sql: &str) -> ::clickhouse::query::Query {
        EXACT
            .iter()
            .fold(self.client.query(sql), |q, (name, value)| {
                q.with_setting(*name, *value)
            })
    }
}

#[async_trait]
impl Analytics for ClickHouseAnalytics {
    fn backend_name(&self) -> &'static str {
        "clickhouse"
    }

    async fn apply(&self, events: &[Event]) -> Result<()> {
        self.ready().await?;
        let mut doses = Vec::new();
        let mut movements = Vec::new();
        for event in events {
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
                }
                Event::Stock(m) => movements.push(MovementRecord {
                    movement_id: m.movement_id,
                    site_id: &m.site_id,
                    product: &m.product,
                    lot_number: &m.lot_number,
                    quantity: m.quantity,
                    reason: &m.reason,
                    at: m.at,
                }),
            }
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
                .insert::<MovementRecord<'_>>("stock_movements")
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
        Ok(self
            .exact("SELECT count() FROM (SELECT deleted FROM doses FINAL) WHERE deleted = 0")
            .fetch_one()
            .await?)
    }

    async fn site_activity(
        &self,
        product: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<SiteActivity>> {
        self.ready().await?;
        let since = hour_floor(since).unix_timestamp();
        let here: Vec<SiteCounts> = self
            .exact(
                "SELECT site_id,
                        countIf(administered_at >= toDateTime(?)) AS in_window,
                        countIf(dose_number < series_doses) AS owed_here
                 FROM (SELECT site_id, product, administered_at, dose_number, series_doses, deleted
                       FROM doses FINAL)
                 WHERE deleted = 0 AND product = ?
                 GROUP BY site_id",
            )
            .bind(since)
            .bind(product)
            .fetch_all()
            .await?;
        let settled: Vec<SiteCount> = self
            .exact(
                "SELECT previous_site AS site_id, count() AS n
                 FROM (SELECT previous_site, previous_product, deleted FROM doses FINAL)
                 WHERE deleted = 0 AND previous_product = ? AND previous_site != ''
                 GROUP BY previous_site",
            )
            .bind(product)
            .fetch_all()
            .await?;
        let settled: HashMap<String, u64> = settled.into_iter().map(|c| (c.site_id, c.n)).collect();
        let mut sites: Vec<SiteActivity> = here
            .into_iter()
            .map(|c| SiteActivity {
                owed_doses: c
                    .owed_here
                    .saturating_sub(settled.get(&c.site_id).copied().unwrap_or(0)),
                site_id: c.site_id,
                doses_in_window: c.in_window,
            })
            .filter(|s| s.doses_in_window > 0 || s.owed_doses > 0)
            .collect();
        sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));
        Ok(sites)
    }

    async fn started_by_district(&self) -> Result<HashMap<District, u64>> {
        self.ready().await?;
        let rows: Vec<DistrictCount> = self
            .exact(
                "SELECT home_province AS province, home_district AS district, count() AS n
                 FROM (SELECT home_province, home_district, dose_number, deleted FROM doses FINAL)
                 WHERE deleted = 0 AND dose_number = 1
                 GROUP BY home_province, home_district",
            )
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some((
                    District {
                        province: AreaCode::new(r.province).ok()?,
                        district: AreaCode::new(r.district).ok()?,
                    },
                    r.n,
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
        // Whole days at district level and above come from the daily rollup; anything finer
        // from the hourly one. Both give the same numbers where both apply.
        let daily = query.granularity == Granularity::Day
            && query.level != AreaLevel::Site
            && since.rem_euclid(86_400) == 0
            && until.rem_euclid(86_400) == 0;
        let (table, time, bucket) = if daily {
            ("uptake_area_day", "toDateTime(day)", "toDateTime(day)")
        } else {
            match query.granularity {
                Granularity::Hour => ("uptake_site_hour", "hour", "hour"),
                Granularity::Day => ("uptake_site_hour", "hour", "toStartOfDay(hour)"),
            }
        };
        let mut sql = format!(
            "SELECT {area} AS area, toUInt32({bucket}) AS bucket, uniqExactMerge(doses) AS doses
             FROM {table}
             WHERE {time} >= toDateTime(?) AND {time} < toDateTime(?)"
        );
        if query.product.is_some() {
            sql.push_str(" AND product = ?");
        }
        if query.province.is_some() {
            sql.push_str(" AND site_province = ?");
        }
        sql.push_str(" GROUP BY area, bucket ORDER BY area, bucket");
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
                doses: p.doses,
            })
            .collect())
    }
}
