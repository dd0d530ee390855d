//! Campaign analytics: what health departments and the steering committee ask of the doses
//! already given, and where the next shipment should go.
//!
//! ```text
//!  shard writer ──commit (durable)──▶ Outbox (on disk, bounded) ──Shipper (batches)──▶ Analytics
//!                                                                                     ├ ClickHouse
//!                                                                                     └ Embedded
//! ```
//!
//! - [`Outbox`]: the dose path appends a row per committed dose after the durable commit and
//!   before the acknowledgement, and never waits for ClickHouse. The outbox is bounded on disk;
//!   beyond its bound rows are dropped, counted and alerted rather than stopping vaccination.
//! - [`Shipper`]: drains the outbox in batches, retrying with back-off while the backend is away;
//!   a batch leaves the outbox only once the backend has accepted it.
//! - [`Analytics`]: the backends. Applying an event is idempotent per dose id and version, so
//!   replays after a crash or an ambiguous failure never count twice.
//! - [`allocation`]: the pure allocation planner; [`planner`] gathers its figures.

pub mod allocation;
pub mod clickhouse;
pub mod embedded;
pub mod outbox;
pub mod planner;
pub mod row;
pub mod shipper;

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use store::District;
use time::OffsetDateTime;

pub use clickhouse::{ClickHouseAnalytics, ClickHouseConfig};
pub use embedded::EmbeddedAnalytics;
pub use outbox::{Outbox, OutboxStatus};
pub use row::{DoseRow, Event, StockMovement};
pub use shipper::{Shipper, ShipperStatus};

/// Why an analytics call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    #[error("embedded analytics: {0}")]
    Embedded(#[from] fjall::Error),
    #[error("analytics record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = AnalyticsError> = std::result::Result<T, E>;

/// Per-site figures for one product, the uptake side of an allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteActivity {
    pub site_id: String,
    /// Doses of the product given at the site since the window start.
    pub doses_in_window: u64,
    /// People whose next dose of the series is owed at this site (their last dose was given
    /// here, and the series is not complete).
    pub owed_doses: u64,
}

/// The area level a question is asked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AreaLevel {
    Province,
    District,
    Site,
}

/// Time buckets for uptake series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }
}

/// Doses given per area per hour or day (UTC buckets), from the rollups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UptakeQuery {
    pub level: AreaLevel,
    pub granularity: Granularity,
    /// Inclusive; rounded down to the hour.
    pub since: OffsetDateTime,
    /// Exclusive.
    pub until: OffsetDateTime,
    pub product: Option<String>,
    /// Only areas inside this province.
    pub province: Option<String>,
}

/// One point of an uptake series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UptakePoint {
    /// `PROVINCE`, `PROVINCE/DISTRICT` or the site id, per the query's level.
    pub area: String,
    #[serde(with = "time::serde::rfc3339")]
    pub bucket: OffsetDateTime,
    pub doses: u64,
}

/// An analytics backend: where committed doses are counted and asked about.
///
/// Contract (checked by `tests/analytics.rs` on both backends):
/// - `apply` is idempotent: an event already applied at its version changes nothing; a dose row
///   with a higher version replaces the earlier one. Any number of replays, in any batching,
///   give the same answers.
/// - The query methods count each dose once, at its latest version.
#[async_trait]
pub trait Analytics: Send + Sync + 'static {
    fn backend_name(&self) -> &'static str;

    /// Creates the schema and applies pending migrations (idempotent). The server calls it in
    /// the background at start-up, so a wrong address or a refused migration shows in the log
    /// at once rather than at the first shipment; every other method prepares on first use.
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }

    async fn apply(&self, events: &[Event]) -> Result<()>;

    /// Distinct doses recorded.
    async fn dose_count(&self) -> Result<u64>;

    /// Figures per site for `product`, with the window starting at `since` (rounded down to the
    /// hour). Sites with nothing to report may be missing.
    async fn site_activity(
        &self,
        product: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<SiteActivity>>;

    /// People who have started their series (any product), by the district they live in.
    async fn started_by_district(&self) -> Result<HashMap<District, u64>>;

    async fn uptake(&self, query: &UptakeQuery) -> Result<Vec<UptakePoint>>;

    /// Flushes whatever the backend buffers; called on shutdown.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Rounds down to the start of the hour (the rollups' finest bucket).
pub fn hour_floor(at: OffsetDateTime) -> OffsetDateTime {
    let seconds = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(3_600))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
