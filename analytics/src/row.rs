//! What the analytics side is told: one row per committed dose, one per stock movement.
//!
//! Rows are self-contained (they carry the site's and the person's area, the product's series
//! length and where the previous dose was given) so that neither ClickHouse nor the embedded
//! rollups ever have to join back to the store. Every row has a `version`: a replay of the same
//! version is a no-op everywhere, a higher version (a correction) replaces the earlier one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::{Dose, Lot, Registration, Site};
use time::OffsetDateTime;
use uuid::Uuid;

/// One dose as the analytics side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseRow {
    pub dose_id: Uuid,
    pub person_code: String,
    pub product: String,
    pub lot_number: String,
    pub dose_number: u8,
    /// Doses in the product's primary series: dose 1 of 2 leaves a dose owed, dose 2 of 2 does not.
    pub series_doses: u8,
    pub site_id: String,
    pub site_province: String,
    pub site_district: String,
    /// Where the person lives (registrations are counted there).
    pub home_province: String,
    pub home_district: String,
    /// Site and product of the dose before this one in the series; empty for a first dose. A
    /// dose given here settles what was owed there.
    pub previous_site: String,
    pub previous_product: String,
    pub administered_at: OffsetDateTime,
    /// When the dose was first committed; stable across corrections.
    pub recorded_at: OffsetDateTime,
    /// Nanoseconds since the epoch of the commit or correction that produced this version.
    pub version: u64,
}

impl DoseRow {
    /// The row for a dose just committed (or corrected: pass the correction time as `at`).
    pub fn new(
        dose: &Dose,
        person: &Registration,
        site: &Site,
        series_doses: u8,
        previous: Option<&Dose>,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            dose_id: dose.dose_id.0,
            person_code: dose.person_code.to_string(),
            product: dose.product.to_string(),
            lot_number: dose.lot_number.to_string(),
            dose_number: dose.dose_number,
            series_doses,
            site_id: dose.site_id.to_string(),
            site_province: site.area.province.to_string(),
            site_district: site.area.district.to_string(),
            home_province: person.area.province.to_string(),
            home_district: person.area.district.to_string(),
            previous_site: previous.map(|d| d.site_id.to_string()).unwrap_or_default(),
            previous_product: previous.map(|d| d.product.to_string()).unwrap_or_default(),
            administered_at: dose.administered_at,
            recorded_at: dose.recorded_at,
            version: nanos(at),
        }
    }

    /// Whether the dose leaves the next one of its series owed.
    pub fn leaves_dose_owed(&self) -> bool {
        self.dose_number < self.series_doses
    }

    /// The key ClickHouse sorts (and de-duplicates) the doses table by.
    pub fn sort_key(&self) -> (&str, &str, &str, Uuid) {
        (
            &self.site_province,
            &self.site_district,
            &self.site_id,
            self.dose_id,
        )
    }
}

/// Vaccine arriving at (positive) or leaving (negative) a site outside of doses given: deliveries
/// and write-offs. Doses given are counted from the dose rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockMovement {
    /// Derived from the movement's content, so that announcing the same lot twice is one movement.
    pub movement_id: Uuid,
    pub site_id: String,
    pub product: String,
    pub lot_number: String,
    pub quantity: i64,
    pub reason: String,
    pub at: OffsetDateTime,
}

impl StockMovement {
    /// A lot as received at its site.
    pub fn received(lot: &Lot, at: OffsetDateTime) -> Self {
        let mut hash = Sha256::new();
        for part in [
            lot.lot_number.as_str(),
            lot.site_id.as_str(),
            lot.product.as_str(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.update(lot.quantity.to_le_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self {
            movement_id: uuid::Builder::from_custom_bytes(id).into_uuid(),
            site_id: lot.site_id.to_string(),
            product: lot.product.to_string(),
            lot_number: lot.lot_number.to_string(),
            quantity: i64::try_from(lot.quantity).unwrap_or(i64::MAX),
            reason: "received".into(),
            at,
        }
    }
}

/// One entry of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A dose committed for the first time (or replayed).
    Dose(DoseRow),
    /// A dose corrected: `corrected` replaces `previous` (same dose id, higher version).
    DoseCorrected {
        previous: Box<DoseRow>,
        corrected: Box<DoseRow>,
    },
    Stock(StockMovement),
}

/// The instants a ClickHouse `DateTime` column can hold: seconds since 1970 as a `UInt32`.
/// Both backends refuse times outside it, so they keep giving the same answers.
const DATETIME_RANGE: std::ops::RangeInclusive<i64> = 0..=(u32::MAX as i64);

impl Event {
    /// Why the analytics schema cannot hold this event, if it cannot: a time before 1970 or
    /// after 2106. Such an event would fail every insert of its batch forever, so the shipper
    /// sets it aside instead (the dose itself is safe in the store; correcting it ships a new
    /// version). The API refuses such dates for new doses; this is the last line.
    pub fn unrepresentable(&self) -> Option<String> {
        let out_of_range = |what: &str, id: &dyn std::fmt::Display, at: OffsetDateTime| {
            (!DATETIME_RANGE.contains(&at.unix_timestamp()))
                .then(|| format!("{what} {id}: time {at} is outside 1970..2106"))
        };
        let dose = |row: &DoseRow| {
            out_of_range("dose", &row.dose_id, row.administered_at)
                .or_else(|| out_of_range("dose", &row.dose_id, row.recorded_at))
        };
        match self {
            Event::Dose(row) => dose(row),
            Event::DoseCorrected {
                previous,
                corrected,
            } => dose(previous).or_else(|| dose(corrected)),
            Event::Stock(movement) => {
                out_of_range("stock movement", &movement.movement_id, movement.at)
            }
        }
    }

    /// This event as the backends can take it, or why it cannot be shipped at all.
    ///
    /// A correction whose earlier version could not be represented (and so was never shipped)
    /// ships as the corrected row alone: there is nothing to retract.
    ///
    /// # Errors
    /// The event and the reason when it must be set aside.
    pub fn shippable(self) -> Result<Event, (Event, String)> {
        match self.unrepresentable() {
            None => Ok(self),
            Some(reason) => match self {
                Event::DoseCorrected {
                    previous,
                    corrected,
                } if Event::Dose((*corrected).clone())
                    .unrepresentable()
                    .is_none() =>
                {
                    tracing::warn!(dose_id = %previous.dose_id, "the corrected dose replaces a version analytics never held");
                    Ok(Event::Dose(*corrected))
                }
                event => Err((event, reason)),
            },
        }
    }
}

pub(crate) fn nanos(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos()).unwrap_or(0)
}
