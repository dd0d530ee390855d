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
//! - [`row`]: what is shipped — dose rows (with the day of the previous dose, which owed doses
//!   are settled under) and lot announcements — and its outbox encoding, readable across
//!   releases.

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
use time::{Date, Duration, OffsetDateTime};

pub use clickhouse::{ClickHouseAnalytics, ClickHouseConfig};
pub use embedded::EmbeddedAnalytics;
pub use outbox::{Outbox, OutboxStatus};
pub use row::{DoseRow, Event, LotAllocation, StockMovement};
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
    /// People whose next dose of the series is owed at this site (their last dose, of this
    /// product, was given here and the series is not complete) and falls due inside the
    /// [`OwedWindow`]: by its last day, and not lapsed.
    pub owed_doses: u64,
    /// People whose next dose is owed at this site but was due before the window's
    /// `lapsed_before`: dropped out, to be called back rather than planned for.
    pub lapsed_doses: u64,
}

/// Which owed doses a plan counts, by the day the next dose falls due (UTC days).
///
/// A person is *owed* a dose from its due day on: the day of the dose that left it owed plus the
/// minimum interval of that dose's product, as the campaign's catalogue says *now* (the rules
/// check a new dose against the current catalogue too, and the interval is the earlier dose's
/// product's: `ingest/src/rules.rs`). For a plan covering the days `today .. today + horizon − 1`,
/// the doses it must serve are those due by its last day; people whose dose was due more than
/// `lapse_days` ago are *lapsed* — reported, not planned for (they are not coming by themselves).
///
/// The backends keep owed doses under the owing dose's own day, a fact that never changes, and
/// apply the interval here, when asked: one query is for one product, so one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedWindow {
    /// Due on or before this day: owed (the horizon's last day).
    pub due_by: Date,
    /// Due before this day: lapsed (`today − lapse_days`).
    pub lapsed_before: Date,
    /// The product's minimum interval between doses, in days (the catalogue's, as it is now).
    pub interval_days: u16,
}

impl OwedWindow {
    /// The window of a plan made on `today` for `horizon_days` (at least 1) with the grace
    /// `lapse_days`, for a product whose minimum interval is `interval_days`.
    pub fn new(today: Date, horizon_days: u32, lapse_days: u32, interval_days: u16) -> Self {
        let days = |n: u32| Duration::days(i64::from(n));
        Self {
            due_by: today.saturating_add(days(horizon_days.saturating_sub(1))),
            lapsed_before: today.saturating_sub(days(lapse_days)),
            interval_days,
        }
    }

    /// The day the next dose falls due after one given on `dose_day`: the one place the
    /// analytics add the minimum interval.
    pub fn due_after(&self, dose_day: Date) -> Date {
        dose_day.saturating_add(Duration::days(i64::from(self.interval_days)))
    }

    /// Sorts an owed dose, by the day of the dose that left it owed: owed, lapsed, or not due
    /// yet.
    pub fn classify(&self, dose_day: Date) -> Due {
        let due = self.due_after(dose_day);
        if due < self.lapsed_before {
            Due::Lapsed
        } else if due <= self.due_by {
            Due::Owed
        } else {
            Due::Later
        }
    }

    /// The same window over the owing doses' days, in days since 1970 (negative before it), for
    /// a backend that filters in SQL: a dose given on day `d` leaves one owed or lapsed when
    /// `d ≤ owed_through`, lapsed when `d < lapsed_before`. Exactly [`OwedWindow::classify`]:
    /// `d + interval ≤ due_by ⇔ d ≤ due_by − interval`, likewise for `lapsed_before`.
    pub fn dose_day_bounds(&self) -> DoseDayBounds {
        let epoch_days = |day: Date| {
            i64::from(day.to_julian_day() - UNIX_EPOCH_JULIAN_DAY) - i64::from(self.interval_days)
        };
        DoseDayBounds {
            owed_through: epoch_days(self.due_by),
            lapsed_before: epoch_days(self.lapsed_before),
        }
    }
}

/// An [`OwedWindow`] over the owing doses' days (days since 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoseDayBounds {
    /// Doses given on or before this day leave a dose owed now (or lapsed).
    pub owed_through: i64,
    /// Doses given before this day leave a lapsed one.
    pub lapsed_before: i64,
}

/// The Julian day of 1970-01-01.
pub(crate) const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// Where a due day falls in an [`OwedWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Due before the window: the person lapsed.
    Lapsed,
    /// Due inside the window (overdue within the grace, or falling due in the horizon).
    Owed,
    /// Due after the horizon: not this shipment's.
    Later,
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

    /// Figures per site for `product`, with the uptake window starting at `since` (rounded down
    /// to the hour) and owed doses counted by `owed`, whose interval must be `product`'s (owed
    /// doses are filed by the day of the dose that owes them, a dose of `product`). Sites with
    /// nothing to report may be missing.
    async fn site_activity(
        &self,
        product: &str,
        since: OffsetDateTime,
        owed: OwedWindow,
    ) -> Result<Vec<SiteActivity>>;

    /// Doses of `product` delivered to each site: every lot received there, with the
    /// adjustments of its allocation since (see [`LotAllocation`]). Sites never sent a lot of
    /// the product are missing.
    async fn received_by_site(&self, product: &str) -> Result<HashMap<String, i64>>;

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
